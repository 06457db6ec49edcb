"""Interference between subnets, measured on a run's weights instead of inferred.

For a pair of subnets (A, B) on one batch of training images:

* the cosine similarity of their loss gradients on the weights both of them use (per layer
  and overall): negative means one subnet's update undoes the other's;
* the loss change one SGD step on A's gradient causes in B's loss on the same batch, next to
  the change B's own step causes (to first order -lr x the gradients' dot product: what
  sharing costs B when A trains).

Weights "both use" are the gradient elements non-zero for both subnets: slices of wider
layers and blocks beyond a subnet's depth get no gradient from it. Work happens on a copy
of the supernet; BN uses batch statistics (as in training) and dropout is off so that
repeated runs agree.
"""

from __future__ import annotations

import copy
import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..cost import macs
from ..errors import OfaError
from ..space import Subnet, as_rng


def layer_of(name: str) -> str:
    """The layer a parameter belongs to: ``stem``, ``first_block``, ``block<N>``, ``head``."""
    parts = name.split(".")
    if parts[0] == "blocks":
        return f"block{int(parts[1]) + 1:02d}"
    return parts[0]


def _layer_order(layer: str) -> tuple[int, str]:
    fixed = {"stem": 0, "first_block": 1, "head": 1000}
    return (fixed[layer] if layer in fixed else 1 + int(layer[5:]) if layer.startswith("block") else 999, layer)


def gradients(net: nn.Module, subnet: Subnet, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """Cross-entropy gradient of ``subnet`` on (images (N, C, H, W), labels (N,)), per parameter
    name; parameters the subnet does not reach are absent."""
    net.zero_grad(set_to_none=True)
    F.cross_entropy(net(images, subnet), labels).backward()
    grads = {name: p.grad.detach().clone() for name, p in net.named_parameters() if p.grad is not None}
    net.zero_grad(set_to_none=True)
    return grads


def shared_cosines(ga: dict[str, torch.Tensor], gb: dict[str, torch.Tensor]) -> dict:
    """Cosine similarity over the elements both gradients reach: overall and per layer,
    with the fraction of either subnet's reached elements that are shared."""
    dot: dict[str, float] = {}
    na: dict[str, float] = {}
    nb: dict[str, float] = {}
    shared_n, union_n = 0, 0
    for name in list(ga) + [n for n in gb if n not in ga]:
        a, b = ga.get(name), gb.get(name)
        reach_a = a != 0 if a is not None else None
        reach_b = b != 0 if b is not None else None
        if a is None or b is None:
            union_n += int((reach_a if a is not None else reach_b).sum())
            continue
        both = reach_a & reach_b
        shared_n += int(both.sum())
        union_n += int((reach_a | reach_b).sum())
        layer = layer_of(name)
        av, bv = a[both].double(), b[both].double()
        dot[layer] = dot.get(layer, 0.0) + float(av @ bv)
        na[layer] = na.get(layer, 0.0) + float(av @ av)
        nb[layer] = nb.get(layer, 0.0) + float(bv @ bv)

    def cos(d: float, x: float, y: float) -> float | None:
        return d / math.sqrt(x * y) if x > 0 and y > 0 else None

    per_layer = {layer: cos(dot[layer], na[layer], nb[layer]) for layer in sorted(dot, key=_layer_order)}
    return {
        "cosine": cos(sum(dot.values()), sum(na.values()), sum(nb.values())),
        "per_layer": per_layer,
        "shared_fraction": shared_n / union_n if union_n else 0.0,
    }


@torch.no_grad()
def _loss(net: nn.Module, subnet: Subnet, images: torch.Tensor, labels: torch.Tensor) -> float:
    return float(F.cross_entropy(net(images, subnet), labels))


@torch.no_grad()
def _step(net: nn.Module, grads: dict[str, torch.Tensor], lr: float, sign: float = -1.0) -> None:
    for name, p in net.named_parameters():
        if name in grads:
            p.add_(grads[name], alpha=sign * lr)


def measure_pair(net: nn.Module, a: Subnet, b: Subnet, batch: tuple[torch.Tensor, torch.Tensor], lr: float) -> dict:
    """Cosines of A's and B's gradients on ``batch`` and the loss changes on it that one SGD
    step of size ``lr`` on either gradient causes to both (``net`` is restored after)."""
    ga, gb = gradients(net, a, *batch), gradients(net, b, *batch)
    probe = batch
    result = shared_cosines(ga, gb)
    before = {"a": _loss(net, a, *probe), "b": _loss(net, b, *probe)}
    for who, g in (("a", ga), ("b", gb)):
        _step(net, g, lr)
        result[f"delta_loss_a_from_{who}"] = _loss(net, a, *probe) - before["a"]
        result[f"delta_loss_b_from_{who}"] = _loss(net, b, *probe) - before["b"]
        _step(net, g, lr, sign=1.0)
    result["loss_a"], result["loss_b"] = before["a"], before["b"]
    return result


def analyze_interference(
    supernet: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    pairs: int = 8,
    batch_size: int = 128,
    lr: float = 0.01,
    seed: int = 0,
    extra_pairs: Sequence[tuple[Subnet, Subnet]] = (),
) -> dict:
    """Interference over ``extra_pairs`` and ``pairs`` uniformly drawn pairs (seeded), on a copy
    of ``supernet``. ``images`` (N, C, H, W) are training images, of which ``batch_size`` drawn
    by ``seed`` form the batch every pair is measured on. Returns per-pair results and
    a summary (mean/min/max cosine, per-layer mean cosine, mean loss changes, the fraction
    of cross steps that raised the other subnet's loss)."""
    space = supernet.space
    if images.shape[0] < batch_size:
        raise OfaError(f"interference needs {batch_size} training images, the run has {images.shape[0]}; "
                       f"lower --batch-size")
    if pairs < 0 or pairs + len(extra_pairs) == 0:
        raise OfaError("ask for at least one pair of subnets")
    rng = as_rng(seed)
    chosen = list(extra_pairs) + [(space.sample(rng), space.sample(rng)) for _ in range(pairs)]
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(images.shape[0], generator=generator).to(images.device)
    batch = (images[order[:batch_size]], labels[order[:batch_size]])
    net = copy.deepcopy(supernet).train()
    for m in net.modules():
        if isinstance(m, nn.Dropout):
            m.eval()
    results = []
    for a, b in chosen:
        r = measure_pair(net, a, b, batch, lr)
        r.update({"a": str(a), "b": str(b), "a_mflops": macs(space, a) / 1e6, "b_mflops": macs(space, b) / 1e6})
        results.append(r)
    return {"pairs": results, "summary": summarize(results), "lr": lr, "batch_size": batch_size, "seed": seed}


def summarize(results: Sequence[dict]) -> dict:
    cosines = [r["cosine"] for r in results if r["cosine"] is not None]
    layers: dict[str, list[float]] = {}
    for r in results:
        for layer, c in r["per_layer"].items():
            if c is not None:
                layers.setdefault(layer, []).append(c)
    cross = [r["delta_loss_b_from_a"] for r in results] + [r["delta_loss_a_from_b"] for r in results]
    own = [r["delta_loss_a_from_a"] for r in results] + [r["delta_loss_b_from_b"] for r in results]

    def mean(xs):
        return sum(xs) / len(xs) if xs else None

    return {
        "pairs": len(results),
        "mean_cosine": mean(cosines),
        "min_cosine": min(cosines, default=None),
        "max_cosine": max(cosines, default=None),
        "negative_cosine_fraction": mean([1.0 if c < 0 else 0.0 for c in cosines]),
        "per_layer_mean_cosine": {layer: mean(layers[layer]) for layer in sorted(layers, key=_layer_order)},
        "mean_shared_fraction": mean([r["shared_fraction"] for r in results]),
        "mean_delta_loss_from_other": mean(cross),
        "mean_delta_loss_from_own": mean(own),
        "harmful_cross_step_fraction": mean([1.0 if d > 0 else 0.0 for d in cross]),
    }


def named_pair(space, spec: str) -> tuple[Subnet, Subnet]:
    """``A,B`` with each a name (smallest, middle, largest) or a text spec."""
    from ..specs import resolve_subnet

    parts = spec.split(",")
    if len(parts) != 2:
        raise OfaError(f"a pair is two subnets separated by a comma (e.g. smallest,largest), got {spec!r}")
    return resolve_subnet(space, parts[0].strip()), resolve_subnet(space, parts[1].strip())



def analyze_run_interference(run_dir, *, pairs: int = 8, batch_size: int = 128, lr: float | None = None,
                             seed: int = 0, pair_specs: Sequence[str] = ("smallest,largest",),
                             device: str = "auto", checkpoint: str = "auto", data_dir: str | None = None) -> dict:
    """``analyze_interference`` on a run's checkpoint and training images; ``lr`` defaults to
    the run's learning rate."""
    from .. import weights
    from ..data import load_dataset
    from ..data.datasets import run_data_options
    from ..evaluate.runs import resolve_device

    device = resolve_device(device)
    net, config = weights.load_supernet(run_dir, checkpoint, device=device)
    data = config.get("data", {})
    train = load_dataset(data.get("dataset", "?"), "train", **run_data_options(config, data_dir),
                         subset=data.get("train_subset"), val_size=int(data.get("val_size", 0) or 0),
                         seed=int(config.get("run", {}).get("seed", 0)), device=device)
    lr = float(config.get("train", {}).get("lr", 0.01)) if lr is None else lr
    extra = [named_pair(net.space, spec) for spec in pair_specs]
    result = analyze_interference(net, train.images, train.labels, pairs=pairs, batch_size=batch_size, lr=lr,
                                  seed=seed, extra_pairs=extra)
    return {"run": config.get("run", {}).get("name", str(run_dir)), "checkpoint": checkpoint, "device": device,
            **result}
