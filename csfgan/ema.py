"""An exponential moving average of the generator's weights, kept beside the raw ones for evaluation.

Yazıcı et al. (2019), "The Unusual Effectiveness of Averaging in GAN Training": a GAN's iterates
circle around an equilibrium, and their running average sits nearer it than any one iterate, so the
averaged generator scores better and varies less from checkpoint to checkpoint. StyleGAN (Karras et al.)
keeps such a G_ema with its half-life given in training images rather than steps, so that it does not
depend on the batch size, and ramps the half-life up (at most a fraction of the images seen so far), so
that the random initialisation is forgotten early. That is the rule here:

    half_life = min(ema_half_life_images, ema_rampup · images_seen)     (no cap when ema_rampup = 0)
    β = 0.5 ** (images_per_step / half_life)
    θ_ema ← β · θ_ema + (1 − β) · θ

after every generator update. Buffers (BatchNorm running statistics) are copied from the raw generator,
not averaged, as StyleGAN does with its buffers: they describe the activations of the current weights,
the nearest available to the average's.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


class GeneratorAverage:
    """The averaged copy of a generator; ``update`` after each optimiser step of the generator."""

    def __init__(self, generator: nn.Module, half_life_images: float, rampup: float):
        if not half_life_images > 0:
            raise ValueError(f"half_life_images must be positive, got {half_life_images}")
        self.half_life_images = float(half_life_images)
        self.rampup = float(rampup)
        self.module = copy.deepcopy(generator).eval().requires_grad_(False)

    def beta(self, images_per_step: int, images_seen: int) -> float:
        """The decay of one update made after ``images_seen`` training images (this step's included)."""
        half_life = self.half_life_images
        if self.rampup > 0:
            half_life = min(half_life, self.rampup * images_seen)
        return 0.5 ** (images_per_step / max(half_life, 1e-8))

    @torch.no_grad()
    def update(self, generator: nn.Module, images_per_step: int, images_seen: int) -> None:
        beta = self.beta(images_per_step, images_seen)
        averaged = list(self.module.parameters())
        current = [p.detach() for p in generator.parameters()]
        if len(averaged) != len(current):
            raise RuntimeError("the averaged generator no longer matches the trained one")
        torch._foreach_lerp_(averaged, current, 1.0 - beta)
        for mine, theirs in zip(self.module.buffers(), generator.buffers(), strict=True):
            mine.copy_(theirs)

    def state_dict(self) -> dict[str, Any]:
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state)

    def describe(self) -> dict[str, float]:
        return {"half_life_images": self.half_life_images, "rampup": self.rampup}
