"""Eigen-CAM (Muhammad & Yeasin 2020): the first principal component of the layer's
activations. Class-agnostic, no gradients.

Shapes:
    activations  (batch, channels, freq, cam_frames)   any rank ≥ 3
    map          (batch, freq, cam_frames)
"""

from __future__ import annotations

import torch

from listenable.cams.base import CAM

__all__ = ["EigenCAM", "principal_projection"]


def principal_projection(activations: torch.Tensor) -> torch.Tensor:
    """Projection of each position's channel vector on the first principal direction.

    The activations of one clip form a ``positions × channels`` matrix; centred over the
    positions (as pytorch-grad-cam does: without it the first component is mostly the mean),
    its first right singular vector ``v`` gives the map ``(A − Ā) v``. The sign of ``v`` is
    arbitrary, so it is chosen to make the map correlate positively with the mean activation
    over channels (regions where the layer is active come out positive). Computed in float64.
    """
    batch, spatial = activations.shape[0], activations.shape[2:]
    x = activations.flatten(2).transpose(1, 2).double()  # (batch, positions, channels)
    centred = x - x.mean(dim=1, keepdim=True)
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    projection = (centred @ vh[:, 0, :, None])[..., 0]  # (batch, positions)
    mean = x.mean(dim=2)
    corr = (
        (projection - projection.mean(1, keepdim=True)) * (mean - mean.mean(1, keepdim=True))
    ).sum(1)
    sign = torch.where(corr < 0, -1.0, 1.0).to(projection)
    return (projection * sign[:, None]).view(batch, *spatial).to(activations.dtype)


class EigenCAM(CAM):
    """Eigen-CAM: ``ReLU`` of the first principal component of the activations
    (:func:`principal_projection`). The target only decides which class is reported."""

    uses_gradients = False

    def cam_image(self, activations, gradients, features, target) -> torch.Tensor:
        return principal_projection(activations)
