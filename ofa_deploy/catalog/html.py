"""``catalog html``: one static, self-contained HTML page for a catalog - per-target
accuracy-vs-latency and accuracy-vs-MFLOPs scatter with the Pareto front, a budget slider
with device/precision filters showing the model ``catalog select`` would pick on each
device, a sortable table of every entry (measured statistics, environment, artefacts) and
a "rank flips" view of the subnets two targets share.

Nothing is fetched when the page is viewed: the plotting library and the data are inline,
and a Content-Security-Policy forbids any request. The same catalog (and the same ONNX
files on disk) gives the same bytes except the one ``generated`` timestamp.

Why Plotly (plotly.js, taken from the ``plotly`` PyPI package via
``plotly.offline.get_plotlyjs()``): measured here with plotly 7.1.0 and
vl-convert-python 1.9.0.post1 on the shared 2-core VM -

===============================  ===============  ============  ==============  =============
library                          inline JS bytes  gzipped       time to get JS  wheel (inst.)
===============================  ===============  ============  ==============  =============
plotly.js 4.1.1 (``plotly``)      4,815,765        1,468,879     0.12 s          9.7 MB (64 MB)
Vega+Vega-Lite+vega-embed         897,681          304,941       6.5-8.0 s       33.5 MB (84 MB)
(``vl_convert.javascript_bundle``)
===============================  ===============  ============  ==============  =============

Vega-Lite makes a page 5x smaller, but its bundle is built by a JavaScript bundler inside
vl-convert on every run (seconds of CPU per page on a small machine) from a wheel 3.5x
larger. Plotly's file is read as is, and gives hover (subnet, accuracy, p50/p90/p99),
zoom, pan, box select, legend toggles and PNG export without a spec language; the page's
own script redraws with ``Plotly.react`` when the budget or filters change. 4.8 MB is
small for a file opened locally. Plotly is imported only here (``torch`` extra, like
matplotlib for ``catalog plot``); reading the catalog needs no torch.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from ..errors import OfaError
from ..io import atomic_write_text, json_text
from .db import Catalog
from .entries import entries
from .search_summary import stored_summaries

PAGE_FORMAT = "ofa-deploy/catalog-html/1"
DEFAULT_PAGE = "index.html"
_ASSETS = Path(__file__).with_name("html_assets")
# The first bytes of every page this module writes: how a rerun knows a file is its own.
_MARK = f'<!DOCTYPE html>\n<!-- {PAGE_FORMAT} -->\n'
# Environment fields shown in the table (the full record is in the page's data).
_ENV_FIELDS = ("hostname", "os", "machine", "python", "threads")


def open_readonly(path: str | Path) -> Catalog:
    """The catalog at ``path`` opened for reading only (``OfaError`` if it is not one)."""
    return Catalog(path, create=False, readonly=True)


# -- data -------------------------------------------------------------------------------

def page_data(cat: Catalog, *, batch: int = 1, targets: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """Everything the page shows, as JSON-ready data in a fixed order. ``targets`` limits
    the page to those targets (each must have entries at ``batch``)."""
    known = cat.targets()
    if not known:
        raise OfaError(f"catalog {cat.path} has no latency measurements yet; nothing to show "
                       "(measure with `ofa-deploy catalog build` or `catalog import`)")
    for name in targets or ():
        if name not in known:
            raise OfaError(f"--target {name} is not in catalog {cat.path} (targets in it: {', '.join(known)})")
    chosen = list(dict.fromkeys(targets)) if targets else known
    envs: Dict[str, Dict[str, Any]] = {}
    per_target: List[Dict[str, Any]] = []
    for target in chosen:
        items = entries(cat, target, batch=batch)
        if not items:
            if targets:
                raise OfaError(f"--target {target} has no entries at batch {batch} in catalog {cat.path}")
            continue
        environments = _environments(cat, target, batch)
        rows = []
        default_resolution = cat.default_resolution()
        for e in items:
            env_text = environments.get((e["key"], e["measured_at"], e["backend"], e.get("precision")), "{}")
            env_id = _env_id(envs, env_text)
            rows.append(_row(e, env_id))
            if e.get("resolution", default_resolution) != default_resolution:  # one subnet, several input sizes
                rows[-1]["key"] += f"@{e['resolution']}"
                rows[-1]["text"] += f" @ {e['resolution']}px"
        per_target.append({"name": target, "entries": rows})
    if not per_target:
        batches = sorted({r[0] for r in cat.conn.execute("SELECT DISTINCT batch FROM latency")})
        raise OfaError(f"catalog {cat.path} has no entries at batch {batch} "
                       f"(batches measured: {', '.join(str(b) for b in batches)}); pass --batch")
    return {
        "format": PAGE_FORMAT,
        "catalog": str(cat.path),
        "batch": batch,
        "created": cat.get_meta("created"),
        "counts": {t: cat.count(t) for t in ("subnets", "accuracy", "artifacts", "latency")},
        "targets": per_target,
        # catalog build --from-search: the search behind each target's entries
        "searches": stored_summaries(cat, [t["name"] for t in per_target]),
        "environments": [envs[k] for k in sorted(envs, key=lambda k: envs[k]["id"])],
    }


def _environments(cat: Catalog, target: str, batch: int) -> Dict[tuple, str]:
    # entries() keeps the newest row of a subnet; rows in (date, id) order let the last win the same way.
    return {(r["subnet"], r["date"], r["backend"], r["precision"]): r["environment"]
            for r in cat.latency_rows(target, batch)}


def _env_id(envs: Dict[str, Dict[str, Any]], text: str) -> int:
    if text not in envs:
        try:
            full = json.loads(text)
        except ValueError:
            full = {}
        full = full if isinstance(full, dict) else {}
        listed = full.get("cpu")
        cpu = listed if isinstance(listed, dict) else {}
        summary = {k: full.get(k) for k in _ENV_FIELDS if full.get(k) is not None}
        if cpu.get("model"):
            summary["cpu"] = cpu["model"]
        envs[text] = {"id": len(envs), "summary": summary, "full": full}
    return envs[text]["id"]


def _row(e: Dict[str, Any], env_id: int) -> Dict[str, Any]:
    lat = e["latency_ms"]
    onnx = e["onnx"]
    return {
        "key": e["key"],
        "text": e["text"],
        "mflops": e["mflops"],
        "params": e["params"],
        "accuracy": e["accuracy"],
        # the split the accuracy was measured on and the one that chose the subnet (schema 6;
        # None: a candidate row, or a catalog from before it was recorded)
        "accuracy_split": (e.get("accuracy_info") or {}).get("split"),
        "chosen_on": (e.get("accuracy_info") or {}).get("chosen_on"),
        "p50": lat["p50"], "p90": lat["p90"], "p99": lat["p99"], "mean": lat["mean"], "min": lat["min"],
        "cov": e["cov"],
        "n": e["n"],
        "unstable": e["unstable"],
        # missing precision (catalogs written before it was recorded) means the default, fp32
        "precision": e.get("precision") or "fp32",
        # top-1 drop against fp32 (points) and the int8 bound / nodes left in float, where recorded
        "drop_points": e.get("drop_points"),
        "max_drop": e.get("max_drop"),
        "reverted": e.get("reverted"),
        "backend": e["backend"],
        # why this latency is not a measurement of the target (catalog import --allow-backend-mismatch)
        "backend_mismatch": e.get("backend_mismatch"),
        "latency_kind": e["latency_kind"],
        "source": e["source"],
        "host": e["host"],
        "measured_at": e["measured_at"],
        "env": env_id,
        "onnx": onnx,
        "onnx_sha256": e["onnx_sha256"],
        # what `catalog select` checks on this machine: the page picks as it would
        "onnx_found": bool(onnx) and Path(onnx).is_file(),
    }


# -- rendering --------------------------------------------------------------------------

def _plotly_js() -> str:
    try:
        from plotly.offline import get_plotlyjs
    except ImportError:
        raise OfaError("catalog html needs the plotly package: pip install 'ofa-deploy[torch]' "
                       "(or pip install plotly)") from None
    return get_plotlyjs()


def _script(text: str, what: str) -> str:
    """``text`` for a <script> element, which ends at the first "</script"."""
    if "</script" in text.lower() or "<!--" in text:
        raise OfaError(f"the {what} cannot be inlined in a <script> element")
    return text


def render(data: Dict[str, Any], *, generated: str) -> str:
    """The page for ``data`` (from ``page_data``); ``generated`` is its only timestamp."""
    import html

    template = (_ASSETS / "page.html").read_text(encoding="utf-8")
    payload = json_text(data, sort_keys=True, separators=(",", ":"))
    parts = {
        "@TITLE@": html.escape(f"Catalog {Path(data['catalog']).name}"),
        "@CATALOG@": html.escape(data["catalog"]),
        "@GENERATED@": html.escape(generated),
        "@CSS@": (_ASSETS / "page.css").read_text(encoding="utf-8"),
        "@PLOTLY@": _script(_plotly_js(), "plotly.js library"),
        # "<" only occurs inside JSON strings, where \u003c means the same
        "@DATA@": payload.replace("<", "\\u003c"),
        "@APP@": _script((_ASSETS / "page.js").read_text(encoding="utf-8"), "page script"),
    }
    page = template
    for key in ("@TITLE@", "@CATALOG@", "@GENERATED@", "@CSS@", "@DATA@", "@APP@"):
        page = page.replace(key, parts[key])
    page = page.replace("@PLOTLY@", parts["@PLOTLY@"])  # last: its text is never searched for markers
    return _MARK + page


# -- output -----------------------------------------------------------------------------

def _is_our_page(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(len(_MARK)) == _MARK.encode()
    except OSError:
        return False


def resolve_out(out: str | Path, catalog_path: str | Path) -> Path:
    """The file ``out`` names: ``out/index.html`` for a directory (existing, or a new path
    without an .html suffix), else ``out`` itself. Refuses the catalog (or its journal),
    and any existing file that is not a page this module wrote."""
    out = Path(out)
    if out.is_dir():
        page = out / DEFAULT_PAGE
    elif out.suffix.lower() in (".html", ".htm") or os.path.lexists(out):
        page = out
    else:
        page = out / DEFAULT_PAGE
    catalog = Path(catalog_path).resolve()
    protected = [catalog] + [catalog.with_name(catalog.name + s) for s in ("-wal", "-shm", "-journal")]
    if page.resolve() in protected or out.resolve() in protected:
        raise OfaError(f"--out {out} is the catalog itself; choose another --out (a directory such as site/)")
    if os.path.lexists(page):
        if page.is_symlink() or not page.is_file():
            raise OfaError(f"--out {page} exists and is not a regular file; choose another --out")
        if not _is_our_page(page):
            raise OfaError(f"--out {page} exists and is not a page written by `ofa-deploy catalog html`; "
                           "it is left alone - choose another --out")
    else:
        existing = next(p for p in page.parents if os.path.lexists(p))  # "/" at the latest
        if not existing.is_dir():
            raise OfaError(f"--out {out}: {existing} is a file, not a directory; choose another --out")
    return page


def write_catalog_html(catalog_path: str | Path, out: str | Path, *, batch: int = 1,
                       targets: Optional[Sequence[str]] = None, generated: Optional[str] = None) -> Path:
    """Write the page for the catalog at ``catalog_path`` (opened read-only) and return its
    path: ``out/index.html``, or ``out`` if that names an .html file."""
    with open_readonly(catalog_path) as cat:
        data = page_data(cat, batch=batch, targets=targets)
    page = resolve_out(out, catalog_path)
    text = render(data, generated=generated or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    return atomic_write_text(page, text)
