"""Elastic resolution in training: one input size per batch, as OFA samples it.

``--resolutions 24,28,32`` makes every step train at one size drawn from the list. The
draw is a pure function of (seed, epoch, step) - its own ``random.Random``, touching no
other generator - so every DDP rank, every micro-batch and every subnet of a step see the
same size, and a run resumed from a checkpoint replays the same sizes bit for bit. A run
without ``--resolutions`` draws nothing and resizes nothing: it is the run it was before.

The batch is resized on the device as one tensor op after augmentation
(``data.resize``: bilinear, antialiased like the PIL resize of OFA's pipeline).

BatchNorm, as in OFA: training normalises with the batch's own statistics at whatever
size the batch has (one set of BN weights shared by every size); running statistics are
never trusted afterwards - eval, export and catalog recompute them on training images
resized to the resolution they measure (``evaluate.resolution``).
"""

from __future__ import annotations

import random
from typing import Sequence

import torch

from ..data.resize import resize
from ..errors import OfaError
from ..resolution import check_resolutions
from ..space import SearchSpace


def check_training_space(space: SearchSpace, resolutions: Sequence[int] | None) -> None:
    """Refuse ``resolutions`` the space cannot run at, and a space whose ``image_size`` (the
    run's default resolution, the size the data are held at) is not their largest: OFA
    tests at its largest training size, and the data are resized down from it per batch."""
    if not resolutions:
        return
    values = check_resolutions(space, resolutions)
    if space.image_size != values[-1]:
        raise OfaError(f"--image-size {space.image_size} must be the largest of --resolutions "
                       f"{','.join(map(str, values))} (the data are held at that size and resized down per batch)")


class ResolutionSampler:
    """Which size a step trains at; with no resolutions, every step keeps the data's size."""

    def __init__(self, resolutions: Sequence[int] | None, seed: int) -> None:
        self.resolutions = tuple(sorted(resolutions)) if resolutions else ()
        self.seed = seed

    def pick(self, epoch: int, step: int) -> int | None:
        if not self.resolutions:
            return None
        return random.Random(f"ofa-deploy/resolution/{self.seed}/{epoch}/{step}").choice(self.resolutions)

    def apply(self, images: torch.Tensor, epoch: int, step: int) -> torch.Tensor:
        """``images`` at the size of (epoch, step)."""
        size = self.pick(epoch, step)
        return images if size is None else resize(images, size)

    def epoch_counts(self, epoch: int, steps: int) -> dict:
        """``{"resolution_steps": {"24": n, ...}}`` for the metrics line; empty without resolutions."""
        if not self.resolutions:
            return {}
        counts = {str(r): 0 for r in self.resolutions}
        for step in range(steps):
            counts[str(self.pick(epoch, step))] += 1
        return {"resolution_steps": counts}


__all__ = ["check_training_space", "ResolutionSampler"]
