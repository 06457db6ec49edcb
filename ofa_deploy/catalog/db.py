"""The catalog database: one SQLite file holding subnets, their accuracy, their latency on
each target, and their artifacts (tables and migrations: ``schema``).

Every write runs in a ``BEGIN IMMEDIATE`` transaction on a WAL-mode database with a busy
timeout, so several processes can fill one catalog at once; read-only opens create no
file beside the catalog.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional

from ..errors import OfaError
from ..io import json_text
from .schema import CATALOG_TABLES, DEFAULT_IMAGE_SIZE, SCHEMA_VERSION, migration_script, statements

BUSY_TIMEOUT_MS = 60_000


def quantization(sidecar: Optional[dict[str, Any]]) -> tuple[Optional[float], Optional[float], Optional[int]]:
    """(top-1 drop against fp32 in points, ``--max-drop`` bound, nodes reverted to float) of
    an export's ``model.json``; None where it does not say (fp32: drop 0)."""
    if not isinstance(sidecar, dict):
        return None, None, None
    if sidecar.get("precision", "fp32") == "fp32":
        return 0.0, None, None
    drop = (sidecar.get("accuracy") or {}).get("drop_points")
    bound = sidecar.get("bound") or {}
    max_drop, reverted = bound.get("max_drop_points"), bound.get("reverted_count")
    number = (int, float)
    return (float(drop) if isinstance(drop, number) and not isinstance(drop, bool) else None,
            float(max_drop) if isinstance(max_drop, number) and not isinstance(max_drop, bool) else None,
            int(reverted) if isinstance(reverted, int) and not isinstance(reverted, bool) else None)


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def result_hash(obj: Any) -> str:
    """SHA-256 of a JSON value in canonical form - the content key of imported results."""
    return hashlib.sha256(json_text(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class Catalog:
    """An open catalog file. Use as a context manager, or call ``close()``.

    Read methods return plain dicts; write methods are idempotent where the content is
    (re-adding the same subnet, accuracy or result changes nothing).
    """

    def __init__(self, path: str | Path, *, create: bool = True, readonly: bool = False) -> None:
        """Open ``path``; ``create`` lets a writer start a new catalog there. ``readonly``
        (what list/show/select/pareto/plot use) opens with SQLite's ``mode=ro``: nothing is
        created, migrated or journalled (an older schema is migrated in a private in-memory
        copy). A file that is not an ofa-deploy catalog is refused untouched either way."""
        self.path = Path(path)
        self.readonly = readonly
        create = create and not readonly
        if self.path.exists() and not self.path.is_file():
            raise OfaError(f"catalog {self.path} is not a file")
        if not self.path.exists():
            if not create:
                raise OfaError(f"catalog {self.path} does not exist; build one with `ofa-deploy catalog build`")
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise OfaError(f"cannot create catalog {self.path}: {exc.strerror or exc}") from None
        _check_header(self.path)
        if not readonly:
            _check_writable(self.path)
        try:
            if readonly:
                self.conn = _connect_readonly(self.path)
            else:
                self.conn = sqlite3.connect(str(self.path), timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
            self.conn.row_factory = sqlite3.Row
            self.conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            self._check_ours()
            if readonly:
                if self.version < SCHEMA_VERSION:
                    self._migrate_copy()
                self.conn.execute("PRAGMA query_only = ON")
            else:
                self._retry(lambda: self.conn.execute("PRAGMA journal_mode = WAL"))
                self.conn.execute("PRAGMA foreign_keys = ON")
                self.conn.execute("PRAGMA synchronous = NORMAL")
                self._migrate()
        except sqlite3.DatabaseError as exc:
            self._close_quietly()
            raise _write_fault(self.path, exc) or OfaError(f"{self.path} is not a usable catalog database: {exc}") \
                from None
        except BaseException:
            self._close_quietly()
            raise

    def _close_quietly(self) -> None:
        conn = getattr(self, "conn", None)
        if conn is not None:
            conn.close()

    def _check_ours(self) -> None:
        """Refuse an SQLite file that is not a catalog before anything is written to it."""
        tables = {r[0] for r in self.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not tables and self.version == 0:
            if self.readonly:
                raise OfaError(f"catalog {self.path} is empty; build one with `ofa-deploy catalog build`")
            return  # a new catalog: ours to create
        missing = CATALOG_TABLES - tables
        if missing or self.version == 0:
            raise OfaError(f"{self.path} is an SQLite database but not an ofa-deploy catalog (tables: "
                           f"{', '.join(sorted(tables)) or 'none'}); it was left untouched, choose another --catalog")
        if self.version > SCHEMA_VERSION:
            raise OfaError(f"catalog {self.path} has schema version {self.version}, newer than this "
                           f"ofa-deploy understands ({SCHEMA_VERSION}); upgrade ofa-deploy")

    def _migrate_copy(self) -> None:
        """Read an older catalog through an in-memory copy brought to the current schema:
        the file itself stays as it is."""
        memory = sqlite3.connect(":memory:", isolation_level=None)
        self.conn.backup(memory)
        self.conn.close()
        self.conn = memory
        self.conn.row_factory = sqlite3.Row
        self.readonly = False  # the private copy is ours to migrate; the file is never written
        try:
            self._migrate()
        finally:
            self.readonly = True

    # -- plumbing ---------------------------------------------------------------------
    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "Catalog":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @staticmethod
    def _retry(fn):
        # busy_timeout covers most contention; switching journal mode and upgrading a read
        # transaction can still report "locked" at once, so those retry briefly.
        for attempt in range(200):
            try:
                return fn()
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                time.sleep(0.01 + 0.005 * attempt)
        return fn()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: taken with BEGIN IMMEDIATE, committed on success. Inside
        another one it joins it, so a caller can make several writes all-or-nothing."""
        if self.readonly:
            raise OfaError(f"catalog {self.path} was opened read-only")
        if self.conn.in_transaction:
            yield self.conn
            return
        try:
            self._retry(lambda: self.conn.execute("BEGIN IMMEDIATE"))
        except sqlite3.Error as exc:
            raise _write_fault(self.path, exc) or exc from None
        try:
            yield self.conn
            self.conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            raise _write_fault(self.path, exc) or exc from None
        except BaseException:
            self._rollback()
            raise

    def _rollback(self) -> None:
        """Undo the open transaction; SQLite has already rolled back after some errors (a full
        disk), and a failing ROLLBACK must not hide the error that led here."""
        if self.conn.in_transaction:
            try:
                self.conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass

    @property
    def version(self) -> int:
        return self.conn.execute("PRAGMA user_version").fetchone()[0]

    def _migrate(self) -> None:
        if self.version > SCHEMA_VERSION:
            raise OfaError(f"catalog {self.path} has schema version {self.version}, newer than this "
                           f"ofa-deploy understands ({SCHEMA_VERSION}); upgrade ofa-deploy")
        while self.version < SCHEMA_VERSION:
            with self.transaction() as conn:
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                if version >= SCHEMA_VERSION:  # another process migrated meanwhile
                    break
                for statement in statements(migration_script(conn, version)):
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {version + 1}")

    # -- meta -------------------------------------------------------------------------
    def get_meta(self, key: str) -> Optional[str]:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        """Set one meta record (``search:TARGET``: the summary of the search whose picks
        ``catalog build --from-search`` stored for TARGET, which the page shows)."""
        if key in ("space", "created"):
            raise ValueError(f"meta {key!r} is written by set_space only")
        with self.transaction() as conn:
            conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def set_space(self, space_dict: dict[str, Any]) -> None:
        """Record the search space on first use; a different one is refused."""
        text = json_text(space_dict, sort_keys=True)
        with self.transaction() as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = 'space'").fetchone()
            if row is None:
                conn.execute("INSERT INTO meta VALUES ('space', ?)", (text,))
                conn.execute("INSERT OR IGNORE INTO meta VALUES ('created', ?)", (now(),))
            elif row[0] != text:
                raise OfaError(f"catalog {self.path} holds subnets of another search space "
                               "(different input channels, classes or choices); use another --catalog")

    def default_resolution(self) -> int:
        """The catalog space's ``image_size``: the resolution of rows that name none."""
        space = self.space_dict() or {}
        size = space.get("image_size", DEFAULT_IMAGE_SIZE)
        return size if isinstance(size, int) and not isinstance(size, bool) else DEFAULT_IMAGE_SIZE

    def _resolution(self, resolution: Optional[int]) -> int:
        return self.default_resolution() if resolution is None else int(resolution)

    def space_dict(self) -> Optional[dict[str, Any]]:
        text = self.get_meta("space")
        try:
            return json.loads(text) if text else None
        except (ValueError, RecursionError):
            raise OfaError(f"catalog {self.path} is damaged: its search-space record is not JSON") from None

    # -- writes -----------------------------------------------------------------------
    def add_subnet(self, key: str, spec: dict[str, Any], macs: int, params: int) -> None:
        with self.transaction() as conn:
            conn.execute("INSERT OR IGNORE INTO subnets VALUES (?, ?, ?, ?, ?, ?)",
                         (key, key, json_text(spec), int(macs), int(params), now()))

    def add_accuracy(self, subnet: str, *, run: str, run_sha256: str, dataset: str, split: str,
                     recalibrated: bool, calib_images: int, images: int, top1: float,
                     loss: Optional[float] = None, precision: str = "fp32",
                     resolution: Optional[int] = None, chosen_on: Optional[str] = None) -> bool:
        """Store one accuracy (of the model at ``precision`` and input ``resolution``, default
        the catalog's image size); ``False`` if this exact evaluation was stored already.
        ``chosen_on``: the split whose accuracy chose this subnet (``split`` is the one this
        accuracy was measured on); a stored row without one gets it."""
        resolution = self._resolution(resolution)
        with self.transaction() as conn:
            cur = conn.execute(
                "INSERT OR IGNORE INTO accuracy (subnet, run, run_sha256, dataset, split, recalibrated, "
                "calib_images, images, top1, loss, date, precision, resolution, chosen_on) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (subnet, run, run_sha256, dataset, split, int(recalibrated), int(calib_images), int(images),
                 float(top1), loss, now(), precision, resolution, chosen_on))
            if cur.rowcount == 0 and chosen_on is not None:
                conn.execute(
                    "UPDATE accuracy SET chosen_on = ? WHERE chosen_on IS NULL AND subnet = ? AND run_sha256 = ? "
                    "AND dataset = ? AND split = ? AND recalibrated = ? AND calib_images = ? AND images = ? "
                    "AND precision = ? AND resolution = ?",
                    (chosen_on, subnet, run_sha256, dataset, split, int(recalibrated), int(calib_images),
                     int(images), precision, resolution))
            return cur.rowcount == 1

    def find_accuracy(self, subnet: str, *, run_sha256: str, dataset: str, split: str, recalibrated: bool,
                      calib_images: int, images: int, precision: str = "fp32",
                      resolution: Optional[int] = None) -> Optional[dict[str, Any]]:
        row = self.conn.execute(
            "SELECT * FROM accuracy WHERE subnet = ? AND run_sha256 = ? AND dataset = ? AND split = ? "
            "AND recalibrated = ? AND calib_images = ? AND images = ? AND precision = ? AND resolution = ?",
            (subnet, run_sha256, dataset, split, int(recalibrated), int(calib_images), int(images),
             precision, self._resolution(resolution))).fetchone()
        return dict(row) if row else None

    def add_artifact(self, subnet: str, target: str, kind: str, path: str | Path, sha256: str,
                     precision: str = "fp32", resolution: Optional[int] = None,
                     sidecar: Optional[dict[str, Any]] = None) -> None:
        """Record (or replace) the artifact of ``kind`` for ``subnet`` at ``precision`` and
        ``resolution`` (default: the catalog's image size) on ``target``; ``sidecar`` (the
        export's ``model.json``) gives its accuracy drop and int8 bound (``quantization``)."""
        size = Path(path).stat().st_size
        drop, bound, reverted = quantization(sidecar)
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO artifacts (subnet, target, kind, path, sha256, bytes, created, precision, resolution, "
                "drop_points, max_drop, reverted) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (subnet, target, precision, resolution, kind) "
                "DO UPDATE SET path = excluded.path, sha256 = excluded.sha256, bytes = excluded.bytes, "
                "created = excluded.created, drop_points = excluded.drop_points, max_drop = excluded.max_drop, "
                "reverted = excluded.reverted",
                (subnet, target, kind, str(path), sha256, size, now(), precision, self._resolution(resolution),
                 drop, bound, reverted))

    def artifact(self, subnet: str, target: str, kind: str = "onnx",
                 precision: str = "fp32", resolution: Optional[int] = None) -> Optional[dict[str, Any]]:
        row = self.conn.execute(
            "SELECT * FROM artifacts WHERE subnet = ? AND target = ? AND kind = ? AND precision = ? "
            "AND resolution = ?", (subnet, target, kind, precision, self._resolution(resolution))).fetchone()
        return dict(row) if row else None

    def add_latency(self, subnet: str, result: dict[str, Any], *, target: str, source: str = "measured",
                    resolution: Optional[int] = None, backend_mismatch: Optional[str] = None) -> bool:
        """Store one ``profile_model`` result for ``subnet`` on ``target``; ``False`` if this
        very result (same content hash) is stored already. Its ``resolution`` is the given
        one, else the input size of the model it measured (``model.space.image_size``), else
        the catalog's image size. ``backend_mismatch`` (default: the result's own): why the
        measurement is not one of ``target``'s backend, stored so every view can flag it."""
        if resolution is None:
            model_space = (result.get("model") or {}).get("space") or {}
            resolution = model_space.get("image_size") if isinstance(model_space, dict) else None
        resolution = self._resolution(resolution)
        lat = result["latency_ms"]
        env = result.get("environment") or {}
        digest = result_hash({k: v for k, v in result.items() if k != "source"})
        with self.transaction() as conn:
            cur = conn.execute(
                "INSERT OR IGNORE INTO latency (subnet, target, backend, precision, batch, artifact_sha256, "
                "p50, p90, p99, mean, std, min, max, cov, n, unstable, stats, environment, host, source, date, "
                "result_sha256, latency_kind, resolution, backend_mismatch) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (subnet, target, result.get("backend") or "unknown", result.get("precision") or "unknown",
                 int(result.get("batch") or 1), (result.get("model") or {}).get("sha256"),
                 lat["p50"], lat["p90"], lat["p99"], lat["mean"], lat["std"], lat["min"], lat.get("max"),
                 float(result["cov"]), int(result["n"]), int(bool(result.get("unstable"))),
                 json_text({k: v for k, v in result.items() if k != "environment"}), json_text(env),
                 env.get("hostname"), source, env.get("date") or now(), digest,
                 result.get("latency_kind") or "host", resolution,
                 backend_mismatch or result.get("backend_mismatch") or None))
            return cur.rowcount == 1

    def find_latency(self, subnet: str, target: str, *, artifact_sha256: Optional[str] = None,
                     host: Optional[str] = None, batch: Optional[int] = None,
                     precision: Optional[str] = None, resolution: Optional[int] = None) -> Optional[dict[str, Any]]:
        """The newest latency row matching every given field."""
        sql = "SELECT * FROM latency WHERE subnet = ? AND target = ?"
        args: list[str | int] = [subnet, target]
        for column, value in (("artifact_sha256", artifact_sha256), ("host", host), ("batch", batch),
                              ("precision", precision), ("resolution", resolution)):
            if value is not None:
                sql += f" AND {column} = ?"
                args.append(value)
        row = self.conn.execute(sql + " ORDER BY date DESC, id DESC LIMIT 1", args).fetchone()
        return dict(row) if row else None

    # -- reads ------------------------------------------------------------------------
    def subnet(self, key: str) -> Optional[dict[str, Any]]:
        row = self.conn.execute("SELECT * FROM subnets WHERE key = ?", (key,)).fetchone()
        return dict(row) if row else None

    def count(self, table: str) -> int:
        if table not in ("subnets", "accuracy", "artifacts", "latency"):
            raise OfaError(f"no table {table!r}")
        return self.conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]

    def targets(self) -> list[str]:
        return [r[0] for r in self.conn.execute("SELECT DISTINCT target FROM latency ORDER BY target")]

    def precisions(self, target: str) -> list[str]:
        """The precisions measured on ``target``."""
        return [r[0] for r in self.conn.execute(
            "SELECT DISTINCT precision FROM latency WHERE target = ? ORDER BY precision", (target,))]

    def latency_rows(self, target: str, batch: Optional[int] = None,
                     precision: Optional[str] = None, resolution: Optional[int] = None) -> list[dict[str, Any]]:
        sql = "SELECT * FROM latency WHERE target = ?"
        args: list[str | int] = [target]
        for column, value in (("batch", batch), ("precision", precision), ("resolution", resolution)):
            if value is not None:
                sql += f" AND {column} = ?"
                args.append(value)
        return [dict(r) for r in self.conn.execute(sql + " ORDER BY date, id", args)]

    def accuracy_rows(self, subnet: str) -> list[dict[str, Any]]:
        return [dict(r) for r in self.conn.execute(
            "SELECT * FROM accuracy WHERE subnet = ? ORDER BY date, id", (subnet,))]


_SQLITE_MAGIC = b"SQLite format 3\x00"

# SQLite's messages for a write the environment refused, and the cause as the OS says it
_WRITE_FAULTS = (
    ("database or disk is full", "No space left on device"),
    ("disk I/O error", "Input/output error"),
    ("attempt to write a readonly database", "the file or its folder is read-only for this user"),
    ("unable to open database file", "the file or its folder cannot be written by this user"),
)


def _check_writable(path: Path) -> None:
    """A writer needs the catalog file and its folder writable (SQLite keeps ``-wal`` and
    ``-shm`` files beside it): refused before SQLite creates them, so nothing is left."""
    folder = path.parent
    for what, where in ((path, path), (folder, folder)):
        if where.exists() and not os.access(where, os.W_OK):
            kind = "the catalog file" if what == path else "its folder"
            raise OfaError(f"cannot write catalog {path}: {kind} is read-only for this user "
                           f"({'read-only file system' if _read_only_fs(where) else 'permission denied'}); "
                           f"nothing was changed")


def _read_only_fs(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):
        return False


def _write_fault(path: Path, exc: sqlite3.Error) -> Optional[OfaError]:
    """A write refused by the environment as one line naming the catalog and the cause
    (the transaction rolled back: the catalog is as it was); None for other errors."""
    text = str(exc)
    for needle, cause in _WRITE_FAULTS:
        if needle in text:
            if needle == "disk I/O error" and _disk_full(path):  # SQLite says I/O error when its -wal cannot grow
                cause = "No space left on device"
            return OfaError(f"could not write catalog {path}: {cause}; nothing was changed")
    return None


def _disk_full(path: Path) -> bool:
    try:
        stat = os.statvfs(path.parent)
    except (OSError, AttributeError):
        return False
    return stat.f_bavail * stat.f_frsize < (64 << 10)


def _check_header(path: Path) -> None:
    """An existing file must be empty (a catalog about to be made) or an SQLite database;
    anything else is refused before SQLite opens it."""
    try:
        with open(path, "rb") as f:
            head = f.read(len(_SQLITE_MAGIC))
    except FileNotFoundError:
        return
    except OSError as exc:
        raise OfaError(f"cannot read catalog {path}: {exc.strerror or exc}") from None
    if head and head != _SQLITE_MAGIC:
        raise OfaError(f"{path} is not an SQLite database (so not a catalog); it was left untouched, "
                       "choose another --catalog")


def _connect_readonly(path: Path) -> sqlite3.Connection:
    """``mode=ro``; a WAL catalog with no ``-wal`` file beside it (nobody writing, the usual
    state) as ``immutable`` so that not even SQLite's ``-shm``/``-wal`` files are created -
    which also lets a catalog in a read-only folder be read."""
    uri = path.resolve().as_uri() + "?mode=ro"
    wal = path.with_name(path.name + "-wal")
    with open(path, "rb") as f:
        header = f.read(20)
    if len(header) == 20 and header[18] == 2 and not wal.exists():
        uri += "&immutable=1"
    return sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
