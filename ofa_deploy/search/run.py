"""``ofa-deploy search RUN --target T1 [--target T2 ...] --evaluations N --out DIR``: one
search of a run's subnets serving every target (host side, torch for the evaluations).

Every input is checked before any evaluation or any write: the targets, their latency
predictors (fitted for that target and for the run's search space), the budgets (finite,
positive, and met by at least one subnet's predicted upper bound). Accuracy is measured
on the run's choosing split (``search.splits``: its validation hold-out, or one seeded half
of the test split for a run without one) with BN recalibrated on its training split; the
reporting split is never read here. ``DIR`` (written whole at the end) holds
``history.json`` (evaluated subnets, the predictor's quality per round, front and pick per
budget of each target) and ``front.png``; until then every evaluation is journaled beside it
(``search.journal``), so the same command run again after an interruption continues. Under
``torchrun`` the evaluations of each round are shared by the ranks (``search.scale``).
"""

from __future__ import annotations

import math
import socket
import sys
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from ..errors import Interrupted, OfaError, Terminated
from ..outputs import SEARCH, SEARCH_FORMAT, staged_output_dir
from .encoding import Encoding
from .engine import Objective, check_budgets, latency_objective, macs_objective, search
from .journal import journal_path


def check_budget(value: float, what: str, limit: str) -> None:
    """A budget: positive, finite and at most ``validate.LIMITS[limit]``'s upper end (the bound
    every other command's MFLOPs and latency options have); ``OfaError`` naming ``what``."""
    from ..validate import LIMITS

    hi = LIMITS[limit][1]
    if not math.isfinite(value) or value <= 0 or value > hi:
        raise OfaError(f"{what}: a budget must be a positive finite number of at most {hi:g}")


def parse_budgets(values: Sequence[str], targets: Sequence[str], flag: str) -> dict[str, list[float]]:
    """``X`` (every target) or ``TARGET=X`` (one), repeatable -> budgets per target name."""
    out: dict[str, list[float]] = {t: [] for t in targets}
    for value in values:
        name, _, number = value.rpartition("=")
        try:
            budget = float(number)
        except ValueError:
            raise OfaError(f"{flag} {value!r}: not a number (give X or TARGET=X)") from None
        check_budget(budget, f"{flag} {value!r}", "latency_ms")
        if name and name not in out:
            raise OfaError(f"{flag} {value!r}: {name} is not one of the --target names ({', '.join(targets)})")
        for t in [name] if name else targets:
            out[t].append(budget)
    return {t: sorted(set(b)) for t, b in out.items()}


def prepare(run_dir: str | Path, targets: Sequence[str], *, predictors: Sequence[str | Path] = (),
            max_latency_ms: Sequence[str] = (), max_mflops: Sequence[float] = (),
            confidence: Optional[float] = 0.9) -> tuple[Any, Any, Encoding, list[Objective]]:
    """Load and check everything a search needs; returns (supernet, config, encoding,
    objectives). Nothing is evaluated or written."""
    from ..catalog.budgets import check_confidence
    from ..predictor.directory import load_predictor, predictor_file
    from ..targets import load_target
    from ..weights import load_supernet
    from .build import check_predictor_resolutions

    if not targets:
        raise OfaError("give at least one --target (the device(s) to search for)")
    loaded = [load_target(t) for t in targets]
    names = [t.name for t in loaded]
    if len(set(names)) != len(names):
        raise OfaError(f"--target names a device twice ({', '.join(names)})")
    for mflops in max_mflops:
        check_budget(mflops, f"--max-mflops {mflops}", "mflops")
    latency_budgets = parse_budgets(max_latency_ms, names, "--max-latency-ms")
    supernet, config = load_supernet(run_dir)
    space = supernet.space
    models: dict[str, Any] = {}
    for path in predictors:
        file = predictor_file(path)
        model = load_predictor(file)
        if model.target not in names:
            raise OfaError(f"predictor {path} was fitted for target {model.target}, which is not a --target here "
                           f"({', '.join(names)})")
        check_predictor_resolutions(model, space, (space.image_size,), path)
        if confidence is not None:
            check_confidence(model, confidence, path)
        models[model.target] = model
    enc = Encoding(space)
    objectives = []
    for name in names:
        if name in models:
            objectives.append(latency_objective(enc, models[name], name, latency_budgets[name], confidence))
        else:
            if latency_budgets[name]:
                raise OfaError(f"--max-latency-ms for {name} needs its latency predictor (--predictor); without "
                               "one the search ranks by MACs: give --max-mflops instead")
            objectives.append(macs_objective(enc, name, max_mflops))
    if max_mflops and all(o.unit != "MFLOPs" for o in objectives):
        objectives.append(macs_objective(enc, "macs", max_mflops))
    check_budgets(enc, objectives)
    return supernet, config, enc, objectives


def search_run(run_dir: str | Path, targets: Sequence[str], out: str | Path, *, evaluations: int,
               predictors: Sequence[str | Path] = (), max_latency_ms: Sequence[str] = (),
               max_mflops: Sequence[float] = (), confidence: Optional[float] = 0.9, seed: int = 0,
               calib_n: int = 2000, data_dir: Optional[str] = None, model: str = "ridge",
               test_images: Optional[int] = None, overwrite: bool = False, generations: int = 60,
               progress: Optional[Callable[[str, int, int], None]] = None) -> Optional[dict[str, Any]]:
    """Run the search (under torchrun: rank 0 searches and writes, the other ranks evaluate
    their shards and return None; ``search.scale``). Resumable: evaluations are journaled
    beside ``out`` (``search.journal``) and reused when the same command runs again."""
    from ..train.dist import init_from_env, shutdown

    if evaluations < 1:
        raise OfaError(f"--evaluations must be at least 1 (got {evaluations})")
    options = dict(run_dir=run_dir, targets=targets, out=out, evaluations=evaluations, predictors=predictors,
                   max_latency_ms=max_latency_ms, max_mflops=max_mflops, confidence=confidence, seed=seed,
                   calib_n=calib_n, data_dir=data_dir, model=model, test_images=test_images, overwrite=overwrite,
                   generations=generations, progress=progress)
    ctx = init_from_env("cpu")  # gloo: the evaluations run on the CPU
    signalled = False
    try:
        if ctx.rank == 0:
            return _search_main(ctx, **options)
        _serve(ctx, **options)
        return None
    except (Terminated, KeyboardInterrupt):
        signalled = True
        raise
    finally:
        # a signal is raised at the first bytecode after a collective returns, which may be
        # between two halves of one (torch's object collectives are two); tearing the group
        # down then joins gloo's thread waiting on a peer (a hang) or aborts at exit. The
        # group is left to the process's end (``cli.run`` exits without the teardown).
        if not (signalled and ctx.enabled):
            shutdown(ctx)


def subnet_evaluator(supernet: Any, config: dict[str, Any], *, seed: int, calib_n: int, data_dir: Optional[str],
                     test_images: Optional[int]) -> tuple[Any, Callable[[Any], float]]:
    """(choice data, evaluate one subnet: BN recalibrated on the training split, accuracy on
    the choosing split)."""
    from ..evaluate.bn import recalibrated_subnet
    from ..evaluate.metrics import evaluate_accuracy
    from .splits import choice_data

    data = choice_data(config, data_dir=data_dir, seed=seed, test_images=test_images)
    calibration, choose = data.calibration, data.choose

    def evaluate_one(sub: Any) -> float:
        net = recalibrated_subnet(supernet, sub, calibration, n=calib_n, seed=0)
        return float(evaluate_accuracy(net, choose.images, choose.labels)[0])

    return data, evaluate_one


def evaluation_identity(checkpoint_sha256: str, data: Any, calib_n: int, enc: Encoding) -> dict[str, Any]:
    """What a subnet's measured accuracy depends on: a journal of another identity is not reused."""
    import hashlib

    from ..evaluate.bn import calibration_images

    def digest(*tensors: Any) -> str:
        h = hashlib.sha256()
        for t in tensors:
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()

    return {"checkpoint_sha256": checkpoint_sha256, "space": enc.space.to_dict(), "chosen_on": data.choose.name,
            "choose_sha256": digest(data.choose.images, data.choose.labels), "calib_images": calib_n,
            "calib_sha256": digest(calibration_images(data.calibration, calib_n, 0))}


def _serve(ctx: Any, *, run_dir: str | Path, seed: int, calib_n: int, data_dir: Optional[str],
           test_images: Optional[int], **_: Any) -> None:
    """A rank other than 0: load the supernet and the data while rank 0 checks the options
    (targets, predictors, budgets: only rank 0 needs them, and checking them twice would
    take CPU from rank 0 on a small machine), then evaluate shards until told to stop."""
    from ..weights import load_supernet
    from . import scale

    try:
        failure: Optional[OfaError] = None
        try:
            supernet, config = load_supernet(run_dir)
            _data, evaluate_one = subnet_evaluator(supernet, config, seed=seed, calib_n=calib_n, data_dir=data_dir,
                                                   test_images=test_images)
        except OfaError as exc:
            failure = exc  # rank 0 meets the same bad input and says it once; this rank stays quiet
        if not scale.wait_for_go(ctx):
            return
        if failure is not None:
            raise failure
        scale.serve(ctx, supernet.space, evaluate_one)
    except (Terminated, KeyboardInterrupt) as exc:
        # torchrun stops every worker with the same signal (the job's, or SIGTERM once one has
        # failed): rank 0 says how to continue; this rank only says which it is
        raise _stopped(exc, f"rank {ctx.rank}: ", " (this rank only evaluates; rank 0 keeps the journal)") from None


def _search_main(ctx: Any, *, run_dir: str | Path, targets: Sequence[str], out: str | Path, evaluations: int,
                 predictors: Sequence[str | Path], max_latency_ms: Sequence[str], max_mflops: Sequence[float],
                 confidence: Optional[float], seed: int, calib_n: int, data_dir: Optional[str], model: str,
                 test_images: Optional[int], overwrite: bool, generations: int,
                 progress: Optional[Callable[[str, int, int], None]]) -> dict[str, Any]:
    import torch

    from ..export.pipeline import run_source
    from ..outputs import check_not_input, check_replaceable
    from . import scale
    from .accuracy import KINDS
    from .journal import Journal

    pool: Optional[scale.Pool] = None
    try:
        if model not in KINDS:
            raise OfaError(f"unknown accuracy predictor {model!r}; choose one of {', '.join(KINDS)}")
        inputs = [("run directory", run_dir), *[("predictor", p) for p in predictors]]
        check_not_input(out, inputs)
        check_replaceable(out, SEARCH, overwrite=overwrite)
        supernet, config, enc, objectives = prepare(run_dir, targets, predictors=predictors,
                                                    max_latency_ms=max_latency_ms, max_mflops=max_mflops,
                                                    confidence=confidence)
        data, evaluate_one = subnet_evaluator(supernet, config, seed=seed, calib_n=calib_n, data_dir=data_dir,
                                              test_images=test_images)
        source = run_source(run_dir)
        choose = data.choose
        with Journal(out, evaluation_identity(source["checkpoint_sha256"], data, calib_n, enc)) as journal:
            pool = scale.Pool(ctx, enc.space, evaluate_one, journal.record)
            pool.start()
            resumed = len(journal.done)

            def evaluate(subnets: Sequence[Any]) -> list[float]:
                # the journal's accuracies first (a resumed search), the rest over the ranks
                todo = list({str(s): s for s in subnets if str(s) not in journal.done}.values())
                pool.evaluate(todo)
                return [journal.done[str(s)] for s in subnets]

            history = search(enc, evaluate, objectives, evaluations=evaluations, seed=seed, model=model,
                             generations=generations, progress=progress)
            pool.stop()
            document = {
                "format": SEARCH_FORMAT,
                "command": " ".join(["ofa-deploy", *sys.argv[1:]]) if sys.argv and "ofa" in sys.argv[0] else None,
                "run": source["run_dir"],
                "checkpoint_sha256": source["checkpoint_sha256"],
                "space": enc.space.to_dict(),
                "host": socket.gethostname(),
                "chosen_on": choose.name,
                "chosen_on_images": len(choose),
                "splits": data.note + "; the reporting split was not read by the search",
                "confidence": confidence,
                "seed": seed,
                "test_images": test_images,
                "targets": [o.name for o in objectives],
                **history,
                # how it ran, not what it found: the only keys besides the timings that differ
                # between one process, several ranks and a resumed search
                "execution": {"ranks": ctx.world_size, "torch_threads": torch.get_num_threads(),
                              "from_journal": resumed, "evaluated_on_rank0": pool.evaluated_here,
                              "evaluate_seconds": pool.seconds},
            }
            from ..io import atomic_write_json

            inputs = [("run directory", run_dir), *[("predictor", p) for p in predictors]]
            with staged_output_dir(out, SEARCH, overwrite=overwrite, inputs=inputs) as tmp:
                atomic_write_json(tmp / "history.json", document)
                plot_fronts(document, tmp / "front.png")
            journal.remove()
        return document
    except (Terminated, KeyboardInterrupt) as exc:
        scale.abort(ctx, pool)
        if not journal_path(out).is_dir():
            raise
        # under torchrun a SIGTERM is also how the launcher stops the other workers when one
        # has died, before they reach the collective that would have said so
        why = (" (under torchrun: the job was stopped, or another worker failed)"
               if ctx.world_size > 1 and not isinstance(exc, KeyboardInterrupt) else "")
        raise _stopped(exc, "", f"{why}; the evaluations so far are journaled in {journal_path(out)}: run the same "
                       "search command again to continue") from None
    except BaseException:
        scale.abort(ctx, pool)
        raise


def _stopped(exc: BaseException, before: str, after: str) -> Terminated:
    """The one line a search stopped by a signal ends with: ``Interrupted`` for Ctrl-C (exit
    130), ``Terminated`` for SIGTERM (143)."""
    if isinstance(exc, KeyboardInterrupt):
        return Interrupted(f"{before}interrupted{after}")
    return Terminated(f"{before}{exc}{after}")


def plot_fronts(history: dict[str, Any], path: Path) -> None:
    """One panel per target: every evaluated subnet (cost vs measured validation accuracy),
    the front, and the pick per budget."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    objectives = history["objectives"]
    evaluated = history["evaluated"]
    fig, axes = plt.subplots(1, len(objectives), figsize=(5 * len(objectives), 4), squeeze=False)
    for ax, (name, obj) in zip(axes[0], objectives.items()):
        costs = obj.get("costs") or []
        if costs:
            ax.scatter(costs, [e["accuracy"] for e in evaluated], s=8, c="0.7", label="evaluated")
        ax.plot([f["cost"] for f in obj["front"]], [f["accuracy"] for f in obj["front"]], "-o", ms=3,
                label="front (evaluated)")
        for pick in obj["picks"]:
            if pick["subnet"] is not None:
                ax.axvline(pick["budget"], color="0.85", lw=0.8)
                ax.plot([pick["cost"]], [pick["accuracy"]], "r*", ms=9)
        ax.set_xlabel(f"{name}: {'predicted upper bound, ms' if obj['unit'] == 'ms' else 'MFLOPs'}")
        ax.set_ylabel(f"accuracy on {history.get('chosen_on', 'validation')}")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
