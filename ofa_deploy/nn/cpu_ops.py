"""Convolutions of the supernet for CPU training: the same functions as ``F.conv2d``,
computed by the kernels that are fast on a CPU.

Most blocks of this search space run on 4x4, 2x2 and 1x1 feature maps (32x32 inputs) with
3x3 to 7x7 depthwise kernels. oneDNN, behind ``F.conv2d`` on a CPU, is slow there in three
ways (measured with ``ONEDNN_VERBOSE=1``, 64-image batches, one thread):

* the gradient of a depthwise *weight*: oneDNN's fast kernel (``jit_dw``) covers only 3x3
  kernels on maps of at least 4x4; everything else falls back to a generic grouped GEMM
  (``gemm:jit``) taking 20-60 ms per layer - most of a training step;
* kernels larger than the map: on a 2x2 map a 7x7 kernel with padding 3 only ever touches
  the input with its centre 3x3 taps, yet plain-layout forwards of such convs also run on
  ``gemm:jit``;
* 1x1 convolutions on 2x2 and 1x1 maps (the last stages, SE and the head) are 1.5-3x
  slower than the same matrix product through ``F.linear`` (MKL).

So:

* ``depthwise_conv2d`` crops the kernel to the taps that can touch the input
  (``effective_window``; exact: the other taps only ever multiply zero padding, and their
  gradient is exactly zero either way), runs a 1x1 window as a per-channel scale, and
  computes the weight gradient as a *forward* depthwise convolution, oneDNN's fastest
  kernel: for each (image, channel) pair, correlating the padded input with the output
  gradient gives that pair's k x k weight gradient; the sum over images is the channel's
  (``_weight_grad``). The input gradient is the stock one (``jit_dw``);
* ``pointwise_conv2d`` runs a 1x1 convolution on a map of at most 2x2 as ``F.linear`` on
  the channels-last view of its input (no copy for channels-last tensors);
* on larger maps with more than one thread it keeps oneDNN's convolution and its input
  gradient, and computes oneDNN's *weight* gradient on one thread per batch share
  (``_pointwise_weight_grad``). oneDNN splits that gradient's sum over the images among
  the threads and joins them; on the loaded 2-core VM (load 7-10) that gradient took
  8.0 ms per call at 2 threads whatever the size (0.3 ms at one thread, the input
  gradient 0.3 ms at both): the smallest subnet has 9 such convs, ~70 ms of a profiled
  ~130 ms 2-thread step (on a quiet machine the join costs little and this gains nothing
  measurable). The shares are ``balance211``'s, so the
  sum is bit-identical to oneDNN's 2-thread result; each (shape, strides, threads) is
  checked once on random data, and stays on the stock kernel if it is not.

Every op is deterministic for a given thread count, so training stays a pure function of
its seed. On CUDA (cuDNN has good kernels) and inside ``stock_ops()`` the stock ops run.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn.functional as F

_FAST = True
_LINEAR_MAX_PIXELS = 4  # 1x1 convs on maps up to 2x2 run as F.linear (measured faster there)


@contextmanager
def stock_ops() -> Iterator[None]:
    """Run plain ``F.conv2d`` everywhere inside the block (the baseline of benchmarks and
    an oracle for tests)."""
    global _FAST
    saved, _FAST = _FAST, False
    try:
        yield
    finally:
        _FAST = saved


def effective_window(size: int, kernel: int, stride: int, padding: int) -> tuple[int, int, int, int]:
    """(first tap, taps, left padding, right padding) of the taps of a ``kernel``-wide
    window (along one axis of a ``size``-wide input, ``stride``, symmetric ``padding``)
    that read an input pixel for at least one output; the others only read padding.
    The cropped window with these paddings gives the same number of outputs."""
    out = (size + 2 * padding - kernel) // stride + 1
    first = max(0, padding - (out - 1) * stride)
    last = min(kernel - 1, padding + size - 1)
    left = padding - first
    right = max(0, (out - 1) * stride - padding + last - (size - 1))
    if (size + left + right - (last - first + 1)) // stride + 1 != out:
        return 0, kernel, padding, padding
    return first, last - first + 1, left, right


def depthwise_conv2d(x: torch.Tensor, weight: torch.Tensor, stride: int, padding: int) -> torch.Tensor:
    """``F.conv2d(x, weight, None, stride, padding, 1, C)`` for (N, C, H, W) ``x`` and
    (C, 1, k, k) ``weight`` (square maps and kernels)."""
    channels, size, k = x.shape[1], x.shape[2], weight.shape[-1]
    if not _FAST or x.device.type != "cpu" or x.shape[3] != size:
        return F.conv2d(x, weight, None, stride, padding, 1, channels)
    first, taps, left, right = effective_window(size, k, stride, padding)
    if taps < k:
        weight = weight[:, :, first:first + taps, first:first + taps]
        if taps == 1 and stride == 1 and left == right == 0:
            return x * weight.reshape(1, channels, 1, 1)
        if left != right:
            x, left, right = F.pad(x, (left, right, left, right)), 0, 0
        padding = left
    if torch.is_grad_enabled() and weight.requires_grad and not (taps == 3 and size >= 4):
        # oneDNN's own jit_dw weight gradient covers 3x3 kernels on maps of 4x4 and up
        return _Depthwise.apply(x, weight, stride, padding)
    return F.conv2d(x, weight, None, stride, padding, 1, channels)


def pointwise_conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.conv2d(x, weight, bias)`` for a (O, I, 1, 1) ``weight``."""
    if not _FAST or x.device.type != "cpu":
        return F.conv2d(x, weight, bias)
    if x.shape[2] * x.shape[3] > _LINEAR_MAX_PIXELS:
        # is_compiling first: torch.get_num_threads() would break a torch.compile graph
        if not torch.compiler.is_compiling() and bias is None and weight.requires_grad and torch.is_grad_enabled() \
                and torch.get_num_threads() > 1 and not torch.is_autocast_enabled("cpu"):
            return _Pointwise.apply(x, weight)
        return F.conv2d(x, weight, bias)
    out = F.linear(x.permute(0, 2, 3, 1), weight.reshape(weight.shape[0], weight.shape[1]), bias)
    return out.permute(0, 3, 1, 2)


def _weight_grad(x: torch.Tensor, grad_out: torch.Tensor, k: int, stride: int, padding: int) -> torch.Tensor:
    """d loss / d weight of a depthwise conv as one forward depthwise conv over N x C
    (image, channel) pairs: out[n, c, i, j] = sum_hw x_pad[n, c, i + s h, j + s w] g[n, c, h, w]."""
    n, c, h, w = x.shape
    ho, wo = grad_out.shape[2:]
    pairs = F.conv2d(x.reshape(1, n * c, h, w), grad_out.reshape(n * c, 1, ho, wo), None, 1, padding, stride, n * c)
    return pairs[:, :, :k, :k].reshape(n, c, k, k).sum(0).unsqueeze(1)


def balance211(n: int, parts: int) -> list[int]:
    """oneDNN's split of ``n`` items over ``parts`` threads: the first ones get one more."""
    big = -(-n // parts)
    first = n - (big - 1) * parts
    return [big if i < first else big - 1 for i in range(parts)]


_SPLIT_EXACT: dict[tuple, bool] = {}  # (shapes, strides, dtype, threads) -> the split reproduces oneDNN


def _stock_pointwise_weight_grad(x: torch.Tensor, grad_out: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return torch.ops.aten.convolution_backward(
        grad_out, x, weight, None, [1, 1], [0, 0], [1, 1], False, [0, 0], 1, [False, True, False])[1]


def _split_pointwise_weight_grad(x: torch.Tensor, grad_out: torch.Tensor, weight: torch.Tensor,
                                 threads: int) -> torch.Tensor | None:
    """The weight gradient as each of ``threads`` oneDNN threads computes its share of the
    images, summed in thread order; run on one thread, so no barrier. None: a share is empty."""
    shares = balance211(x.shape[0], threads)
    if min(shares) == 0:
        return None
    torch.set_num_threads(1)
    try:
        total, lo = None, 0
        for share in shares:
            part = _stock_pointwise_weight_grad(x[lo:lo + share], grad_out[lo:lo + share], weight)
            total = part if total is None else total.add_(part)  # in place: keeps oneDNN's strides
            lo += share
    finally:
        torch.set_num_threads(threads)
    return total


def _pointwise_weight_grad(x: torch.Tensor, grad_out: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    threads = torch.get_num_threads()
    key = (tuple(x.shape), x.stride(), tuple(grad_out.shape), grad_out.stride(), tuple(weight.shape),
           weight.stride(), x.dtype, threads)
    exact = _SPLIT_EXACT.get(key)
    if exact is None:
        exact = _SPLIT_EXACT[key] = _split_is_exact(x, grad_out, weight, threads)
    if exact:
        return _split_pointwise_weight_grad(x, grad_out, weight, threads)
    return _stock_pointwise_weight_grad(x, grad_out, weight)


def _split_is_exact(x: torch.Tensor, grad_out: torch.Tensor, weight: torch.Tensor, threads: int) -> bool:
    """Whether the split gives oneDNN's bits for tensors of these shapes and strides, tried
    on random values from a private generator (the run's random stream is untouched)."""
    if any(st == 0 and size > 1 for t in (x, grad_out, weight) for st, size in zip(t.stride(), t.shape)):
        return False  # an expanded tensor: random values cannot be written into it
    gen = torch.Generator().manual_seed(0)
    a, g, w = (torch.empty_strided(t.shape, t.stride(), dtype=t.dtype).normal_(generator=gen)
               for t in (x, grad_out, weight))
    got = _split_pointwise_weight_grad(a, g, w, threads)
    want = _stock_pointwise_weight_grad(a, g, w)
    return got is not None and got.stride() == want.stride() and torch.equal(got, want)


class _Pointwise(torch.autograd.Function):
    """``F.conv2d(x, weight)`` (1x1, no bias) whose weight gradient avoids oneDNN's
    multi-thread barrier (``_pointwise_weight_grad``); forward and input gradient are the
    stock ones."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        return F.conv2d(x, weight)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        x, weight = ctx.saved_tensors
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.ops.aten.convolution_backward(
                grad_out, x, weight, None, [1, 1], [0, 0], [1, 1], False, [0, 0], 1, [True, False, False])[0]
        if ctx.needs_input_grad[1]:
            grad_w = _pointwise_weight_grad(x, grad_out, weight)
        return grad_x, grad_w


class _Depthwise(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, stride: int, padding: int) -> torch.Tensor:
        if torch.is_autocast_enabled("cpu"):
            # bf16 autocast (--amp bf16 on a CPU): save what the convolution reads, so the
            # backward's kernels see one dtype; autograd casts the gradients back to x's and
            # the weight's own dtypes
            dtype = torch.get_autocast_dtype("cpu")
            x, weight = x.to(dtype), weight.to(dtype)
        ctx.save_for_backward(x, weight)
        ctx.stride, ctx.padding = stride, padding
        return F.conv2d(x, weight, None, stride, padding, 1, x.shape[1])

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        x, weight = ctx.saved_tensors
        s, p = ctx.stride, ctx.padding
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.ops.aten.convolution_backward(
                grad_out, x, weight, None, [s, s], [p, p], [1, 1], False, [0, 0], x.shape[1], [True, False, False]
            )[0]
        if ctx.needs_input_grad[1]:
            grad_w = _weight_grad(x, grad_out, weight.shape[-1], s, p)
        return grad_x, grad_w, None, None


__all__ = ["depthwise_conv2d", "pointwise_conv2d", "effective_window", "stock_ops"]
