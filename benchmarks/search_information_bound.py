"""How close to a fitted landscape's optimum *any* pick from N noisy evaluations can get (issue 33).

The search benchmark's fitted landscape (``Landscape.fitted``: an additive per-block model
fitted to real validation accuracies, noise = its leave-one-out residual SD) is linear in
known features. Against it this script runs an estimator that knows everything the search
has to learn except the coefficients themselves - the exact form (the landscape's own
design columns), the noise SD, and each coefficient group's true spread (kernel, expand,
depth terms) as a Gaussian prior - fits it by exact Bayesian linear regression (posterior
mean) to N measurements and picks the exact optimum of that posterior mean under each MACs
budget (``search.exact``). Two designs:

* ``random``: N uniform random subnets;
* ``greedy_d``: N subnets chosen one at a time, each the one of 2,000 uniform candidates
  (per step) that most reduces the posterior's total variance of the coefficients - an
  information-greedy (A-optimal) design, which no adaptive design that ignores the values can
  beat by much.

Two truths: the fitted landscape itself (``fitted``, per seed only the noise and design
vary), and coefficient vectors drawn from the same prior (``prior_draws``: the Bayes risk of
the posterior-mean pick). Reported per budget: the mean gap (points) between the pick's true
accuracy and the true optimum, over ``--seeds``.

    python benchmarks/search_information_bound.py results/search/evals-fmnist-300.json \\
        --evaluations 100 300 1000 --seeds 10 > results/search/information-bound-fmnist.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ofa_deploy.errors import OfaError  # noqa: E402
from ofa_deploy.io import read_json  # noqa: E402
from ofa_deploy.search.encoding import Encoding  # noqa: E402
from ofa_deploy.search.exact import best_under_budgets  # noqa: E402
from ofa_deploy.search.synthetic import Landscape, _additive_design, _block_tables, _ridge_loo  # noqa: E402
from ofa_deploy.space import SearchSpace, Subnet  # noqa: E402

BUDGETS = (5.0, 6.0, 7.0, 8.0, 10.0, 12.0)
FORM = "marginal"


def groups(enc: Encoding) -> np.ndarray:
    """Per design column of the marginal form: 0 kernel, 1 expand, 2 depth."""
    return np.r_[np.zeros(enc.n * enc.nk), np.ones(enc.n * enc.ne), np.full(enc.stages * enc.nd, 2)].astype(int)


def value(enc: Encoding, w: np.ndarray, x: np.ndarray) -> np.ndarray:
    return _additive_design(enc, x, FORM) @ w


def optimum_rows(enc: Encoding, w: np.ndarray) -> list[np.ndarray | None]:
    a, b = _block_tables(enc, w, FORM)
    return [None if f is None else f[0] for f in best_under_budgets(enc, a, b, list(BUDGETS))]


def optimum_values(enc: Encoding, w: np.ndarray) -> list[float | None]:
    """Per budget, the exact optimum's value under coefficients ``w`` (None: nothing fits)."""
    return [None if r is None else float(value(enc, w, r[None, :])[0]) for r in optimum_rows(enc, w)]


def posterior_mean(d: np.ndarray, y: np.ndarray, prior_var: np.ndarray, noise: float) -> np.ndarray:
    """Bayesian linear regression, an unpenalised intercept (centred design and targets)."""
    dc = d - d.mean(axis=0)
    a = dc.T @ dc / noise**2 + np.diag(1.0 / prior_var)
    return np.linalg.solve(a, dc.T @ (y - y.mean()) / noise**2)


def greedy_design(enc: Encoding, rng: np.random.Generator, n: int, prior_var: np.ndarray, noise: float,
                  candidates: int) -> np.ndarray:
    """N rows, each of ``candidates`` uniform ones the one that most reduces the trace of the
    posterior covariance (rank-one updates; the intercept ignored)."""
    cov = np.diag(prior_var)
    rows = []
    for _ in range(n):
        x = enc.random(rng, candidates)
        d = _additive_design(enc, x, FORM)
        cd = d @ cov                                  # (C, F)
        gain = (cd**2).sum(axis=1) / (noise**2 + (cd * d).sum(axis=1))
        i = int(np.argmax(gain))
        v = cd[i]
        cov = cov - np.outer(v, v) / (noise**2 + v @ d[i])
        rows.append(x[i])
    return np.array(rows)


def gaps(enc: Encoding, w_true: np.ndarray, rows: np.ndarray, rng: np.random.Generator, prior_var: np.ndarray,
         noise: float, best: list[float | None]) -> list[float | None]:
    y = value(enc, w_true, rows) + rng.normal(0, noise, len(rows))
    w_hat = posterior_mean(_additive_design(enc, rows, FORM), y, prior_var, noise)
    out: list[float | None] = []
    for row, opt in zip(optimum_rows(enc, w_hat), best):
        out.append(None if row is None or opt is None else float(value(enc, w_true, row[None, :])[0] - opt))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("evaluations_file", type=Path)
    ap.add_argument("--evaluations", type=int, nargs="+", default=[100, 300, 1000])
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--candidates", type=int, default=2000, help="uniform candidates per greedy design step")
    args = ap.parse_args()
    if args.seeds < 1 or min(args.evaluations) < 2 or args.candidates < 1:
        sys.exit("search_information_bound.py: --seeds and --candidates must be >= 1, --evaluations >= 2")
    started = time.perf_counter()
    try:
        doc = read_json(args.evaluations_file, "evaluations file")
        space = SearchSpace.from_dict(doc["space"])
        subnets = [Subnet.parse(r["subnet"], space) for r in doc["evaluations"]]
        accuracy = np.array([float(r["val_top1"]) for r in doc["evaluations"]]) * 100.0  # points
        land = Landscape.fitted(space, subnets, accuracy / 100.0, form=FORM)
    except (OfaError, KeyError, TypeError, ValueError) as exc:
        sys.exit(f"search_information_bound.py: {args.evaluations_file}: {exc}")
    enc = Encoding(space)
    # the landscape's own coefficients, in points (the same fit Landscape.fitted makes)
    w_true, _, fit = _ridge_loo(_additive_design(enc, enc.encode(subnets), FORM), accuracy)
    noise = float(fit["loo_sd"])
    group = groups(enc)
    spread = np.array([np.sqrt(np.mean(w_true[group == g] ** 2)) for g in range(3)])
    prior_var = spread[group] ** 2
    best_fitted = optimum_values(enc, w_true)

    results = []
    for n in args.evaluations:
        for truth in ("fitted", "prior_draws"):
            for design in ("random", "greedy_d"):
                per_seed = []
                for seed in range(args.seeds):
                    rng = np.random.default_rng([seed, n, truth == "fitted", design == "random"])
                    if truth == "fitted":
                        w, best = w_true, best_fitted
                    else:
                        w = rng.normal(0, np.sqrt(prior_var))
                        best = optimum_values(enc, w)
                    rows = (enc.random(rng, n) if design == "random"
                            else greedy_design(enc, rng, n, prior_var, noise, args.candidates))
                    per_seed.append(gaps(enc, w, rows, rng, prior_var, noise, best))
                mean = []
                for j in range(len(BUDGETS)):
                    vals = [g[j] for g in per_seed if g[j] is not None]
                    mean.append(float(np.mean(vals)) if vals else None)
                results.append({"evaluations": n, "truth": truth, "design": design, "mean_gap_points": mean,
                                "seeds_within_0.1": [sum(1 for g in per_seed if g[j] is not None and g[j] >= -0.1)
                                                     for j in range(len(BUDGETS))]})
                print(f"[{time.perf_counter() - started:.0f} s] n={n} {truth} {design}: "
                      + " ".join("-" if v is None else f"{v:+.3f}" for v in mean), file=sys.stderr, flush=True)
    print(json.dumps({
        "benchmark": "the posterior-mean pick of an estimator told the landscape's form, noise and coefficient "
                     "spread, from N measurements: mean gap to the true optimum per MACs budget (points)",
        "command": " ".join(["python", *sys.argv]),
        "evaluations_file": str(args.evaluations_file),
        "budgets_mflops": list(BUDGETS), "seeds": args.seeds, "candidates_per_greedy_step": args.candidates,
        "landscape": {"form": FORM, "coefficients": int(len(w_true)), "noise_sd_points": noise,
                      "coefficient_rms_points": {"kernel": float(spread[0]), "expand": float(spread[1]),
                                                 "depth": float(spread[2])},
                      "population_sd_points": 100.0 * float(land.fit_info["population_sd"])},
        "results": results,
        "wall_s": time.perf_counter() - started,
        "machine": {"platform": platform.platform(), "python": platform.python_version()},
    }, indent=1))


if __name__ == "__main__":
    main()
