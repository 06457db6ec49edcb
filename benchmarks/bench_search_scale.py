"""``ofa-deploy search`` on one process vs two torchrun ranks (issue 33, item 3: >= 1.7x with
2 processes). Prints JSON.

Three set-ups of the same search (same run, seed, evaluations), run in turn ``--repeats``
times, interleaved so that a change in the machine's load hits all of them alike:

* ``1proc-1thread``: ``python -m ofa_deploy search ...`` with ``OMP_NUM_THREADS=1``;
* ``1proc-2threads``: the same with ``OMP_NUM_THREADS=2``;
* ``2proc-1thread``: ``torchrun --standalone --nproc-per-node 2 -m ofa_deploy search ...``,
  gloo, one torch thread per rank.

Per run: the command's wall time (start-up, data loading and torchrun included), the
search's own time (``seconds`` in history.json: evaluations + predictor + NSGA-II) and the
time inside the evaluations (``execution.evaluate_seconds``), each as evaluations/s; the
load average before and after, and the CPU seconds the command used (``cores_used`` =
CPU / wall: how many of the machine's cores it actually got). The picks of every run are compared with the first one's
(two ranks must pick what one process picks at the same thread count).

``--pause-pid PID`` stops a background job (``SIGSTOP``) for the timing and always resumes
it (``SIGCONT``: on return, on an exception, on SIGTERM/SIGINT).

    python benchmarks/bench_search_scale.py --run /tmp/scale-qs/run --evaluations 40 --repeats 2 \\
        --pause-pid "$(pgrep -f 'ofa_deploy train')" --out results/search/scale-2proc.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parents[1]
SETUPS = ("1proc-1thread", "1proc-2threads", "2proc-1thread")
HOW = {"execution", "seconds", "command"}


def command(setup: str, run: str, out: Path, args: list[str]) -> tuple[list[str], dict[str, str]]:
    threads = "2" if setup == "1proc-2threads" else "1"
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads,
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    tail = ["-m", "ofa_deploy", "search", run, *args, "--out", str(out)]
    if setup.startswith("2proc"):
        torchrun = Path(sys.executable).with_name("torchrun")
        return [str(torchrun if torchrun.exists() else shutil.which("torchrun")), "--standalone",
                "--nproc-per-node", "2", *tail], env
    return [sys.executable, *tail], env


def once(setup: str, run: str, args: list[str], work: Path, index: int) -> dict[str, Any]:
    out = work / f"{setup}-{index}"
    cmd, env = command(setup, run, out, args)
    load_before = os.getloadavg()
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    load_after = os.getloadavg()
    # CPU seconds of the command and its processes (torchrun's ranks too: it waits for them)
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    if proc.returncode != 0:
        raise SystemExit(f"{setup} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    history = json.loads((out / "history.json").read_text())
    n, ex = history["evaluations"], history["execution"]
    return {
        "setup": setup, "repeat": index, "evaluations": n, "wall_s": wall,
        "evaluations_per_s": n / wall,
        # how many cores the command got on average: <= 1 for one thread, <= 2 for two ranks;
        # on a shared machine, less than that is other processes' share
        "cpu_s": cpu, "cores_used": cpu / wall,
        "search_s": history["seconds"], "search_evaluations_per_s": n / history["seconds"],
        "evaluate_s": ex["evaluate_seconds"], "evaluate_evaluations_per_s": n / ex["evaluate_seconds"],
        "ranks": ex["ranks"], "torch_threads": ex["torch_threads"],
        "load_before": list(load_before), "load_after": list(load_after),
        "found": {k: v for k, v in history.items() if k not in HOW},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, help="a training run directory")
    ap.add_argument("--evaluations", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--max-mflops", type=float, action="append", default=None)
    ap.add_argument("--generations", type=int, default=60)
    ap.add_argument("--calib-images", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--pause-pid", type=int, default=None, help="a background job to SIGSTOP while timing")
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()
    args = ["--target", "cpu", "--evaluations", str(a.evaluations), "--generations", str(a.generations),
            "--calib-images", str(a.calib_images), "--seed", str(a.seed)]
    for b in a.max_mflops or [6.0, 8.0, 10.0]:
        args += ["--max-mflops", str(b)]

    paused: Optional[int] = a.pause_pid

    def resume(*_: Any) -> None:
        if paused is not None:
            try:
                os.kill(paused, signal.SIGCONT)
            except ProcessLookupError:
                pass

    def on_signal(signum: int, frame: Any) -> None:
        resume()
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    rows = []
    uptime_before = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-search-scale-") as tmp:
        try:
            if paused is not None:
                os.kill(paused, signal.SIGSTOP)
            for i in range(a.repeats):
                for setup in SETUPS:
                    rows.append(once(setup, a.run, args, Path(tmp), i))
                    print(json.dumps({k: v for k, v in rows[-1].items() if k != "found"}), file=sys.stderr)
        finally:
            resume()
    uptime_after = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    same = all(r["found"] == rows[0]["found"] for r in rows if r["torch_threads"] == rows[0]["torch_threads"])
    for r in rows:
        r.pop("found")

    def best(setup: str, key: str) -> float:
        return min(r[key] for r in rows if r["setup"] == setup)

    summary = {}
    summary["cores_used"] = {s: max(r["cores_used"] for r in rows if r["setup"] == s) for s in SETUPS}
    for key in ("wall_s", "search_s", "evaluate_s"):
        one = best("1proc-1thread", key)
        summary[key] = {s: best(s, key) for s in SETUPS}
        summary[key]["speedup_2proc_vs_1proc_1thread"] = one / best("2proc-1thread", key)
        summary[key]["speedup_2proc_vs_1proc_2threads"] = best("1proc-2threads", key) / best("2proc-1thread", key)
    result = {
        "benchmark": "search-scale",
        "command": " ".join(["python", *sys.argv]),
        "search_args": args,
        "run": a.run,
        "machine": {"host": platform.node(), "cpus": os.cpu_count(), "python": platform.python_version()},
        "uptime_before": uptime_before, "uptime_after": uptime_after,
        "background_job_paused": a.pause_pid,
        "wall_time_s": time.perf_counter() - started,
        "same_picks_1thread_runs": same,
        "best_of_repeats": summary,
        "runs": rows,
    }
    text = json.dumps(result, indent=2)
    print(text)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        tmp_out = a.out.with_name(f".{a.out.name}.{os.getpid()}.tmp")
        tmp_out.write_text(text + "\n")
        os.replace(tmp_out, a.out)


if __name__ == "__main__":
    main()
