"""Score-CAM (Wang et al. 2020): weight each channel by how much its own map, used as a mask
on the input, raises the target class's score. No gradients.

Each channel's activation map is put onto the feature grid through the layer's derived
geometry (:func:`listenable.projection.to_grid`): rows outside the ones the layer sees get
mask 0, its cells are centred on their feature frames with linear interpolation in
between. Normalised to [0, 1], it masks the features by interpolating toward each clip's
per-channel minimum (:func:`~listenable.cams.base.feature_floor`):
``x_k = floor + m_k (x − floor)``.

Shapes (features canonical, whatever the model's layout):
    features     (batch, channels, n_mels, frames)
    activations  (batch, K, layer_rows, cam_frames)
    masks        (rows, 1, n_mels, frames)        a chunk of (clip, channel) pairs
"""

from __future__ import annotations

import torch
from torch import nn

from listenable.cams.base import CAM, feature_floor
from listenable.cams.gradcam import weighted_sum
from listenable.geometry import LayerGeometry
from listenable.projection import to_grid

__all__ = ["ScoreCAM", "channel_masks"]

WEIGHTINGS = ("increase", "softmax")


def channel_masks(
    activations: torch.Tensor,
    geometry: LayerGeometry,
    n_mels: int,
    frames: int,
    eps: float = 1e-12,
) -> torch.Tensor:
    """``(n, layer_rows, cells)`` maps → ``(n, n_mels, frames)`` masks in [0, 1].

    Placed on the feature grid through ``geometry`` (rows the layer does not see get 0),
    min-max normalised over the rows the layer sees (a flat map gives an all-zero mask).
    """
    centres = torch.arange(frames, dtype=torch.float64)
    up = to_grid(activations, geometry, n_mels, centres)
    start, stop = geometry.rows
    inside = up[:, start:stop].flatten(1)
    low = inside.amin(dim=1)[:, None, None]
    span = (inside.amax(dim=1) - inside.amin(dim=1))[:, None, None]
    normed = torch.where(span > eps, (up - low) / span.clamp_min(eps), 0.0)
    normed[:, :start] = 0.0
    normed[:, stop:] = 0.0
    return normed


class ScoreCAM(CAM):
    """Score-CAM on a named layer: map = ``ReLU(Σ_k w_k A_k)``.

    ``weighting="increase"`` (default, the paper's eq. (4)): ``w_k = p_c(x_k) − p_c(x_b)``,
    the rise of the target's softmax probability when only channel ``k``'s region is kept,
    over the fully masked input ``x_b = floor``. ``weighting="softmax"``: ``w_k =
    softmax_k(y_c(x_k))`` over the channels of the target logit (pytorch-grad-cam's choice;
    a softmax of the logit increase is the same thing).

    The masked inputs run in batches of ``batch_size`` (clip, channel) pairs: 192 channels
    = 6 forwards of 32 per clip, plus one forward for the baseline.
    """

    uses_gradients = False

    def __init__(
        self,
        model: nn.Module,
        layer: str | None = None,
        *,
        batch_size: int = 32,
        weighting: str = "increase",
    ) -> None:
        super().__init__(model, layer)
        if self.model.input != "features":
            raise ValueError(
                f"Score-CAM masks the model's features, and {self.model.name} takes the "
                "waveform: use gradcam, hirescam or another gradient method"
            )
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
        self.batch_size = batch_size
        self.weighting = weighting

    def _score(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.weighting == "increase":
            logits = self.model.probabilities(logits)
        return logits.gather(1, target[:, None])[:, 0].float()

    def cam_image(self, activations, gradients, features, target) -> torch.Tensor:
        fe = self.model.front_end
        features = fe.to_canonical(features)
        batch, channels = activations.shape[:2]
        n_mels, frames = features.shape[-2:]
        floor = feature_floor(features)
        span = features - floor
        scores = []
        for start in range(0, batch * channels, self.batch_size):
            rows = torch.arange(start, min(start + self.batch_size, batch * channels))
            clip = (rows // channels).to(features.device)
            channel = (rows % channels).to(features.device)
            masks = channel_masks(activations[clip, channel], self.geometry, n_mels, frames)
            masked = floor[clip] + masks[:, None].to(features.dtype) * span[clip]
            scores.append(self._score(self.model(fe.to_layout(masked)), target[clip]))
        scores = torch.cat(scores).view(batch, channels)
        if self.weighting == "increase":
            base = self._score(self.model(fe.to_layout(floor.expand_as(features))), target)
            weights = scores - base[:, None]
        else:
            weights = torch.softmax(scores, dim=1)
        return weighted_sum(weights.to(activations.dtype), activations)
