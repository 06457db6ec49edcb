"""The supernet's CPU training kernels (``nn.cpu_ops``) against ``F.conv2d`` as the oracle,
and the training layout's guarantees that do not need a subprocess."""

from __future__ import annotations

import itertools
from contextlib import contextmanager, nullcontext

import pytest
import torch
import torch.nn.functional as F
from conftest import one_torch_thread

from ofa_deploy.nn import StaticSubnet, Supernet, cpu_ops
from ofa_deploy.nn.cpu_ops import balance211, depthwise_conv2d, effective_window, pointwise_conv2d, stock_ops
from ofa_deploy.space import SearchSpace

SPACE = SearchSpace(in_channels=1, num_classes=10)


@pytest.fixture(autouse=True)
def _one_thread():
    with one_torch_thread():
        yield


def _grads(fn, x, w, b, g):
    out = fn(x, w, b)
    inputs = [t for t in (x, w, b) if t is not None]
    return [out, *torch.autograd.grad(out, inputs, g)]


@pytest.mark.parametrize("channels_last", [False, True])
def test_depthwise_matches_conv2d_values_and_gradients(channels_last):
    """Every map size, kernel and stride the space uses (and odd sizes), in float64 so that
    only a wrong formula, not summation order, can fail."""
    gen = torch.Generator().manual_seed(0)
    for size, k, stride in itertools.product((1, 2, 3, 4, 5, 8, 16), (3, 5, 7), (1, 2)):
        if size < stride:
            continue
        x = torch.randn(3, 8, size, size, dtype=torch.float64, generator=gen)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        x.requires_grad_()
        w = torch.randn(8, 1, k, k, dtype=torch.float64, generator=gen, requires_grad=True)
        ref = F.conv2d(x, w, None, stride, k // 2, 1, 8)
        g = torch.randn(ref.shape, dtype=torch.float64, generator=gen)
        want = _grads(lambda a, b, _: F.conv2d(a, b, None, stride, k // 2, 1, 8), x, w, None, g)
        got = _grads(lambda a, b, _: depthwise_conv2d(a, b, stride, k // 2), x, w, None, g)
        for name, a, b in zip(("output", "input grad", "weight grad"), want, got):
            assert a.shape == b.shape and torch.allclose(a, b, rtol=0, atol=1e-10), (size, k, stride, name)


def test_effective_window_drops_only_taps_that_read_padding():
    assert effective_window(1, 7, 1, 3) == (3, 1, 0, 0)  # a 1x1 map sees the centre tap only
    assert effective_window(2, 7, 1, 3) == (2, 3, 1, 1)
    assert effective_window(2, 7, 2, 3) == (3, 2, 0, 0)  # stride 2 to a 1x1 output: a 2x2 window
    assert effective_window(8, 7, 1, 3) == (0, 7, 3, 3)  # nothing to crop
    for size, k, stride in itertools.product(range(1, 10), (3, 5, 7), (1, 2)):
        p = k // 2
        first, taps, left, right = effective_window(size, k, stride, p)
        out = (size + 2 * p - k) // stride + 1
        assert (size + left + right - taps) // stride + 1 == out
        touched = {i for o in range(out) for i in range(k) if 0 <= o * stride - p + i < size}
        assert touched <= set(range(first, first + taps)), (size, k, stride)


@pytest.mark.parametrize("pixels", [1, 2, 4])
def test_pointwise_matches_conv2d(pixels):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(5, 12, pixels, pixels, dtype=torch.float64, generator=gen)
    x = x.contiguous(memory_format=torch.channels_last).requires_grad_()
    w = torch.randn(20, 12, 1, 1, dtype=torch.float64, generator=gen, requires_grad=True)
    b = torch.randn(20, dtype=torch.float64, generator=gen, requires_grad=True)
    g = torch.randn(5, 20, pixels, pixels, dtype=torch.float64, generator=gen)
    for a, c in zip(_grads(F.conv2d, x, w, b, g), _grads(pointwise_conv2d, x, w, b, g)):
        assert torch.allclose(a, c, rtol=0, atol=1e-10)


@contextmanager
def _threads(n):
    saved = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def test_balance211_splits_like_onednn():
    assert balance211(64, 2) == [32, 32]
    assert balance211(63, 2) == [32, 31]
    assert balance211(10, 4) == [3, 3, 2, 2]
    assert balance211(1, 2) == [1, 0]


# (images, in, out, map side): the 1x1 convs of the smallest subnet on maps > 2x2, an odd
# batch, a micro-batch smaller than the threads and wider layers of the larger subnets
_POINTWISE_SHAPES = [(64, 16, 48, 16), (64, 24, 72, 8), (64, 72, 24, 8), (64, 40, 120, 4), (64, 240, 40, 4),
                     (63, 24, 96, 8), (1, 8, 8, 4), (64, 160, 40, 8)]


def test_pointwise_at_two_threads_is_bit_identical_to_conv2d():
    """At 2 threads the 1x1 conv's weight gradient is summed from one-thread batch shares
    (or oneDNN's own where that would differ): float32 output and both gradients must
    equal F.conv2d's bit for bit, strides included."""
    gen = torch.Generator().manual_seed(2)
    with _threads(2):
        for n, ci, co, s in _POINTWISE_SHAPES:
            x = torch.randn(n, ci, s, s, generator=gen).contiguous(memory_format=torch.channels_last)
            x.requires_grad_()
            w = torch.randn(co, 2 * ci, 1, 1, generator=gen).contiguous(memory_format=torch.channels_last)
            w = w.requires_grad_()
            g = torch.randn(n, co, s, s, generator=gen).contiguous(memory_format=torch.channels_last)
            # the supernet passes slices of its weights (here: the first ci input channels)
            want = _grads(lambda a, b, _: F.conv2d(a, b[:, :ci]), x, w, None, g)
            got = _grads(lambda a, b, _: pointwise_conv2d(a, b[:, :ci]), x, w, None, g)
            for name, a, b in zip(("output", "input grad", "weight grad"), want, got):
                assert a.stride() == b.stride() and torch.equal(a, b), (n, ci, co, s, name)


def test_split_verdict_holds_on_other_values():
    """A (shape, threads) judged exact on random values stays exact on other values; one
    judged inexact is computed by the stock kernel."""
    gen = torch.Generator().manual_seed(3)
    with _threads(2):
        for n, ci, co, s in _POINTWISE_SHAPES:
            x = torch.randn(n, ci, s, s, generator=gen).contiguous(memory_format=torch.channels_last)
            w = torch.randn(co, ci, 1, 1, generator=gen).contiguous(memory_format=torch.channels_last)
            g = torch.randn(n, co, s, s, generator=gen).contiguous(memory_format=torch.channels_last)
            want = cpu_ops._stock_pointwise_weight_grad(x, g, w)
            if cpu_ops._split_is_exact(x, g, w, 2):
                assert torch.equal(cpu_ops._split_pointwise_weight_grad(x, g, w, 2), want), (n, ci, co, s)
            assert torch.equal(cpu_ops._pointwise_weight_grad(x, g, w), want)
            assert torch.get_num_threads() == 2  # the split restores the thread count


def test_supernet_two_thread_step_is_bit_identical_without_the_split(monkeypatch):
    """A float32 training step of the smallest subnet at 2 threads: the same loss and
    gradients, bit for bit, as with oneDNN's own 1x1 weight gradients."""
    torch.manual_seed(0)
    net = Supernet(SPACE).to(memory_format=torch.channels_last).train()
    x = torch.randn(64, 1, 32, 32).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (64,))
    runs, calls = [], []
    counted = cpu_ops._pointwise_weight_grad
    with _threads(2):
        for split in (False, True):
            with monkeypatch.context() as m:
                if not split:
                    m.setattr(cpu_ops._Pointwise, "apply", lambda a, b: F.conv2d(a, b))
                m.setattr(cpu_ops, "_pointwise_weight_grad", lambda *a: calls.append(split) or counted(*a))
                net.zero_grad(set_to_none=True)
                torch.manual_seed(1)
                loss = F.cross_entropy(net(x, SPACE.smallest()), y)
                loss.backward()
            runs.append([loss.detach()] + [p.grad.clone() for p in net.parameters() if p.grad is not None])
    assert calls and all(calls)  # the split route was taken (1x1 convs on 16x16 to 4x4 maps)
    assert len(runs[0]) == len(runs[1])
    assert all(a.stride() == b.stride() and torch.equal(a, b) for a, b in zip(*runs))


def test_supernet_training_step_matches_stock_ops():
    """A whole forward/backward of the supernet with the CPU kernels vs with plain F.conv2d."""
    torch.manual_seed(0)
    net = Supernet(SPACE).double().to(memory_format=torch.channels_last).train()
    x = torch.randn(6, 1, 32, 32, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (6,))
    for subnet in (SPACE.smallest(), SPACE.middle(), SPACE.largest()):
        runs = []
        for ctx in (stock_ops, nullcontext):
            net.zero_grad(set_to_none=True)
            torch.manual_seed(1)
            with ctx():
                loss = F.cross_entropy(net(x, subnet), y)
                loss.backward()
            runs.append([loss.detach()] + [p.grad.clone() for p in net.parameters() if p.grad is not None])
        assert len(runs[0]) == len(runs[1])
        assert all(torch.allclose(a, b, rtol=1e-9, atol=1e-12) for a, b in zip(*runs)), str(subnet)


def test_teacher_is_the_same_whether_extracted_or_loaded():
    """The cause of the old channels-last resume bug: the teacher's strides (hence oneDNN's
    kernels and its logits' last bits) depended on where its weights came from."""
    from ofa_deploy.train.trainer import _Trainer

    torch.manual_seed(0)
    net = Supernet(SPACE).to(memory_format=torch.channels_last)
    holder = _Trainer.__new__(_Trainer)
    holder.space, holder.device, holder.layout = SPACE, torch.device("cpu"), torch.channels_last
    fresh = holder._teacher(net.extract(SPACE.largest()).state_dict())
    saved = {k: v.clone() for k, v in fresh.state_dict().items()}  # what a checkpoint holds
    loaded = holder._teacher(saved)
    assert isinstance(loaded, StaticSubnet) and not loaded.training
    for (name, a), (_, b) in zip(fresh.state_dict().items(), loaded.state_dict().items()):
        assert a.stride() == b.stride() and torch.equal(a, b), name
    x = torch.randn(8, 1, 32, 32).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        assert torch.equal(fresh(x), loaded(x))


def test_fast_measurement_copy_keeps_the_function_of_an_extracted_subnet():
    from ofa_deploy.evaluate.population import fast_measurement_copy

    torch.manual_seed(0)
    net = Supernet(SPACE).eval()
    x = torch.randn(4, 1, 32, 32, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    for subnet in (SPACE.smallest(), SPACE.largest()):
        static = net.extract(subnet).double().to(memory_format=torch.channels_last)
        want = static(x)
        fast_measurement_copy(static)
        assert type(static.head.feature_mix).__name__ == "_Pointwise"
        assert torch.allclose(static(x), want, rtol=0, atol=1e-12)
        assert set(static.state_dict()) == set(net.extract(subnet).state_dict())
