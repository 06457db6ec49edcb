"""The paper's MFLOPs buckets: where populations are evaluated and how subnets are drawn in them.

The paper evaluates a population at 4, 6, ..., 14 MFLOPs (multiply-accumulates, at 32x32),
drawing subnets uniformly until one lands within a tolerance of the bucket. At other input
sizes the buckets sit at the same places in the space's MFLOPs range (``paper_buckets``).
Everything here is a function of a ``SearchSpace`` and ``cost``; nothing needs torch.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Sequence

from .cost import draw_macs, macs
from .errors import OfaError
from .space import SearchSpace, Subnet, as_rng

PAPER_BUCKETS: tuple[float, ...] = (4.0, 6.0, 8.0, 10.0, 12.0, 14.0)
"""The MFLOPs (millions of multiply-accumulates) the paper evaluates populations at."""


def macs_range(space: SearchSpace, *, expand_choices: Sequence[int] | None = None) -> tuple[int, int]:
    """Fewest and most MACs over all subnets (optionally with restricted expand ratios)."""
    ec = tuple(expand_choices or space.expand_choices)
    n, s = space.num_blocks, space.num_stages
    lo = space.subnet([space.kernel_choices[0]] * n, [ec[0]] * n, [space.depth_choices[0]] * s)
    hi = space.subnet([space.kernel_choices[-1]] * n, [ec[-1]] * n, [space.depth_choices[-1]] * s)
    return macs(space, lo), macs(space, hi)


def _at_32(space: SearchSpace) -> SearchSpace:
    return dataclasses.replace(space, image_size=32)


def at_paper_size(space: SearchSpace, mflops: float) -> float:
    """``mflops`` of ``space`` mapped to the same place in the MFLOPs range of the space at the
    paper's 32x32 input (linearly between the smallest and the largest subnet): what the
    paper's bucket thresholds (4 and 14) are compared with at other image sizes."""
    if space.image_size == 32:
        return mflops
    lo, hi = macs_range(space)
    lo32, hi32 = macs_range(_at_32(space))
    return (lo32 + (mflops * 1e6 - lo) * (hi32 - lo32) / (hi - lo)) / 1e6


def paper_scale(space: SearchSpace) -> float:
    """How much wider the space's MFLOPs range is than at 32x32 (1 there): a bucket's
    tolerance of 0.5 MFLOPs at 32x32 holds as many subnets as 0.5 x this."""
    if space.image_size == 32:
        return 1.0
    lo, hi = macs_range(space)
    lo32, hi32 = macs_range(_at_32(space))
    return (hi - lo) / (hi32 - lo32)


def paper_buckets(space: SearchSpace) -> tuple[float, ...]:
    """``PAPER_BUCKETS`` at the space's input size: the same places in its MFLOPs range
    (rounded to 0.1 MFLOPs), so a 64x64 space has buckets where its subnets are."""
    if space.image_size == 32:
        return PAPER_BUCKETS
    lo = macs_range(space)[0]
    lo32 = macs_range(_at_32(space))[0]
    scale = paper_scale(space)
    return tuple(round((lo + (b * 1e6 - lo32) * scale) / 1e6, 1) for b in PAPER_BUCKETS)


def sample_in_bucket(
    space: SearchSpace,
    mflops: float,
    tolerance: float = 0.5,
    rng: random.Random | int = 0,
    *,
    lock_width: str = "auto",
    max_tries: int = 200_000,
) -> Subnet:
    """A uniformly drawn subnet whose MACs lie within ``mflops`` +- ``tolerance`` (millions).

    The paper's protocol: resample until inside the bucket. Buckets at or below the
    paper's smallest (4) have every expand ratio locked to its minimum, buckets at or
    above its largest (14) to its maximum, because uniform sampling almost never lands
    there (``lock_width`` = ``"auto"``; ``"min"``, ``"max"`` or ``"none"`` force it).
    A bucket no subnet can reach raises ``OfaError`` at once; one that is reachable but
    not found within ``max_tries`` draws raises too, never loops for ever.
    """
    if tolerance < 0:
        raise OfaError(f"tolerance={tolerance} must not be negative")
    rng = as_rng(rng)
    if lock_width == "auto":
        at_32 = at_paper_size(space, mflops)  # 0.05 of slack: paper_buckets() are rounded to 0.1
        lock_width = "min" if at_32 <= PAPER_BUCKETS[0] + 0.05 else "max" if at_32 >= PAPER_BUCKETS[-1] - 0.05 \
            else "none"
    if lock_width not in ("min", "max", "none"):
        raise OfaError(f"lock_width={lock_width!r} must be one of auto, min, max, none")
    expand = {
        "min": (space.expand_choices[0],),
        "max": (space.expand_choices[-1],),
        "none": space.expand_choices,
    }[lock_width]
    low, high = (mflops - tolerance) * 1e6, (mflops + tolerance) * 1e6
    reach_lo, reach_hi = macs_range(space, expand_choices=expand)
    if high < reach_lo or low > reach_hi:
        raise OfaError(_unreachable(space, mflops, tolerance, lock_width, expand, (reach_lo, reach_hi)))
    # thousands of draws per subnet: count each draw's MACs on the raw lists and validate
    # only the one kept (the same draws, and so the same subnet, as ``SearchSpace.sample``)
    for _ in range(max_tries):
        ks, e, d = space.draw(rng, expand_choices=expand)
        if low <= draw_macs(space, ks, e, d) <= high:
            return space.subnet(ks, e, d)
    raise OfaError(
        f"no subnet with {mflops:g} +- {tolerance:g} MFLOPs found in {max_tries} draws; "
        f"widen the tolerance or choose a bucket nearer the middle"
    )


def _unreachable(space: SearchSpace, mflops: float, tolerance: float, lock_width: str, expand: Sequence[int],
                 reach: tuple[int, int]) -> str:
    """Why no subnet has ``mflops``: outside the whole space's span, or outside what the
    expand-ratio lock leaves (and why the lock applies)."""
    whole_lo, whole_hi = macs_range(space)
    where = (f" at {space.image_size}x{space.image_size} (the paper's buckets at this size: "
             f"{','.join(f'{b:g}' for b in paper_buckets(space))})" if space.image_size != 32 else "")
    low, high = (mflops - tolerance) * 1e6, (mflops + tolerance) * 1e6
    head = f"no subnet has {mflops:g} +- {tolerance:g} MFLOPs"
    if high < whole_lo or low > whole_hi or lock_width == "none":
        return f"{head}: the space's subnets span {whole_lo / 1e6:.2f} to {whole_hi / 1e6:.2f} MFLOPs{where}"
    # reachable in the space, not with every expand ratio locked to one end
    end = "minimum" if lock_width == "min" else "maximum"
    return (f"{head} with every expand ratio locked to its {end}, {expand[0]} (lock_width={lock_width!r}): "
            f"those subnets span {reach[0] / 1e6:.2f} to {reach[1] / 1e6:.2f} MFLOPs, the whole space "
            f"{whole_lo / 1e6:.2f} to {whole_hi / 1e6:.2f}{where}; use lock_width 'none' (or 'auto', which locks "
            f"only buckets at or beyond the paper's smallest and largest, {PAPER_BUCKETS[0]:g} and "
            f"{PAPER_BUCKETS[-1]:g}, where uniform draws almost never land)")
