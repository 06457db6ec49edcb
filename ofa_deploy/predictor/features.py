"""What a latency predictor sees of a subnet: OFA's per-block lookup-table keys and the
operations' sizes behind them.

Every active MBConv block is keyed as in OFA's latency tables
(``expanded_conv-input:HxWxC-output:HxWxC-expand:M-kernel:K-stride:S-idskip:I-se:E-hs:H``);
a subnet is the vector of how often each key occurs (90 keys in the paper's space: per
stage, a first block and a repeated block, times 3 kernels x 3 expand ratios). The stem,
first block and head are the same in every subnet and land in a predictor's intercept.
Per key, ``phi`` gives its size (block, expand/depthwise/project/SE MMACs, activation
elements) and ``physics`` its operations' MMACs in its stage's columns (depthwise split by
kernel size; ``physics_ops`` names each column's operation), which the physics table and the
transfer model are built on.

Numpy only (the device side).
"""

from __future__ import annotations

import functools
from typing import Sequence

import numpy as np

from ..space import BlockSpec, SearchSpace, Subnet


def block_key(spec: BlockSpec) -> str:
    """OFA's lookup-table key of one MBConv block."""
    return (f"expanded_conv-input:{spec.size_in}x{spec.size_in}x{spec.in_ch}"
            f"-output:{spec.size_out}x{spec.size_out}x{spec.out_ch}-expand:{spec.mid}-kernel:{spec.kernel}"
            f"-stride:{spec.stride}-idskip:{int(spec.residual)}-se:{int(spec.se_hidden > 0)}"
            f"-hs:{int(spec.act == 'hswish')}")


@functools.lru_cache(maxsize=16)
def _key_index(space: SearchSpace) -> tuple[tuple[str, ...], np.ndarray]:
    """(keys, index[b, k_i, e_i] -> column) for every block position and choice."""
    n, s = space.num_blocks, space.num_stages
    keys: dict[str, int] = {}
    index = np.zeros((n, len(space.kernel_choices), len(space.expand_choices)), dtype=np.int64)
    full = [space.max_depth] * s
    for ki, k in enumerate(space.kernel_choices):
        for ei, e in enumerate(space.expand_choices):
            specs = space.block_specs(space.subnet([k] * n, [e] * n, full))
            for b, spec in enumerate(specs):
                index[b, ki, ei] = keys.setdefault(block_key(spec), len(keys))
    return tuple(keys), index


PHI_FEATURES = ("block", "expand_mmacs", "depthwise_mmacs", "project_mmacs", "se_mmacs", "act_melems")
SIZE_FEATURES = tuple(f"log_{name}" for name in PHI_FEATURES[1:])


def block_phi(spec: BlockSpec) -> list[float]:
    """Physics features of one block (see ``PHI_FEATURES``)."""
    area_in, area_out = spec.size_in**2, spec.size_out**2
    return [1.0, area_in * spec.in_ch * spec.mid / 1e6, area_out * spec.mid * spec.kernel**2 / 1e6,
            area_out * spec.mid * spec.out_ch / 1e6, 2 * spec.mid * spec.se_hidden / 1e6,
            spec.mid * (area_in + area_out) / 1e6]


@functools.lru_cache(maxsize=16)
def _phi_matrix(space: SearchSpace) -> np.ndarray:
    keys, _ = _key_index(space)
    specs: dict[str, BlockSpec] = {}
    n, full = space.num_blocks, [space.max_depth] * space.num_stages
    for k in space.kernel_choices:
        for e in space.expand_choices:
            for spec in space.block_specs(space.subnet([k] * n, [e] * n, full)):
                specs.setdefault(block_key(spec), spec)
    return np.array([block_phi(specs[key]) for key in keys])


def block_physics(spec: BlockSpec, kernels: Sequence[int]) -> list[float]:
    """One block's operations, in MMACs: expand, depthwise per kernel size, project, SE."""
    area_in, area_out = spec.size_in**2, spec.size_out**2
    dw = area_out * spec.mid * spec.kernel**2 / 1e6
    return [1.0, area_in * spec.in_ch * spec.mid / 1e6, *[dw if spec.kernel == k else 0.0 for k in kernels],
            area_out * spec.mid * spec.out_ch / 1e6, 2 * spec.mid * spec.se_hidden / 1e6]


def physics_ops(space: SearchSpace) -> tuple[str, ...]:
    """The operation behind each of a stage's ``block_physics`` columns."""
    return ("block", "expand", *[f"depthwise{k}" for k in space.kernel_choices], "project", "se")


@functools.lru_cache(maxsize=16)
def _physics_matrix(space: SearchSpace) -> tuple[np.ndarray, tuple[str, ...]]:
    """(K, P): each key's ``block_physics`` in its stage's columns, and each column's
    operation; columns no key touches (SE in stages without it) are dropped."""
    keys, _ = _key_index(space)
    ops = physics_ops(space)
    per = len(ops)
    out = np.zeros((len(keys), space.num_stages * per))
    n, full = space.num_blocks, [space.max_depth] * space.num_stages
    col = {key: i for i, key in enumerate(keys)}
    for k in space.kernel_choices:
        for e in space.expand_choices:
            for spec in space.block_specs(space.subnet([k] * n, [e] * n, full)):
                row = col[block_key(spec)]
                out[row, spec.stage * per:(spec.stage + 1) * per] = block_physics(spec, space.kernel_choices)
    used = np.any(out != 0, axis=0)
    return out[:, used], tuple(op for op, u in zip(ops * space.num_stages, used) if u)


class Featurizer:
    """Subnets of one space -> (N, K) key counts; counts -> (N, G) global features."""

    def __init__(self, space: SearchSpace) -> None:
        self.space = space
        self.keys, self._index = _key_index(space)
        self.phi = _phi_matrix(space)
        self.physics, self.physics_ops = _physics_matrix(space)
        self._k = {k: i for i, k in enumerate(space.kernel_choices)}
        self._e = {e: i for i, e in enumerate(space.expand_choices)}

    def counts(self, subnets: Sequence[Subnet]) -> np.ndarray:
        out = np.zeros((len(subnets), len(self.keys)))
        for row, sub in enumerate(subnets):
            ks, e = sub.ks, sub.e
            for b in sub.active_blocks():
                out[row, self._index[b, self._k[ks[b]], self._e[e[b]]]] += 1
        return out

    def counts_from_choices(self, kernel_index: np.ndarray, expand_index: np.ndarray,
                            active: np.ndarray) -> np.ndarray:
        """``counts`` of many subnets at once from (N, num_blocks) arrays: the index of each
        block's kernel and expand ratio in the space's choices, and whether it runs (what a
        search over hundreds of thousands of subnets needs: no ``Subnet`` objects)."""
        cols = self._index[np.arange(self.space.num_blocks)[None, :], kernel_index, expand_index]
        out = np.zeros((cols.shape[0], len(self.keys)))
        rows = np.broadcast_to(np.arange(cols.shape[0])[:, None], cols.shape)
        np.add.at(out, (rows[active], cols[active]), 1.0)
        return out

    def size(self, counts: np.ndarray) -> np.ndarray:
        """(N, 5) logs of the summed per-block ``phi`` (see ``SIZE_FEATURES``)."""
        return np.log(np.maximum(counts @ self.phi[:, 1:], 1e-9))
