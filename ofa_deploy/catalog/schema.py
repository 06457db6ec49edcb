"""The catalog's SQLite schema and its migrations.

Schema (``PRAGMA user_version`` = ``SCHEMA_VERSION``; older files are migrated in place
when opened, one numbered step at a time, each in its own transaction)::

    meta(key PK, value)                      - the catalog's search space (JSON), creation date,
                                               search:TARGET (JSON: the search behind --from-search picks)
    subnets(key PK, text, spec, macs, params, created)
    accuracy(subnet, run, run_sha256, dataset, split, recalibrated, calib_images,
             images, top1, loss, date, precision, resolution, chosen_on)
                                             UNIQUE(subnet, run_sha256, dataset, split, recalibrated,
                                                    calib_images, images, precision, resolution)
    artifacts(subnet, target, kind, path, sha256, bytes, created, precision, resolution,
              drop_points, max_drop, reverted)
                                             UNIQUE(subnet, target, precision, resolution, kind)
    latency(subnet, target, backend, precision, batch, latency_kind, artifact_sha256,
            p50, p90, p99, mean, std, min, max, cov, n, unstable, stats, environment,
            host, source, date, result_sha256 UNIQUE, resolution, backend_mismatch)

A subnet's key is its canonical text form (``str(Subnet)``); ``spec`` is its JSON
(ks/e/d). A catalog entry is subnet x target x precision x batch: the precision is the one
the ONNX carries (fp32, fp16, int8), and accuracy is stored per precision (an int8 model's
own accuracy); rows from before precision was recorded (schema 2) are fp32.

Schema 4 adds the input resolution (elastic resolution, ``ofa_deploy.resolution``): an
entry is subnet x resolution x target x precision x batch, and accuracy and artifacts are
keyed by it too. ``subnets.macs`` stays the count at the catalog space's ``image_size``
(the meta record); rows from before (schema 3) are at that size.

Schema 5 adds ``latency.backend_mismatch``: why a measurement was not made the way its
target runs (another backend, or ONNX Runtime's CPU provider for a GPU target), NULL when it
was. ``catalog import`` stores such a row only when told (``--allow-backend-mismatch``) and
every view flags it. Older rows get the profiler's own fallback note (``stats.fallback``),
the one trace such a measurement left.

Schema 6 adds ``accuracy.chosen_on``: the split whose accuracy chose this subnet for the
catalog, beside ``split``, the one this accuracy was measured on. ``catalog build`` chooses
on a validation split held out of training (``val``) and reports the finalists on the test
split, read once; a run with no hold-out chooses on one seeded half of the test split and
reports on the other (``test:half1:seedS`` / ``test:half2:seedS``). A candidate's
choosing accuracy has ``chosen_on`` NULL (it chose, it was not chosen); so have rows from
before schema 6, whose choosing split was not recorded (``catalog build`` then chose on the
very test accuracy it stored).

Schema 7 adds what quantization cost to ``artifacts``: ``drop_points`` (the model's top-1
drop against fp32, in points, on the test images its ``model.json`` reports it on),
``max_drop`` (the ``--max-drop`` bound it was quantized under, NULL for none) and
``reverted`` (how many quantized nodes the bound left in float). Older rows: NULL, unknown
(their ``model.json`` beside the file still has ``accuracy.drop_points``).
"""

from __future__ import annotations

import json
import sqlite3

from ..errors import OfaError

CATALOG_TABLES = frozenset({"meta", "subnets", "accuracy", "artifacts", "latency"})
SCHEMA_VERSION = 7

# MIGRATIONS[v] takes a database at user_version v to v + 1.
MIGRATIONS: dict[int, str] = {
    0: """
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE subnets (
            key TEXT PRIMARY KEY, text TEXT NOT NULL, spec TEXT NOT NULL,
            macs INTEGER NOT NULL, params INTEGER NOT NULL, created TEXT NOT NULL);
        CREATE TABLE accuracy (
            id INTEGER PRIMARY KEY, subnet TEXT NOT NULL REFERENCES subnets(key),
            run TEXT NOT NULL, run_sha256 TEXT NOT NULL, dataset TEXT NOT NULL, split TEXT NOT NULL,
            recalibrated INTEGER NOT NULL, calib_images INTEGER NOT NULL, images INTEGER NOT NULL,
            top1 REAL NOT NULL, loss REAL, date TEXT NOT NULL,
            UNIQUE (subnet, run_sha256, dataset, split, recalibrated, calib_images, images));
        CREATE TABLE artifacts (
            id INTEGER PRIMARY KEY, subnet TEXT NOT NULL REFERENCES subnets(key), target TEXT NOT NULL,
            kind TEXT NOT NULL, path TEXT NOT NULL, sha256 TEXT NOT NULL, bytes INTEGER NOT NULL,
            created TEXT NOT NULL, UNIQUE (subnet, target, kind));
        CREATE TABLE latency (
            id INTEGER PRIMARY KEY, subnet TEXT NOT NULL REFERENCES subnets(key), target TEXT NOT NULL,
            backend TEXT NOT NULL, precision TEXT NOT NULL, batch INTEGER NOT NULL,
            artifact_sha256 TEXT, p50 REAL NOT NULL, p90 REAL NOT NULL, p99 REAL NOT NULL,
            mean REAL NOT NULL, std REAL NOT NULL, min REAL NOT NULL, max REAL, cov REAL NOT NULL,
            n INTEGER NOT NULL, unstable INTEGER NOT NULL, stats TEXT NOT NULL, environment TEXT NOT NULL,
            host TEXT, source TEXT NOT NULL, date TEXT NOT NULL, result_sha256 TEXT NOT NULL UNIQUE);
    """,
    # v2: what a latency row times (device compute vs host) and the indexes lookups use.
    1: """
        ALTER TABLE latency ADD COLUMN latency_kind TEXT NOT NULL DEFAULT 'host';
        CREATE INDEX latency_by_target ON latency (target, subnet);
        CREATE INDEX accuracy_by_subnet ON accuracy (subnet);
    """,
    # v3: precision in the keys of accuracy and artifacts (SQLite cannot alter a UNIQUE
    # constraint, so both tables are rebuilt; every older row was an fp32 ONNX / accuracy).
    2: """
        CREATE TABLE accuracy_v3 (
            id INTEGER PRIMARY KEY, subnet TEXT NOT NULL REFERENCES subnets(key),
            run TEXT NOT NULL, run_sha256 TEXT NOT NULL, dataset TEXT NOT NULL, split TEXT NOT NULL,
            recalibrated INTEGER NOT NULL, calib_images INTEGER NOT NULL, images INTEGER NOT NULL,
            top1 REAL NOT NULL, loss REAL, date TEXT NOT NULL, precision TEXT NOT NULL DEFAULT 'fp32',
            UNIQUE (subnet, run_sha256, dataset, split, recalibrated, calib_images, images, precision));
        INSERT INTO accuracy_v3 (id, subnet, run, run_sha256, dataset, split, recalibrated, calib_images, images,
                                 top1, loss, date, precision)
            SELECT id, subnet, run, run_sha256, dataset, split, recalibrated, calib_images, images, top1, loss,
                   date, 'fp32' FROM accuracy;
        DROP TABLE accuracy;
        ALTER TABLE accuracy_v3 RENAME TO accuracy;
        CREATE INDEX accuracy_by_subnet ON accuracy (subnet);
        CREATE TABLE artifacts_v3 (
            id INTEGER PRIMARY KEY, subnet TEXT NOT NULL REFERENCES subnets(key), target TEXT NOT NULL,
            kind TEXT NOT NULL, path TEXT NOT NULL, sha256 TEXT NOT NULL, bytes INTEGER NOT NULL,
            created TEXT NOT NULL, precision TEXT NOT NULL DEFAULT 'fp32',
            UNIQUE (subnet, target, precision, kind));
        INSERT INTO artifacts_v3 (id, subnet, target, kind, path, sha256, bytes, created, precision)
            SELECT id, subnet, target, kind, path, sha256, bytes, created, 'fp32' FROM artifacts;
        DROP TABLE artifacts;
        ALTER TABLE artifacts_v3 RENAME TO artifacts;
        CREATE INDEX latency_by_precision ON latency (target, precision, batch);
    """,
    # v4: resolution in the keys of accuracy and artifacts and a column of latency; older rows
    # are at the catalog space's image size ({image_size}, filled in by migration_script).
    3: """
        CREATE TABLE accuracy_v4 (
            id INTEGER PRIMARY KEY, subnet TEXT NOT NULL REFERENCES subnets(key),
            run TEXT NOT NULL, run_sha256 TEXT NOT NULL, dataset TEXT NOT NULL, split TEXT NOT NULL,
            recalibrated INTEGER NOT NULL, calib_images INTEGER NOT NULL, images INTEGER NOT NULL,
            top1 REAL NOT NULL, loss REAL, date TEXT NOT NULL, precision TEXT NOT NULL DEFAULT 'fp32',
            resolution INTEGER NOT NULL,
            UNIQUE (subnet, run_sha256, dataset, split, recalibrated, calib_images, images, precision, resolution));
        INSERT INTO accuracy_v4 (id, subnet, run, run_sha256, dataset, split, recalibrated, calib_images, images,
                                 top1, loss, date, precision, resolution)
            SELECT id, subnet, run, run_sha256, dataset, split, recalibrated, calib_images, images, top1, loss,
                   date, precision, {image_size} FROM accuracy;
        DROP TABLE accuracy;
        ALTER TABLE accuracy_v4 RENAME TO accuracy;
        CREATE INDEX accuracy_by_subnet ON accuracy (subnet);
        CREATE TABLE artifacts_v4 (
            id INTEGER PRIMARY KEY, subnet TEXT NOT NULL REFERENCES subnets(key), target TEXT NOT NULL,
            kind TEXT NOT NULL, path TEXT NOT NULL, sha256 TEXT NOT NULL, bytes INTEGER NOT NULL,
            created TEXT NOT NULL, precision TEXT NOT NULL DEFAULT 'fp32', resolution INTEGER NOT NULL,
            UNIQUE (subnet, target, precision, resolution, kind));
        INSERT INTO artifacts_v4 (id, subnet, target, kind, path, sha256, bytes, created, precision, resolution)
            SELECT id, subnet, target, kind, path, sha256, bytes, created, precision, {image_size} FROM artifacts;
        DROP TABLE artifacts;
        ALTER TABLE artifacts_v4 RENAME TO artifacts;
        ALTER TABLE latency ADD COLUMN resolution INTEGER NOT NULL DEFAULT {image_size};
    """,
    # v5: a measurement not made the way its target runs (another backend or device) says why;
    # older rows: the fallback the profiler noted in the result, if any.
    4: """
        ALTER TABLE latency ADD COLUMN backend_mismatch TEXT;
        UPDATE latency SET backend_mismatch = json_extract(stats, '$.fallback')
            WHERE json_valid(stats) AND json_type(stats, '$.fallback') = 'text';
    """,
    # v6: the split that chose an accuracy row's subnet (NULL: a candidate's own, or not recorded).
    5: """
        ALTER TABLE accuracy ADD COLUMN chosen_on TEXT;
    """,
    # v7: an artifact's accuracy drop against fp32 and the bound it was quantized under.
    6: """
        ALTER TABLE artifacts ADD COLUMN drop_points REAL;
        ALTER TABLE artifacts ADD COLUMN max_drop REAL;
        ALTER TABLE artifacts ADD COLUMN reverted INTEGER;
    """,
}
DEFAULT_IMAGE_SIZE = 32  # SearchSpace's default: a catalog without a space record has no rows to place


def migration_script(conn: sqlite3.Connection, version: int) -> str:
    """``MIGRATIONS[version]`` with the catalog space's image size filled in where it needs it."""
    script = MIGRATIONS[version]
    if "{image_size}" not in script:
        return script
    row = conn.execute("SELECT value FROM meta WHERE key = 'space'").fetchone()
    try:
        size = int(json.loads(row[0]).get("image_size", DEFAULT_IMAGE_SIZE)) if row else DEFAULT_IMAGE_SIZE
    except (ValueError, TypeError, AttributeError, RecursionError):
        raise OfaError("the catalog is damaged: its search-space record is not JSON with an integer image_size") \
            from None
    return script.replace("{image_size}", str(size))


def statements(script: str) -> list[str]:
    """A migration script as the single statements ``execute`` takes."""
    return [s.strip() for s in script.split(";") if s.strip()]
