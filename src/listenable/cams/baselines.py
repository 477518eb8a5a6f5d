"""Reference maps that explain nothing: the floor every metric is compared against.

Shapes:
    activations  (batch, channels, freq, cam_frames)   the layer's output (for its grid only)
    map          (batch, freq, cam_frames)
"""

from __future__ import annotations

import torch
from torch import nn

from listenable.cams.base import CAM

__all__ = ["RandomCAM"]


class RandomCAM(CAM):
    """I.i.d. uniform noise on the layer's grid (by default the fused top map,
    ``(batch, 128, cam_frames)``), ignoring the clip.

    After the percentile threshold it is a random mask of the same area as any other
    method's (25 % at the 75th percentile). The model still runs once, for the logits and
    the target. The noise comes from a ``torch.Generator`` seeded with ``seed`` at every
    call: the same seed gives the same map, and every clip of a batch gets the same draw
    (so a batch equals its clips one by one); vary ``seed`` for independent masks.
    """

    uses_gradients = False

    def __init__(self, model: nn.Module, layer: str | None = None, *, seed: int = 0) -> None:
        super().__init__(model, layer)
        self.seed = seed

    def cam_image(self, activations, gradients, features, target) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed)
        noise = torch.rand(activations.shape[2:], generator=generator)  # float32 even under
        noise = noise.to(activations.device)  # autocast: no ties from a short mantissa
        return noise.expand(activations.shape[0], *noise.shape).clone()
