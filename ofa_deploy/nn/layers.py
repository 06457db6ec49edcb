"""Plain (non-elastic) layers shared by the supernet and the extracted subnets.

Tensors are NCHW. Every module here is built from ordinary ``nn.Conv2d``,
``nn.BatchNorm2d`` and ``nn.Linear`` so that an extracted subnet exports to ONNX and is
counted by ``torch.utils.flop_counter`` without any custom operator.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..space import BlockSpec, SearchSpace


def make_act(name: str) -> nn.Module:
    if name == "relu":
        return nn.ReLU(inplace=False)
    if name == "hswish":
        return nn.Hardswish()
    raise ValueError(f"unknown activation {name!r}")


class SqueezeExcite(nn.Module):
    """(N, C, H, W) -> (N, C, H, W): channels rescaled by a gate computed from their means."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, hidden, 1, bias=True)
        self.expand = nn.Conv2d(hidden, channels, 1, bias=True)
        self.relu = nn.ReLU()
        self.gate = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * self.gate(self.expand(self.relu(self.reduce(s))))


class MBConv(nn.Module):
    """Inverted residual: [1x1 expand, BN, act], kxk depthwise, BN, act, [SE], 1x1 project, BN.

    (N, in_ch, H, W) -> (N, out_ch, H/stride, W/stride). Without ``expand`` (the fixed
    first block, expand ratio 1) the depthwise conv reads the input directly.
    """

    def __init__(self, spec: BlockSpec, expand: bool = True) -> None:
        super().__init__()
        self.expand = nn.Conv2d(spec.in_ch, spec.mid, 1, bias=False) if expand else None
        self.expand_bn = nn.BatchNorm2d(spec.mid) if expand else None
        self.dw = nn.Conv2d(
            spec.mid, spec.mid, spec.kernel, spec.stride, spec.kernel // 2, groups=spec.mid, bias=False
        )
        self.dw_bn = nn.BatchNorm2d(spec.mid)
        self.se = SqueezeExcite(spec.mid, spec.se_hidden) if spec.se_hidden else None
        self.project = nn.Conv2d(spec.mid, spec.out_ch, 1, bias=False)
        self.project_bn = nn.BatchNorm2d(spec.out_ch)
        self.act = make_act(spec.act)
        self.residual = spec.residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.expand is not None:
            y = self.act(self.expand_bn(self.expand(y)))
        y = self.act(self.dw_bn(self.dw(y)))
        if self.se is not None:
            y = self.se(y)
        y = self.project_bn(self.project(y))
        return x + y if self.residual else y


class Stem(nn.Module):
    """(N, in_channels, S, S) -> (N, stem_channels, S/2, S/2): 3x3 stride-2 conv, BN, h-swish."""

    def __init__(self, space: SearchSpace) -> None:
        super().__init__()
        self.conv = nn.Conv2d(space.in_channels, space.stem_channels, 3, 2, 1, bias=False)
        self.bn = nn.BatchNorm2d(space.stem_channels)
        self.act = nn.Hardswish()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


def first_block_spec(space: SearchSpace) -> BlockSpec:
    """The fixed MBConv after the stem: expand 1, 3x3, ReLU, identity shortcut."""
    w, size = space.stem_channels, space.stem_size
    return BlockSpec(-1, 0, w, w, w, 3, 1, "relu", 0, True, size, size)


class Head(nn.Module):
    """(N, C_last, h, w) -> (N, num_classes) logits.

    1x1 conv to ``final_expand_channels`` + BN + h-swish, global average pool, 1x1 conv to
    ``feature_mix_channels`` + h-swish (no BN, no bias), dropout, linear classifier.
    """

    def __init__(self, space: SearchSpace) -> None:
        super().__init__()
        final, mix = space.final_expand_channels, space.feature_mix_channels
        self.final_expand = nn.Conv2d(space.stage_width(space.num_stages - 1), final, 1, bias=False)
        self.final_bn = nn.BatchNorm2d(final)
        self.feature_mix = nn.Conv2d(final, mix, 1, bias=False)
        self.act = nn.Hardswish()
        self.dropout = nn.Dropout(space.dropout)
        self.classifier = nn.Linear(mix, space.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.final_bn(self.final_expand(x)))
        x = x.mean((2, 3), keepdim=True)
        x = self.act(self.feature_mix(x))
        return self.classifier(self.dropout(torch.flatten(x, 1)))


def init_weights(module: nn.Module) -> None:
    """OFA's initialisation: "he_fout" normal for convs, unit BN, small uniform classifier."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d) or getattr(m, "he_fout_init", False):
            weight = m.weight
            fan_out = weight.shape[0] * weight.shape[2] * weight.shape[3]
            nn.init.normal_(weight, 0.0, math.sqrt(2.0 / fan_out))
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            bound = 1.0 / math.sqrt(m.weight.shape[1])
            nn.init.uniform_(m.weight, -bound, bound)
            nn.init.zeros_(m.bias)
