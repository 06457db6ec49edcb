"""Elastic operators: one set of weights at the largest size, any smaller setting by slicing.

* elastic kernel - the 7x7 depthwise weight is the master; a 5x5 is its centre crop passed
  through a learned 25x25 matrix, a 3x3 the centre crop of that 5x5 through a 9x9 matrix
  (one matrix per layer, shared by all channels, initialised to identity);
* elastic expand - the first ``mid`` channels of the expand conv, its BN, the depthwise
  conv, its BN, SE (whose hidden width follows the active ``mid``) and the project conv's
  inputs;
* elastic depth lives in the supernet (the first ``d`` blocks of a stage run).

The active setting is passed to ``forward`` as a ``BlockSpec``; these modules keep no
mutable "active" state of their own.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..space import BlockSpec, SearchSpace
from .cpu_ops import depthwise_conv2d, pointwise_conv2d
from .layers import MBConv, make_act


def elastic_bn(x: torch.Tensor, bn: nn.BatchNorm2d, channels: int) -> torch.Tensor:
    """BatchNorm over the first ``channels`` channels of ``bn``.

    In training mode the running statistics of those channels are updated in place
    (slices of a 1-D tensor are views), so the shared statistics follow what was trained.
    """
    if channels == bn.num_features:
        return bn(x)
    return F.batch_norm(
        x,
        bn.running_mean[:channels],
        bn.running_var[:channels],
        bn.weight[:channels],
        bn.bias[:channels],
        bn.training,
        bn.momentum,
        bn.eps,
    )


class ElasticDepthwise(nn.Module):
    """Depthwise conv whose kernel size and channel count are chosen per call.

    ``weight``: (max_channels, 1, max_k, max_k). ``transforms[f"{a}to{b}"]``: (b*b, b*b).
    """

    he_fout_init = True

    def __init__(self, channels: int, kernel_sizes: tuple[int, ...], stride: int) -> None:
        super().__init__()
        self.kernel_sizes = tuple(sorted(kernel_sizes))
        k_max = self.kernel_sizes[-1]
        self.stride = stride
        self.weight = nn.Parameter(torch.empty(channels, 1, k_max, k_max))
        self.transforms = nn.ParameterDict(
            {
                f"{big}to{small}": nn.Parameter(torch.eye(small * small))
                for big, small in zip(self.kernel_sizes[:0:-1], self.kernel_sizes[-2::-1])
            }
        )

    def kernel(self, k: int, channels: int) -> torch.Tensor:
        """The (channels, 1, k, k) weight a kxk depthwise conv of this layer uses."""
        w = self.weight[:channels]
        current = self.kernel_sizes[-1]
        for small in reversed(self.kernel_sizes):
            if small >= current or small < k:
                continue
            start = (current - small) // 2
            w = w[:, :, start : start + small, start : start + small]
            matrix = self.transforms[f"{current}to{small}"]
            w = F.linear(w.reshape(channels, small * small), matrix).reshape(channels, 1, small, small)
            current = small
        return w

    def forward(self, x: torch.Tensor, k: int, channels: int) -> torch.Tensor:
        return depthwise_conv2d(x, self.kernel(k, channels), self.stride, k // 2)


class ElasticMBConv(nn.Module):
    """An MBConv at its largest width and kernel, run at any (kernel, expand) setting.

    (N, in_ch, H, W) -> (N, out_ch, H/stride, W/stride). Parameter names match ``MBConv``
    so an extracted block reads like the supernet's.
    """

    def __init__(self, space: SearchSpace, stage: int, index: int) -> None:
        super().__init__()
        spec = space.stages[stage]
        self.in_ch = space.stage_in_channels(stage, index)
        self.out_ch = space.stage_width(stage)
        self.max_mid = space.mid_channels(self.in_ch, space.expand_choices[-1])
        self.expand = nn.Conv2d(self.in_ch, self.max_mid, 1, bias=False)
        self.expand_bn = nn.BatchNorm2d(self.max_mid)
        self.dw = ElasticDepthwise(self.max_mid, space.kernel_choices, spec.stride if index == 0 else 1)
        self.dw_bn = nn.BatchNorm2d(self.max_mid)
        if spec.se:
            hidden = space.se_hidden(self.max_mid)
            self.se = nn.ModuleDict(
                {"reduce": nn.Conv2d(self.max_mid, hidden, 1), "expand": nn.Conv2d(hidden, self.max_mid, 1)}
            )
        else:
            self.se = None
        self.project = nn.Conv2d(self.max_mid, self.out_ch, 1, bias=False)
        self.project_bn = nn.BatchNorm2d(self.out_ch)
        self.act = make_act(spec.act)

    def forward(self, x: torch.Tensor, spec: BlockSpec) -> torch.Tensor:
        mid = spec.mid
        y = pointwise_conv2d(x, self.expand.weight[:mid])
        y = self.act(elastic_bn(y, self.expand_bn, mid))
        y = self.act(elastic_bn(self.dw(y, spec.kernel, mid), self.dw_bn, mid))
        if self.se is not None:
            hidden = spec.se_hidden
            reduce, expand = self.se["reduce"], self.se["expand"]
            s = y.mean((2, 3), keepdim=True)
            s = F.relu(pointwise_conv2d(s, reduce.weight[:hidden, :mid], reduce.bias[:hidden]))
            s = F.hardsigmoid(pointwise_conv2d(s, expand.weight[:mid, :hidden], expand.bias[:mid]))
            y = y * s
        y = self.project_bn(pointwise_conv2d(y, self.project.weight[:, :mid]))
        return x + y if spec.residual else y

    @torch.no_grad()
    def sort_channels(self, boundaries: Sequence[int] = ()) -> None:
        """Reorder middle channels by importance (L1 norm of the project weights reading
        them), most important first, so smaller expand ratios keep the best channels.

        A pure permutation: the block computes the same function at full width. SE's
        hidden units are sorted the same way by the L1 norm of the weights reading them.
        ``boundaries``: channel counts whose prefixes are sorted only within themselves
        and stay in front (OFA's ``re_organize_middle_weights`` with an expand stage > 0).
        """
        importance = self.project.weight.abs().sum(dim=(0, 2, 3))
        edges = [0, *boundaries, importance.numel()]
        order = torch.cat([lo + importance[lo:hi].argsort(descending=True, stable=True)
                           for lo, hi in zip(edges, edges[1:])])
        self.expand.weight.copy_(self.expand.weight[order])
        _permute_bn(self.expand_bn, order)
        self.dw.weight.copy_(self.dw.weight[order])
        _permute_bn(self.dw_bn, order)
        self.project.weight.copy_(self.project.weight[:, order])
        if self.se is not None:
            reduce, expand = self.se["reduce"], self.se["expand"]
            reduce.weight.copy_(reduce.weight[:, order])
            expand.weight.copy_(expand.weight[order])
            expand.bias.copy_(expand.bias[order])
            hidden_order = expand.weight.abs().sum(dim=(0, 2, 3)).argsort(descending=True, stable=True)
            reduce.weight.copy_(reduce.weight[hidden_order])
            reduce.bias.copy_(reduce.bias[hidden_order])
            expand.weight.copy_(expand.weight[:, hidden_order])

    @torch.no_grad()
    def to_static(self, spec: BlockSpec) -> MBConv:
        """A plain ``MBConv`` holding copies of this block's weights at ``spec``'s setting."""
        mid, hidden = spec.mid, spec.se_hidden
        block = MBConv(spec)
        block.expand.weight.copy_(self.expand.weight[:mid])
        _copy_bn(block.expand_bn, self.expand_bn, mid)
        block.dw.weight.copy_(self.dw.kernel(spec.kernel, mid))
        _copy_bn(block.dw_bn, self.dw_bn, mid)
        if self.se is not None:
            reduce, expand = self.se["reduce"], self.se["expand"]
            block.se.reduce.weight.copy_(reduce.weight[:hidden, :mid])
            block.se.reduce.bias.copy_(reduce.bias[:hidden])
            block.se.expand.weight.copy_(expand.weight[:mid, :hidden])
            block.se.expand.bias.copy_(expand.bias[:mid])
        block.project.weight.copy_(self.project.weight[:, :mid])
        _copy_bn(block.project_bn, self.project_bn, spec.out_ch)
        return block


def _permute_bn(bn: nn.BatchNorm2d, order: torch.Tensor) -> None:
    for t in (bn.weight, bn.bias, bn.running_mean, bn.running_var):
        t.copy_(t[order])


def _copy_bn(dst: nn.BatchNorm2d, src: nn.BatchNorm2d, channels: int) -> None:
    for name in ("weight", "bias", "running_mean", "running_var"):
        getattr(dst, name).copy_(getattr(src, name)[:channels])
    dst.num_batches_tracked.copy_(src.num_batches_tracked)
    dst.momentum, dst.eps = src.momentum, src.eps
