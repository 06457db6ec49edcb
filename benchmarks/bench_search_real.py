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

    python benchmarks/bench_search_real.py RUN --seeds 3 --evaluations 100 --random 100 \\
        --journal /tmp/journal.json > results/search/fmnist-real.json
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--evaluations", type=int, default=100)
    ap.add_argument("--random", type=int, default=100)
    ap.add_argument("--calib-n", type=int, default=2000)
    ap.add_argument("--budgets", default=",".join(f"{b:g}" for b in BUDGETS))
    ap.add_argument("--journal", default=None, help="JSON of validation accuracies (resume)")
    args = ap.parse_args()

    import torch

    from ofa_deploy.evaluate.bn import recalibrated_subnet
    from ofa_deploy.evaluate.metrics import evaluate_accuracy
    from ofa_deploy.search.splits import choice_data
    from ofa_deploy.weights import load_supernet

    budgets = [float(b) for b in args.budgets.split(",")]
    started = time.perf_counter()
    supernet, config = load_supernet(args.run)
    space = supernet.space
    enc = Encoding(space)
    data = choice_data(config, seed=0)
    if not data.holdout:
        sys.exit(f"{args.run} has no validation hold-out (train --val-size): this comparison chooses on one")
    journal_path = Path(args.journal) if args.journal else None
    val: dict[str, float] = {}
    if journal_path and journal_path.exists():
        val = json.loads(journal_path.read_text())["val"]
    eval_seconds: list[float] = []

    def measure(subnet, images, labels) -> float:
        net = recalibrated_subnet(supernet, subnet, data.calibration, n=args.calib_n, seed=0)
        return 100.0 * float(evaluate_accuracy(net, images, labels)[0])

    def evaluate(subnets):
        out = []
        for sub in subnets:
            key = str(sub)
            if key not in val:
                t0 = time.perf_counter()
                val[key] = measure(sub, data.choose.images, data.choose.labels)
                eval_seconds.append(time.perf_counter() - t0)
                if journal_path:
                    atomic_write_json(journal_path, {"run": str(args.run), "val": val})
                print(f"[{len(val)} evaluated, {time.perf_counter() - started:.0f} s] {key} {val[key]:.2f}",
                      file=sys.stderr, flush=True)
            out.append(val[key])
        return out

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

    # Every pick is fixed: the test split is read now, once.
    report = data.report()
    test: dict[str, float] = {}
    from ofa_deploy.specs import resolve_subnet

    for text in dict.fromkeys(p["subnet"] for p in picks if p["subnet"]):
        sub = resolve_subnet(space, text)
        test[text] = measure(sub, report.images, report.labels)
        print(f"[test] {text} {test[text]:.2f}", file=sys.stderr, flush=True)
    for p in picks:
        if p["subnet"] is not None:
            p["val_acc"] = val[p["subnet"]]
            p["test_acc"] = test[p["subnet"]]
            p["mflops"] = mflops(space, resolve_subnet(space, p["subnet"]))

    n_test = len(report)
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
        "chosen_on": data.choose.name, "chosen_on_images": len(data.choose), "reported_on": report.name,
        "reported_on_images": n_test,
        "seeds": args.seeds, "evaluations": args.evaluations, "random": args.random, "calib_n": args.calib_n,
        "distinct_subnets_evaluated_on_val": len(val),
        "seconds_per_evaluation_median": float(np.median(eval_seconds)) if eval_seconds else None,
        "wall_s": time.perf_counter() - started,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
                    "threads": torch.get_num_threads()},
        "table": table,
        "picks": picks,
    }, indent=1))


if __name__ == "__main__":
    main()
