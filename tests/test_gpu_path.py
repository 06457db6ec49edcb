"""The GPU training path, tested on a CPU (issue 14; no GPU in CI).

* precision: ``--amp`` resolution and refusals, bf16 autocast training on a CPU, fp32 the
  CPU default bit for bit;
* CUDA graphs: which epochs are captured (``plan``, ``epoch_subnet``), and ``GraphedStep``'s
  warm-up / capture / in-place refill / replay sequence against ``FakeGraphApi``, a CPU fake
  of ``torch.cuda.CUDAGraph``'s contract, with eager training as the oracle (bit-identical);
* profile and bench refusals for ``cuda`` without CUDA.

Only a GPU exercises ``CudaGraphApi`` itself (real capture, side streams), the fused SGD
kernel reading a CUDA learning-rate tensor and graph-safe dropout RNG.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_one_line_error, one_torch_thread, run_cli

from ofa_deploy import run, weights
from ofa_deploy.errors import OfaError
from ofa_deploy.nn import Supernet
from ofa_deploy.space import SearchSpace
from ofa_deploy.train import TrainConfig, amp, cuda_graphs, train
from ofa_deploy.train.cuda_graphs import EpochGraphs, GraphedStep, epoch_subnet, plan, prime_momentum
from ofa_deploy.train.schedules import RSS, Fixed, Phase, ProgressiveShrinking, Sandwich, TwoSubnets

SPACE = SearchSpace(in_channels=1, num_classes=10)
TINY = dict(dataset="digits", method="fixed", subnet="smallest", epochs=1, train_subset=16, batch_size=8,
            device="cpu", quiet=True, seed=3)
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _one_thread():
    with one_torch_thread():
        yield


# -- precision ----------------------------------------------------------------------------------
def test_precision_resolution_and_refusals(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert amp.resolve_precision(None, "cpu") == "fp32" and amp.resolve_precision(None, "auto") == "fp32"
    assert amp.resolve_precision(False, "cpu") == "fp32"  # older config.toml: amp = false
    assert amp.resolve_precision("bf16", "cpu") == "bf16"
    with pytest.raises(OfaError, match="fp16 needs a CUDA device"):
        amp.resolve_precision("fp16", "cpu")
    with pytest.raises(OfaError, match="CUDA"):
        amp.resolve_precision(True, "cpu")
    with pytest.raises(OfaError, match="not a precision"):
        amp.resolve_precision("int8", "cpu")
    assert amp.resolve_precision("bf16", "cuda") == "bf16"  # no GPU here: the trainer's device check speaks
    # a GPU with and without bf16 (the decision only, nothing runs on it)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    with pytest.raises(OfaError, match="does not support bfloat16"):
        amp.resolve_precision("bf16", "cuda")
    assert amp.resolve_precision(None, "cuda") == "fp32" and amp.resolve_precision("fp16", "cuda:0") == "fp16"
    assert amp.resolve_precision(True, "cuda") == "fp16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert amp.resolve_precision(None, "cuda") == "bf16" and amp.resolve_precision(None, "auto") == "bf16"
    assert amp.table_value("fp32") is False and amp.table_value("bf16") == "bf16"
    assert amp.grad_scaler("bf16", "cpu") is None and amp.grad_scaler("fp32", "cuda") is None


def _weights(run_dir: Path) -> dict:
    return weights.load_checkpoint(run_dir / run.FINAL)["model"]


def test_fp32_stays_the_cpu_default_bit_for_bit_and_bf16_trains(tmp_path):
    default = train(TrainConfig(out=str(tmp_path / "default"), **TINY))
    explicit = train(TrainConfig(out=str(tmp_path / "fp32"), amp="fp32", **TINY))
    legacy = train(TrainConfig(out=str(tmp_path / "legacy"), amp=False, **TINY))
    a, b, c = _weights(default), _weights(explicit), _weights(legacy)
    assert all(torch.equal(a[k], b[k]) and torch.equal(a[k], c[k]) for k in a)
    assert run.read_config(default)["train"]["amp"] is False  # config.toml as before the switch
    bf16 = train(TrainConfig(out=str(tmp_path / "bf16"), amp="bf16", **TINY))
    assert run.read_config(bf16)["train"]["amp"] == "bf16"
    w = _weights(bf16)
    assert all(w[k].dtype == a[k].dtype for k in a)  # autocast: fp32 master weights
    assert all(torch.isfinite(w[k].float()).all() for k in w)
    changed = [k for k in a if a[k].is_floating_point() and not torch.equal(a[k], w[k])]
    assert changed, "bf16 autocast trained exactly like fp32: autocast did not act"
    metrics = [json.loads(x) for x in (bf16 / run.METRICS).read_text().splitlines()]
    assert math.isfinite(metrics[-1]["loss"])
    # the same run asked for again (bf16 recorded) is recognised, not refused
    assert train(TrainConfig(out=str(tmp_path / "bf16"), amp="bf16", **TINY)) == bf16


def test_bf16_run_resumes_bit_identically_on_a_cpu(tmp_path):
    """A bf16 run stopped after its first epoch and resumed (precision read back from
    config.toml) ends with the uninterrupted run's weights."""
    from ofa_deploy.train import resume

    cfg = dict(TINY, method="rss", subnet=None, epochs=2, amp="bf16")
    whole = train(TrainConfig(out=str(tmp_path / "whole"), **cfg))

    class Stop(Exception):
        pass

    def stop(done, total):
        raise Stop

    with pytest.raises(Stop):
        train(TrainConfig(out=str(tmp_path / "cut"), **cfg), on_epoch=stop)
    assert (tmp_path / "cut" / run.LAST).is_file() and not (tmp_path / "cut" / run.FINAL).exists()
    resumed = resume(tmp_path / "cut", progress=False)
    a, b = _weights(whole), _weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_bf16_depthwise_kernel_matches_stock_autocast():
    """The CPU depthwise kernel under bf16 autocast: gradients in the parameters' dtype,
    close to the stock convolution's under the same autocast."""
    from ofa_deploy.nn.cpu_ops import depthwise_conv2d

    torch.manual_seed(0)
    x = torch.randn(4, 8, 2, 2, requires_grad=True)
    w = torch.randn(8, 1, 5, 5, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = depthwise_conv2d(x, w, 1, 2)
    out.float().square().sum().backward()
    gx, gw = x.grad.clone(), w.grad.clone()
    assert gx.dtype == torch.float32 and gw.dtype == torch.float32
    x.grad = w.grad = None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref = F.conv2d(x, w, None, 1, 2, 1, 8)
    ref.float().square().sum().backward()
    assert torch.allclose(out.float(), ref.float(), rtol=0.02, atol=0.02)
    assert torch.allclose(gw, w.grad, rtol=0.05, atol=0.05 * w.grad.abs().max().item())


def test_cli_refuses_fp16_and_graphs_on_a_cpu(tmp_path, capsys):
    base = ["train", "--dataset", "digits", "--epochs", "1", "--train-subset", "16", "--batch-size", "8",
            "--device", "cpu", "--quiet"]
    code, _, err = run_cli(capsys, *base, "--amp", "fp16", "--out", tmp_path / "a")
    assert_one_line_error(code, err, "--amp fp16", "CUDA")
    code, _, err = run_cli(capsys, *base, "--cuda-graphs", "on", "--out", tmp_path / "b")
    assert_one_line_error(code, err, "--cuda-graphs on", "CUDA")
    if not torch.cuda.is_available():
        code, _, err = run_cli(capsys, *base[:-3], "--device", "cuda", "--quiet", "--out", tmp_path / "c")
        assert_one_line_error(code, err, "CUDA")
    assert not any(tmp_path.iterdir())


# -- which epochs get a graph -------------------------------------------------------------------
def test_epoch_subnet_per_schedule():
    phase = Phase("p", 4, 0.01)
    steps = 20
    rss = RSS(SPACE, phase, seed=1)
    assert all(epoch_subnet(rss, e, steps) == rss.subnets(e, 0)[0] for e in range(4))
    assert epoch_subnet(RSS(SPACE, phase, seed=1, per_batch=1), 0, steps) is None  # per-step draws
    assert epoch_subnet(RSS(SPACE, phase, seed=1, per_batch=2), 0, steps) is None
    assert epoch_subnet(Sandwich(SPACE, phase, seed=1), 0, steps) is None
    assert epoch_subnet(Fixed(SPACE, phase, 1, subnet=SPACE.middle()), 2, steps) == SPACE.middle()
    two = TwoSubnets(SPACE, phase, 1, order="max-then-min")
    assert epoch_subnet(two, 0, steps) == SPACE.largest() and epoch_subnet(two, 3, steps) == SPACE.smallest()
    ps = ProgressiveShrinking.build(SPACE, [2, 2, 1, 1, 1, 1], 0.01, 0, seed=1)
    assert [epoch_subnet(ps, e, steps) for e in range(2)] == [SPACE.largest()] * 2  # the largest phase
    assert all(epoch_subnet(ps, e, steps) is None for e in range(2, ps.total_epochs))  # elastic phases


def test_plan_reasons():
    kw = dict(device_type="cuda", precision="bf16", world_size=1, grad_accum=1, kd=False, subnet=SPACE.largest())
    assert plan("auto", **kw) is None and plan("on", **kw) is None
    assert plan("off", **kw) == "--cuda-graphs off"
    assert "CUDA" in plan("auto", **{**kw, "device_type": "cpu"})
    assert "GradScaler" in plan("auto", **{**kw, "precision": "fp16"})
    assert plan("auto", **{**kw, "precision": "fp32"}) is None
    assert "DDP" in plan("auto", **{**kw, "world_size": 2})
    assert "grad-accum" in plan("auto", **{**kw, "grad_accum": 2})
    assert "distillation" in plan("auto", **{**kw, "kd": True})
    assert "changes subnet" in plan("auto", **{**kw, "subnet": None})
    assert cuda_graphs.sgd_options("auto", "cpu", "fp32", 1, 1) == {}  # the CPU optimizer is untouched
    assert cuda_graphs.sgd_options("off", "cuda", "bf16", 1, 1) == {}
    assert cuda_graphs.sgd_options("auto", "cuda", "bf16", 1, 1) == {"fused": True}
    with pytest.raises(OfaError, match="needs a CUDA device"):
        cuda_graphs.check_mode("on", "cpu")
    cuda_graphs.check_mode("auto", "cpu")


# -- capture and replay against a fake of the CUDAGraph contract --------------------------------
class FakeGraph:
    def __init__(self, api: "FakeGraphApi") -> None:
        self.api, self.fn, self.outputs, self.lrs, self.replays = api, None, None, None, 0

    def replay(self) -> None:
        # a real replay reads what the capture read: the same learning-rate tensors must be
        # in the optimizer (filled in place), not new objects or floats
        now = [g["lr"] for g in self.api.optimizer.param_groups]
        assert all(a is b for a, b in zip(now, self.lrs)), "learning rates replaced instead of refilled in place"
        fresh = self.fn()
        for static, value in zip(self.outputs, fresh):
            static.copy_(value)  # a replay rewrites its static outputs
        self.replays += 1


class FakeGraphApi:
    """``torch.cuda.CUDAGraph``'s contract on a CPU: ``capture`` records the step and leaves
    every tensor as it was (a real capture launches nothing: weights, BN statistics,
    momentum and the RNG are restored after running it once to record it); ``replay`` runs
    the recorded closure again on the current contents of the tensors it captured."""

    def __init__(self, net, optimizer, fail: str | None = None) -> None:
        self._net, self._optimizer, self.fail = net, optimizer, fail
        self.side_stream_steps = 0
        self.graphs: list[FakeGraph] = []

    # callables: the trainer builds a new optimizer per phase
    net = property(lambda self: self._net() if callable(self._net) and not isinstance(self._net, torch.nn.Module)
                   else self._net)
    optimizer = property(lambda self: self._optimizer() if callable(self._optimizer) else self._optimizer)

    def new_graph(self) -> FakeGraph:
        graph = FakeGraph(self)
        self.graphs.append(graph)
        return graph

    @contextmanager
    def side_stream(self):
        self.side_stream_steps += 1
        yield

    def capture(self, graph: FakeGraph, fn):
        tensors = list(self.net.parameters()) + list(self.net.buffers()) + [
            s["momentum_buffer"] for s in self.optimizer.state.values() if s.get("momentum_buffer") is not None]
        saved = [t.detach().clone() for t in tensors]
        rng = torch.get_rng_state()
        outputs = fn()
        with torch.no_grad():
            for t, s in zip(tensors, saved):
                t.copy_(s)
        torch.set_rng_state(rng)
        if self.fail:
            raise RuntimeError(self.fail)
        graph.fn, graph.outputs = fn, outputs
        graph.lrs = [g["lr"] for g in self.optimizer.param_groups]
        assert all(isinstance(t, torch.Tensor) for t in graph.lrs), "a captured lr must be a tensor"
        return outputs


def _setup(seed: int = 0):
    torch.manual_seed(seed)
    net = Supernet(SPACE).train()
    decay = [p for p in net.parameters() if p.ndim > 1]
    rest = [p for p in net.parameters() if p.ndim <= 1]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": 3e-5}, {"params": rest, "weight_decay": 0.0}],
                          lr=0.05, momentum=0.9, nesterov=True, fused=True)
    return net, opt


def _batches(n: int, batch: int = 8):
    g = torch.Generator().manual_seed(11)
    return [(torch.randn(batch, 1, 32, 32, generator=g), torch.randint(0, 10, (batch,), generator=g))
            for _ in range(n)]


LRS = [0.05 * 0.5 * (1 + math.cos(math.pi * i / 7)) for i in range(7)]


def _eager(subnet, batches):
    net, opt = _setup()
    step = cuda_graphs.training_step(net, opt, subnet, lambda: amp.autocast("cpu", "fp32"))
    losses = []
    for i, (x, y) in enumerate(batches):
        torch.manual_seed(100 + i)  # the trainer's per-step dropout seed
        for group in opt.param_groups:
            group["lr"] = LRS[i]
        losses.append(step(x, y)[0].item())
    return net, opt, losses


def _graphed(subnet, batches, fail=None, warn=None):
    net, opt = _setup()
    api = FakeGraphApi(net, opt, fail=fail)
    step = cuda_graphs.training_step(net, opt, subnet, lambda: amp.autocast("cpu", "fp32", in_cuda_graph=True))
    g = GraphedStep(step, opt, subnet, api, warmup_steps=2, warn=warn)
    losses = []
    for i, (x, y) in enumerate(batches):
        torch.manual_seed(100 + i)
        if g.covers([subnet], x):
            assert not g.took_step
            loss, _ = g.run(x, y, LRS[i])
            assert g.took_step
        else:  # the trainer's own eager step
            for group in opt.param_groups:
                group["lr"] = LRS[i]
            loss, _ = step(x, y)
        losses.append(loss.item())
        for group in opt.param_groups:  # what the trainer does after every step
            group["lr"] = LRS[i]
    g.close()
    return net, opt, losses, g, api


def _same_state(a, b) -> None:
    (net_a, opt_a), (net_b, opt_b) = a, b
    for (name, x), (_, y) in zip(net_a.state_dict().items(), net_b.state_dict().items()):
        assert torch.equal(x, y), name
    for pa, pb in zip(net_a.parameters(), net_b.parameters()):
        ma, mb = opt_a.state[pa].get("momentum_buffer"), opt_b.state[pb].get("momentum_buffer")
        if ma is None:  # never trained: the graphed run has a primed zero buffer
            assert mb is None or not mb.any()
        else:
            assert torch.equal(ma, mb)


def test_graphed_step_replays_eager_training_bit_for_bit():
    subnet = SPACE.middle()
    batches = _batches(7)
    net_e, opt_e, losses_e = _eager(subnet, batches)
    net_g, opt_g, losses_g, g, api = _graphed(subnet, batches)
    assert losses_g == losses_e
    _same_state((net_e, opt_e), (net_g, opt_g))
    assert g.eager_steps == 2 and g.replays == 5 and api.side_stream_steps == 2
    assert len(api.graphs) == 1 and api.graphs[0].replays == 5  # captured once, replayed every later step
    assert all(isinstance(grp["lr"], float) for grp in opt_g.param_groups)  # checkpoints keep floats
    assert opt_g.param_groups[0]["lr"] == LRS[-1]


def test_graphed_step_refills_inputs_in_place():
    """Replays must read each step's batch: the same batch replayed would train differently."""
    subnet = SPACE.smallest()
    batches = _batches(5)
    stale = batches[:3] + [batches[2], batches[2]]
    _, _, losses, _, _ = _graphed(subnet, batches)
    _, _, stale_losses, _, _ = _graphed(subnet, stale)
    assert losses[3:] != stale_losses[3:]


def test_graphed_step_covers_only_its_subnet_and_shape():
    net, opt = _setup()
    subnet = SPACE.smallest()
    g = GraphedStep(cuda_graphs.training_step(net, opt, subnet, lambda: amp.autocast("cpu", "fp32")), opt,
                    subnet, FakeGraphApi(net, opt), warmup_steps=1)
    x, y = _batches(1)[0]
    assert not g.covers([SPACE.largest()], x) and not g.covers([subnet, subnet], x)
    for _ in range(2):
        assert g.covers([subnet], x)
        g.run(x, y, 0.01)
    assert g.graph is not None
    assert not g.covers([subnet], x[:4])  # another batch shape (a last short batch, another resolution)
    assert not g.covers([subnet], x.double())  # another dtype
    assert not g.covers([subnet], x.transpose(2, 3))  # other strides


def test_failed_capture_warns_once_and_trains_eagerly():
    subnet = SPACE.middle()
    batches = _batches(5)
    net_e, opt_e, losses_e = _eager(subnet, batches)
    lines: list[str] = []
    net_g, opt_g, losses_g, g, api = _graphed(subnet, batches, fail="operation not permitted when stream is "
                                              "capturing\nmore detail", warn=lines.append)
    assert len(lines) == 1 and "capture failed" in lines[0] and "\n" not in lines[0]
    assert g.failed and g.replays == 0 and g.eager_steps == 3  # 2 warm-up + the step whose capture failed
    assert losses_g == losses_e
    _same_state((net_e, opt_e), (net_g, opt_g))
    assert not g.covers([subnet], batches[0][0])


def test_prime_momentum_is_exact_and_fused_sgd_needs_it():
    torch.manual_seed(0)
    a, b = torch.nn.Parameter(torch.randn(5)), torch.nn.Parameter(torch.randn(5))
    lazy = torch.optim.SGD([a], lr=0.1, momentum=0.9, nesterov=True, fused=True)
    a2, b2 = torch.nn.Parameter(a.detach().clone()), torch.nn.Parameter(b.detach().clone())
    primed = torch.optim.SGD([a2, b2], lr=0.1, momentum=0.9, nesterov=True, fused=True)
    prime_momentum(primed)
    for i in range(3):
        a.grad = torch.full((5,), 0.3 + i)
        a2.grad = a.grad.clone()
        lazy.step()
        primed.step()
    assert torch.equal(a, a2) and torch.equal(lazy.state[a]["momentum_buffer"], primed.state[a2]["momentum_buffer"])
    # a parameter trained for the first time while others have buffers: fused SGD needs the primed zero
    b2.grad = torch.ones(5)
    a2.grad = torch.ones(5)
    primed.step()
    mixed = torch.optim.SGD([a, b], lr=0.1, momentum=0.9, nesterov=True, fused=True)
    mixed.state[a]["momentum_buffer"] = lazy.state[a]["momentum_buffer"]
    a.grad, b.grad = torch.ones(5), torch.ones(5)
    with pytest.raises(TypeError):
        mixed.step()


def test_epoch_graphs_decides_per_epoch():
    """``EpochGraphs`` on a (pretended) CUDA device with the fake: graphs for one-subnet
    epochs, none for per-step schedules or distillation; ``on`` says why once per reason."""
    net, opt = _setup()
    lines: list[str] = []
    graphs = EpochGraphs("on", torch.device("cuda"), "bf16", 1, 1, autocast=lambda: amp.autocast("cpu", "fp32"),
                         api_factory=lambda device: FakeGraphApi(net, opt), warn=lines.append)
    assert graphs.sgd_options() == {"fused": True}
    phase = Phase("p", 3, 0.01)
    assert isinstance(graphs.for_epoch(net, opt, RSS(SPACE, phase, 1), 0, 10, kd=False), GraphedStep)
    assert all(s.get("momentum_buffer") is not None for s in opt.state.values())  # primed for fused SGD
    assert len(opt.state) == len(list(net.parameters()))
    for _ in range(2):
        assert graphs.for_epoch(net, opt, Sandwich(SPACE, phase, 1), 0, 10, kd=False) is None
    assert graphs.for_epoch(net, opt, RSS(SPACE, phase, 1), 0, 10, kd=True) is None
    assert len(lines) == 2 and "changes subnet" in lines[0] and "distillation" in lines[1]
    off = EpochGraphs("off", torch.device("cuda"), "bf16", 1, 1, autocast=lambda: None,
                      api_factory=lambda device: pytest.fail("off must not build a graph API"))
    assert off.for_epoch(net, opt, RSS(SPACE, phase, 1), 0, 10, kd=False) is None and off.sgd_options() == {}
    cpu = EpochGraphs("auto", torch.device("cpu"), "fp32", 1, 1, autocast=lambda: None,
                      api_factory=lambda device: pytest.fail("a CPU must not build a graph API"))
    assert cpu.for_epoch(net, opt, RSS(SPACE, phase, 1), 0, 10, kd=False) is None and cpu.sgd_options() == {}
    with pytest.raises(OfaError, match="--cuda-graphs on needs a CUDA device"):
        EpochGraphs("on", torch.device("cpu"), "fp32", 1, 1, autocast=lambda: None)


def test_trainer_replays_fake_graphs_like_its_eager_fused_steps(tmp_path, monkeypatch):
    """The trainer's hooks end to end on a CPU: a ``fixed`` run whose epochs are "captured"
    (``EpochGraphs`` deciding as on CUDA, the fake graph API) ends bit-identical to the same
    run stepped eagerly with the same fused SGD - so the trainer neither steps twice after a
    replay nor loses a step, passes each step's learning rate and dropout seed, counts the
    replayed losses, and checkpoints float learning rates."""
    from ofa_deploy.train import trainer as trainer_mod

    held: dict = {}
    real_training_step = cuda_graphs.training_step

    def spy(net, optimizer, subnet, autocast):
        held["net"], held["opt"] = net, optimizer
        return real_training_step(net, optimizer, subnet, autocast)

    monkeypatch.setattr(cuda_graphs, "training_step", spy)
    made: list[EpochGraphs] = []
    steps: list[GraphedStep] = []

    class AsOnCuda(EpochGraphs):
        def __init__(self, mode, device, precision, world_size, grad_accum, *, autocast, graphs=True):
            super().__init__(mode, torch.device("cuda"), precision, world_size, grad_accum, autocast=autocast,
                             api_factory=lambda d: FakeGraphApi(lambda: held["net"], lambda: held["opt"]))
            self.graphs = graphs
            made.append(self)

        def for_epoch(self, net, optimizer, schedule, epoch, steps_, *, kd):
            g = super().for_epoch(net, optimizer, schedule, epoch, steps_, kd=kd)
            if g is not None:
                steps.append(g)
            return g if self.graphs else None

    cfg = dict(dataset="digits", method="fixed", subnet="middle", epochs=2, train_subset=64, batch_size=8,
               device="cpu", quiet=True, seed=4)
    monkeypatch.setattr(trainer_mod, "EpochGraphs", lambda *a, **k: AsOnCuda(*a, **k, graphs=False))
    eager = train(TrainConfig(out=str(tmp_path / "eager"), **cfg))
    monkeypatch.setattr(trainer_mod, "EpochGraphs", lambda *a, **k: AsOnCuda(*a, **k, graphs=True))
    steps.clear()
    graphed = train(TrainConfig(out=str(tmp_path / "graphed"), **cfg))
    assert len(steps) == 2 and all(g.replays == 8 - g.warmup_steps and g.graph is None for g in steps)
    a, b = weights.load_checkpoint(eager / run.FINAL), weights.load_checkpoint(graphed / run.FINAL)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert all(isinstance(g["lr"], float) for g in b["optimizer"]["param_groups"])
    ma = [json.loads(x) for x in (eager / run.METRICS).read_text().splitlines()]
    mb = [json.loads(x) for x in (graphed / run.METRICS).read_text().splitlines()]
    assert [(m["loss"], m["train_acc"], m["lr"]) for m in ma] == [(m["loss"], m["train_acc"], m["lr"]) for m in mb]


# -- profile and benchmark ----------------------------------------------------------------------
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on machines without CUDA")
def test_torch_profile_backend_refuses_cuda_without_it():
    from ofa_deploy.profile.backends import torch_runner

    sidecar = {"space": SPACE.to_dict(), "subnet": SPACE.smallest().to_dict()}
    with pytest.raises(OfaError, match="CUDA"):
        torch_runner(sidecar, device="cuda")
    with pytest.raises(OfaError, match="cuda_graph"):
        torch_runner(sidecar, device="cpu", cuda_graph=True)
    runner = torch_runner(sidecar, device="cpu")
    runner.step()
    assert runner.device_ms is None and runner.latency_kind == "host"
    runner.close()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on machines without CUDA")
def test_bench_train_refuses_cuda_without_it():
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_train.py"), "--device", "cuda"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "CUDA" in lines[0] and "Traceback" not in proc.stderr
    assert proc.stdout == ""


def test_profile_cli_device_and_cuda_graph(tmp_path, capsys):
    import onnxruntime
    from test_profile import tiny_onnx

    model = tiny_onnx(tmp_path / "tiny.onnx")
    fast = ["--warmup-s", "0.01", "--min-iterations", "5", "--min-time-s", "0.01", "--max-retries", "0"]
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        code, _, err = run_cli(capsys, "profile", model, "--target", "cuda", "--backend", "onnxruntime",
                               "--device", "cuda", *fast)
        assert_one_line_error(code, err, "CUDAExecutionProvider")
        code, _, err = run_cli(capsys, "profile", model, "--target", "cpu", "--cuda-graph", *fast)
        assert_one_line_error(code, err, "--cuda-graph")
    # the cuda target measured on this CPU on request: host latency only, no device timer
    code, out, err = run_cli(capsys, "profile", model, "--target", "cuda", "--backend", "onnxruntime",
                             "--device", "cpu", "--json", *fast)
    assert code == 0, err
    result = json.loads(out)
    assert result["provider"] == "CPUExecutionProvider" and result["device_latency_ms"] is None
