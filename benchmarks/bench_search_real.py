"""The search vs best-of-N random on a real run, both chosen on validation, test reported (issue 33).

Per seed: ``search`` with ``--evaluations`` real evaluations (BN recalibrated on the run's
training split, accuracy on its validation hold-out) under each MFLOPs budget, and
best-of-``--random`` uniform subnets (the paper's RSS draw) chosen on the same validation
accuracy. Only after every seed's picks are fixed is the test split read, once, to score the
picks. Output: per budget, each method's test accuracy over seeds (mean, 95 % t-interval) and
the paired difference search - random with its interval, against the standard error of one
accuracy on the test split (binomial), so one can tell a difference from the noise.

Validation accuracies go to a journal (``--journal``, JSON, rewritten atomically after each
evaluation): an interrupted run resumes without re-evaluating a subnet (an evaluation is a
pure function of the checkpoint, the subnet and the calibration seed).

``--workers N`` evaluates each batch (a search round, a seed's random draw, the picks on the
test split) in N processes of one torch thread each (spawned; each loads the supernet and
the data): the values are those of one process at one thread, only sooner.

    python benchmarks/bench_search_real.py RUN --seeds 3 --evaluations 100 --random 100 \\
        --workers 2 --journal /tmp/journal.json > results/search/fmnist-real.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ofa_deploy.cost import mflops  # noqa: E402
from ofa_deploy.io import atomic_write_json  # noqa: E402
from ofa_deploy.search.encoding import Encoding  # noqa: E402
from ofa_deploy.search.engine import macs_objective, search  # noqa: E402

BUDGETS = (5.0, 6.0, 7.0, 8.0, 10.0, 12.0)


def t_interval(values: list[float]) -> dict:
    """Mean and 95 % Student-t interval (points)."""
    from scipy import stats

    a = np.asarray(values, dtype=float)
    mean = float(a.mean())
    if len(a) < 2:
        return {"mean": mean, "lo": None, "hi": None, "n": len(a)}
    half = float(stats.t.ppf(0.975, len(a) - 1) * a.std(ddof=1) / math.sqrt(len(a)))
    return {"mean": mean, "lo": mean - half, "hi": mean + half, "n": len(a)}


# What one evaluating process holds: the supernet, the run's choosing data, the test split
# once it is needed (``_setup``, ``_measure``), in the main process or in each worker.
_STATE: dict = {}


def _setup(run: str, calib_n: int, threads: int | None = None) -> None:
    import torch

    from ofa_deploy.search.splits import choice_data
    from ofa_deploy.weights import load_supernet

    if threads is not None:
        torch.set_num_threads(threads)
    supernet, config = load_supernet(run)
    _STATE.update(supernet=supernet, data=choice_data(config, seed=0), calib_n=calib_n, test=None)


def _measure(job: tuple[str, str]) -> tuple[str, float, float, int]:
    """(subnet text, "val" or "test") -> (text, top-1 %, seconds, images)."""
    from ofa_deploy.evaluate.bn import recalibrated_subnet
    from ofa_deploy.evaluate.metrics import evaluate_accuracy
    from ofa_deploy.specs import resolve_subnet

    text, split = job
    data = _STATE["data"]
    if split == "test":
        if _STATE["test"] is None:
            _STATE["test"] = data.report()
        images, labels = _STATE["test"].images, _STATE["test"].labels
    else:
        images, labels = data.choose.images, data.choose.labels
    t0 = time.perf_counter()
    sub = resolve_subnet(_STATE["supernet"].space, text)
    net = recalibrated_subnet(_STATE["supernet"], sub, data.calibration, n=_STATE["calib_n"], seed=0)
    return text, 100.0 * float(evaluate_accuracy(net, images, labels)[0]), time.perf_counter() - t0, len(labels)


def read_journal(path: Path, run: str) -> dict[str, float]:
    """The validation accuracies of an earlier ``--journal`` of this run ({} if there is none);
    anything else at that path is refused, never overwritten."""
    if not path.exists():
        if not path.parent.is_dir():
            sys.exit(f"bench_search_real.py: --journal {path}: its directory does not exist")
        return {}
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        sys.exit(f"bench_search_real.py: --journal {path}: not a journal of this benchmark ({exc})")
    ok = (isinstance(doc, dict) and set(doc) == {"run", "val"} and isinstance(doc["val"], dict)
          and all(isinstance(k, str) and isinstance(v, (int, float)) and math.isfinite(v)
                  for k, v in doc["val"].items()))
    if not ok:
        sys.exit(f"bench_search_real.py: --journal {path}: not a journal of this benchmark; give another path")
    if doc["run"] != str(run):
        sys.exit(f"bench_search_real.py: --journal {path} holds accuracies of run {doc['run']}, not {run}")
    return {k: float(v) for k, v in doc["val"].items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--evaluations", type=int, default=100)
    ap.add_argument("--random", type=int, default=100)
    ap.add_argument("--calib-n", type=int, default=2000)
    ap.add_argument("--budgets", default=",".join(f"{b:g}" for b in BUDGETS))
    ap.add_argument("--journal", default=None, help="JSON of validation accuracies (resume)")
    ap.add_argument("--workers", type=int, default=1, help="evaluating processes, one torch thread each")
    args = ap.parse_args()
    if not 1 <= args.workers <= (os.cpu_count() or 1):
        sys.exit(f"bench_search_real.py: --workers must be 1..{os.cpu_count()} (got {args.workers})")

    import torch

    budgets = [float(b) for b in args.budgets.split(",")]
    journal_path = Path(args.journal) if args.journal else None
    val = read_journal(journal_path, args.run) if journal_path else {}
    started = time.perf_counter()
    _setup(args.run, args.calib_n)
    supernet, data = _STATE["supernet"], _STATE["data"]
    space = supernet.space
    enc = Encoding(space)
    if not data.holdout:
        sys.exit(f"{args.run} has no validation hold-out (train --val-size): this comparison chooses on one")
    eval_seconds: list[float] = []
    pool = None
    if args.workers > 1:
        import multiprocessing

        pool = multiprocessing.get_context("spawn").Pool(args.workers, initializer=_setup,
                                                         initargs=(args.run, args.calib_n, 1))

    def run_jobs(jobs: list[tuple[str, str]]):
        """(text, accuracy %, seconds, images) per job, as they finish."""
        return pool.imap_unordered(_measure, jobs) if pool is not None else map(_measure, jobs)

    def evaluate(subnets):
        missing = list(dict.fromkeys(str(s) for s in subnets if str(s) not in val))
        for key, acc, seconds, _ in run_jobs([(k, "val") for k in missing]):
            val[key] = acc
            eval_seconds.append(seconds)
            if journal_path:
                atomic_write_json(journal_path, {"run": str(args.run), "val": val})
            print(f"[{len(val)} evaluated, {time.perf_counter() - started:.0f} s] {key} {acc:.2f}",
                  file=sys.stderr, flush=True)
        return [val[str(s)] for s in subnets]

    picks: list[dict] = []
    for seed in range(args.seeds):
        history = search(enc, lambda subs: [v / 100.0 for v in evaluate(subs)],
                         [macs_objective(enc, "macs", budgets)], evaluations=args.evaluations, seed=seed)
        for p in history["objectives"]["macs"]["picks"]:
            picks.append({"seed": seed, "method": "search", "budget": p["budget"], "subnet": p["subnet"]})
        rng = random.Random(10_000 + seed)
        drawn = list(dict.fromkeys(space.sample(rng) for _ in range(args.random)))
        accs = evaluate(drawn)
        cost = [mflops(space, s) for s in drawn]
        for b in budgets:
            within = [i for i, c in enumerate(cost) if c <= b]
            best = max(within, key=lambda i: accs[i]) if within else None
            picks.append({"seed": seed, "method": f"random-{args.random}", "budget": b,
                          "subnet": str(drawn[best]) if best is not None else None})

    # Every pick is fixed: the test split is read now, once (by each evaluating process).
    test: dict[str, float] = {}
    from ofa_deploy.specs import resolve_subnet

    n_test = 0
    chosen = dict.fromkeys(p["subnet"] for p in picks if p["subnet"])
    for text, acc, _, images in run_jobs([(t, "test") for t in chosen]):
        test[text], n_test = acc, images
        print(f"[test] {text} {acc:.2f}", file=sys.stderr, flush=True)
    if pool is not None:
        pool.close()
        pool.join()
    for p in picks:
        if p["subnet"] is not None:
            p["val_acc"] = val[p["subnet"]]
            p["test_acc"] = test[p["subnet"]]
            p["mflops"] = mflops(space, resolve_subnet(space, p["subnet"]))

    table = []
    for b in budgets:
        rows = {m: [p for p in picks if p["budget"] == b and p["method"] == m and p["subnet"]]
                for m in ("search", f"random-{args.random}")}
        s_acc = {p["seed"]: p["test_acc"] for p in rows["search"]}
        r_acc = {p["seed"]: p["test_acc"] for p in rows[f"random-{args.random}"]}
        paired = [s_acc[k] - r_acc[k] for k in sorted(s_acc) if k in r_acc]
        mean_acc = float(np.mean(list(s_acc.values()) or [float("nan")]))
        se = 100.0 * math.sqrt(max(mean_acc / 100 * (1 - mean_acc / 100), 0) / n_test)
        table.append({
            "budget_mflops": b,
            "search_test": t_interval(list(s_acc.values())) if s_acc else None,
            "random_test": t_interval(list(r_acc.values())) if r_acc else None,
            "search_minus_random": t_interval(paired) if paired else None,
            "one_accuracy_se_points": se,
        })
    print(json.dumps({
        "benchmark": "search vs best-of-N random on a real run, chosen on validation, test reported",
        "command": " ".join(["python", *sys.argv]),
        "run": str(args.run),
        "chosen_on": data.choose.name, "chosen_on_images": len(data.choose), "reported_on": "test",
        "reported_on_images": n_test,
        "seeds": args.seeds, "evaluations": args.evaluations, "random": args.random, "calib_n": args.calib_n,
        "workers": args.workers,
        "distinct_subnets_evaluated_on_val": len(val),
        "seconds_per_evaluation_median": float(np.median(eval_seconds)) if eval_seconds else None,
        "wall_s": time.perf_counter() - started,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
                    "threads": torch.get_num_threads() if pool is None else 1},
        "table": table,
        "picks": picks,
    }, indent=1))


if __name__ == "__main__":
    main()
