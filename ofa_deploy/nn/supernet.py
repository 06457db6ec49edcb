"""The OFA supernet: every subnet of a ``SearchSpace`` sharing one set of weights."""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..space import SearchSpace, Subnet
from .cpu_ops import pointwise_conv2d
from .elastic import ElasticMBConv
from .layers import Head, MBConv, Stem, first_block_spec, init_weights
from .static import StaticSubnet


class Supernet(nn.Module):
    """(N, in_channels, S, S) -> (N, num_classes) logits of the active subnet.

    ``blocks`` holds ``space.num_blocks`` elastic blocks, stage-major; a subnet runs the
    first ``d[s]`` of each stage. The active subnet is set with ``set_active`` (the largest
    at construction) or passed per call: ``net(x, subnet)``.
    """

    def __init__(self, space: SearchSpace) -> None:
        super().__init__()
        self.space = space
        self.stem = Stem(space)
        self.first_block = MBConv(first_block_spec(space), expand=False)
        self.blocks = nn.ModuleList(
            ElasticMBConv(space, s, i) for s in range(space.num_stages) for i in range(space.max_depth)
        )
        self.head = Head(space)
        init_weights(self)
        self.set_active(space.largest())

    @property
    def active(self) -> Subnet:
        return self._active

    def set_active(self, subnet: Subnet) -> None:
        self._specs = self.space.block_specs(subnet)
        self._active = subnet

    def forward(self, x: torch.Tensor, subnet: Subnet | None = None) -> torch.Tensor:
        specs = self._specs if subnet is None else self.space.block_specs(subnet)
        x = self.first_block(self.stem(x))
        for spec in specs:
            x = self.blocks[spec.stage * self.space.max_depth + spec.index](x, spec)
        return self._head(x)

    def _head(self, x: torch.Tensor) -> torch.Tensor:
        """``self.head(x)`` (``layers.Head``) with its 1x1 convolutions through
        ``pointwise_conv2d``; the extracted ``StaticSubnet`` keeps the plain module."""
        head = self.head
        x = head.act(head.final_bn(pointwise_conv2d(x, head.final_expand.weight)))
        x = x.mean((2, 3), keepdim=True)
        x = head.act(pointwise_conv2d(x, head.feature_mix.weight))
        return head.classifier(head.dropout(torch.flatten(x, 1)))

    def sort_channels(self, keep_expand: tuple[int, ...] = ()) -> None:
        """Reorder every block's middle channels by importance (see ``ElasticMBConv``).

        The largest subnet computes the same function afterwards; smaller expand ratios
        keep the most important channels. Progressive Shrinking calls this before each
        elastic-expand phase. Optimizer state (momentum) is not permuted with the weights.
        ``keep_expand``: expand ratios whose channel prefix stays first (sorted within
        itself), as OFA protects the e=4 channels before adding e=3.
        """
        for block in self.blocks:
            block.sort_channels(sorted(self.space.mid_channels(block.in_ch, e) for e in keep_expand))

    @torch.no_grad()
    def extract(self, subnet: Subnet | None = None) -> StaticSubnet:
        """A plain ``nn.Module`` computing what this supernet computes with ``subnet`` active.

        It holds its own copies of the weights (kernel transforms applied, channels sliced)
        and of the BN running statistics, is in the same train/eval mode as the supernet,
        and lives on the same device.
        """
        subnet = self._active if subnet is None else subnet
        net = StaticSubnet(self.space, subnet)
        net.stem = copy.deepcopy(self.stem)
        net.first_block = copy.deepcopy(self.first_block)
        net.head = copy.deepcopy(self.head)
        net.blocks = nn.ModuleList(
            self.blocks[spec.stage * self.space.max_depth + spec.index].to_static(spec)
            for spec in self.space.block_specs(subnet)
        )
        device = next(self.parameters()).device
        return net.to(device).train(self.training)
