"""The exact best subnet of an additive accuracy model under a MACs budget (numpy).

An accuracy model that is a sum of per active block gains ``g[block, kernel, expand]`` and
per stage gains ``h[stage, depth]`` (the ridge predictor on ``Encoding.features``, or the
synthetic landscape) has, like MACs, one term per block: its best subnet under a MACs
budget is a knapsack, solved exactly by Pareto sets (cost lower, gain higher): per stage
every depth and block configuration, pruned after each block, then the stages combined
and pruned under the budget. NSGA-II only approximates this optimum; the search proposes
the exact one for every MACs budget in its exploiting rounds.
"""

from __future__ import annotations

import numpy as np

from .encoding import Encoding


def pareto(cost: np.ndarray, gain: np.ndarray) -> np.ndarray:
    """Indices of the (cost lower, gain higher) Pareto set, cheapest first; of equal
    points the first is kept."""
    if not len(cost):
        return np.zeros(0, dtype=np.int64)
    order = np.lexsort((-gain, cost))
    g = gain[order]
    best = np.maximum.accumulate(g)
    keep = np.r_[True, g[1:] > best[:-1]]
    return order[keep]


def _stage_options(enc: Encoding, block_gain: np.ndarray, stage_gain: np.ndarray,
                   stage: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One stage's Pareto set: (macs, gain, rows) with rows (m, depth_max + 1) holding the
    (kernel, expand) cell per slot (0 for an absent block) and the depth index last."""
    costs, gains, rows = [], [], []
    for di, depth in enumerate(enc.space.depth_choices):
        c = np.zeros(1)
        g = np.full(1, float(stage_gain[stage, di]))
        cells = np.zeros((1, 0), dtype=np.int64)
        for slot in range(depth):
            blk = stage * enc.depth_max + slot
            m = enc.block_macs[blk].ravel()
            a = block_gain[blk].ravel()
            c = (c[:, None] + m[None, :]).ravel()
            g = (g[:, None] + a[None, :]).ravel()
            cells = np.column_stack([np.repeat(cells, len(m), axis=0), np.tile(np.arange(len(m)), len(cells))])
            keep = pareto(c, g)  # prune after each block: the set stays small (tens, not 9^4)
            c, g, cells = c[keep], g[keep], cells[keep]
        full = np.zeros((len(c), enc.depth_max + 1), dtype=np.int64)
        full[:, :depth] = cells
        full[:, -1] = di
        costs.append(c)
        gains.append(g)
        rows.append(full)
    c, g, r = np.concatenate(costs), np.concatenate(gains), np.vstack(rows)
    keep = pareto(c, g)
    return c[keep], g[keep], r[keep]


def best_under_budgets(enc: Encoding, block_gain: np.ndarray, stage_gain: np.ndarray,
                       budgets_mflops: list[float]) -> list[tuple[np.ndarray, float] | None]:
    """Per budget (MFLOPs) the (canonical row, gain) of the best subnet within it, or None
    where none fits. ``block_gain`` is (blocks, kernels, expands), ``stage_gain`` (stages,
    depths); one pass serves every budget (the stages are combined under the largest)."""
    if not budgets_mflops:
        return []
    limit = max(budgets_mflops) * 1e6 - enc.fixed_macs
    total_c, total_g = np.zeros(1), np.zeros(1)
    picks = np.zeros((1, 0), dtype=np.int64)  # per combined point: the option index per stage
    options = []
    for s in range(enc.stages):
        sc, sg, sr = _stage_options(enc, block_gain, stage_gain, s)
        options.append(sr)
        c = (total_c[:, None] + sc[None, :]).ravel()
        g = (total_g[:, None] + sg[None, :]).ravel()
        p = np.column_stack([np.repeat(picks, len(sc), axis=0), np.tile(np.arange(len(sc)), len(total_c))])
        fits = np.flatnonzero(c <= limit)
        keep = fits[pareto(c[fits], g[fits])]
        total_c, total_g, picks = c[keep], g[keep], p[keep]
    out: list[tuple[np.ndarray, float] | None] = []
    for budget in budgets_mflops:
        fits = np.flatnonzero(total_c <= budget * 1e6 - enc.fixed_macs)
        if not len(fits):
            out.append(None)
            continue
        i = int(fits[np.argmax(total_g[fits])])
        out.append((_row(enc, [options[s][picks[i, s]] for s in range(enc.stages)]), float(total_g[i])))
    return out


def _row(enc: Encoding, stage_rows: list[np.ndarray]) -> np.ndarray:
    """Stage option rows -> one canonical encoding row."""
    row = np.zeros(enc.n_var, dtype=np.int64)
    for s, opt in enumerate(stage_rows):
        for slot in range(enc.depth_max):
            blk = s * enc.depth_max + slot
            row[blk], row[enc.n + blk] = divmod(int(opt[slot]), enc.ne)
        row[2 * enc.n + s] = int(opt[-1])
    return enc.canonical(row[None, :])[0]
