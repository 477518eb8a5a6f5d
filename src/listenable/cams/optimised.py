"""A sharp mask that keeps the model's decision: the multi-scale map, edited by gradient
steps on the mask itself until the listenable output is classified as the clip was.

The multi-scale map (:class:`~listenable.cams.multiscale.MultiScaleCAM`) cuts Grad-CAM's
time smear and the leakage beside the events, but its listenable output loses the class
more often than Grad-CAM's: the located evidence alone is not always what the model needs.
This method asks the model. Starting from the multi-scale map (filled by the top map, so
the mask has Grad-CAM's area), it checks what the model says about the masked clip and,
only for the clips whose decision is lost, moves the few bins that matter most:

    z ← clip(z − η · ∇_z L / max|∇_z L|, 0, 1),   L = Σ_clips ReLU(margin − gap)

``gap = y_c(M(z) ⊙ X) − max_{k≠c} y_k(M(z) ⊙ X)`` is the explained class's lead over the
runner-up on the masked clip, ``M(z)`` the very mask the listenable output gets (the map
on the STFT grid through the mel geometry, min-max normalised, the explainer's percentile
and slope; floor bins stay out), differentiated with a gentler slope (straight-through:
the forward pass uses the real mask). The masked clip is the listenable output itself: the
inverse STFT of the masked spectrum, through the front end (``apply_to="audio"``, the
default: what the listener hears and what Fid-In scores). ``apply_to="features"`` takes the
features of the masked power ``M² |X|²`` instead where the front end shares the listening
STFT (:meth:`~listenable.models.Explainable.masked_inputs`): no inverse STFT, but a nearly
binary mask's log features differ from the re-synthesised clip's in the bins it removes
(there the resynthesis leaks energy back), and a decision kept on them can be lost on what
is heard (on the small model's 84 real-recording clips Fid-In 0.85 against 0.95 with
``"audio"``, at the same cost: ``docs/evaluation-results.md``).

A clip stops as soon as its gap reaches ``margin`` (most clips: before the first step, so
their map is the multi-scale one), or after ``steps``. The step is normalised per clip by
its largest gradient, so each step moves mainly the bins the decision is most sensitive
to, by up to ``η``: an edit, not a new map (on a bus scene that multi-scale got wrong,
the edit moved 3.4 % of the map's values by more than 0.1). The mask can change more than
the map: the fill's low values re-rank easily around the percentile.

What it was measured to do: ``docs/measurements.md``.

Shapes:
    inputs     what the module takes
    spectrum   (batch, channels, freq_bins, stft_frames)   complex, the listening STFT
    heatmap    (batch, n_mels, cells)                        the multi-scale grid
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from listenable.cams.base import CAM, CAMResult, frozen_parameters
from listenable.cams.multiscale import MultiScaleCAM
from listenable.masking import (
    DEFAULT_DELTA,
    DEFAULT_PERCENTILE,
    DEFAULT_THRESHOLD_ON,
    MODES,
    THRESHOLD_ON,
    percentile,
)

__all__ = ["OptimisedMask", "APPLY_TO"]

#: What the edit scores the masked clip on: ``"features"``, the front end's features of the
#: masked power (one pass less where the front end shares the listening STFT), or
#: ``"audio"``, the inverse STFT of the masked spectrum (the listenable output itself).
APPLY_TO = ("features", "audio")

log = logging.getLogger(__name__)


class OptimisedMask(CAM):
    """The multi-scale map, minimally edited until the masked clip keeps the decision.

    Args:
        model, layer: as every CAM; ``layer`` is the multi-scale method's top layer.
        projection: the explainer's :class:`~listenable.projection.Projection` (front end
            and listening STFT); :class:`~listenable.explain.Explainer` passes its own.
        percentile, delta, mode, threshold_on: the mask the listenable output gets (the
            explainer passes its own).
        steps: most edit steps per clip (each one forward and one backward pass).
        step_size: ``η``, the largest change of a map value in one step.
        margin: the logit lead over the runner-up a clip must reach to stop.
        fill: the multi-scale method's ``fill`` (0 turns the fill off).
        soft_slope: the sigmoid slope the gradient is taken with.
        apply_to: what the gap is scored on (:data:`APPLY_TO`): the listenable output's
            audio (default) or the features of the masked power.
        multiscale_options: more options of :class:`MultiScaleCAM`.

    Call it with the listening spectrum and the clip length:
    ``OptimisedMask(model)(inputs, target, spectrum=spectrum, length=samples)``; an
    :class:`~listenable.explain.Explainer` does.
    """

    #: The explainer hands this method the spectrum (and its front end, mask settings).
    uses_spectrum = True

    def __init__(
        self,
        model: nn.Module,
        layer: str | None = None,
        *,
        projection=None,
        percentile: float = DEFAULT_PERCENTILE,
        delta: float = DEFAULT_DELTA,
        mode: str = "sigmoid",
        threshold_on: str = DEFAULT_THRESHOLD_ON,
        steps: int = 20,
        step_size: float = 0.3,
        margin: float = 0.5,
        fill: float = 0.05,
        soft_slope: float = 20.0,
        apply_to: str = "audio",
        multiscale_options: dict | None = None,
    ) -> None:
        super().__init__(model, layer)
        if steps < 0 or not step_size > 0 or not soft_slope > 0:
            raise ValueError(
                f"need steps >= 0, step_size > 0, soft_slope > 0; got {steps}, {step_size}, "
                f"{soft_slope}"
            )
        if mode not in MODES:
            raise ValueError(f"unknown mask mode {mode!r}; choose from {MODES}")
        if threshold_on not in THRESHOLD_ON:
            raise ValueError(f"unknown threshold_on {threshold_on!r}; choose from {THRESHOLD_ON}")
        if apply_to not in APPLY_TO:
            raise ValueError(f"unknown apply_to {apply_to!r}; choose from {APPLY_TO}")
        self.threshold_on = threshold_on
        self.apply_to = apply_to
        self.start = MultiScaleCAM(model, layer, fill=fill, **(multiscale_options or {}))
        self.geometry = self.start.geometry
        if projection is None:
            from listenable.projection import Projection

            projection = Projection(self.model.front_end, self.model.listening)
        self.projection = projection
        self.percentile = float(percentile)
        self.slope = min(10.0**delta, 1e30)
        self.mode = mode
        self.steps = int(steps)
        self.step_size = float(step_size)
        self.margin = float(margin)
        self.soft_slope = float(soft_slope)

    def mask(self, z: torch.Tensor, frames: int) -> torch.Tensor:
        """The listenable output's mask ``(batch, bins, frames)`` of the map ``z``, with the
        gradient of a ``soft_slope`` sigmoid (straight-through)."""
        grid = self.projection(z, self.geometry, frames)
        on_cells = self.threshold_on == "heatmap"
        flat = (z if on_cells else grid).detach().flatten(1)
        low = flat.amin(dim=1)[:, None, None]
        span = (flat.amax(dim=1)[:, None, None] - low).clamp_min(1e-12)
        normed = ((grid - low) / span).clamp(0.0, 1.0)
        floor = normed.detach() <= 0
        if self.mode == "soft":
            return normed.masked_fill(floor, 0.0)
        over = ((z.detach() - low) / span) if on_cells else normed.detach()
        theta = percentile(over, self.percentile)[:, None, None]
        if self.mode == "hard":
            real = (normed.detach() >= theta).to(normed.dtype)
        else:
            real = torch.sigmoid(self.slope * (normed.detach() - theta))
        soft = torch.sigmoid(self.soft_slope * (normed - theta))
        return (soft + (real - soft).detach()).masked_fill(floor, 0.0)

    def gap(self, z: torch.Tensor, spectrum: torch.Tensor, length: int, target, like):
        """The explained class's logit lead over the runner-up on the masked clips (``like``:
        features whose memory format the model's input should follow)."""
        mask = self.mask(z, spectrum.shape[-1])
        with torch.autocast(spectrum.device.type, enabled=False):
            feats = self.model.masked_inputs(spectrum, mask, length, audio=self.apply_to == "audio")
        if (
            feats.ndim == 4
            and like.is_contiguous(memory_format=torch.channels_last)
            and not like.is_contiguous()
        ):
            feats = feats.contiguous(memory_format=torch.channels_last)
        logits = self.model(feats).float()
        lead = logits.gather(1, target[:, None])[:, 0]
        runner_up = logits.scatter(1, target[:, None], float("-inf")).amax(dim=1)
        return lead - runner_up

    def __call__(
        self, features: torch.Tensor, target=None, *, spectrum=None, length: int | None = None
    ) -> CAMResult:
        if spectrum is None:
            raise ValueError(
                "the optimised mask needs the listening spectrum of the clip: call it as "
                "method(inputs, target, spectrum=spectrum, length=samples), or through an "
                "Explainer"
            )
        if length is None:
            length = (spectrum.shape[-1] - 1) * self.projection.listening.hop_length
        start = self.start(features, target)
        z = start.heatmap.float()
        z = z / z.flatten(1).amax(dim=1).clamp_min(1e-12)[:, None, None]
        active = z.flatten(1).amax(dim=1) > 0  # an all-zero map has nothing to edit
        taken = torch.zeros(len(z), dtype=torch.long, device=z.device)
        with frozen_parameters(self.model), torch.enable_grad():
            for step in range(self.steps + 1):
                # only the clips still below the margin take the passes: a batch costs the
                # sum of its clips' steps, not its slowest clip's steps times its size
                rows = active.nonzero()[:, 0]
                if len(rows) == 0:
                    break
                zr = z[rows].detach().requires_grad_(True)
                gap = self.gap(zr, spectrum[rows], length, start.target[rows], features)
                below = gap.detach() < self.margin
                active[rows] = below
                if step == self.steps or not bool(below.any()):
                    break
                (grad,) = torch.autograd.grad(torch.relu(self.margin - gap).sum(), zr)
                scale = grad.abs().flatten(1).amax(dim=1).clamp_min(1e-30)[:, None, None]
                move = torch.where(below[:, None, None], grad / scale, 0.0)
                z[rows] = (zr.detach() - self.step_size * move).clamp_(0.0, 1.0)
                taken[rows] += below.long()
        log.debug("optimised mask: edit steps per clip %s", taken.tolist())
        return CAMResult(
            heatmap=z.detach(), logits=start.logits, target=start.target, geometry=self.geometry
        )
