"""Gradient-weighted CAMs: Grad-CAM (the paper's eq. (1)–(2)) and its variants.

One small class per method, each overriding :meth:`~listenable.cams.base.CAM.weights` (one
weight per channel) or :meth:`~listenable.cams.base.CAM.cam_image` (a weight per position).
The same maps are also plain functions of ``(activations, gradients)`` so that other methods
(:mod:`listenable.cams.multiscale`) can compute them on several layers.

Shapes (any rank ≥ 3: every reduction runs over ``dim=2..``):
    activations, gradients  (batch, channels, freq, cam_frames)
    weights                 (batch, channels)
    map                     (batch, freq, cam_frames), before ReLU
"""

from __future__ import annotations

import torch

from listenable.cams.base import CAM

__all__ = [
    "GradCAM",
    "GradCAMPlusPlus",
    "HiResCAM",
    "XGradCAM",
    "LayerCAM",
    "weighted_sum",
    "gradcam_map",
    "hirescam_map",
    "layercam_map",
]

EPS = 1e-7


def _positions(x: torch.Tensor) -> tuple[int, ...]:
    return tuple(range(2, x.ndim))


def weighted_sum(weights: torch.Tensor, activations: torch.Tensor) -> torch.Tensor:
    """``Σ_k w_k A_k``: ``(batch, channels)`` × ``(batch, channels, ...)`` → ``(batch, ...)``."""
    return torch.einsum("bk,bk...->b...", weights, activations)


def gradcam_map(activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
    """Grad-CAM before ReLU: channel weights = mean gradient over positions."""
    return weighted_sum(gradients.mean(dim=_positions(gradients)), activations)


def hirescam_map(activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
    """HiResCAM before ReLU: ``Σ_k ∂y/∂A_k ⊙ A_k`` (gradient × activation per position)."""
    return (gradients * activations).sum(dim=1)


def layercam_map(activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
    """LayerCAM before ReLU: ``Σ_k ReLU(∂y/∂A_k) ⊙ A_k``."""
    return (torch.relu(gradients) * activations).sum(dim=1)


class GradCAM(CAM):
    """Selvaraju et al. 2017: ``α_k = (1/Z) Σ_ij ∂y^c/∂A_k(i, j)``; map = ``ReLU(Σ_k α_k A_k)``."""

    def weights(self, activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
        return gradients.mean(dim=_positions(gradients))


class GradCAMPlusPlus(CAM):
    """Grad-CAM++ (Chattopadhay et al. 2018), the usual closed form (exponential score):

    ``a_k(ij) = g² / (2 g² + (Σ_ab A_k(ab)) g³)``, ``w_k = Σ_ij a_k(ij) ReLU(g_ij)`` with
    ``g = ∂y^c/∂A_k(i, j)``. Where ``g = 0``, or where the denominator is not positive (the
    derivation assumes non-negative activations; a pre-activation ResNet's block outputs can
    sum to a negative value), ``a = 0``.
    """

    def weights(self, activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
        g2 = gradients.square()
        g3 = g2 * gradients
        total = activations.sum(dim=_positions(activations), keepdim=True)
        denom = 2 * g2 + total * g3
        valid = (gradients != 0) & (denom > 0)
        alpha = torch.where(valid, g2 / torch.where(valid, denom, 1.0), 0.0)
        return (alpha * torch.relu(gradients)).sum(dim=_positions(gradients))


class HiResCAM(CAM):
    """HiResCAM (Draelos & Carin 2020): element-wise ``Σ_k ∂y^c/∂A_k ⊙ A_k``, then ReLU.

    No averaging of the gradients over positions: each position shows its own first-order
    contribution to the score.
    """

    def cam_image(self, activations, gradients, features, target) -> torch.Tensor:
        return hirescam_map(activations, gradients)


class XGradCAM(CAM):
    """XGrad-CAM (Fu et al. 2020): ``w_k = Σ_ij g_k(ij) A_k(ij) / Σ_ij A_k(ij)``."""

    def weights(self, activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
        dims = _positions(activations)
        return (gradients * activations).sum(dim=dims) / (activations.sum(dim=dims) + EPS)


class LayerCAM(CAM):
    """LayerCAM (Jiang et al. 2021): ``Σ_k ReLU(∂y^c/∂A_k) ⊙ A_k``, then ReLU.

    A weight per position rather than per channel, which keeps shallow layers' maps sharp.
    """

    def cam_image(self, activations, gradients, features, target) -> torch.Tensor:
        return layercam_map(activations, gradients)
