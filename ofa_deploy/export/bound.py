"""int8 under an accuracy bound (``export --precision int8 --max-drop P``).

After the plain int8 file is made (``precision.Int8Quantizer``), its top-1 accuracy is
measured on a validation split beside the fp32 file's. If it is more than ``P`` points
below, layers are reverted to float (ONNX Runtime's quantizer puts no Q/DQ on the inputs
of a node in ``nodes_to_exclude``), the most sensitive first, until the drop is within
``P``. A layer is a module of the network (the stem, one MBConv block, the head: the
first part of the exporter's node names), not a single node: experiments/int8-sensitivity
found the error spread thin (no node above ~5 % of it), and each trial costs a quantizer
pass (~2.5 s on the largest digits subnet here), so ~20 layers are ranked where ~100-200
nodes would take minutes. The ranking: each layer alone in float, the mean absolute logit
difference to the fp32 file on the first ``RANK_IMAGES`` validation images (continuous; on a
few hundred images one image is a fraction of a point, too coarse to rank by top-1). The fewest layers, in that
order, that meet the bound are found by bisection (the drop falls, by and large, as more
layers are float; the final file is measured again, not assumed). All trials share one
calibration (ONNX Runtime's calibration cache). If the bound holds only with every
quantized layer in float, there is no int8 model to write: ``OfaError``, nothing written.

In the ONNX Runtime flavour a reverted layer's input tensor stays quantized when the layer
before writes it quantized (that flavour quantizes op outputs too): the layer computes in
float from the int8 tensor it is handed.

The validation split is the run's own held-out split (``val_size`` > 0), never seen in
training or calibration; a run without one gives a seeded part of the test split
(``VALIDATION_FRACTION``), and the accuracy ``model.json`` reports is then measured on the
rest of the test split only (``split_test``).

The reverted layers are fp16 in the TensorRT flavour (``export.fp16_layers``: fp16 weights
and tensors, a Cast at each edge of the region, the Q/DQ pairs untouched) and fp32 in the
ONNX Runtime one (``reverted_precision``); every trial is measured on the file as it will
be written, fp16 layers included. ONNX Runtime's CPU provider has no fp16 Conv kernel on
x86: it runs those layers in fp32 from the fp16-rounded weights (its cast elimination also
drops the fp32 -> fp16 -> fp32 rounding of their activations), so the measured drop holds
fp16's weight rounding, not fp16 arithmetic; TensorRT's fp16 kernels (fp16 storage, fp32
or fp16 accumulation) are not measured here.

Before any layer is reverted, the calibration itself is chosen on the same validation
images (``export.calibration_search``).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from ..errors import OfaError

VALIDATION_FRACTION = 0.5  # of the test split, when a run held out no validation images
# Images the layer ranking reads: the logit error is continuous, so a few hundred images rank
# layers as well as thousands, and ranking is one measurement per layer (~20): on a 5,000-image
# hold-out the TensorRT-flavour file runs ~50 s per measurement in ONNX Runtime's CPU provider.
# Every top-1 the bound is judged on still reads every validation image.
RANK_IMAGES = 512


def check_max_drop(max_drop: Optional[float], precision: str, calibration_images: int) -> Optional[float]:
    """``max_drop`` as a float if it is a bound an int8 export can be held to, else one
    ``OfaError`` line (checked before any work)."""
    if max_drop is None:
        return None
    value = float(max_drop)
    if math.isnan(value) or math.isinf(value) or value < 0:
        raise OfaError(f"--max-drop must be a finite number of accuracy points >= 0, not {max_drop}")
    if precision != "int8":
        raise OfaError(f"--max-drop bounds an int8 model's accuracy drop; --precision {precision} has no "
                       "quantization to bound (use --precision int8)")
    if calibration_images < 1:
        raise OfaError("--max-drop: int8 quantization needs at least one calibration image (--calibration-images)")
    return value


def split_test(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(validation indices, accuracy indices) of a test split of ``n`` images: a seeded
    ``VALIDATION_FRACTION`` of it, and the rest."""
    if n < 2:
        raise OfaError(f"--max-drop: the test split has {n} image(s); it needs at least two to keep a validation "
                       "part apart from the part that reports the accuracy")
    order = np.random.default_rng(seed).permutation(n)
    k = max(1, min(n - 1, int(round(n * VALIDATION_FRACTION))))
    return np.sort(order[:k]), np.sort(order[k:])


class Validator:
    """Top-1 and logit error of ONNX files on the validation images, against the fp32 file's
    (its logits computed once)."""

    def __init__(self, fp32_path: str | Path, images: np.ndarray, labels: np.ndarray,
                 batch: Optional[int] = None) -> None:
        from .to_onnx import ort_session, run_onnx

        self.x = np.ascontiguousarray(images, dtype=np.float32)
        self.y = np.asarray(labels)
        self.batch = batch
        self.reference = run_onnx(ort_session(fp32_path), self.x, batch=batch).astype(np.float64)
        self._fp32_right = (self.reference.argmax(1) == self.y).astype(np.float64)
        self.fp32_top1 = float(self._fp32_right.mean())

    def measure(self, path: str | Path) -> tuple[float, float, float]:
        """(top-1, mean |logit - fp32 logit|, standard error of its drop in points) of the
        model ``path``. The drop's standard error is that of the paired difference (per image:
        fp32 right and this model wrong, or the reverse), what the drop's noise is on these
        images: with d images flipped either way out of n, about 100 sqrt(d) / n."""
        from .to_onnx import ort_session, run_onnx

        logits = run_onnx(ort_session(path), self.x, batch=self.batch)
        right = logits.argmax(1) == self.y
        paired = self._fp32_right - right
        se = 100.0 * float(paired.std(ddof=1)) / math.sqrt(len(paired)) if len(paired) > 1 else 0.0
        return float(right.mean()), float(np.abs(logits.astype(np.float64) - self.reference).mean()), se

    def logit_error(self, path: str | Path, images: Optional[int] = None) -> float:
        """Mean |logit - fp32 logit| of ``path`` on the first ``images`` (``RANK_IMAGES``)
        validation images (the split is already a seeded draw, so its head is one too)."""
        from .to_onnx import ort_session, run_onnx

        images = images or RANK_IMAGES

        logits = run_onnx(ort_session(path), self.x[:images], batch=self.batch)
        return float(np.abs(logits.astype(np.float64) - self.reference[:images]).mean())

    def drop_of(self, top1: float) -> float:
        """Points of top-1 below the fp32 file."""
        return round(100 * (self.fp32_top1 - top1), 4)


def bounded_int8(quantizer: Any, dst: str | Path, fp32_path: str | Path, images: np.ndarray, labels: np.ndarray,
                 max_drop: float, *, batch: Optional[int] = None, progress: Callable[[str], None] | None = None,
                 validator: Optional[Validator] = None) -> dict[str, Any]:
    """Write into ``dst`` the int8 model of ``quantizer`` (a ``precision.Int8Quantizer``)
    with the fewest most-sensitive layers in float that keeps its top-1 on (``images``,
    ``labels``) within ``max_drop`` points of the fp32 model ``fp32_path``; returns the
    conversion record plus ``"bound"`` (the bound, validation accuracies, reverted nodes).
    ``validator``: one already made on those images (the calibration search's)."""
    from .precision import layer_of

    say = progress or (lambda message: None)
    started = time.perf_counter()
    check = validator or Validator(fp32_path, images, labels, batch)
    measure, drop_of, y, fp32_top1 = check.measure, check.drop_of, check.y, check.fp32_top1

    dst = Path(dst)
    work = dst.with_name(dst.name + ".variant")
    conversion = quantizer.write(dst)
    plain_top1, plain_mad, _ = measure(dst)
    nodes = quantizer.quantized_nodes(dst)
    layers: dict[str, list[str]] = {}
    for node in nodes:
        layers.setdefault(layer_of(node), []).append(node)
    steps = [{"layers": 0, "top1": plain_top1, "drop_points": drop_of(plain_top1), "mean_abs_logit_diff": plain_mad}]
    ranking: list[dict[str, Any]] = []
    chosen: list[str] = []

    def trial(k: int) -> bool:
        names = [row["layer"] for row in ranking[:k]]
        say(f"{k} of {len(ranking)} layers in float")
        quantizer.write(work, [n for name in names for n in layers[name]], check=False)
        top1, mad, _ = measure(work)
        steps.append({"layers": k, "top1": top1, "drop_points": drop_of(top1), "mean_abs_logit_diff": mad})
        return drop_of(top1) <= max_drop

    try:
        if drop_of(plain_top1) > max_drop:
            say(f"int8 is {drop_of(plain_top1):.2f} points below fp32 on {len(y)} validation images; ranking "
                f"{len(layers)} layers")
            for i, (name, members) in enumerate(layers.items()):
                say(f"sensitivity of layer {i + 1}/{len(layers)} ({name})")
                quantizer.write(work, members, check=False)
                ranking.append({"layer": name, "nodes": len(members),
                                "mean_abs_logit_diff": check.logit_error(work)})
            ranking.sort(key=lambda r: r["mean_abs_logit_diff"])  # the lowest error left: the layer that cost most
            # every layer but the least sensitive: if that misses, only reverting all of them would do
            if len(ranking) < 2 or not trial(len(ranking) - 1):
                raise OfaError(f"--max-drop {max_drop:g}: int8 is {drop_of(plain_top1):.2f} points below fp32 on the "
                               f"{len(y)} validation images and stays above the bound with all but one of its "
                               f"{len(ranking)} quantized layers in float; no int8 model meets it (nothing written)")
            lo, hi = 0, len(ranking) - 1  # lo misses the bound, hi meets it (the drop falls, by and large, as k grows)
            while hi - lo > 1:
                mid = (lo + hi) // 2
                lo, hi = (lo, mid) if trial(mid) else (mid, hi)
            chosen = [row["layer"] for row in ranking[:hi]]
            conversion = quantizer.write(dst, [n for name in chosen for n in layers[name]])
            top1, mad, _ = measure(dst)
            steps.append({"layers": hi, "top1": top1, "drop_points": drop_of(top1), "mean_abs_logit_diff": mad,
                          "final": True})
            if drop_of(top1) > max_drop:  # the written file is measured again, not assumed
                raise OfaError(f"--max-drop {max_drop:g}: the int8 model with {hi} layers in float measured "
                               f"{drop_of(top1):.2f} points below fp32 on the validation images; nothing written")
    finally:
        work.unlink(missing_ok=True)
    final = steps[-1]
    reverted = [n for name in chosen for n in layers[name]]
    conversion["bound"] = {
        "max_drop_points": max_drop,
        "metric": "top-1 on the validation split, ONNX Runtime CPU provider, vs the fp32 file",
        "validation": {"images": int(len(y)), "fp32_top1": fp32_top1, "top1": final["top1"],
                       "drop_points": final["drop_points"], "plain_int8_top1": plain_top1,
                       "plain_int8_drop_points": drop_of(plain_top1)},
        "reverted_layers": chosen,
        "reverted_nodes": reverted,
        "reverted_count": len(reverted),
        "quantized_layers": len(layers),
        "quantized_nodes": len(nodes),
        "reverted_precision": quantizer.reverted_precision,
        "ranking": ("each layer (module: stem, block, head) alone in float, mean |logit - fp32 logit| on the "
                    f"first {min(RANK_IMAGES, len(y))} validation images, most error removed first; then the fewest "
                    "of them, in that order, found by "
                    "bisection") if ranking else None,
        "sensitivity": ranking,
        "steps": steps,
        "seconds": round(time.perf_counter() - started, 2),
    }
    return conversion
