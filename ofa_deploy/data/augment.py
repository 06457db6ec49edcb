"""Training augmentation as batched tensor ops on the training device.

One ``affine_grid`` + ``grid_sample`` call applies a random-resized crop and an optional
horizontal flip to a whole batch, so augmentation costs a couple of kernels per step and
no per-image Python. The crop parameters are drawn from an explicit ``torch.Generator``
(CPU, so the draws are identical whatever the device and on every DDP rank).

Policies (``AugmentPolicy``), chosen per dataset by ``default_policy``:

* RGB sets (CIFAR): OFA's provider - crop area 8-100 %, aspect 3/4-4/3, horizontal flip.
* ``fmnist``: crop area 50-100 %, flip. Garments are left-right symmetric classes, so a
  flip keeps the label; crops below half the image often cut away what tells a shirt from
  a pullover at 28x28.
* ``mnist`` and ``digits``: crop area 50-100 %, no flip (a mirrored 2 or 7 is not a digit).
  The crop acts as random zoom and shift, the usual safe augmentation for digits.
* ``none``: identity (``--augment none``).
* ``released``: the paper's released code (``--data-protocol released``): crop area
  8-100 %, flip and brightness jitter x U(1 - 32/255, 1 + 32/255) clipped to [0, 1] (its
  ``ColorJitter(brightness=32/255, saturation=0.5)``; saturation does nothing to grey
  images). Only for un-normalised images, whose pixel range is [0, 1].

OFA's colour distortion is left out: the paper's datasets are small and low-resolution,
and the paper's comparison does not depend on it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentPolicy:
    """Random-resized-crop area range, aspect-ratio range, whether to flip horizontally and
    the brightness jitter's half-width (0 = none)."""

    name: str
    scale: tuple[float, float] = (1.0, 1.0)
    ratio: tuple[float, float] = (1.0, 1.0)
    flip: bool = False
    brightness: float = 0.0

    @property
    def identity(self) -> bool:
        return self.scale == (1.0, 1.0) and self.ratio == (1.0, 1.0) and not self.flip and not self.brightness


POLICIES = {
    "ofa": AugmentPolicy("ofa", (0.08, 1.0), (3 / 4, 4 / 3), True),
    "fmnist": AugmentPolicy("fmnist", (0.5, 1.0), (3 / 4, 4 / 3), True),
    "digits": AugmentPolicy("digits", (0.5, 1.0), (3 / 4, 4 / 3), False),
    "none": AugmentPolicy("none"),
    "released": AugmentPolicy("released", (0.08, 1.0), (3 / 4, 4 / 3), True, 32 / 255),
}


def default_policy(dataset: str) -> AugmentPolicy:
    """The policy ``--augment default`` uses for ``dataset`` (see the module docstring)."""
    if dataset == "fmnist":
        return POLICIES["fmnist"]
    if dataset in ("mnist", "digits"):
        return POLICIES["digits"]
    return POLICIES["ofa"]


def resolve_policy(name: str, dataset: str) -> AugmentPolicy:
    from ..errors import OfaError

    if name == "default":
        return default_policy(dataset)
    if name not in POLICIES:
        raise OfaError(f"unknown augmentation {name!r}; choose default, {', '.join(POLICIES)}")
    return POLICIES[name]


def sample_params(policy: AugmentPolicy, n: int, generator: torch.Generator) -> torch.Tensor:
    """(n, 2, 3) affine matrices mapping output to input coordinates (``affine_grid`` form).

    Crop area fraction s ~ U(scale), log aspect r ~ U(log ratio); crop width sqrt(s r),
    height sqrt(s / r) (fractions of the image, clamped to 1), centre uniform where the
    crop fits; flip negates the x axis with probability 1/2. With ``brightness`` b the
    result is (n, 3, 3): a third row holds the brightness factor ~ U(1 - b, 1 + b) in
    column 0 (drawn after the crops, so policies without it draw as before).
    """
    u = torch.rand(n, 4, generator=generator, dtype=torch.float64)
    lo, hi = policy.scale
    area = lo + (hi - lo) * u[:, 0]
    log_lo, log_hi = math.log(policy.ratio[0]), math.log(policy.ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * u[:, 1])
    w = torch.sqrt(area * aspect).clamp(max=1.0)
    h = torch.sqrt(area / aspect).clamp(max=1.0)
    cx = (1 - w) * (2 * u[:, 2] - 1)
    cy = (1 - h) * (2 * u[:, 3] - 1)
    flips = (
        torch.rand(n, generator=generator, dtype=torch.float64) < 0.5
        if policy.flip
        else torch.zeros(n, dtype=torch.bool)
    )
    sx = torch.where(flips, -w, w)
    theta = torch.zeros(n, 2, 3, dtype=torch.float64)
    theta[:, 0, 0], theta[:, 0, 2] = sx, cx
    theta[:, 1, 1], theta[:, 1, 2] = h, cy
    if policy.brightness:
        b = policy.brightness
        factor = 1 - b + 2 * b * torch.rand(n, generator=generator, dtype=torch.float64)
        theta = torch.cat([theta, torch.zeros(n, 1, 3, dtype=torch.float64)], dim=1)
        theta[:, 2, 0] = factor
    return theta.float()


def apply(images: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Crop/flip (N, C, H, W) ``images`` by (N, 2, 3) ``theta``; bilinear, same size out.
    A (N, 3, 3) ``theta`` also scales each image by its brightness factor and clips to [0, 1].

    Samples outside the image read border values, which for crops inside the image only
    happens at the last half pixel.
    """
    theta = theta.to(images.device, images.dtype)
    grid = F.affine_grid(theta[:, :2], list(images.shape), align_corners=False)
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if theta.shape[1] == 3:
        out = (out * theta[:, 2, 0].view(-1, 1, 1, 1)).clamp_(0.0, 1.0)
    return out


def augment(images: torch.Tensor, policy: AugmentPolicy, generator: torch.Generator) -> torch.Tensor:
    """``images`` (N, C, H, W) augmented by ``policy`` with crop draws from ``generator``."""
    if policy.identity:
        return images
    return apply(images, sample_params(policy, images.shape[0], generator))
