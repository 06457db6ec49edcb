"""Quantization-aware fine-tuning of an extracted subnet before its int8 export (issue 31, item 3).

An experiment, not part of the package: it did not earn its place (README.md beside it).

Post-training quantization changes the prediction of a few percent of the images against the
fp32 network, in both directions; on a small test split that alone moves the measured drop by
more than a 0.5-point bound. This fine-tune pulls the quantized network's logits towards the
fp32 network's own: a few hundred steps of distillation (KL divergence to the fp32 subnet's
softmax; no labels, so any training images do) with the flavour's quantization simulated in
the forward pass and straight-through gradients (``torch.fake_quantize_per_*``, torch's own
fake-quantization ops):

* the input of every Conv / Linear: per-tensor, int8 with zero point 0 for the TensorRT
  flavour, uint8 with a zero point for the ONNX Runtime flavour, ranges fixed from a MinMax
  pass over the images before the first step;
* every Conv / Linear weight: per output channel, symmetric, [-127, 127] (TensorRT) or the
  7-bit [-64, 64] of ONNX Runtime's ``reduce_range`` recipe, scales recomputed each step.

BN runs on its recalibrated statistics throughout (eval mode), so the network written is the
one trained. The result is a float network again; the int8 file is then made from it exactly
as from any subnet (``precision.convert_precision`` / the bound's calibration search), so
what the quantizer writes, and every measurement of it, is the same machinery with or
without this step; its drop is measured against the fp32 network *before* the fine-tune.

Why not ``torch.ao`` QAT + export of its quantized graph: its modules would have to
reproduce both flavours' Q/DQ placement and ONNX Runtime's quantizer would no longer be the
one writing the file, so the catalog's int8 entries would mean two different things.
"""

from __future__ import annotations

import copy
import math
import time
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from ofa_deploy.errors import OfaError
from ofa_deploy.nn.cpu_ops import depthwise_conv2d, pointwise_conv2d

QAT_DEFAULTS: dict[str, Any] = {
    "steps": 300,        # "a few hundred steps" (the issue); ~10 passes over 2,000 images at batch 64
    "batch": 64,
    "lr": 1e-3,          # SGD, cosine to 0; about 1/50 of the supernet's peak training lr
    "momentum": 0.9,
    "range_images": 512,  # images of the MinMax pass that fixes the activation ranges
}
FLAVOURS = {
    # activations: (quant_min, quant_max, symmetric); weights: symmetric integer range
    "tensorrt": {"act": (-128, 127, True), "weight": 127},
    "onnxruntime": {"act": (0, 255, False), "weight": 64},
}


class _FakeQuant(nn.Module):
    """A Conv2d or Linear whose input and weight are fake-quantized; same shapes as ``inner``."""

    def __init__(self, inner: nn.Module, flavour: str) -> None:
        super().__init__()
        self.inner = inner
        self.act_min, self.act_max, self.symmetric = FLAVOURS[flavour]["act"]
        self.weight_max = FLAVOURS[flavour]["weight"]
        self.register_buffer("lo", torch.tensor(math.inf))
        self.register_buffer("hi", torch.tensor(-math.inf))
        self.observing = True

    def _qparams(self) -> tuple[float, int]:
        lo, hi = min(float(self.lo), 0.0), max(float(self.hi), 0.0)
        if self.symmetric:
            return max(max(-lo, hi) / self.act_max, 1e-8), 0
        scale = max((hi - lo) / (self.act_max - self.act_min), 1e-8)
        return scale, int(min(max(round(self.act_min - lo / scale), self.act_min), self.act_max))

    def quantize_input(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` as this layer's input Q/DQ pair leaves it (observed, unchanged, while observing)."""
        if self.observing:
            self.lo = torch.minimum(self.lo, x.detach().min())
            self.hi = torch.maximum(self.hi, x.detach().max())
            return x
        scale, zero = self._qparams()
        return torch.fake_quantize_per_tensor_affine(x, scale, zero, self.act_min, self.act_max)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.inner.weight
        x = self.quantize_input(x)
        if not self.observing:
            amax = weight.detach().abs().flatten(1).amax(1).clamp_min(1e-8)
            weight = torch.fake_quantize_per_channel_affine(
                weight, amax / self.weight_max, torch.zeros_like(amax, dtype=torch.int32), 0,
                -self.weight_max, self.weight_max)
        if isinstance(self.inner, nn.Linear):
            return F.linear(x, weight, self.inner.bias)
        conv = self.inner
        # the trainer's CPU kernels: stock depthwise weight gradients are most of a CPU step (nn.cpu_ops)
        if conv.groups == conv.in_channels == conv.out_channels and conv.bias is None and conv.dilation == (1, 1):
            return depthwise_conv2d(x, weight, conv.stride[0], conv.padding[0])
        if conv.kernel_size == (1, 1) and conv.stride == (1, 1) and conv.groups == 1:
            return pointwise_conv2d(x, weight, conv.bias)
        return F.conv2d(x, weight, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups)


def _wrap(module: nn.Module, flavour: str) -> list[_FakeQuant]:
    wrapped = []
    for name, child in list(module.named_children()):
        if isinstance(child, (nn.Conv2d, nn.Linear)):
            fq = _FakeQuant(child, flavour)
            setattr(module, name, fq)
            wrapped.append(fq)
        else:
            wrapped += _wrap(child, flavour)
    return wrapped


def _quantized_skips(net: nn.Module) -> list[Any]:
    """Residual blocks read their input through the first conv's Q/DQ pair, skip included.

    ONNX Runtime's quantizer gives a tensor one Q/DQ pair and rewires every consumer to its
    DequantizeLinear, so a residual Add's skip input is the quantized block input, not the
    float one; simulated without it, the fine-tune's error and the file's were uncorrelated
    (mean |logit difference| 0.27 between them, 0.21-0.23 each against fp32). Quantizing the
    input again inside the conv is idempotent (same scale and zero point). Returns the hooks' handles."""
    handles = []
    for module in net.modules():
        if getattr(module, "residual", False):
            first = module.expand if getattr(module, "expand", None) is not None else module.dw
            if isinstance(first, _FakeQuant):
                handles.append(module.register_forward_pre_hook(
                    lambda _m, args, fq=first: (fq.quantize_input(args[0]),)))
    return handles


def _unwrap(module: nn.Module) -> None:
    for name, child in list(module.named_children()):
        if isinstance(child, _FakeQuant):
            setattr(module, name, child.inner)
        else:
            _unwrap(child)


def qat_finetune(net: nn.Module, images: torch.Tensor, *, flavour: str, steps: int = QAT_DEFAULTS["steps"],
                 batch: int = QAT_DEFAULTS["batch"], lr: float = QAT_DEFAULTS["lr"], seed: int = 0,
                 progress: Callable[[str], None] | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """A copy of the static subnet ``net`` fine-tuned for ``flavour``'s int8 (``"tensorrt"`` or
    ``"onnxruntime"``) on ``images`` (N, C, H, W), normalised training images, by distillation
    from ``net`` itself; and the record of it (``"qat"`` in ``model.json``). Deterministic by
    ``seed`` on a CPU. ``net`` is left as it was."""
    if flavour not in FLAVOURS:
        raise OfaError(f"quantization-aware fine-tuning: unknown flavour {flavour!r} (one of {sorted(FLAVOURS)})")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise OfaError(f"--qat-steps must be a whole number >= 1, got {steps!r}")
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise OfaError(f"--qat-lr must be a finite number > 0, got {lr!r}")
    if images is None or len(images) == 0:
        raise OfaError("quantization-aware fine-tuning needs training images")
    say = progress or (lambda message: None)
    started = time.perf_counter()
    teacher = net.eval()
    student = copy.deepcopy(net).eval()  # eval: BN keeps its recalibrated statistics, dropout off
    quantized = _wrap(student, flavour)
    hooks = _quantized_skips(student)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for chunk in images[torch.randperm(len(images), generator=gen)[: QAT_DEFAULTS["range_images"]]].split(256):
            student(chunk)
    for fq in quantized:
        fq.observing = False
    params = [p for p in student.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=lr, momentum=QAT_DEFAULTS["momentum"])
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    losses = []
    for step in range(steps):
        x = images[torch.randint(len(images), (min(batch, len(images)),), generator=gen)]
        with torch.no_grad():
            target = F.softmax(teacher(x), dim=1)
        loss = F.kl_div(F.log_softmax(student(x), dim=1), target, reduction="batchmean")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if not math.isfinite(losses[-1]):
            raise OfaError(f"quantization-aware fine-tuning diverged at step {step + 1} (loss {losses[-1]}); "
                           "try a smaller --qat-lr")
        if (step + 1) % 50 == 0 or step + 1 == steps:
            say(f"quantization-aware fine-tune: step {step + 1}/{steps}, distillation loss {losses[-1]:.4f}")
    for hook in hooks:
        hook.remove()
    _unwrap(student)
    window = max(1, steps // 10)
    record = {
        "flavour": flavour, "steps": steps, "batch": min(batch, len(images)), "lr": lr, "optimizer": "sgd",
        "momentum": QAT_DEFAULTS["momentum"], "schedule": "cosine", "seed": seed, "images": int(len(images)),
        "objective": "KL divergence to the fp32 subnet's softmax (no labels)",
        "activation_ranges": f"minmax over {min(len(images), QAT_DEFAULTS['range_images'])} images, fixed",
        "loss_first": round(sum(losses[:window]) / window, 6), "loss_last": round(sum(losses[-window:]) / window, 6),
        "seconds": round(time.perf_counter() - started, 2),
    }
    return student.eval(), record
