"""The paper's comparison in one call: train OFA-PS, RSS and RSS-short, evaluate them on the
same subnets, and write the report with a verdict.

Epochs are Table 1's times ``scale``: every Progressive Shrinking phase gets
``max(1, round(epochs x scale))`` (so each phase still runs), RSS gets as many epochs as PS
in total (the paper: 82 = 25 + 57 on F-MNIST) and RSS-short as many as PS's supernet phase
(25). ``ablations`` adds the runs of the paper's Figs. 5-7 with RSS's epoch budget.

Layout of ``out``::

    reproduce.json   options, plan, per-run status and times (rewritten after every step)
    runs/<key>/      one training run each (``ofa_deploy.train`` run directories)
    report/          Fig. 3 / Fig. 4 for PS, RSS, RSS-short + the verdict (report.md)
    ablations/fig5-sampling, fig6-single, fig7-two   (with ``ablations``)
    verdict.json

Resumable: calling it again with the same options continues where it stopped - finished
runs and evaluations are reused, an interrupted run resumes from its last checkpoint.
"""

from __future__ import annotations

import datetime as _dt
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

from .errors import OfaError
from .io import atomic_write_json, read_json
from .space import PAPER_BUCKETS

MANIFEST = "reproduce.json"
PAPER_TIME_RATIOS = {"rss": 1.9, "rss-short": 6.1}
"""The paper's training-time speed-ups over OFA-PS (Fig. 4, averaged over datasets)."""


@dataclass(frozen=True)
class PlannedRun:
    """One training run of the reproduction: ``key`` names its directory, ``train`` holds the
    ``TrainConfig`` fields that differ from the defaults, ``figure`` the report it belongs to."""

    key: str
    label: str
    figure: str
    train: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ReproduceOptions:
    """Everything that defines a reproduction (``device`` and ``quiet`` do not: a resumed
    reproduction may run elsewhere)."""

    dataset: str = "fmnist"
    scale: float = 1.0
    seed: int = 0
    data_dir: str | None = None
    download: bool = False
    train_subset: int | None = None
    test_subset: int | None = None
    per_bucket: int = 100
    buckets: tuple[float, ...] = PAPER_BUCKETS
    tolerance: float = 0.5
    calib_n: int = 2000
    ablations: bool = False

    def defining(self) -> dict:
        """The options a resumed reproduction must share (``ablations`` may be added later)."""
        d = asdict(self)
        d.pop("ablations")
        d.pop("download")
        d["buckets"] = [float(b) for b in self.buckets]
        return d


def scaled_epochs(dataset: str, scale: float) -> dict[str, object]:
    """PS phase epochs, RSS and RSS-short epochs for Table 1 x ``scale``."""
    from .train import PAPER_EPOCHS

    if scale <= 0:
        raise OfaError(f"scale={scale} must be positive")
    if dataset not in PAPER_EPOCHS:
        raise OfaError(f"no Table 1 epochs for dataset {dataset!r}; choose one of {', '.join(PAPER_EPOCHS)}")
    ps = [max(1, round(e * scale)) for e in PAPER_EPOCHS[dataset]["ps"]]
    return {"ps": ps, "rss": sum(ps), "rss-short": ps[0]}


def plan(dataset: str, scale: float, ablations: bool = False) -> list[PlannedRun]:
    """The runs: PS, RSS, RSS-short, then (ablations) Figs. 5, 6 and 7 of the paper."""
    epochs = scaled_epochs(dataset, scale)
    n = epochs["rss"]
    runs = [
        PlannedRun("ps", "OFA-PS", "main", {"method": "ps", "ps_epochs": epochs["ps"]}),
        PlannedRun("rss", "RSS", "main", {"method": "rss", "epochs": n}),
        PlannedRun("rss-short", "RSS-short", "main", {"method": "rss", "epochs": epochs["rss-short"]}),
    ]
    if ablations:
        runs += [
            PlannedRun("rss-per-batch-1", "RSS per-batch 1", "fig5", {"method": "rss", "per_batch": 1, "epochs": n}),
            PlannedRun("rss-per-batch-2", "RSS per-batch 2", "fig5", {"method": "rss", "per_batch": 2, "epochs": n}),
        ]
        runs += [PlannedRun(f"fixed-{which}", f"{which} only", "fig6",
                            {"method": "fixed", "subnet": which, "epochs": n})
                 for which in ("smallest", "middle", "largest")]
        runs += [PlannedRun(order, order, "fig7", {"method": order, "epochs": n})
                 for order in ("max-then-min", "min-then-max", "alternating")]
    return runs


FIGURES = {
    "fig5": ("ablations/fig5-sampling", "Fig. 5 - per-epoch vs per-batch sampling (1 or 2 subnets per step)",
             ("rss",)),
    "fig6": ("ablations/fig6-single", "Fig. 6 - training a single subnet (smallest / middle / largest)", ("rss",)),
    "fig7": ("ablations/fig7-two", "Fig. 7 - two-subnet sequences (constant learning rate)", ("rss",)),
}


def reproduce(
    options: ReproduceOptions,
    out: str | Path,
    *,
    device: str = "auto",
    progress: bool = True,
    command: Sequence[str] | None = None,
) -> dict:
    """Train, evaluate and report every planned run into ``out`` (see the module docstring);
    returns the verdict (also in ``out/verdict.json``). ``command`` (the CLI's argv) is
    recorded in the manifest, one entry per session."""
    from .evaluate.runs import evaluate_run, resolve_device
    from .report import build_report
    from .train import TrainConfig, train

    out = Path(out)
    device = resolve_device(device)
    runs = plan(options.dataset, options.scale, options.ablations)
    manifest = _open_manifest(out, options, runs, command)
    log = _Log(progress)
    session_start = time.perf_counter()
    wall_before = float(manifest.get("wall_time_s", 0.0))

    def save() -> None:
        manifest["wall_time_s"] = round(wall_before + time.perf_counter() - session_start, 1)
        atomic_write_json(out / MANIFEST, manifest)

    for i, planned in enumerate(runs, 1):
        status = manifest["runs"].setdefault(planned.key, {"label": planned.label, "figure": planned.figure})
        run_dir = out / "runs" / planned.key
        log(f"[{i}/{len(runs)}] {planned.label}: training ({_describe(planned.train)})")
        config = TrainConfig(
            dataset=options.dataset, data_dir=options.data_dir, download=options.download, seed=options.seed,
            device=device, out=str(run_dir), name=planned.key, train_subset=options.train_subset,
            test_subset=options.test_subset, quiet=not progress, **planned.train,
        )
        train(config, progress=progress)
        status["trained"] = True
        save()
        log(f"[{i}/{len(runs)}] {planned.label}: evaluating {options.per_bucket} subnets x "
            f"{len(options.buckets)} buckets")
        path, result = evaluate_run(
            run_dir, buckets=options.buckets, per_bucket=options.per_bucket, tolerance=options.tolerance,
            seed=options.seed, calib_n=options.calib_n, data_dir=options.data_dir, test_subset=options.test_subset,
            download=options.download, device=device, reuse=True, progress=progress,
        )
        status["eval"] = str(path.relative_to(out))
        save()

    log("writing the reports")
    main_dirs = [out / "runs" / r.key for r in runs if r.figure == "main"]
    verdict = compare(main_dirs[0], main_dirs[1], main_dirs[2])
    verdict["device"] = describe_device(device)
    labels = {r.key: r.label for r in runs}
    build_report(main_dirs, out / "report", title=f"{options.dataset}: OFA-PS vs RSS vs RSS-short "
                 f"(Table 1 epochs x {options.scale:g})", sections=[verdict_markdown(verdict)], labels=labels)
    for key, (folder, title, extra) in FIGURES.items():
        members = [r.key for r in runs if r.figure == key]
        if members:
            build_report([out / "runs" / k for k in (*extra, *members)], out / folder,
                         title=f"{options.dataset}: {title}", labels=labels)
    manifest["finished"] = _now()
    save()
    verdict["wall_time_s"] = manifest["wall_time_s"]
    atomic_write_json(out / "verdict.json", verdict)
    log(f"done in {manifest['wall_time_s']:.0f}s: {out / 'report' / 'report.md'}")
    return verdict


def compare(ps_dir: Path, rss_dir: Path, short_dir: Path) -> dict:
    """The verdict: per bucket, does RSS (and RSS-short) beat PS on the mean, is its spread
    narrower; and the training-time ratios against the paper's."""
    from .report.results import load_run

    ps, rss, short = (load_run(d, need_eval=True) for d in (ps_dir, rss_dir, short_dir))
    by = {r.name: {b["mflops"]: b for b in r.eval["buckets"] if b["n"]} for r in (ps, rss, short)}
    rows = []
    for mflops in sorted(by[ps.name]):
        p = by[ps.name][mflops]
        row = {"mflops": mflops, "n": p["n"], "ps_mean": p["mean"], "ps_spread": p["max"] - p["min"]}
        for prefix, r in (("rss", rss), ("rss_short", short)):
            b = by[r.name].get(mflops)
            if b is None:
                continue
            row.update({f"{prefix}_mean": b["mean"], f"{prefix}_spread": b["max"] - b["min"],
                        f"{prefix}_beats_ps": b["mean"] > p["mean"],
                        f"{prefix}_narrower": (b["max"] - b["min"]) < (p["max"] - p["min"])})
        rows.append(row)
    times = {"ps": ps.wall_time_s, "rss": rss.wall_time_s, "rss-short": short.wall_time_s}
    ratios = {k: (times["ps"] / times[k] if times["ps"] and times[k] else None) for k in ("rss", "rss-short")}
    return {
        "buckets": rows,
        "rss_beats_ps": sum(r.get("rss_beats_ps", False) for r in rows),
        "rss_narrower": sum(r.get("rss_narrower", False) for r in rows),
        "rss_short_beats_ps": sum(r.get("rss_short_beats_ps", False) for r in rows),
        "n_buckets": len(rows),
        "train_wall_time_s": times,
        "time_ratio_vs_ps": ratios,
        "paper_time_ratio_vs_ps": PAPER_TIME_RATIOS,
    }


def describe_device(device: str) -> str:
    """``cpu (2 threads, x86_64)`` or the CUDA device's name: what the wall times mean."""
    import platform

    import torch

    if device.startswith("cuda"):
        return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    threads = torch.get_num_threads()
    return f"cpu ({threads} thread{'s' if threads != 1 else ''}, {platform.machine()})"


def verdict_markdown(v: dict) -> str:
    """The verdict as a Markdown section (accuracies in %, spreads in percentage points)."""

    def pct(x):
        return "-" if x is None else f"{100 * x:.2f}"

    def yes(x):
        return "-" if x is None else "**yes**" if x else "no"

    lines = [
        "## Verdict: does the paper's finding hold?",
        f"RSS's mean accuracy beats OFA-PS's in **{v['rss_beats_ps']} of {v['n_buckets']}** buckets, its "
        f"spread (best minus worst subnet) is narrower in **{v['rss_narrower']} of {v['n_buckets']}**; "
        f"RSS-short beats OFA-PS in {v['rss_short_beats_ps']} of {v['n_buckets']}.",
        "",
        "| MFLOPs | n | PS mean | RSS mean | RSS > PS | RSS-short mean | RSS-short > PS | PS spread | RSS spread "
        "| RSS narrower |",
        "|---:|---:|---:|---:|:-:|---:|:-:|---:|---:|:-:|",
    ]
    for r in v["buckets"]:
        lines.append(f"| {r['mflops']:g} | {r['n']} | {pct(r['ps_mean'])} | {pct(r.get('rss_mean'))} | "
                     f"{yes(r.get('rss_beats_ps'))} | {pct(r.get('rss_short_mean'))} | "
                     f"{yes(r.get('rss_short_beats_ps'))} | {pct(r['ps_spread'])} | {pct(r.get('rss_spread'))} | "
                     f"{yes(r.get('rss_narrower'))} |")
    lines += ["", "| training time | measured | speed-up vs OFA-PS | paper's speed-up |", "|---|---:|---:|---:|"]
    t, ratio = v["train_wall_time_s"], v["time_ratio_vs_ps"]
    for key, label in (("ps", "OFA-PS"), ("rss", "RSS"), ("rss-short", "RSS-short")):
        measured = f"{t[key]:.1f} s" if t.get(key) else "-"
        speed = "1.00x" if key == "ps" else (f"{ratio[key]:.2f}x" if ratio.get(key) else "-")
        paper = "1.0x" if key == "ps" else f"{PAPER_TIME_RATIOS[key]}x"
        lines.append(f"| {label} | {measured} | {speed} | {paper} |")
    if v.get("device"):
        lines += ["", f"Wall times measured on {v['device']}; the paper's on an RTX 3080 GPU."]
    return "\n".join(lines)


def _open_manifest(out: Path, options: ReproduceOptions, runs: Sequence[PlannedRun],
                   command: Sequence[str] | None) -> dict:
    path = out / MANIFEST
    if path.is_file():
        manifest = read_json(path, "reproduction manifest")
        if not isinstance(manifest, dict) or not isinstance(manifest.get("options"), dict) \
                or not isinstance(manifest.get("runs", {}), dict):
            raise OfaError(f"{path} is not a reproduction manifest; remove it or choose another --out")
        if manifest.get("options") != options.defining():
            theirs = manifest.get("options", {})
            diff = ", ".join(f"{k}={theirs.get(k)!r}" for k, v in options.defining().items() if theirs.get(k) != v)
            raise OfaError(f"{out} holds a reproduction with other options ({diff}); use those or another --out")
    elif out.exists() and any(out.iterdir()):
        raise OfaError(f"{out} exists, is not empty and holds no {MANIFEST}; choose another --out")
    else:
        manifest = {"options": options.defining(), "started": _now(), "runs": {}, "wall_time_s": 0.0}
    if command:
        manifest.setdefault("commands", []).append({"at": _now(), "argv": list(command)})
    manifest["plan"] = [asdict(r) for r in runs]
    manifest.pop("finished", None)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, manifest)
    return manifest


def _describe(train: dict) -> str:
    return ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in train.items())


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


class _Log:
    """One line per step on stderr (rich), silent when ``progress`` is off."""

    def __init__(self, enabled: bool) -> None:
        self.console = None
        if enabled:
            from rich.console import Console

            self.console = Console(file=sys.stderr)

    def __call__(self, line: str) -> None:
        if self.console is not None:
            self.console.print(f"[bold cyan]reproduce[/] {line}", highlight=False)
