"""From a heatmap on the STFT grid to a mask, and from the mask to listenable audio.

Modes (``M`` = the heatmap normalised to [0, 1] per clip, ``θ`` = its ``percentile``-th
percentile):

* ``sigmoid`` — the paper's eq. (3): ``1 / (1 + exp(−10^δ (M − θ)))``. The default
  ``δ = 2`` (slope 100) makes the mask nearly binary — a bin 0.05 above θ passes at 99 %,
  one 0.05 below at 1 % — while keeping it smooth, so the inverted audio has no hard
  spectral edges (δ = 1 leaks a lot: at M = 0, θ = 0.3 it still passes 5 %).
* ``hard`` — ``M ≥ θ``.
* ``soft`` — ``M`` itself, no threshold.

Shapes:
    heatmap, mask   (batch, freq_bins, frames)
    spectrum        (batch, channels, freq_bins, frames)
"""

from __future__ import annotations

import torch

__all__ = ["MODES", "DEFAULT_DELTA", "normalise", "binarise", "apply_mask"]

MODES = ("sigmoid", "hard", "soft")
DEFAULT_DELTA = 2.0
DEFAULT_PERCENTILE = 75.0


def normalise(heatmap: torch.Tensor, eps: float = 1e-12) -> tuple[torch.Tensor, torch.Tensor]:
    """Min-max normalise each clip to [0, 1]. Returns ``(normalised, empty)`` where ``empty``
    ``(batch,)`` flags clips whose heatmap is flat (nothing to listen to); those get zeros."""
    flat = heatmap.flatten(1)
    low = flat.amin(dim=1)
    high = flat.amax(dim=1)
    span = high - low
    empty = ~(span > eps * torch.clamp(high.abs(), min=1.0))
    scale = torch.where(empty, torch.ones_like(span), span)
    out = (heatmap - low[:, None, None]) / scale[:, None, None]
    out = torch.where(empty[:, None, None], torch.zeros_like(out), out)
    return out.clamp_(0.0, 1.0), empty


def percentile(x: torch.Tensor, q: float) -> torch.Tensor:
    """Per-clip ``q``-th percentile ``(batch,)`` of ``(batch, ...)``, linear interpolation
    between order statistics (numpy's default)."""
    flat = x.flatten(1)
    n = flat.shape[1]
    pos = (n - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, n - 1)
    frac = pos - lo
    lo_val = flat.kthvalue(lo + 1, dim=1).values
    if frac == 0.0 or hi == lo:
        return lo_val
    hi_val = flat.kthvalue(hi + 1, dim=1).values
    return lo_val + frac * (hi_val - lo_val)


def binarise(
    normalised: torch.Tensor,
    *,
    mode: str = "sigmoid",
    percentile_: float = DEFAULT_PERCENTILE,
    delta: float = DEFAULT_DELTA,
    empty: torch.Tensor | None = None,
) -> torch.Tensor:
    """Normalised heatmap ``(batch, bins, frames)`` in [0, 1] → mask in [0, 1]."""
    if mode not in MODES:
        raise ValueError(f"unknown mask mode {mode!r}; choose from {MODES}")
    if not 0.0 <= percentile_ <= 100.0:
        raise ValueError(f"percentile must be in [0, 100], got {percentile_}")
    if mode == "soft":
        mask = normalised
    else:
        theta = percentile(normalised, percentile_)[:, None, None]
        if mode == "hard":
            mask = (normalised >= theta).to(normalised.dtype)
        else:
            mask = torch.sigmoid((10.0**delta) * (normalised - theta))
    if empty is not None:
        mask = torch.where(empty[:, None, None], torch.zeros_like(mask), mask)
    return mask


def apply_mask(spectrum: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Multiply every channel's complex STFT by the mask (phase kept)."""
    return spectrum * mask[:, None].to(spectrum.real.dtype)
