"""Input-gradient attributions on the feature grid: saliency, Integrated Gradients and
SmoothGrad. They read no layer (the ``layer`` argument is accepted and ignored), so their
maps have the features' full resolution: ``(batch, n_mels, frames)``, time stride 1, on mel
bands ``(0, n_mels)``.

The 6 feature channels (log-mel, Δ, ΔΔ of L and R) become one map by the sum over channels
of ``|attribution|``: a time-frequency bin matters if any of its channels does, whatever the
sign (an onset can raise the score through a positive Δ or a negative one).

Only input gradients are computed: the model's parameters are frozen for the call
(:func:`~listenable.cams.base.frozen_parameters`), so ``p.grad`` stays ``None``.

Shapes:
    features     (batch, channels, n_mels, frames)
    attribution  (batch, channels, n_mels, frames)
    heatmap      (batch, n_mels, frames)
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from listenable.cams.base import CAM, CAMResult, feature_floor, frozen_parameters, select_target
from listenable.geometry import feature_geometry
from listenable.models import as_explainable

__all__ = [
    "InputAttribution",
    "Saliency",
    "IntegratedGradients",
    "SmoothGrad",
    "target_gradients",
]


def target_gradients(
    model: nn.Module, inputs: torch.Tensor, target: torch.Tensor, batch_size: int
) -> torch.Tensor:
    """``∂ y_target[i] / ∂ inputs[i]`` for every row ``i`` of ``inputs (n, ...)``, computed
    ``batch_size`` rows at a time (rows are independent: the model is in eval mode)."""
    grads = []
    for start in range(0, inputs.shape[0], batch_size):
        x = inputs[start : start + batch_size].detach().requires_grad_(True)
        with torch.enable_grad():
            score = model(x).gather(1, target[start : start + batch_size, None]).sum()
            (grad,) = torch.autograd.grad(score, x)
        grads.append(grad)
    return torch.cat(grads)


class InputAttribution(CAM):
    """Base of the input-gradient methods: a subclass implements :meth:`attribute`."""

    def __init__(
        self, model: nn.Module, layer: str | None = None, *, internal_batch_size: int = 32
    ) -> None:
        if internal_batch_size < 1:
            raise ValueError(f"internal_batch_size must be at least 1, got {internal_batch_size}")
        self.model = as_explainable(model)
        if self.model.input != "features":
            raise ValueError(
                f"input-gradient methods attribute the model's features, and {self.model.name} "
                "takes the waveform: use gradcam, hirescam or another layer method"
            )
        self.layer_name = "input"
        self.layer = None
        self.front_end = self.model.front_end
        self.geometry = feature_geometry(self.front_end.n_mels)
        self.internal_batch_size = internal_batch_size

    def attribute(self, features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-channel attribution ``(batch, channels, n_mels, frames)``."""
        raise NotImplementedError

    def gradients(self, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return target_gradients(self.model, inputs, target, self.internal_batch_size)

    def __call__(self, features: torch.Tensor, target=None) -> CAMResult:
        if self.model.training:
            raise ValueError("put the model in eval mode (model.eval()) before explaining it")
        features = features.detach()
        with frozen_parameters(self.model):
            with torch.no_grad():
                logits = self.model(features)
            target = select_target(logits, target)
            attribution = self.attribute(features, target)
        attribution = self.front_end.to_canonical(attribution.detach())
        heatmap = attribution.abs().sum(dim=1).float()
        return CAMResult(
            heatmap=heatmap, logits=logits.float(), target=target, geometry=self.geometry
        )

    def floor(self, features: torch.Tensor) -> torch.Tensor:
        """:func:`~listenable.cams.base.feature_floor` of features in the model's layout."""
        fe = self.front_end
        return fe.to_layout(feature_floor(fe.to_canonical(features)))


class Saliency(InputAttribution):
    """Simonyan et al. 2014: ``|∂y_c/∂x|`` (the gradient's magnitude at the clip)."""

    def attribute(self, features, target):
        return self.gradients(features, target)


class IntegratedGradients(InputAttribution):
    """Sundararajan et al. 2017: ``(x − x_b) ⊙ ∫₀¹ ∂y_c/∂x (x_b + α (x − x_b)) dα``.

    The baseline ``x_b`` is silence-like: each clip's per-channel minimum
    (:func:`~listenable.cams.base.feature_floor`), the same floor Score-CAM masks toward.
    The integral is a Gauss-Legendre rule of ``n_steps`` nodes (Captum's default rule), the
    ``n_steps`` path points of a clip running ``internal_batch_size`` rows at a time.
    """

    def __init__(
        self,
        model: nn.Module,
        layer: str | None = None,
        *,
        n_steps: int = 16,
        internal_batch_size: int = 32,
    ) -> None:
        super().__init__(model, layer, internal_batch_size=internal_batch_size)
        if n_steps < 1:
            raise ValueError(f"n_steps must be at least 1, got {n_steps}")
        nodes, weights = np.polynomial.legendre.leggauss(n_steps)
        self.alphas = torch.from_numpy(0.5 * (nodes + 1.0))
        self.step_weights = torch.from_numpy(0.5 * weights)

    def attribute(self, features, target):
        baseline = self.floor(features)
        diff = features - baseline
        alphas = self.alphas.to(features.device, features.dtype)
        step_weights = self.step_weights.to(features.device, features.dtype)
        out = []
        for b in range(features.shape[0]):
            shape = (-1,) + (1,) * (features.ndim - 1)
            path = baseline[b] + alphas.view(shape) * diff[b]  # (n_steps, *feature shape)
            grads = self.gradients(path, target[b].expand(len(alphas)))
            out.append(torch.einsum("s,s...->...", step_weights, grads) * diff[b])
        return torch.stack(out)


class SmoothGrad(InputAttribution):
    """Smilkov et al. 2017: the mean of ``|∂y_c/∂x|`` over ``n_samples`` noisy copies
    ``x + ε``, ``ε ~ N(0, σ²)``, ``σ = noise_level × (max − min)`` of each clip's channel
    (Captum's ``NoiseTunnel`` over ``Saliency``).

    The noise comes from a ``torch.Generator`` seeded with ``seed`` at every call and is the
    same standard-normal draw for every clip, scaled by the clip's ranges: a batch gives the
    same maps as its clips one by one.
    """

    def __init__(
        self,
        model: nn.Module,
        layer: str | None = None,
        *,
        n_samples: int = 8,
        noise_level: float = 0.1,
        seed: int = 0,
        internal_batch_size: int = 32,
    ) -> None:
        super().__init__(model, layer, internal_batch_size=internal_batch_size)
        if n_samples < 1:
            raise ValueError(f"n_samples must be at least 1, got {n_samples}")
        if noise_level < 0:
            raise ValueError(f"noise_level must be non-negative, got {noise_level}")
        self.n_samples = n_samples
        self.noise_level = noise_level
        self.seed = seed

    def attribute(self, features, target):
        generator = torch.Generator().manual_seed(self.seed)
        noise = torch.randn(self.n_samples, *features.shape[1:], generator=generator)
        noise = noise.to(features.device, features.dtype)
        fe = self.front_end
        top = fe.to_layout(fe.to_canonical(features).amax(dim=(2, 3), keepdim=True))
        sigma = self.noise_level * (top - self.floor(features))
        out = []
        for b in range(features.shape[0]):
            noisy = features[b] + sigma[b] * noise  # (n_samples, C, F, T)
            grads = self.gradients(noisy, target[b].expand(self.n_samples))
            out.append(grads.abs().mean(dim=0))
        return torch.stack(out)
