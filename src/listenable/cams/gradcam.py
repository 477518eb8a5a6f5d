"""Grad-CAM (Selvaraju et al. 2017), the paper's eq. (1)–(2)."""

from __future__ import annotations

import torch

from listenable.cams.base import CAM


class GradCAM(CAM):
    """``α_k = (1/Z) Σ_ij ∂y^c/∂A_k(i, j)``; map = ``ReLU(Σ_k α_k A_k)``."""

    def weights(self, activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
        return gradients.mean(dim=tuple(range(2, gradients.ndim)))
