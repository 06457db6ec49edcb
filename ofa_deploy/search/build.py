"""``catalog build``: search a run's subnets for the accuracy-vs-latency Pareto front on a
target, then export and measure the finalists for real and store everything.

Steps, each skipped for what the catalog already holds (content keys: the subnet's
canonical text, the checkpoint's SHA-256, the ONNX file's SHA-256, this host), so a
rerun does no work twice and an interrupted build resumes:

1. draw ``n`` candidate subnets spread over the space (seeded);
2. measure each candidate's BN-recalibrated accuracy on the *choosing* split: the run's
   validation hold-out (``train --val-size``), or, for a run that trained on every training
   image, one seeded half of the test split (``search.splits``); BN statistics are computed
   on the run's training split without its hold-out;
3. rank candidates by a latency proxy - the target's predictor if given, else MACs -
   and keep the Pareto front of (proxy, choosing accuracy), plus the most accurate
   candidate predicted under each ``--budget-ms``, at most ``finalists``;
4. only now read the *reporting* split (the test split, or the other half of it) and
   measure each finalist on it once: the accuracy the catalog stores and shows, with the
   split that chose it (``accuracy.chosen_on``);
5. export each finalist (ONNX + sidecar) at the requested precision under
   ``<catalog dir>/artifacts/<target>/`` (``.../<precision>/`` for fp16 and int8, whose
   own accuracy is measured with ONNX Runtime on the reporting split and stored under
   that precision);
6. profile each export on this machine under the target's protocol (again, with
   ``remeasure_unstable``, where the stored measurement is flagged unstable).

A run trained with ``--resolutions`` is catalogued over (subnet, resolution): every
candidate is evaluated at each resolution (BN recalibrated there), ranked by MACs or the
predictor at that resolution, and one Pareto front is taken over all the pairs, so a
smaller input can win where it is the cheaper way to a budget. Exports at a resolution
other than the run's default go under ``.../r<R>/``.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from ..catalog.budgets import budget_latency, check_confidence, load_predictor
from ..catalog.db import Catalog
from ..cost import cost
from ..errors import OfaError
from ..io import sha256_file
from ..space import SearchSpace, Subnet

Progress = Callable[[str, int, int], None]


def build_catalog(
    run_dir: str | Path,
    target: Any,
    catalog_path: str | Path,
    *,
    n: int = 40,
    finalists: int = 8,
    budgets_ms: Sequence[float] = (),
    predictor: Optional[str | Path] = None,
    seed: int = 0,
    calib_n: int = 2000,
    test_images: Optional[int] = None,
    data_dir: Optional[str] = None,
    remeasure_unstable: bool = False,
    measure: bool = True,
    protocol: Any = None,
    progress: Optional[Progress] = None,
    candidates: Optional[Sequence[Subnet]] = None,
    precision: Optional[str] = None,
    calibration_images: int = 512,
    confidence: Optional[float] = None,
    resolutions: Optional[Sequence[int]] = None,
    chosen_on: Optional[str] = None,
    max_drop: Optional[float] = None,
    from_search: Optional[str | Path] = None,
    workers: Optional[int] = None,
) -> dict[str, Any]:
    """Fill ``catalog_path`` for ``target`` from ``run_dir``; returns what was done:
    ``{"evaluated", "exported", "measured", "finalists": [...], ...}``.

    ``candidates`` replaces the ``n`` designed subnets and the finalist search: every one
    of them is exported and measured (``quickstart`` passes the best subnet of each MFLOPs
    bucket it evaluated); ``chosen_on`` names the split their choice was made on, which the
    catalog records beside each reported accuracy (default ``"caller"``: not known here).

    With ``measure=False`` the finalists are exported for ``target`` but not profiled:
    the way to catalog a device this machine is not (a Jetson): copy the export
    directories listed under ``"to_measure"`` to the device, build engines and
    ``profile --json`` there, and ``catalog import`` the results.

    ``resolutions``: the input sizes to catalogue, each one the run was trained at
    (default: all of them; one, the run's image size, for a run without ``--resolutions``).

    ``from_search``: a ``search`` output directory of this run (checked by checkpoint SHA-256);
    its picks for ``target`` (its front, where it was given no budget) are the candidates,
    its choosing split (same ``seed`` and ``test_images``, taken from its history) chooses
    and is recorded as ``chosen_on``, and the other split reports.

    ``max_drop`` (int8): each finalist is quantized under that bound (``export.bound``),
    measured on the choosing split; its own accuracy then on the reporting split."""
    from ..evaluate.bn import recalibrated_subnet
    from ..evaluate.metrics import evaluate_accuracy
    from ..evaluate.resolution import images_at, run_resolution, supernet_at
    from ..export.pipeline import export_subnet, run_source
    from ..profile import Protocol, profile_model
    from ..profile.collect import design_subnets, quiet_torch
    from ..resolution import trained_resolutions
    from ..targets import load_target
    from ..weights import load_supernet

    target = load_target(target) if isinstance(target, (str, Path)) else target
    precision = target.resolve_precision(precision)
    from ..export.bound import check_max_drop

    max_drop = check_max_drop(max_drop, precision, calibration_images)
    if n < 2 or finalists < 1:
        raise OfaError("need --n of at least 2 candidates and at least 1 finalist")
    say = progress or (lambda what, done, total: None)
    if measure:
        check_measurable(target)
    lat_model = load_predictor(predictor, target)
    if confidence is not None:
        check_confidence(lat_model, confidence, predictor)
    supernet, config = load_supernet(run_dir)
    space: SearchSpace = supernet.space
    if from_search is not None:
        if candidates is not None:
            raise OfaError("give candidates or a search directory, not both")
        picked = search_picks(from_search, run_dir, target.name, space)
        if resolutions and {run_resolution(config, r) for r in resolutions} != {picked["resolution"]}:
            raise OfaError(f"search {from_search} chose at {picked['resolution']}x{picked['resolution']} inputs "
                           f"only; leave out --resolution or pass --resolution {picked['resolution']}")
        candidates, chosen_on = picked["subnets"], picked["chosen_on"]
        seed, resolutions = picked["seed"], [picked["resolution"]]
        if chosen_on != "val":  # halves of the test split: the search's subset and seed draw them
            if test_images is not None and test_images != picked["test_images"]:
                raise OfaError(f"search {from_search} chose on half of {picked['test_images'] or 'all'} test images "
                               f"(seed {seed}); --test-images {test_images} would draw other halves: leave it out")
            test_images = picked["test_images"]
    chosen_res = tuple(sorted({run_resolution(config, r) for r in resolutions})) if resolutions \
        else trained_resolutions(config)
    if lat_model is not None:
        check_predictor_resolutions(lat_model, space, chosen_res, predictor)
    dataset = (config.get("data") or {}).get("dataset")
    if not dataset:
        raise OfaError(f"run {run_dir} does not name its dataset in config.toml [data]")
    from .splits import choice_data

    data = choice_data(config, data_dir=data_dir, seed=seed, test_images=test_images, workers=workers)
    dataset = data.dataset  # an imported run's folder: named with its fingerprint (``search.splits``)
    train, choose = data.calibration, data.choose
    if from_search is not None and choose.name != chosen_on:
        raise OfaError(f"search {from_search} chose on {chosen_on}, but this run's choosing split is now "
                       f"{choose.name}; rerun the search")
    calib_count = min(calib_n, len(train))
    from ..evaluate.bn import default_variance

    variance = default_variance(config)  # OFA's for an imported run: what its exports record too
    if tuple(train.shape[1:]) != (space.in_channels, space.image_size, space.image_size):
        raise OfaError(f"dataset {dataset} images are {tuple(train.shape[1:])}, run {run_dir} expects "
                       f"{(space.in_channels, space.image_size, space.image_size)}")
    from ..data.preprocessing import preprocessing_record

    preprocessing = {r: preprocessing_record(config, resolution=r, data=data.train_set) for r in chosen_res}
    source = run_source(run_dir)
    run_sha = source["checkpoint_sha256"]
    protocol = protocol or Protocol.from_target(target)
    catalog_path = Path(catalog_path)
    from ..outputs import check_not_input

    check_not_input(catalog_path, [("run directory", run_dir), ("predictor", predictor)], "--catalog")
    artifacts = catalog_path.resolve().parent / "artifacts" / target.name
    host = socket.gethostname()
    done = {"evaluated": 0, "reported": 0, "exported": 0, "measured": 0}

    with Catalog(catalog_path) as cat:
        cat.set_space(space.to_dict())
        if from_search is not None:  # the page shows where these entries came from
            from ..catalog.search_summary import META_PREFIX
            from ..io import json_text

            cat.set_meta(META_PREFIX + target.name, json_text(picked["summary"], sort_keys=True))
        chosen_by_caller = candidates is not None
        subnets = list(candidates) if chosen_by_caller else design_subnets(space, n, seed)
        nets = {r: supernet_at(supernet, r) for r in chosen_res}
        train_at = {r: images_at(train, r) for r in chosen_res}
        choose_at = {r: images_at(choose.images, r) for r in chosen_res}
        candidates = [(sub, r) for r in chosen_res for sub in subnets]  # (subnet, resolution) pairs
        accuracy: dict[tuple[Subnet, int], float] = {}
        # every candidate the caller chose is exported: its export reuses the recalibrated copy
        # measured here; designed candidates are not kept (n x resolutions copies, few finalists)
        measured_copies: dict[tuple[Subnet, int], Any] = {}
        for i, (sub, r) in enumerate(candidates):
            say("accuracy", i, len(candidates))
            key = str(sub)
            m, p = cost(space, sub)
            cat.add_subnet(key, sub.to_dict(), m, p)
            found = cat.find_accuracy(key, run_sha256=run_sha, dataset=dataset, split=choose.name,
                                      recalibrated=True, calib_images=calib_count, images=len(choose), resolution=r)
            if found is None:
                net = recalibrated_subnet(nets[r], sub, train_at[r], n=calib_n, seed=0, variance=variance)
                top1, loss = evaluate_accuracy(net, choose_at[r], choose.labels)
                cat.add_accuracy(key, run=source["run_dir"], run_sha256=run_sha, dataset=dataset, split=choose.name,
                                 recalibrated=True, calib_images=calib_count, images=len(choose),
                                 top1=top1, loss=loss, resolution=r)
                done["evaluated"] += 1
                accuracy[(sub, r)] = top1
                if chosen_by_caller:
                    measured_copies[(sub, r)] = net
            else:
                accuracy[(sub, r)] = found["top1"]
        say("accuracy", len(candidates), len(candidates))

        # p90, the statistic ``select`` holds budgets to, where the predictor knows its ratio
        proxy = (np.asarray(budget_latency(lat_model, [sub for sub, _ in candidates], confidence))
                 if lat_model is not None
                 else np.array([cost(nets[r].space, sub)[0] / 1e6 for sub, r in candidates]))
        chosen = (
            list(dict.fromkeys(candidates))
            if chosen_by_caller
            else choose_finalists(
                candidates,
                proxy,
                [accuracy[c] for c in candidates],
                finalists,
                budgets_ms if lat_model is not None else (),
            )
        )

        # the finalists are chosen: the reporting split is read now, once, and only for them
        chose = (chosen_on or "caller") if chosen_by_caller else choose.name
        report = data.report()
        report_at = {r: images_at(report.images, r) for r in chosen_res}
        reported: dict[tuple[Subnet, int], float] = {}
        for i, (sub, r) in enumerate(chosen):
            say("report", i, len(chosen))
            key = str(sub)
            found = cat.find_accuracy(key, run_sha256=run_sha, dataset=dataset, split=report.name,
                                      recalibrated=True, calib_images=calib_count, images=len(report), resolution=r)
            if found is None:
                net = measured_copies.get((sub, r)) or recalibrated_subnet(nets[r], sub, train_at[r], n=calib_n,
                                                                           seed=0, variance=variance)
                top1, loss = evaluate_accuracy(net, report_at[r], report.labels)
                done["reported"] += 1
            else:
                top1, loss = found["top1"], found["loss"]
            cat.add_accuracy(key, run=source["run_dir"], run_sha256=run_sha, dataset=dataset, split=report.name,
                             recalibrated=True, calib_images=calib_count, images=len(report), top1=top1, loss=loss,
                             resolution=r, chosen_on=chose)
            reported[(sub, r)] = top1

        to_measure: list[str] = []
        with quiet_torch():
            for i, (sub, r) in enumerate(chosen):
                say("export + measure", i, len(chosen))
                key = str(sub)
                out = artifacts / key if precision == "fp32" else artifacts / precision / key
                if r != space.image_size:
                    out = out.parent / f"r{r}" / key
                art = cat.artifact(key, target.name, "onnx", precision, r)
                if art is None or not Path(art["path"]).is_file() or sha256_file(art["path"]) != art["sha256"] \
                        or (precision == "int8" and art.get("max_drop") != max_drop):
                    # fp16/int8 change the function: their accuracy is measured on the file itself
                    sidecar = export_subnet(
                        nets[r], sub, target, out, calib_images=train_at[r], parity_images=choose_at[r][:256],
                        recalibrate=True, run_dir=run_dir, bn_images=calib_n, overwrite=True, precision=precision,
                        preprocessing=preprocessing[r],
                        calibration_count=calibration_images, recalibrated_net=measured_copies.pop((sub, r), None),
                        eval_data=None if precision == "fp32" else (report_at[r], report.labels),
                        max_drop=max_drop, validation=None if max_drop is None else (choose_at[r], choose.labels),
                        validation_source=None if max_drop is None else {"split": choose.name, "images": len(choose),
                                                                         "accuracy_split": report.name},
                        accuracy={"top1": reported[(sub, r)], "split": report.name, "images": len(report),
                                  "dataset": dataset, "chosen_on": chose})
                    if precision != "fp32":
                        acc = sidecar["accuracy"]
                        cat.add_accuracy(key, run=source["run_dir"], run_sha256=run_sha, dataset=dataset,
                                         split=report.name, recalibrated=True, calib_images=calib_count,
                                         images=len(report), top1=acc["top1"], loss=acc["loss"], precision=precision,
                                         resolution=r, chosen_on=chose)
                    for kind, name in (("onnx", "model.onnx"), ("sidecar", "model.json")):
                        cat.add_artifact(key, target.name, kind, out / name, sha256_file(out / name), precision, r,
                                         sidecar)
                    done["exported"] += 1
                    art = cat.artifact(key, target.name, "onnx", precision, r)
                to_measure.append(str(Path(art["path"]).parent))
                found = cat.find_latency(key, target.name, artifact_sha256=art["sha256"], host=host,
                                         batch=target.batch, precision=precision, resolution=r)
                if measure and (found is None or (remeasure_unstable and found["unstable"])):
                    result = profile_model(Path(art["path"]).parent, target, protocol=protocol)
                    cat.add_latency(key, result, target=target.name, resolution=r)
                    done["measured"] += 1
        say("export + measure", len(chosen), len(chosen))

    return {
        "catalog": str(catalog_path),
        "target": target.name,
        "precision": precision,
        "run": source["run_dir"],
        "dataset": dataset,
        "candidates": len(candidates),
        "proxy": "predictor" if lat_model is not None else "macs",
        **({"confidence": confidence} if confidence is not None else {}),
        "resolutions": list(chosen_res),
        **done,
        "chosen_on": chose,
        "reported_on": report.name,
        "splits": (f"the picks of search {from_search}: {data.note}" if from_search is not None
                   else data.note if not chosen_by_caller else f"candidates chosen by the caller on {chose}"),
        **({"from_search": str(from_search)} if from_search is not None else {}),
        "finalists": [{"text": str(s), "resolution": r, "accuracy": reported[(s, r)],
                       "choosing_accuracy": accuracy[(s, r)], "proxy": float(proxy[candidates.index((s, r))])}
                      for s, r in chosen],
        **({} if measure else {"to_measure": to_measure}),
    }


def search_picks(search_dir: str | Path, run_dir: str | Path, target: str, space: SearchSpace) -> dict[str, Any]:
    """What ``catalog build --from-search`` takes from a search directory: ``{"subnets",
    "chosen_on", "seed", "test_images", "resolution"}``. Refused in one line (before anything
    is written): not a search directory, a search of another run (checkpoint SHA-256) or
    space, a target it did not search for, no subnet picked for it."""
    import json

    from ..export.pipeline import run_source
    from ..outputs import SEARCH_FORMAT

    path = Path(search_dir) / "history.json"
    try:
        history = json.loads(path.read_text())
    except (OSError, ValueError):
        history = None
    if not isinstance(history, dict) or history.get("format") != SEARCH_FORMAT:
        raise OfaError(f"{search_dir} is not an `ofa-deploy search` output directory (no history.json of format "
                       f"{SEARCH_FORMAT})")
    source = run_source(run_dir)
    if history.get("checkpoint_sha256") != source["checkpoint_sha256"]:
        raise OfaError(f"search {search_dir} was run on {history.get('run')} (checkpoint sha256 "
                       f"{str(history.get('checkpoint_sha256'))[:12]}), not on this run's checkpoint "
                       f"({source['checkpoint_sha256'][:12]}): its picks are not this run's")
    if history.get("space") != json.loads(json.dumps(space.to_dict())):
        raise OfaError(f"search {search_dir} searched another search space than run {run_dir}'s")
    objectives = history.get("objectives") or {}
    if target not in objectives:
        raise OfaError(f"search {search_dir} did not search for target {target} (it searched "
                       f"{', '.join(objectives) or 'none'})")
    chosen_on = history.get("chosen_on")
    if not isinstance(chosen_on, str) or (chosen_on != "val" and "test_images" not in history):
        raise OfaError(f"search {search_dir}'s history.json does not record its choosing split (and test "
                       "images); rerun the search")
    objective = objectives[target]
    picks = objective.get("picks") or []
    texts = [p["subnet"] for p in picks if p.get("subnet")] if picks else \
        [f["subnet"] for f in objective.get("front") or []]
    if not texts:
        raise OfaError(f"search {search_dir} picked no subnet for {target} (no evaluated subnet within its budgets)")
    from ..catalog.search_summary import search_summary

    return {"subnets": [Subnet.parse(t, space) for t in dict.fromkeys(texts)], "chosen_on": chosen_on,
            "seed": int(history.get("seed", 0)), "test_images": history.get("test_images"),
            "resolution": space.image_size, "summary": search_summary(history, target, search_dir)}


def check_measurable(target: Any) -> None:
    """Refuse, before any work, a target this machine cannot measure as that target:
    latency stored under a target's name must come from that target's runtime."""
    if target.backend != "onnxruntime":
        raise OfaError(f"target {target.name} runs {target.backend} engines, which catalog build does not build; "
                       "build the catalog for a target measurable here, export the finalists for "
                       f"{target.name}, profile them on the device and `catalog import` the results")
    import onnxruntime

    if target.providers and target.providers[0] not in onnxruntime.get_available_providers():
        raise OfaError(f"target {target.name} runs on {target.providers[0]}, which this onnxruntime lacks; "
                       "measure on a machine that has it and `catalog import` the results")


def choose_finalists(candidates: Sequence[Subnet], proxy: np.ndarray, accuracy: Sequence[float], limit: int,
                     budgets_ms: Sequence[float] = ()) -> list[Subnet]:
    """Pareto front of (proxy lower, accuracy higher), thinned evenly to ``limit`` (its
    fastest and most accurate ends kept), plus per budget the most accurate candidate
    whose proxy is within it."""
    order = sorted(range(len(candidates)), key=lambda i: (proxy[i], -accuracy[i]))
    front, best = [], float("-inf")
    for i in order:
        if accuracy[i] > best:
            front.append(i)
            best = accuracy[i]
    if len(front) > limit:
        picks = np.unique(np.round(np.linspace(0, len(front) - 1, limit)).astype(int))
        front = [front[j] for j in picks]
    chosen = list(front)
    for budget in budgets_ms:
        within = [i for i in range(len(candidates)) if proxy[i] <= budget]
        if within:
            chosen.append(max(within, key=lambda i: (accuracy[i], -proxy[i])))
    return [candidates[i] for i in dict.fromkeys(chosen)]


def check_predictor_resolutions(model: Any, space: SearchSpace, resolutions: Sequence[int],
                                path: Any) -> None:
    """A predictor ranks subnets at the one input size it was measured at (its block keys
    and MACs are per size): refuse it for another search space or another resolution."""
    import dataclasses

    if dataclasses.replace(model.space, image_size=space.image_size) != space:
        raise OfaError(f"predictor {path} was fitted for another search space than the run's")
    other = [r for r in resolutions if r != model.space.image_size]
    if other:
        raise OfaError(f"predictor {path} was fitted at {model.space.image_size}x{model.space.image_size} inputs "
                       f"and cannot rank subnets at {', '.join(map(str, other))} (its latency table is per input "
                       f"size); pass --resolution {model.space.image_size}, or leave out --predictor to rank by "
                       f"MACs at each resolution")


