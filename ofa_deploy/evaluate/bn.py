"""BatchNorm recalibration: a subnet's own statistics, recomputed on training images.

The supernet's running statistics are shared by every subnet and match none of them, so a
subnet is measured (and exported) only after its BN statistics are recomputed on training
images (the reference uses 2,000). This works on an extracted copy: the supernet's shared
statistics are never touched.

Two estimators (``variance``); in both, each layer normalises a calibration batch with that
batch's own statistics (biased variance), so only what is stored differs:

* ``unbiased`` (ofa-deploy's own runs): PyTorch's cumulative average (``momentum=None``) -
  the mean over batches of each batch's mean and *unbiased* variance, every batch weighted
  alike;
* ``biased`` (imported OFA supernets): what OFA's ``set_running_statistics`` stores - the
  mean of each batch's mean and *biased* variance, weighted by the batch's image count; the
  statistics OFA's published accuracies were measured with.

The variances differ by the factor m/(m-1), m = images x height x width of a batch (1.0001
for 200 images of 7x7 maps), and the weights only where batches differ in size (the last).
``default_variance`` picks per run; eval results and ``model.json`` record which was used.
Images are a tensor or a ``data.stream.FolderStream`` (read batch by batch).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..space import Subnet

VARIANCES = ("unbiased", "biased")


def default_variance(config: dict[str, Any] | None) -> str:
    """``biased`` (OFA's) for an imported supernet, ``unbiased`` for a run trained here."""
    method = ((config or {}).get("run") or {}).get("method")
    return "biased" if method == "import-ofa" else "unbiased"


def image_batches(images: Any, batch_size: int, device: torch.device, channels_last: bool = False):
    """(images, labels or None) batches of a tensor or a stream, on ``device``; a stream's
    batches are put in channels-last when the network runs in it (``measurement_layout``)."""
    if isinstance(images, torch.Tensor):
        for start in range(0, images.shape[0], batch_size):
            yield images[start : start + batch_size], None
        return
    for x, y in images.batches(batch_size):
        x = x.to(device, non_blocking=True)
        yield (x.contiguous(memory_format=torch.channels_last) if channels_last else x), y.to(device)


def runs_channels_last(net: nn.Module) -> bool:
    """Whether ``net``'s stem (its first convolution of kernel > 1) is in channels-last."""
    for m in net.modules():
        if isinstance(m, nn.Conv2d) and m.kernel_size != (1, 1):
            return m.weight.is_contiguous(memory_format=torch.channels_last) and not m.weight.is_contiguous()
    return False


@torch.no_grad()
def recalibrate_bn(net: nn.Module, images: Any, *, batch_size: int = 200, variance: str = "unbiased") -> nn.Module:
    """Replace every BN layer's running mean/var of ``net`` by the average of its batch
    statistics over ``images`` (N, C, H, W; normalised, on ``net``'s device; or a stream)
    with the ``variance`` estimator (module docstring). In place; returns ``net`` in eval
    mode."""
    if variance not in VARIANCES:
        from ..errors import OfaError

        raise OfaError(f"unknown BN variance {variance!r}; choose one of {', '.join(VARIANCES)}")
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    saved = [m.momentum for m in bns]
    sums: dict[nn.Module, list[Any]] = {m: [0.0, 0.0, 0] for m in bns}

    def record(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        x = inputs[0]
        n = x.shape[0]
        mean = x.mean(dim=(0, 2, 3))
        entry = sums[module]
        entry[0] = entry[0] + mean * n
        entry[1] = entry[1] + x.var(dim=(0, 2, 3), unbiased=False) * n
        entry[2] += n

    hooks = [m.register_forward_pre_hook(record) for m in bns] if variance == "biased" else []
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the calibration batches
    was_training = net.training
    device = next(net.parameters()).device
    net.train()
    try:
        for x, _ in image_batches(images, batch_size, device, runs_channels_last(net)):
            net(x)
    finally:
        for hook in hooks:
            hook.remove()
        for m, momentum in zip(bns, saved):
            m.momentum = momentum
        net.train(was_training)
    for m, (mean_sum, var_sum, count) in sums.items():
        if count:
            m.running_mean.copy_(mean_sum / count)
            m.running_var.copy_(var_sum / count)
    return net.eval()


def calibration_images(images: Any, n: int = 2000, seed: int = 0) -> Any:
    """``n`` training images drawn without replacement by ``seed`` (all if fewer)."""
    if not isinstance(images, torch.Tensor):
        return images.subset(n, seed)
    if images.shape[0] <= n:
        return images
    generator = torch.Generator().manual_seed(seed)
    index = torch.randperm(images.shape[0], generator=generator)[:n]
    return images[index.to(images.device)]


def measurement_layout(images: Any, net: nn.Module) -> Any:
    """Put a CPU static subnet ``net`` (in place) and ``images`` in channels-last, the layout
    of oneDNN's fast depthwise convolutions: BN recalibration and accuracy of the largest
    subnet take a quarter of the NCHW time on a 2-core CPU (7.7 s -> 1.8 s for 500 images).
    The numbers differ from NCHW's only in the last bits. On a GPU nothing changes."""
    if images.device.type != "cpu":
        return images
    net.to(memory_format=torch.channels_last)
    return images.contiguous(memory_format=torch.channels_last)  # a stream: per batch (``image_batches``)


def recalibrated_subnet(
    supernet: nn.Module,
    subnet: Subnet,
    images: Any,
    *,
    n: int = 2000,
    batch_size: int = 200,
    seed: int = 0,
    variance: str = "unbiased",
) -> nn.Module:
    """The extracted static ``subnet`` with BN statistics recomputed on ``n`` of ``images``
    (channels-last on a CPU: ``measurement_layout``); what ``export_subnet`` computes from
    the same arguments, so it can be handed over as ``recalibrated_net``."""
    net = supernet.extract(subnet)
    return recalibrate_bn(net, measurement_layout(calibration_images(images, n, seed), net), batch_size=batch_size,
                          variance=variance)
