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

Several seeds (``seeds``): every method is trained once per seed (``runs/<key>`` for the first
seed, ``runs/<key>-s<seed>`` for the others; ablations for the first seed only) and every run
is evaluated on the same subnets, drawn by the first seed; ``verdict.json``/``verdict.md``
give per-bucket means and bootstrap intervals (``ofa_deploy.reproduce_seeds``).

Resumable: calling it again with the same options continues where it stopped - finished
runs and evaluations are reused, an interrupted run resumes from its last checkpoint. The
seed list may grow between calls (its first seed, the evaluation seed, may not change).
"""

from __future__ import annotations

import datetime as _dt
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

from .buckets import PAPER_BUCKETS
from .errors import OfaError
from .io import atomic_write_json, atomic_write_text, read_json
from .outputs import REPRODUCE_MANIFEST, REPRODUCTION, check_own_dir
from .report.verdict import PAPER_TIME_RATIOS, verdict_markdown
from .reproduce_seeds import aggregate, mean_times, run_key

MANIFEST = REPRODUCE_MANIFEST
FIDELITY_DEFAULT = "ofa"


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
    reproduction may run elsewhere). ``seeds``: the training seeds; the first also draws the
    evaluated subnets. ``fidelity``: the preset of training choices (``ofa``, ``released-code``;
    None = ``ofa``, or ``custom`` with ``switches``); ``switches``: explicit choices as (name,
    value) pairs (``ofa_deploy.train.fidelity.SWITCHES``), checked against the preset."""

    dataset: str = "fmnist"
    scale: float = 1.0
    seeds: tuple[int, ...] = (0,)
    data_dir: str | None = None
    download: bool = False
    train_subset: int | None = None
    test_subset: int | None = None
    per_bucket: int = 100
    buckets: tuple[float, ...] = PAPER_BUCKETS
    tolerance: float = 0.5
    calib_n: int = 2000
    ablations: bool = False
    fidelity: str | None = None
    switches: tuple[tuple[str, object], ...] = ()

    def __post_init__(self) -> None:
        seeds = tuple(self.seeds)
        if not seeds or len(set(seeds)) != len(seeds) or not all(isinstance(x, int) and x >= 0 for x in seeds):
            raise OfaError(f"seeds {list(seeds)} must be distinct non-negative integers, at least one")
        object.__setattr__(self, "seeds", seeds)
        switches = tuple((k, v) for k, v in dict(self.switches).items() if v is not None)
        object.__setattr__(self, "switches", switches)
        object.__setattr__(self, "fidelity", self.choices().preset)  # validates; None -> ofa or custom

    def choices(self):
        """The six fidelity choices every run of this reproduction trains with."""
        from .train.fidelity import resolve_fidelity

        return resolve_fidelity(self.fidelity, **dict(self.switches))

    def train_fields(self) -> dict:
        """``TrainConfig`` keyword arguments of the fidelity choices."""
        return {"fidelity": self.fidelity, **dict(self.switches)}

    @property
    def eval_seed(self) -> int:
        return self.seeds[0]

    def defining(self) -> dict:
        """The options a resumed reproduction must share (``ablations`` and more seeds may be
        added later; ``seed`` is the first seed, which draws the evaluated subnets)."""
        d = asdict(self)
        d.pop("ablations")
        d.pop("download")
        d.pop("seeds")
        d.pop("switches")
        d["seed"] = self.eval_seed
        if self.fidelity not in (FIDELITY_DEFAULT, "released-code"):  # a preset implies its switches
            d["fidelity_switches"] = self.choices().switches()
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
    # SIGTERM mid-training: the same reproduce continues the run (not `train --resume`)
    resume_with = (f"{shlex.join(command)} (the same command: it resumes its runs)" if command
                   else f"the same reproduce call on {out} (it resumes its runs)")
    wall_before = float(manifest.get("wall_time_s", 0.0))

    def save() -> None:
        manifest["wall_time_s"] = round(wall_before + time.perf_counter() - session_start, 1)
        atomic_write_json(out / MANIFEST, manifest)

    seeds = options.seeds
    jobs = [(s, r) for s in seeds for r in runs if r.figure == "main" or s == options.eval_seed]
    evals: dict[int, dict[str, dict]] = {s: {} for s in seeds}
    for i, (seed, planned) in enumerate(jobs, 1):
        key = run_key(planned.key, seed, seeds)
        status = manifest["runs"].setdefault(key, {"label": planned.label, "figure": planned.figure, "seed": seed})
        run_dir = out / "runs" / key
        step = f"[{i}/{len(jobs)}] {planned.label}" + (f", seed {seed}" if len(seeds) > 1 else "")
        log(f"{step}: training ({_describe(planned.train)})")
        config = TrainConfig(
            dataset=options.dataset, data_dir=options.data_dir, download=options.download, seed=seed,
            device=device, out=str(run_dir), name=key, train_subset=options.train_subset,
            test_subset=options.test_subset, quiet=not progress, **options.train_fields(), **planned.train,
        )
        train(config, progress=progress, resume_with=resume_with)
        status["trained"] = True
        save()
        log(f"{step}: evaluating {options.per_bucket} subnets x {len(options.buckets)} buckets")
        path, result = evaluate_run(
            run_dir, buckets=options.buckets, per_bucket=options.per_bucket, tolerance=options.tolerance,
            seed=options.eval_seed, calib_n=options.calib_n, data_dir=options.data_dir,
            test_subset=options.test_subset, download=options.download, device=device, reuse=True,
            progress=progress,
        )
        status["eval"] = str(path.relative_to(out))
        evals[seed][planned.key] = result
        save()

    log("writing the reports")
    per_seed = [{"seed": s, **compare(*(out / "runs" / run_key(k, s, seeds) for k in ("ps", "rss", "rss-short")))}
                for s in seeds]
    verdict = {
        "fidelity": options.fidelity,
        "fidelity_choices": options.choices().switches(),
        **aggregate(evals),
        **mean_times(per_seed),
        "paper_time_ratio_vs_ps": PAPER_TIME_RATIOS,
        "device": describe_device(device),
        "per_seed": per_seed,
    }
    section = verdict_markdown(verdict)
    main_dirs = [out / "runs" / r.key for r in runs if r.figure == "main"]
    labels = {r.key: r.label for r in runs}
    figures_of = "" if len(seeds) == 1 else f"; figures and tables below: seed {options.eval_seed}"
    build_report(main_dirs, out / "report", title=f"{options.dataset}: OFA-PS vs RSS vs RSS-short "
                 f"(Table 1 epochs x {options.scale:g}, fidelity {options.fidelity}{figures_of})",
                 sections=[section], labels=labels)
    for key, (folder, title, extra) in FIGURES.items():
        members = [r.key for r in runs if r.figure == key]
        if members:
            build_report([out / "runs" / k for k in (*extra, *members)], out / folder,
                         title=f"{options.dataset}: {title}", labels=labels)
    manifest["finished"] = _now()
    save()
    verdict["wall_time_s"] = manifest["wall_time_s"]
    atomic_write_text(out / "verdict.md", section + "\n")
    atomic_write_json(out / "verdict.json", verdict)
    log(f"done in {manifest['wall_time_s']:.0f}s: {out / 'report' / 'report.md'}")
    return verdict


def compare(ps_dir: Path, rss_dir: Path, short_dir: Path) -> dict:
    """One seed's point comparison (no intervals): per bucket, does RSS (and RSS-short) beat
    PS on the mean, is its spread narrower; and the training-time ratios."""
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


def _open_manifest(out: Path, options: ReproduceOptions, runs: Sequence[PlannedRun],
                   command: Sequence[str] | None) -> dict:
    # before anything is written: only an earlier reproduction (resumed) or an empty folder,
    # never the user's files, a training run, a catalog or the data it reads
    check_own_dir(out, REPRODUCTION, inputs=[("data directory", options.data_dir)])
    path = out / MANIFEST
    if path.is_file():
        manifest = read_json(path, "reproduction manifest")
        if not isinstance(manifest, dict) or not isinstance(manifest.get("options"), dict) \
                or not isinstance(manifest.get("runs", {}), dict):
            raise OfaError(f"{path} is not a reproduction manifest; remove it or choose another --out")
        # a manifest written before fidelity presets existed was made by the ofa preset
        theirs = {"fidelity": FIDELITY_DEFAULT, **manifest["options"]}
        if theirs != options.defining():
            diff = ", ".join(f"{k}={theirs.get(k)!r}" for k, v in options.defining().items() if theirs.get(k) != v)
            raise OfaError(f"{out} holds a reproduction with other options ({diff}); use those or another --out")
    else:
        manifest = {"options": options.defining(), "started": _now(), "runs": {}, "wall_time_s": 0.0}
    manifest["options"] = options.defining()
    if command:
        manifest.setdefault("commands", []).append({"at": _now(), "argv": list(command)})
    manifest["seeds"] = list(options.seeds)
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
