"""``ofa-deploy quickstart``: the whole pipeline on the bundled ``digits`` data, on a CPU.

train (RSS) -> evaluate the population per MFLOPs bucket -> export the best subnet of each
bucket to ONNX (parity-checked) -> measure each on ``cpu`` -> catalog -> report.

Every stage is idempotent, so an interrupted quickstart run again continues where it
stopped: training resumes from its last epoch, an evaluation with the same parameters is
reused, the catalog does no work twice, and the report is rewritten.
"""

from __future__ import annotations

import os
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

# before anything imports torch: see ofa_deploy/train/__init__.py
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .buckets import PAPER_BUCKETS
from .errors import OfaError  # noqa: E402
from .io import atomic_write, atomic_write_json  # noqa: E402
from .space import Subnet  # noqa: E402

# The two sizes, in one place. "full" is meant to take one to two minutes on 2 CPU cores;
# "fast" is the sub-minute smoke version the tests run. "full" trains at lr 0.05 rather than
# the paper's 0.01: measured on digits (seed 0, 3 subnets per bucket, all 1,437 training
# images), 10 x 0.05 gave bucket means 92.2-94.4 % (worst subnet 90.3 %) in 0.67x the CPU
# time of 15 x 0.01 (92.0-94.7 %, worst 89.2 %); 8 x 0.05 fell to 89.0 % and 8 x 0.1 to 88.3 %.
# "val_size" holds that many training images out as the validation split: the best subnet of
# each bucket is chosen there and the int8 bound (export --max-drop) measured there, so the
# test split only reports. "full" holds out as many as the test split has (360), so that one
# image weighs the same (0.28 points) on both; on the 1,077 images left, 10 epochs fell to
# bucket means 88.7-91.6 % (validation), 13 (about the steps 10 took on 1,437) gave 91.8-94.6 %.
SETTINGS: dict[str, dict[str, Any]] = {
    "full": {
        "epochs": 13,
        "lr": 0.05,
        "train_subset": None,
        "val_size": 360,
        "test_subset": None,
        "per_bucket": 3,
        "calib_n": 500,
        # 0.3 s per attempt still times 300-900 runs of these 0.3-1.5 ms models
        "measure": {"warmup_s": 0.1, "min_iterations": 50, "min_time_s": 0.3},
    },
    "fast": {
        "epochs": 1,
        "lr": 0.05,
        "train_subset": 192,
        "val_size": 100,
        "test_subset": 100,
        "per_bucket": 1,
        "calib_n": 128,
        "measure": {"warmup_s": 0.02, "min_iterations": 10, "min_time_s": 0.05},
    },
}
DATASET = "digits"
NUM_CLASSES = 10
TARGET = "cpu"
STAGES = ("train", "evaluate", "catalog", "report")
EVAL_NAME = "quickstart"


@dataclass
class Paths:
    out: Path

    @property
    def run(self) -> Path:
        return self.out / "run"

    @property
    def catalog(self) -> Path:
        return self.out / "catalog.db"

    @property
    def report(self) -> Path:
        return self.out / "report"

    @property
    def summary(self) -> Path:
        return self.out / "summary.json"


def quickstart(
    out: str | Path = "quickstart",
    *,
    device: str = "auto",
    fast: bool = False,
    seed: int = 0,
    on_stage: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
    """Run the pipeline into ``out`` and return its summary (also ``out/summary.json``).

    ``on_stage(stage, done, total)`` reports progress inside a stage (one of ``STAGES``).
    """
    from .catalog import Catalog
    from .catalog.entries import entries, pareto
    from .catalog.html import write_catalog_html
    from .catalog.plot import plot_catalog
    from .evaluate.runs import evaluate_run, resolve_device
    from .outputs import QUICKSTART, check_own_dir
    from .profile import Protocol
    from .report.build import build_report
    from .search.build import build_catalog
    from .targets import load_target
    from .train import TrainConfig, read_summary, train

    settings = SETTINGS["fast" if fast else "full"]
    paths = Paths(check_own_dir(out, QUICKSTART))  # its own folder (rerun to resume), never the user's
    say = on_stage or (lambda stage, done, total: None)
    device = resolve_device(device)
    started = time.perf_counter()

    say("train", 0, settings["epochs"])
    # one torch thread on a CPU whatever $OMP_NUM_THREADS says (train/threads.py: the
    # fastest for these tiny batches), so a quickstart run and its resume are the same bits
    # on any machine
    config = TrainConfig(dataset=DATASET, method="rss", epochs=settings["epochs"], lr=settings["lr"], seed=seed,
                         device=device, out=str(paths.run), train_subset=settings["train_subset"],
                         val_size=settings["val_size"], test_subset=settings["test_subset"], quiet=True,
                         threads=1)
    train(config, progress=False, on_epoch=lambda epoch, total: say("train", epoch, total))
    trained = read_summary(paths.run)

    say("evaluate", 0, len(PAPER_BUCKETS) * settings["per_bucket"])
    _, evaluation = evaluate_run(
        paths.run, per_bucket=settings["per_bucket"], seed=seed, calib_n=settings["calib_n"], device=device,
        split="val", name=EVAL_NAME, reuse=True, progress=False,
        on_subnet=lambda done, total, _: say("evaluate", done, total),
    )
    representatives = best_per_bucket(evaluation)

    target = load_target(TARGET)
    built = build_catalog(
        paths.run, target, paths.catalog, candidates=representatives, chosen_on=evaluation.get("split", "test"),
        seed=seed, calib_n=settings["calib_n"], protocol=Protocol.from_target(target, **settings["measure"]),
        progress=lambda what, done, total: say("catalog", done, total),
    )
    with Catalog(paths.catalog) as cat:
        items = entries(cat, target.name, dataset=DATASET)
    if not items:
        raise OfaError(f"the catalog {paths.catalog} has no measured entry for {target.name}")

    say("report", 0, 1)
    accuracy_note = fast_note(settings) if fast else None
    report = build_report([paths.run], paths.report, eval_name=EVAL_NAME,
                          title="ofa-deploy quickstart: RSS on digits",
                          sections=([f"**Accuracy:** {accuracy_note}"] if accuracy_note else [])
                          + [_catalog_section(items, paths.catalog, target.name)])
    plot_catalog(items, paths.report / "pareto.png", target=target.name)
    latency_vs_mflops(items, paths.report / "latency_vs_mflops.png", target=target.name)
    say("report", 1, 1)

    front = pareto(items)
    from .catalog.entries import unstable_note

    summary = {
        "out": str(paths.out),
        "run": str(paths.run),
        "catalog": str(paths.catalog),
        "report": str(paths.report / "report.md"),
        "figures": sorted(str(p) for p in paths.report.glob("*.png")),
        "catalog_html": str(write_catalog_html(paths.catalog, paths.out / "catalog.html")),
        "train_wall_time_s": trained.get("train_wall_time_s"),
        "buckets": evaluation["buckets"],
        # the split the buckets were measured on (and each bucket's model chosen on); the
        # catalog's accuracies are on the test split, read once for the chosen models
        "buckets_split": evaluation["split"],
        "buckets_images": evaluation.get("test_images"),
        "catalog_entries": len(items),
        "pareto": [{"subnet": e["key"], "mflops": e["mflops"], "accuracy": e["accuracy"],
                    "p90_ms": e["latency_ms"]["p90"], "onnx": e["onnx"], "unstable": e["unstable"]} for e in front],
        # entries whose latency stayed above the CoV threshold, and what to do about them
        "unstable_entries": sum(1 for e in items if e["unstable"]),
        "unstable_note": unstable_note(items, catalog=paths.catalog, target=target.name),
        "catalog_work": {k: built.get(k) for k in ("evaluated", "exported", "measured")},
        "report_files": report.get("files", []),
        "wall_time_s": round(time.perf_counter() - started, 1),
        "fast": fast,
        # why --fast's accuracy is near chance (None for the full quickstart)
        "accuracy_note": accuracy_note,
    }
    atomic_write_json(paths.summary, summary)
    return summary


def fast_note(settings: dict[str, Any] | None = None) -> str:
    """Why ``--fast`` reports accuracy near chance, and what the full quickstart reaches."""
    settings = settings or SETTINGS["fast"]
    epochs = settings["epochs"]
    return (f"--fast trains {epochs} epoch{'' if epochs == 1 else 's'} on {settings['train_subset']} images only "
            f"to check the pipeline end to end, so accuracy near chance ({100 / NUM_CLASSES:.0f} % for "
            f"{NUM_CLASSES} classes) is expected; the full quickstart (without --fast, one to two minutes on 2 CPU "
            f"cores) reaches about 92-95 % per bucket.")


def best_per_bucket(evaluation: dict[str, Any]) -> list[Subnet]:
    """The most accurate evaluated subnet of each MFLOPs bucket, smallest bucket first."""
    best: dict[float, dict[str, Any]] = {}
    for row in evaluation["subnets"]:
        bucket = row["bucket"]
        if bucket not in best or row["accuracy"] > best[bucket]["accuracy"]:
            best[bucket] = row
    return [Subnet.from_dict(best[b]["subnet"]) for b in sorted(best)]


def latency_vs_mflops(items: list[dict[str, Any]], out: Path, *, target: str) -> Path:
    """Measured p50 latency (with p10-p90 whiskers: p50 to p90 here) against MFLOPs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    items = sorted(items, key=lambda e: e["mflops"])
    x = [e["mflops"] for e in items]
    p50 = [e["latency_ms"]["p50"] for e in items]
    p90 = [e["latency_ms"]["p90"] for e in items]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.errorbar(x, p50, yerr=[[0] * len(x), [b - a for a, b in zip(p50, p90)]], fmt="o-", capsize=3,
                label="p50 (bar up to p90)")
    ax.set_xlabel("MFLOPs (MACs / 1e6)")
    ax.set_ylabel(f"latency on {target} (ms, batch 1)")
    ax.set_title(f"Measured latency vs MFLOPs on {target}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = atomic_write(out, lambda f: fig.savefig(f, format="png", dpi=120))
    plt.close(fig)
    return path


def _catalog_section(items: list[dict[str, Any]], catalog: Path | None = None, target: str = "cpu") -> str:
    from .catalog.entries import unstable_note

    lines = [f"## Catalog (target {target})", "",
             "| subnet | MFLOPs | accuracy | p50 ms | p90 ms | ONNX |", "|---|---:|---:|---:|---:|---|"]
    for e in sorted(items, key=lambda e: e["mflops"]):
        acc = "-" if e["accuracy"] is None else f"{100 * e['accuracy']:.1f}%"
        flag = " (unstable)" if e["unstable"] else ""
        lines.append(f"| `{e['key']}` | {e['mflops']:.2f} | {acc} | {e['latency_ms']['p50']:.3f}{flag} | "
                     f"{e['latency_ms']['p90']:.3f}{flag} | {Path(e['onnx']).name if e['onnx'] else '-'} |")
    note = unstable_note(items, catalog=catalog, target=target)
    lines += ["", f"**Unstable latency:** {note}" if note else
              "Every entry's latency is stable (CoV within the target's threshold)."]
    lines += ["", f"### Accuracy vs measured latency and vs MFLOPs on {target}", "",
              "Red: the Pareto front (no other entry is both faster and more accurate); circled: unstable latency.",
              "", f"![accuracy vs latency and MFLOPs on {target}, Pareto front](pareto.png)",
              "", f"### Measured latency vs MFLOPs on {target}", "",
              "Dots: p50 latency at batch 1; bars up to p90.",
              "", f"![latency vs MFLOPs on {target}](latency_vs_mflops.png)"]
    return "\n".join(lines)


def invoked_as(argv0: str | None = None, executable: str | None = None) -> str:
    """How to type ofa-deploy again in this shell: ``ofa-deploy`` when that name on PATH is the
    script that is running, else the script's path as it was typed (``.venv/bin/ofa-deploy``
    without an activated environment), or ``python -m ofa_deploy`` for ``python -m``."""
    import shlex
    import shutil

    argv0 = sys.argv[0] if argv0 is None else argv0
    executable = sys.executable if executable is None else executable
    script = Path(argv0)
    if script.name == "__main__.py" and script.parent.name == "ofa_deploy":
        on_path = shutil.which("python")
        same = on_path is not None and os.path.abspath(on_path) == os.path.abspath(executable)
        return f"{'python' if same else shlex.quote(executable)} -m ofa_deploy"
    if script.name != "ofa-deploy":  # called from Python (tests, a notebook): the documented name
        return "ofa-deploy"
    on_path = shutil.which("ofa-deploy")
    if on_path is not None and os.path.exists(argv0) and os.path.samefile(on_path, argv0):
        return "ofa-deploy"
    return shlex.quote(argv0)


def next_steps(out: Path, program: str | None = None) -> list[tuple[str, str]]:
    """What a user types next, for the final summary table: commands that run as shown in the
    shell that ran the quickstart (``program``: how ofa-deploy is typed there, see
    ``invoked_as``), except the device's, which assume ofa-deploy's device side installed there
    (docs/device.md)."""
    ofa = program or invoked_as()
    export = Path("export") / "digits-8m"
    return [
        ("Read the report", str(out / "report" / "report.md")),
        ("Open the catalog page in a browser", str(out / "catalog.html")),
        ("Pick a model by latency", f"{ofa} catalog select --catalog {out / 'catalog.db'} --target cpu "
                                    f"--max-latency-ms 2"),
        ("Train with OFA's Progressive Shrinking", f"{ofa} train --dataset digits --method ps --epochs 16 --lr 0.05 "
                                                   f"--val-size 360 --out runs/digits-ps"),
        ("Train on your images (DIR/<class>/*.png)", f"{ofa} train --dataset folder --data-dir DIR --out runs/mine"),
        ("Export for a Jetson", f"{ofa} export {out / 'run'} --mflops 8 --target jetson --out {export}"),
        ("...copy it to the Jetson; there", f"ofa-deploy build-engine {export} --target jetson"),
        ("...measure it there", f"ofa-deploy profile {export} --target jetson --json --out digits-8m-orin.json"),
        ("...and at home", f"{ofa} catalog import digits-8m-orin.json --catalog {out / 'catalog.db'}"),
    ]


class ProgressLines:
    """Progress as plain lines, for a log or a pipe (no terminal to draw bars on): a line when
    a stage starts, when a count completes, when its total changes, and in between at most
    every ``every_s`` seconds."""

    UNITS = {"train": " epochs", "evaluate": " subnets"}

    def __init__(self, stream: Any = None, every_s: float = 5.0, clock: Callable[[], float] = time.monotonic):
        self.stream, self.every_s, self.clock = stream, every_s, clock
        self.started = clock()
        self.shown: dict[str, tuple[float, int, int]] = {}  # stage -> (when, done, total) of its last line

    def __call__(self, stage: str, done: int, total: int) -> None:
        now = self.clock()
        last = self.shown.get(stage)
        if last is not None:
            when, last_done, last_total = last
            if (done, total) == (last_done, last_total):
                return
            if total == last_total and done < total and now - when < self.every_s:
                return
        self.shown[stage] = (now, done, total)
        what = f"{done}/{total}{self.UNITS.get(stage, '')}" if total else "started"
        print(f"quickstart: {stage:<8} {what} ({now - self.started:.0f} s)", file=self.stream or sys.stderr,
              flush=True)


def progress_display(enabled: bool, *, terminal: bool = True, stream: Any = None):
    """One rich progress display for the whole pipeline on a terminal (a bar per stage, on
    stderr), or ``ProgressLines`` where there is none (``terminal`` False)."""
    if not enabled:
        return nullcontext(lambda stage, done, total: None)
    if not terminal:
        return nullcontext(ProgressLines(stream))
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    class _Display:
        def __enter__(self):
            self.progress = Progress(TextColumn("{task.description:<10}"), BarColumn(), MofNCompleteColumn(),
                                     TimeElapsedColumn(), transient=False, console=Console(stderr=True))
            self.progress.__enter__()
            self.tasks = {s: self.progress.add_task(s, total=None, start=False) for s in STAGES}
            return self.update

        def update(self, stage: str, done: int, total: int) -> None:
            task = self.tasks[stage]
            self.progress.start_task(task)
            self.progress.update(task, completed=done, total=max(total, 1))

        def __exit__(self, *exc):
            return self.progress.__exit__(*exc)

    return _Display()

