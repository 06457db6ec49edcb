"""Evaluate N uniform random subnets of a trained run on its validation hold-out, the way
``ofa-deploy search`` evaluates a subnet: real evaluations for a fitted synthetic landscape
(``Landscape.fitted``, ``bench_search.py --landscape fitted``; issue 33).

Per subnet: BN recalibrated on the run's training split (its validation hold-out excluded),
top-1 on the hold-out - ``search.run.subnet_evaluator``, the search's own code, so a subnet gets
the accuracy a search of the same run would measure. A run without a hold-out falls back as
the search does (one seeded half of the test split, said on stderr and in the file).

The subnets: ``--count`` distinct draws of ``SearchSpace.sample`` (every choice uniform and
independent, the paper's RSS) from ``random.Random(--seed)``, so a larger ``--count`` later
extends the same list. The output (JSON, rewritten atomically after every evaluation) holds
per subnet its text form, validation top-1 (a fraction), MFLOPs and seconds, plus the run,
its checkpoint's SHA-256, what the accuracies depend on (the search's journal identity:
choosing split, calibration images) and per session the command, machine and wall time.
Run again with the same ``--out``, it continues where it stopped; a file of another run,
split or calibration is refused.

    OMP_NUM_THREADS=1 python benchmarks/eval_random_subnets.py RUN --count 300 --out evals.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import socket
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ofa_deploy.errors import OfaError, Terminated  # noqa: E402

FORMAT = "ofa-deploy/subnet-evaluations"
# each evaluation takes seconds; the draws are made up front, so a count far beyond any run's
# reach would hang drawing (and hold millions of subnets) before the first evaluation
MAX_COUNT = 100_000
PROG = "eval_random_subnets.py"


def draw(space: Any, count: int, seed: int) -> list[Any]:
    """The first ``count`` distinct subnets drawn uniformly from ``random.Random(seed)``
    (a prefix of the same sequence for every ``count``)."""
    rng = random.Random(seed)
    seen: dict[str, Any] = {}
    while len(seen) < count:
        sub = space.sample(rng)
        seen.setdefault(str(sub), sub)
    return list(seen.values())


def read_previous(out: Path) -> Optional[dict[str, Any]]:
    """The partial file to continue, None if there is none; ``OfaError`` if it cannot be
    read, is not ours or is corrupt (checked before the run is loaded: a bad ``--out`` fails
    fast)."""
    from ofa_deploy.io import read_json

    if out.is_dir():
        raise OfaError(f"--out {out} is a directory; give a JSON file path")
    if not out.exists():
        return None
    doc = read_json(out, "--out file")
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(doc.get("evaluations"), list) \
            or not isinstance(doc.get("sessions"), list):
        raise OfaError(f"--out file {out} is not a {FORMAT} file; give a new path or remove it")
    for row in doc["evaluations"]:
        if not isinstance(row, dict) or not isinstance(row.get("subnet"), str) \
                or not isinstance(row.get("val_top1"), (int, float)):
            raise OfaError(f"--out file {out} has a malformed evaluation entry; give a new path or remove it")
    return doc


def machine() -> dict[str, Any]:
    import torch

    return {"host": socket.gethostname(), "platform": platform.platform(), "cpus": os.cpu_count(),
            "python": platform.python_version(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}


def evaluate_random(run: str, count: int, out: Path, *, seed: int = 0, calib_n: int = 2000,
                    checkpoint: str = "final", data_dir: Optional[str] = None, command: str = "") -> dict[str, Any]:
    """Evaluate (or finish evaluating) the ``count`` subnets into ``out``; returns the file's
    document. Every input is checked before anything is evaluated or written."""
    from ofa_deploy.cost import mflops
    from ofa_deploy.io import atomic_write_json, sha256_file
    from ofa_deploy.run import checkpoint_path
    from ofa_deploy.search.encoding import Encoding
    from ofa_deploy.search.run import evaluation_identity, subnet_evaluator
    from ofa_deploy.weights import load_supernet

    if count < 1:
        raise OfaError(f"--count must be at least 1 (got {count})")
    if count > MAX_COUNT:
        raise OfaError(f"--count must be at most {MAX_COUNT:,} (got {count}); each subnet takes seconds to evaluate")
    if calib_n < 1:
        raise OfaError(f"--calib-images must be at least 1 (got {calib_n})")
    previous = read_previous(out)
    started = time.perf_counter()
    supernet, config = load_supernet(run, checkpoint)
    ckpt = checkpoint_path(run, checkpoint)
    space = supernet.space
    # split seed 0: the search's default, so a run without a hold-out is measured on the
    # half of the test split an ``ofa-deploy search`` with its default seed chooses on
    data, evaluate_one = subnet_evaluator(supernet, config, seed=0, calib_n=calib_n, data_dir=data_dir,
                                          test_images=None)
    # as it reads back from JSON (tuples become lists), to compare with a previous file's
    identity = evaluation_identity(sha256_file(ckpt), data, calib_n, Encoding(space))
    identity = json.loads(json.dumps(identity))
    if previous is not None and (previous.get("identity") != identity or previous.get("seed") != seed):
        raise OfaError(f"--out file {out} holds evaluations of another run, split, calibration or --seed; "
                       "give a new path to start another set")
    doc = previous or {
        "format": FORMAT, "run": str(Path(run).resolve()), "checkpoint": ckpt.name,
        "checkpoint_sha256": identity["checkpoint_sha256"], "space": space.to_dict(), "seed": seed,
        "chosen_on": data.choose.name, "chosen_on_images": len(data.choose), "holdout": data.holdout,
        "splits": data.note, "calib_images": calib_n, "identity": identity,
        "how": "SearchSpace.sample draws (every choice uniform), distinct, from random.Random(seed); per subnet BN "
               "recalibrated on the training split (hold-out excluded), top-1 on the choosing split "
               "(ofa_deploy.search.run.subnet_evaluator, as ofa-deploy search); val_top1 is a fraction",
        "evaluations": [], "sessions": []}
    subnets = draw(space, max(count, len(doc["evaluations"])), seed)
    done = [row["subnet"] for row in doc["evaluations"]]
    if done != [str(s) for s in subnets[: len(done)]]:
        raise OfaError(f"--out file {out} lists other subnets than --seed {seed} draws; give a new path")
    if not data.holdout:
        print(f"{PROG}: note: {run} has no validation hold-out; as the search does, measuring on "
              f"{data.choose.name} ({len(data.choose)} test images)", file=sys.stderr)
    session: dict[str, Any] = {"started": datetime.now(timezone.utc).isoformat(timespec="seconds"), "command": command,
               "machine": machine(), "count": count, "resumed_from": len(done), "evaluated": 0, "wall_s": 0.0}
    doc["sessions"].append(session)
    doc["count"] = max(count, len(done))
    todo = subnets[len(done): count]
    print(f"{PROG}: {len(done)} of {count} already evaluated in {out}; {len(todo)} to go", file=sys.stderr, flush=True)
    for sub in todo:
        t0 = time.perf_counter()
        accuracy = evaluate_one(sub)
        seconds = time.perf_counter() - t0
        doc["evaluations"].append({"subnet": str(sub), "val_top1": accuracy, "mflops": mflops(space, sub),
                                   "seconds": seconds})
        session["evaluated"] += 1
        session["wall_s"] = time.perf_counter() - started
        doc["wall_s_total"] = sum(s["wall_s"] for s in doc["sessions"])
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out, doc)  # after every subnet: a stop loses at most the one in progress
        print(f"[{len(doc['evaluations'])}/{count} {session['wall_s']:.0f} s] {sub} {100 * accuracy:.2f} % "
              f"({seconds:.1f} s)", file=sys.stderr, flush=True)
    return doc


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line (no usage block), exit 2, as every other bad input."""

    def error(self, message: str) -> Any:
        print(f"{PROG}: error: {message}", file=sys.stderr)
        sys.exit(2)


def main(argv: Optional[Sequence[str]] = None) -> int:
    from ofa_deploy import signals

    ap = _Parser(prog=PROG, description=__doc__.split("\n\n")[0])
    ap.add_argument("run", help="a trained run directory (train --val-size: its hold-out is measured)")
    ap.add_argument("--count", required=True, help="subnets to evaluate (a larger count later extends the set)")
    ap.add_argument("--out", required=True, type=Path, help="JSON file, continued if it exists")
    ap.add_argument("--seed", default="0", help="seed of the subnet draws")
    ap.add_argument("--calib-images", default="2000", help="training images for BN recalibration (the search's "
                                                           "default)")
    ap.add_argument("--checkpoint", default="final", choices=("final", "last", "auto"),
                    help="which checkpoint (final: refuse a run still training)")
    ap.add_argument("--data-dir", default=None)
    args = ap.parse_args(argv)
    command = " ".join(["python", "benchmarks/eval_random_subnets.py", *(argv if argv is not None else sys.argv[1:])])
    try:
        numbers = {}
        for flag, value in (("--count", args.count), ("--seed", args.seed), ("--calib-images", args.calib_images)):
            try:
                numbers[flag] = int(value)
            except ValueError:
                raise OfaError(f"{flag} must be a whole number (got {value!r})") from None
        with signals.handled():
            doc = evaluate_random(args.run, numbers["--count"], args.out, seed=numbers["--seed"],
                                  calib_n=numbers["--calib-images"], checkpoint=args.checkpoint,
                                  data_dir=args.data_dir, command=command)
    except OfaError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, Terminated) as exc:
        where = f"the evaluations so far are in {args.out}" if args.out.is_file() else "nothing was written"
        print(f"{PROG}: stopped; {where}: run the same command again to continue", file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130
    print(f"{PROG}: {len(doc['evaluations'])} subnets in {args.out} "
          f"({doc['sessions'][-1]['wall_s']:.0f} s this session)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
