"""Exact multiply-accumulates and parameter counts of subnets, without torch.

MACs count every convolution (squeeze-excite's two 1x1 convs included) and the
classifier at batch 1 and the space's input size, and no bias additions, activations,
BN or pooling - the same total as ``torch.utils.flop_counter.FlopCounterMode`` / 2 on the
extracted network. Parameters are ``sum(p.numel())`` of the extracted network (BN
running statistics are buffers, not parameters).

Counting is a table lookup per active block: the tables are built once per space, so a
subnet costs a few microseconds (bucket sampling and catalogs count thousands).
"""

from __future__ import annotations

import functools

from .space import BlockSpec, SearchSpace, Subnet


def block_cost(spec: BlockSpec) -> tuple[int, int]:
    """(MACs, params) of one MBConv block: expand 1x1, depthwise kxk, SE, project 1x1."""
    area_in, area_out = spec.size_in**2, spec.size_out**2
    macs = area_in * spec.in_ch * spec.mid  # expand 1x1 at the input resolution
    macs += area_out * spec.mid * spec.kernel**2  # depthwise
    macs += area_out * spec.mid * spec.out_ch  # project
    params = spec.in_ch * spec.mid + 2 * spec.mid
    params += spec.mid * spec.kernel**2 + 2 * spec.mid
    params += spec.mid * spec.out_ch + 2 * spec.out_ch
    if spec.se_hidden:
        macs += 2 * spec.mid * spec.se_hidden  # both SE convs act on the pooled 1x1 map
        params += 2 * spec.mid * spec.se_hidden + spec.se_hidden + spec.mid  # SE convs carry biases
    return macs, params


@functools.lru_cache(maxsize=32)
def _tables(space: SearchSpace) -> tuple[tuple[int, int], list[dict[tuple[int, int], tuple[int, int]]]]:
    """Fixed (MACs, params) and, per block position, (kernel, expand) -> (MACs, params)."""
    stem = space.stem_channels
    area = space.stem_size**2
    last = space.stage_width(space.num_stages - 1)
    final_area = space.feature_sizes()[-1] ** 2
    stem_in = space.macs_in_channels or space.in_channels  # --macs-stem 3: the paper's counter
    fixed_macs = area * stem * stem_in * 9  # stem conv
    fixed_macs += area * stem * 9 + area * stem * stem  # first block: depthwise 3x3 + project
    final, mix = space.final_expand_channels, space.feature_mix_channels
    fixed_macs += final_area * last * final
    fixed_macs += final * mix + mix * space.num_classes
    fixed_params = space.in_channels * stem * 9 + 2 * stem
    fixed_params += stem * 9 + 2 * stem + stem * stem + 2 * stem
    fixed_params += last * final + 2 * final
    fixed_params += final * mix
    fixed_params += mix * space.num_classes + space.num_classes

    tables: list[dict[tuple[int, int], tuple[int, int]]] = []
    n, s = space.num_blocks, space.num_stages
    depth = [space.max_depth] * s
    for b in range(n):
        table = {}
        for k in space.kernel_choices:
            for e in space.expand_choices:
                probe = space.subnet([k] * n, [e] * n, depth)
                table[(k, e)] = block_cost(space.block_specs(probe)[b])
        tables.append(table)
    return (fixed_macs, fixed_params), tables


def cost(space: SearchSpace, subnet: Subnet) -> tuple[int, int]:
    """(MACs, params) of ``subnet``."""
    space.check(subnet)
    (macs_total, params_total), tables = _tables(space)
    ks, e = subnet.ks, subnet.e
    for b in subnet.active_blocks():
        m, p = tables[b][(ks[b], e[b])]
        macs_total += m
        params_total += p
    return macs_total, params_total


def draw_macs(space: SearchSpace, ks: list[int], e: list[int], d: list[int]) -> int:
    """``macs`` of the subnet the raw lists ``(ks, e, d)`` describe, choices assumed valid
    (what bucket sampling needs for each of its thousands of draws)."""
    (macs_total, _), tables = _tables(space)
    max_depth = space.max_depth
    for s, depth in enumerate(d):
        for b in range(s * max_depth, s * max_depth + depth):
            macs_total += tables[b][(ks[b], e[b])][0]
    return macs_total


def macs(space: SearchSpace, subnet: Subnet) -> int:
    """Multiply-accumulates of one forward pass at batch 1."""
    return cost(space, subnet)[0]


def params(space: SearchSpace, subnet: Subnet) -> int:
    """Parameters of the extracted static network."""
    return cost(space, subnet)[1]


def mflops(space: SearchSpace, subnet: Subnet) -> float:
    """MACs in millions - what the paper and OFA call MFLOPs."""
    return macs(space, subnet) / 1e6
