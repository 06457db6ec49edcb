"""``predictor adapt`` and the learning curve of ``predictor check``: choose, measure, fit.

An adapted predictor directory (``directory``) holds what ``predictor build`` writes
(``predictor.json``, ``latency.jsonl`` with split "adapt" for the chosen subnets, later
"holdout" from ``predictor check``), plus ``curve.json``/``curve.png`` after ``check
--curve``, and ``to-measure/`` when the target is measured elsewhere (``--no-measure``: the
chosen subnets' exports, and under ``to-measure/anchors/`` the anchor subnets', with the
order to profile them in; ``--import`` reads the results back, cut into chunks by the
anchors).

Measuring goes through ``profile.collect`` (export per subnet as ``predictor build`` does,
time interleaved, append to ``latency.jsonl``), ``step`` subnets at a time in the fixed
selection order; after each step the model is refitted and, once its estimated mean
error is below ``target_error``, measuring stops. A rerun resumes from ``latency.jsonl``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from ..cost import macs
from ..errors import OfaError
from ..profile.collect import ANCHOR, LatencyDataset, anchor_subnets, collect, holdout_subnets
from ..profile.protocol import Protocol
from ..profile.results import load_results
from ..space import SearchSpace, Subnet
from .directory import (
    ANCHOR_DIR,
    CURVE_FIGURE,
    CURVE_FILE,
    DATASET_FILE,
    PREDICTOR_FILE,
    RATIO_STATISTICS,
    TO_MEASURE,
    drift_warnings,
    load_predictor,
    load_supernet,
    measuring_environment,
    own_dir,
    predictor_file,
    predictor_target,
)
from .learning_curve import learning_curve, plot_curves
from .predictor import LatencyPredictor, accuracy_report
from .transfer import POPULATION, adapt, population, selection_order

CANDIDATES = 500
Say = Callable[[str], None]


def load_source(path: str | Path) -> LatencyPredictor:
    """The source predictor of ``--from`` (a file or its directory)."""
    return load_predictor(path, "--from")


def check_same_space(source: LatencyPredictor, space: SearchSpace, source_path: Any, run_dir: Any) -> None:
    if source.space == space:
        return
    a, b = source.space.to_dict(), space.to_dict()
    diff = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    shown = ", ".join(f"{k} {a.get(k)} vs {b.get(k)}" for k in diff[:3])
    raise OfaError(f"--from {source_path} was fitted for another search space than run {run_dir} ({shown})")


def measurable_here(target: Any) -> Optional[str]:
    """Why this machine cannot measure ``target`` as that target, or None."""
    if target.backend != "onnxruntime":
        return f"target {target.name} runs {target.backend} engines, which cannot be measured on this machine"
    import onnxruntime

    if target.providers and target.providers[0] not in onnxruntime.get_available_providers():
        return f"target {target.name} runs on {target.providers[0]}, which this onnxruntime lacks"
    return None


def selection(source: LatencyPredictor, budget: int, seed: int) -> list[Subnet]:
    """The ``budget`` subnets to measure, in order: active selection among ``CANDIDATES``
    uniform draws (seed ``seed + 1``) for a population sample of ``POPULATION`` (seed ``seed``)."""
    cand = holdout_subnets(source.space, CANDIDATES, seed + 1)
    order = selection_order(source, cand, population(source.space, POPULATION, seed), min(budget, len(cand)))
    return [cand[i] for i in order]


def import_results(dataset: LatencyDataset, paths: Sequence[Path], target: Any) -> int:
    """Add ``profile --json`` results of exported subnets (``to-measure/``) as split "adapt";
    returns how many subnets were new. Results of the anchor subnets (``to-measure/anchors/``)
    cut the others, in the order they were measured (``environment.date``, then file and
    position), into chunks: each group of anchor results starts one, and its rows' drift is
    divided out as in a measuring run here (``LatencyDataset.drift``). Rows measured before
    any anchor are used as measured. Importing a file again adds nothing."""
    anchors = {str(a) for a in anchor_subnets(dataset.space)}
    found = []
    for f, path in enumerate(paths):
        for i, r in enumerate(load_results(path)):
            model = r.get("model") or {}
            if r.get("target") not in (None, target.name):
                raise OfaError(f"--import {path}: result {i} was measured on target {r.get('target')}, "
                               f"not {target.name}")
            if "subnet" not in model:
                raise OfaError(f"--import {path}: result {i} does not say which subnet it measured; profile the "
                               f"export directories under {TO_MEASURE}/")
            if model.get("space") and SearchSpace.from_dict(model["space"]) != dataset.space:
                raise OfaError(f"--import {path}: result {i} is a subnet of another search space")
            spec = model["subnet"]
            sub = Subnet.parse(spec, dataset.space) if isinstance(spec, str) else Subnet.from_dict(spec, dataset.space)
            date = str((r.get("environment") or {}).get("date") or "")
            found.append((date, f, i, f"{Path(path).resolve()}#{i}", sub, r))
    found.sort(key=lambda item: item[:3])
    added, chunk, in_anchor_group = 0, None, False
    for _, _, _, origin, sub, r in found:
        is_anchor = str(sub) in anchors
        key = f"{sub}@{origin}" if is_anchor else str(sub)
        if is_anchor and not in_anchor_group:  # a new group: a new chunk (or the one this file gave before)
            seen = dataset.rows.get((ANCHOR, key))
            chunk = seen["chunk"] if seen else dataset.next_chunk()
        in_anchor_group = is_anchor
        split = ANCHOR if is_anchor else "adapt"
        if dataset.rows.get((split, key)):
            continue
        dataset.add({"split": split, "key": key, "subnet": sub.to_dict(), "macs": macs(dataset.space, sub),
                     "target": target.name, "latency_ms": r["latency_ms"], "n": r["n"], "cov": r["cov"],
                     "unstable": bool(r.get("unstable", False)), "imported": origin,
                     **({"chunk": chunk} if chunk is not None else {})})
        added += not is_anchor
    return added


def measuring_order(chosen: Sequence[str], anchors: Sequence[str], step: int) -> list[str]:
    """The order to profile ``chosen`` in on a device: the anchors first, again after every
    ``step``, and once more at the end (what ``import_results`` cuts into chunks)."""
    order = list(anchors)
    for start in range(0, len(chosen), step):
        order += list(chosen[start:start + step]) + list(anchors)
    return order


def _ratios(rows: list[dict[str, Any]], statistic: str) -> dict[str, float]:
    return {name: float(np.median([r["latency_ms"][name] / r["latency_ms"][statistic] for r in rows]))
            for name in RATIO_STATISTICS if rows and all(name in r["latency_ms"] for r in rows)}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def adapt_predictor(source_path: str | Path, run_dir: str | Path, target: Any, out_dir: str | Path, *,
                    budget: int = 20, target_error: Optional[float] = None, seed: int = 0, step: int = 5,
                    statistic: Optional[str] = None, protocol: Optional[Protocol] = None, rounds: int = 5,
                    onnx_dir: Optional[str | Path] = None, measure: bool = True, imports: Sequence[Path] = (),
                    say: Optional[Say] = None) -> dict[str, Any]:
    """Fit ``target``'s predictor from the source predictor at ``source_path`` and at most
    ``budget`` subnets of the run measured on ``target`` (or imported). Returns the summary."""
    from ..targets import load_target

    say = say or (lambda message: None)
    if budget < 1:
        raise OfaError(f"--budget {budget}: adapting needs at least one measured subnet")
    if budget > CANDIDATES:
        raise OfaError(f"--budget {budget}: at most {CANDIDATES}, the subnets active selection chooses from")
    if target_error is not None and not (0 < target_error < 1):
        raise OfaError(f"--target-error {target_error:g} must be a fraction between 0 and 1 (0.03 = 3 %)")
    target = load_target(target) if isinstance(target, (str, Path)) else target
    source_file = predictor_file(source_path)
    source = load_source(source_file)
    statistic = statistic or target.measure.predictor_statistic
    why_not = measurable_here(target)
    if why_not and measure and not imports:
        raise OfaError(f"{why_not}: rerun with --no-measure to export the {budget} chosen subnets (and the anchor "
                       f"subnets) to {Path(out_dir) / TO_MEASURE}, profile each on the device in the order it "
                       "prints (`ofa-deploy build-engine DIR` where needed, then `ofa-deploy profile DIR --json > "
                       "FILE`), and rerun with --import FILE for each result")
    out_dir = own_dir(out_dir, inputs=[("run directory", run_dir), ("--from", source_file),
                                            ("--onnx-dir", onnx_dir)])
    supernet = load_supernet(run_dir)
    check_same_space(source, supernet.space, source_file, run_dir)
    chosen = selection(source, budget, seed)
    dataset = LatencyDataset(out_dir / DATASET_FILE, source.space)
    imported = import_results(dataset, list(imports), target) if imports else 0
    if not measure:
        from ..profile.collect import export_for_timing, quiet_torch

        anchors = anchor_subnets(source.space)
        places = [(sub, out_dir / TO_MEASURE / str(sub)) for sub in chosen]
        places += [(sub, out_dir / TO_MEASURE / ANCHOR_DIR / str(sub)) for sub in anchors]
        dirs = []
        with quiet_torch():
            for i, (sub, where) in enumerate(places):
                say(f"exporting {i + 1}/{len(places)} for {target.name}")
                dirs.append(str(export_for_timing(supernet, sub, target, where).parent))
        return {"target": target.name, "chosen": [str(s) for s in chosen], "to_measure": dirs[:len(chosen)],
                "anchors": dirs[len(chosen):], "order": measuring_order(dirs[:len(chosen)], dirs[len(chosen):], step),
                "imported": imported}
    protocol = protocol or Protocol.from_target(target)
    measured_now, model, stopped, checked = 0, None, "budget", None
    ends = list(range(min(step, budget), budget, step)) + [budget]
    start = 0
    for end in ends if not why_not else [0]:
        if end:
            measured_now += collect(supernet, [("adapt", s) for s in chosen[:end]], target, dataset,
                                    protocol=protocol, rounds=rounds, onnx_dir=Path(onnx_dir) if onnx_dir else None,
                                    seed=seed, progress=lambda what, done, total: None)
            if model is not None:
                checked = _checked_error(model, dataset, chosen[start:end], statistic)
            start = end
        model = _fit(source, dataset, target, statistic, seed, source_file, budget, protocol, rounds,
                     only=chosen[:end] if end else None)
        est = model.info["transfer"]["estimated_error"]
        said = f"; the previous fit's error on them {checked:.1%}" if checked is not None else ""
        say(f"{model.info['train_subnets']} measured: estimated mean error {est:.1%}{said}, "
            f"device scale {model.info['transfer']['device_scale']:.3f}")
        if stops_early(est, checked, target_error):
            stopped = "target_error"
            break
    assert model is not None
    model.info["transfer"]["stopped"] = stopped
    model.info["transfer"]["checked_error"] = checked
    model.save(out_dir / PREDICTOR_FILE)
    return {"predictor": str(out_dir / PREDICTOR_FILE), "target": target.name, "source": str(source_file),
            "statistic": statistic, "measured": model.info["train_subnets"], "measured_now": measured_now,
            "imported": imported, "budget": budget, "stopped": stopped,
            "estimated_error": model.info["transfer"]["estimated_error"], "checked_error": checked,
            "device_scale": model.info["transfer"]["device_scale"], "strength": model.info["transfer"]["strength"],
            "drift": model.info["drift"], "warnings": drift_warnings(model.info["drift"])}


def stops_early(estimated: float, checked: Optional[float], target_error: Optional[float]) -> bool:
    """``adapt --target-error``'s rule: the posterior's estimated mean error and the previous
    fit's error on the subnets measured since (``None`` after the first step) both at most
    the target."""
    return target_error is not None and checked is not None and estimated <= target_error \
        and checked <= target_error


def _checked_error(model: LatencyPredictor, dataset: LatencyDataset, fresh: Sequence[Subnet],
                   statistic: str) -> Optional[float]:
    """Mean relative error of ``model`` on subnets measured after it was fitted: an
    out-of-sample check of its estimated error (after 10 measurements that was below the
    held-out error on all 5 CPU landscapes of results/predictor-transfer/second-vm-2s, by
    1.5-1.8x for cpu-int8 and torch)."""
    rows = [dataset.rows.get(("adapt", str(s))) for s in fresh]
    pairs = [(dataset.latency(r, statistic), Subnet.from_dict(r["subnet"], dataset.space)) for r in rows if r]
    if not pairs:
        return None
    return accuracy_report([m for m, _ in pairs], model.predict([s for _, s in pairs]))["mean_abs_rel_error"]


def _fit(source: LatencyPredictor, dataset: LatencyDataset, target: Any, statistic: str, seed: int,
         source_file: Path, budget: int, protocol: Protocol, rounds: int,
         only: Optional[Sequence[Subnet]] = None) -> LatencyPredictor:
    """The adapted predictor from the "adapt" rows (of the subnets ``only``, where given: a
    resumed run refits each step on that step's subnets, so the next step checks it)."""
    keep = None if only is None else {str(s) for s in only}
    rows = [r for (split, key), r in dataset.rows.items() if split == "adapt" and (keep is None or key in keep)]
    if not rows:
        raise OfaError(f"no measurements of target {target.name} to adapt from")
    subs = [Subnet.from_dict(r["subnet"], source.space) for r in rows]
    lat = [dataset.latency(r, statistic) for r in rows]
    pop = population(source.space, POPULATION, seed)
    return adapt(source, subs, lat, target=target.name, statistic=statistic, pop=pop,
                 statistic_ratios=_ratios(rows, statistic), info={
                     "source": {"path": str(source_file.resolve()), "sha256": _sha256(source_file),
                                "target": source.target},
                     "selection": {"seed": seed, "budget": budget, "candidates": CANDIDATES,
                                   "population": POPULATION},
                     "protocol": {**protocol.to_dict(), "rounds": rounds, "interleaved": True},
                     "target_definition": target.record(),  # a --target .toml path travels with it
                     "unstable_measurements": sum(1 for r in rows if r.get("unstable")),
                     "drift": dataset.drift_report(statistic),
                     "environment": measuring_environment(target)})


def check_curve(model: LatencyPredictor, out_dir: Path, supernet: Any, held: Sequence[Subnet], held_ms: np.ndarray,
                sizes: Sequence[int], *, protocol: Protocol, rounds: int, onnx_dir: Optional[str | Path],
                progress: Any, figure: bool = True, target: Any = None) -> dict[str, Any]:
    """The learning curve of an adapted predictor on its held-out measurements: measures
    the selection order up to ``max(sizes)`` (split "adapt"; the first ``budget`` are
    there already) and writes ``curve.json`` (and ``curve.png``)."""
    from ..io import atomic_write_json

    recorded = model.info.get("source") or {}
    path = Path(str(recorded.get("path", "")))
    if not path.is_file() or _sha256(path) != recorded.get("sha256"):
        raise OfaError(f"--curve needs the source predictor this one was adapted from, {path}, unchanged "
                       "(it is missing or its contents differ)")
    source = LatencyPredictor.load(path)
    seed = int((model.info.get("selection") or {}).get("seed", 0))
    chosen = selection(source, max(sizes), seed)
    target = target if target is not None else predictor_target(model, out_dir / PREDICTOR_FILE)
    dataset = LatencyDataset(out_dir / DATASET_FILE, source.space)
    collect(supernet, [("adapt", s) for s in chosen], target, dataset, protocol=protocol, rounds=rounds,
            onnx_dir=Path(onnx_dir) if onnx_dir else None, seed=seed, progress=progress)
    pool_ms = [dataset.latency(dataset.rows[("adapt", str(s))], model.statistic) for s in chosen]
    curve = learning_curve(source, chosen, pool_ms, list(held), held_ms, target=model.target,
                           statistic=model.statistic, sizes=sizes, seed=seed, order=list(range(len(chosen))),
                           compare_random=False)
    atomic_write_json(out_dir / CURVE_FILE, curve)
    if figure:
        plot_curves(out_dir / CURVE_FIGURE, [curve])
        curve["figure"] = str(out_dir / CURVE_FIGURE)
    return curve
