"""Accuracy and loss of a network on a tensor data set, in large batches, or on a stream
(``data.stream``: the val folder read batch by batch, never whole)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


@torch.no_grad()
def evaluate_accuracy(
    net: nn.Module, images: Any, labels: torch.Tensor | None, *, batch_size: int = 1000
) -> tuple[float, float]:
    """(top-1 accuracy in [0, 1], mean cross-entropy) of ``net`` in eval mode.

    ``images`` (N, C, H, W) and ``labels`` (N,) live on ``net``'s device already; or
    ``images`` is a stream, which brings its own labels (``labels`` is then ignored) and
    is measured over the images it could read.
    """
    from .bn import image_batches, runs_channels_last

    was_training = net.training
    net.eval()
    correct, loss_sum, n = 0, 0.0, 0
    device = next(net.parameters()).device
    try:
        for start, (x, y) in enumerate(image_batches(images, batch_size, device, runs_channels_last(net))):
            if y is None:
                assert labels is not None
                y = labels[start * batch_size : start * batch_size + x.shape[0]]
            logits = net(x)
            loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
            correct += (logits.argmax(1) == y).sum().item()
            n += x.shape[0]
    finally:
        net.train(was_training)
    n = max(1, n)
    return correct / n, loss_sum / n
