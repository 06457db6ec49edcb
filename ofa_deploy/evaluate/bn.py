"""BatchNorm recalibration: a subnet's own statistics, recomputed on training images.

The supernet's running statistics are shared by every subnet and match none of them, so a
subnet is measured (and exported) only after its BN statistics are recomputed on training
images (the reference uses 2,000). This works on an extracted copy: the supernet's shared
statistics are never touched.
"""

from __future__ import annotations

import torch
from torch import nn

from ..space import Subnet


@torch.no_grad()
def recalibrate_bn(net: nn.Module, images: torch.Tensor, *, batch_size: int = 200) -> nn.Module:
    """Replace every BN layer's running mean/var of ``net`` by the average of its batch
    statistics over ``images`` (N, C, H, W; normalised, on ``net``'s device). In place;
    returns ``net`` in eval mode."""
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the calibration batches
    was_training = net.training
    net.train()
    try:
        for start in range(0, images.shape[0], batch_size):
            net(images[start : start + batch_size])
    finally:
        for m, momentum in zip(bns, saved):
            m.momentum = momentum
        net.train(was_training)
    return net.eval()


def calibration_images(images: torch.Tensor, n: int = 2000, seed: int = 0) -> torch.Tensor:
    """``n`` training images drawn without replacement by ``seed`` (all if fewer)."""
    if images.shape[0] <= n:
        return images
    generator = torch.Generator().manual_seed(seed)
    index = torch.randperm(images.shape[0], generator=generator)[:n]
    return images[index.to(images.device)]


def recalibrated_subnet(
    supernet: nn.Module,
    subnet: Subnet,
    images: torch.Tensor,
    *,
    n: int = 2000,
    batch_size: int = 200,
    seed: int = 0,
) -> nn.Module:
    """The extracted static ``subnet`` with BN statistics recomputed on ``n`` of ``images``."""
    net = supernet.extract(subnet)
    return recalibrate_bn(net, calibration_images(images, n, seed), batch_size=batch_size)
