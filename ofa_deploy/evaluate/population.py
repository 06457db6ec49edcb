"""Population evaluation: many subnets per MFLOPs bucket, each with its own BN statistics.

The paper judges a training method by its whole subnet population: for each MFLOPs bucket
it samples subnets inside the bucket, recalibrates each one's BatchNorm statistics on
training images and measures test accuracy; the mean and the spread (best minus worst)
per bucket are the result. The subnets drawn depend only on (seed, bucket, per_bucket,
tolerance), never on the run, so different runs are compared on the same architectures.
"""

from __future__ import annotations

import math
import random
import time
from typing import Callable, Iterable, Sequence

import torch
from torch import nn

from ..buckets import PAPER_BUCKETS, sample_in_bucket
from ..cost import cost
from ..errors import OfaError
from ..space import SearchSpace, Subnet
from .bn import calibration_images, recalibrate_bn
from .metrics import evaluate_accuracy

OnSubnet = Callable[[int, int, dict], None]
"""Progress callback: (subnets done, subnets in total, result of the one just measured)."""


def bucket_rng(seed: int, mflops: float) -> random.Random:
    """The sampler of one bucket. A string seed is hashed the same way in every process
    (unlike ``hash()``), and one stream per bucket keeps a bucket's subnets independent of
    which other buckets are evaluated."""
    return random.Random(f"ofa-deploy/eval/{seed}/{mflops:g}")


def sample_population(
    space: SearchSpace,
    buckets: Sequence[float] = PAPER_BUCKETS,
    per_bucket: int = 100,
    tolerance: float = 0.5,
    seed: int = 0,
) -> list[tuple[float, Subnet]]:
    """``per_bucket`` distinct subnets per bucket as (bucket MFLOPs, subnet), bucket by bucket.

    Widths are locked at the extreme buckets as the paper does (see
    ``buckets.sample_in_bucket``). Raises ``OfaError`` for an unreachable bucket or
    a bucket holding fewer distinct subnets than asked for.
    """
    if per_bucket < 1:
        raise OfaError(f"per_bucket={per_bucket} must be at least 1")
    if not buckets:
        raise OfaError("no MFLOPs buckets given")
    if len(set(buckets)) != len(buckets):
        raise OfaError(f"buckets {list(buckets)} contain a repeat")
    population: list[tuple[float, Subnet]] = []
    for mflops in buckets:
        rng = bucket_rng(seed, mflops)
        seen: set[Subnet] = set()
        tries = 0
        while len(seen) < per_bucket:
            subnet = sample_in_bucket(space, mflops, tolerance, rng)
            tries += 1
            if subnet in seen:
                if tries > 20 * per_bucket + 100:
                    raise OfaError(
                        f"bucket {mflops:g} +- {tolerance:g} MFLOPs yielded only {len(seen)} distinct subnets "
                        f"in {tries} draws; ask for fewer per bucket or widen the tolerance"
                    )
                continue
            seen.add(subnet)
            population.append((float(mflops), subnet))
    return population


def evaluate_subnet(
    supernet: nn.Module,
    subnet: Subnet,
    *,
    calib_images: torch.Tensor,
    test_images: torch.Tensor,
    test_labels: torch.Tensor,
    calib_n: int = 2000,
    recalibrate: bool = True,
    calib_seed: int = 0,
    batch_size: int = 1000,
    channels_last: bool = True,
    bn_variance: str = "unbiased",
) -> dict:
    """Accuracy and loss of one subnet, measured on an extracted copy.

    ``calib_images`` (N, C, H, W) are training images; ``calib_n`` of them (drawn by
    ``calib_seed``; all if fewer) recompute the copy's BN statistics when ``recalibrate``.
    ``test_images`` (M, C, H, W) and ``test_labels`` (M,) are measured in batches of
    ``batch_size`` (either images may be a ``data.stream.FolderStream``, read batch by batch).
    ``bn_variance``: the estimator of ``evaluate.bn``. All tensors live on the supernet's
    device. The supernet is not changed.
    ``channels_last`` runs the copy in that memory format (several times faster on CPU).
    Returns ``{"subnet", "text", "macs", "mflops", "params", "accuracy", "loss"}``.
    """
    space: SearchSpace = supernet.space
    macs, params = cost(space, subnet)
    net = supernet.extract(subnet)
    if test_images.device.type == "cpu":
        fast_measurement_copy(net)
    if channels_last:
        # oneDNN's depthwise convolutions are several times faster in this layout on CPU
        net = net.to(memory_format=torch.channels_last)
    if recalibrate:
        if calib_n < 1:
            raise OfaError(f"calib_n={calib_n} must be at least 1")
        recalibrate_bn(net, calibration_images(calib_images, calib_n, calib_seed), variance=bn_variance)
    accuracy, loss = evaluate_accuracy(net, test_images, test_labels, batch_size=batch_size)
    return {
        "subnet": subnet.to_dict(),
        "text": str(subnet),
        "macs": macs,
        "mflops": round(macs / 1e6, 6),
        "params": params,
        "accuracy": accuracy,
        "loss": loss,
    }


class _Pointwise(nn.Conv2d):
    """A 1x1 ``nn.Conv2d`` computed by ``nn.cpu_ops.pointwise_conv2d`` (a matrix product on
    maps of at most 2x2, 1.5-3x faster than oneDNN's 1x1 convolution there on a CPU)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from ..nn.cpu_ops import pointwise_conv2d

        return pointwise_conv2d(x, self.weight, self.bias)


def fast_measurement_copy(net: nn.Module) -> nn.Module:
    """Run the 1x1 convolutions of the static subnet ``net`` (a measurement copy: the
    head's and the last stages' work on 1x1 and 2x2 maps) through ``_Pointwise``. The same
    function and weights; in place."""
    for m in net.modules():
        if type(m) is nn.Conv2d and m.kernel_size == (1, 1) and m.stride == (1, 1) and m.groups == 1 \
                and m.padding == (0, 0):
            m.__class__ = _Pointwise
    return net


def bucket_statistics(results: Iterable[dict], buckets: Sequence[float]) -> list[dict]:
    """Per bucket: n, mean, std (population), min, max of the ``accuracy`` of the results
    whose ``"bucket"`` is that bucket; buckets without results get n = 0 and None."""
    by_bucket: dict[float, list[float]] = {float(b): [] for b in buckets}
    for r in results:
        by_bucket.setdefault(float(r["bucket"]), []).append(r["accuracy"])
    stats = []
    for mflops, accs in by_bucket.items():
        if not accs:
            stats.append({"mflops": mflops, "n": 0, "mean": None, "std": None, "min": None, "max": None})
            continue
        mean = sum(accs) / len(accs)
        std = math.sqrt(sum((a - mean) ** 2 for a in accs) / len(accs))
        stats.append({"mflops": mflops, "n": len(accs), "mean": mean, "std": std, "min": min(accs), "max": max(accs)})
    return stats


def evaluate_population(
    supernet: nn.Module,
    space: SearchSpace,
    *,
    buckets: Sequence[float] = PAPER_BUCKETS,
    per_bucket: int = 100,
    tolerance: float = 0.5,
    seed: int = 0,
    calib_images: torch.Tensor,
    test_images: torch.Tensor,
    test_labels: torch.Tensor,
    calib_n: int = 2000,
    batch_size: int = 1000,
    subnets: Sequence[tuple[float, Subnet]] | None = None,
    on_subnet: OnSubnet | None = None,
    channels_last: bool = True,
    bn_variance: str = "unbiased",
) -> dict:
    """Evaluate the population ``sample_population(space, buckets, per_bucket, tolerance, seed)``
    (or the given ``(bucket, subnet)`` pairs) on ``test_images``/``test_labels``.

    Every subnet is calibrated on the same ``calib_n`` training images (drawn by ``seed``).
    Returns the ``eval --json`` object: ``{"subnets": [...], "buckets": [...], "seed",
    "per_bucket", "tolerance", "calib_n", "test_images", "wall_time_s", "subnets_per_minute"}``;
    each subnet entry is ``evaluate_subnet``'s dict plus its ``"bucket"``.
    """
    if supernet.space != space:
        raise OfaError("the supernet was built for a different search space than the one given")
    population = (
        list(subnets) if subnets is not None else sample_population(space, buckets, per_bucket, tolerance, seed)
    )
    layout = torch.channels_last if channels_last else torch.contiguous_format
    calib = calibration_images(calib_images, calib_n, seed).contiguous(memory_format=layout)
    test_images = test_images.contiguous(memory_format=layout)
    results: list[dict] = []
    start = time.perf_counter()
    for i, (mflops, subnet) in enumerate(population):
        result = {"bucket": float(mflops)}
        result.update(
            evaluate_subnet(
                supernet,
                subnet,
                calib_images=calib,
                test_images=test_images,
                test_labels=test_labels,
                calib_n=calib.shape[0],
                batch_size=batch_size,
                channels_last=channels_last,
                bn_variance=bn_variance,
            )
        )
        results.append(result)
        if on_subnet is not None:
            on_subnet(i + 1, len(population), result)
    wall = time.perf_counter() - start
    bucket_list = list(buckets) if subnets is None else sorted({m for m, _ in population})
    return {
        "subnets": results,
        "buckets": bucket_statistics(results, bucket_list),
        "seed": seed,
        "per_bucket": per_bucket if subnets is None else None,
        "tolerance": tolerance,
        "calib_n": int(calib.shape[0]),
        "bn_variance": bn_variance,
        "test_images": int(test_images.shape[0]),
        "wall_time_s": round(wall, 3),
        "subnets_per_minute": round(60 * len(results) / wall, 2) if wall > 0 else None,
    }
