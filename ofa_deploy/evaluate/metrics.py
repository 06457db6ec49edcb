"""Accuracy and loss of a network on a tensor data set, in large batches."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


@torch.no_grad()
def evaluate_accuracy(
    net: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, batch_size: int = 1000
) -> tuple[float, float]:
    """(top-1 accuracy in [0, 1], mean cross-entropy) of ``net`` in eval mode.

    ``images`` (N, C, H, W) and ``labels`` (N,) live on ``net``'s device already.
    """
    was_training = net.training
    net.eval()
    correct, loss_sum = 0, 0.0
    try:
        for start in range(0, images.shape[0], batch_size):
            x, y = images[start : start + batch_size], labels[start : start + batch_size]
            logits = net(x)
            loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
            correct += (logits.argmax(1) == y).sum().item()
    finally:
        net.train(was_training)
    n = max(1, images.shape[0])
    return correct / n, loss_sum / n
