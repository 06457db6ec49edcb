"""The extracted subnet: a plain MobileNetV3 with no elastic code."""

from __future__ import annotations

import torch
from torch import nn

from ..space import SearchSpace, Subnet
from .layers import Head, MBConv, Stem, first_block_spec


class StaticSubnet(nn.Module):
    """(N, in_channels, S, S) -> (N, num_classes) logits, built from ordinary layers only.

    ``space`` and ``subnet`` say which architecture this is; they travel into export
    sidecars. Made by ``Supernet.extract``, or empty (randomly initialised) from a spec.
    """

    def __init__(self, space: SearchSpace, subnet: Subnet) -> None:
        super().__init__()
        self.space = space
        self.subnet = subnet
        self.stem = Stem(space)
        self.first_block = MBConv(first_block_spec(space), expand=False)
        self.blocks = nn.ModuleList(MBConv(spec) for spec in space.block_specs(subnet))
        self.head = Head(space)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.first_block(self.stem(x))
        for block in self.blocks:
            x = block(x)
        return self.head(x)
