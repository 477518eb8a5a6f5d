"""Mel filterbanks as torch functions (float64), equal to their reference implementations.

* ``mel_scale="htk"``: ``2595 log10(1 + f / 700)`` (librosa ``htk=True``);
* ``mel_scale="slaney"``: linear below 1 kHz, logarithmic above (librosa's default,
  ``htk=False``; PANNs' ``LogmelFilterBank`` calls librosa with it);
* ``norm=None`` keeps the unit-peak triangles, ``norm="slaney"`` divides each by its width
  in hertz (area normalisation, librosa ``norm="slaney"``).

The Kaldi banks (AST, BEATs) live in :mod:`listenable.frontends.kaldi`.

Shapes:
    filterbank  (n_mels, n_fft // 2 + 1)       rows = mel bands, low to high
"""

from __future__ import annotations

import math

import torch

__all__ = ["MEL_SCALES", "hz_to_mel", "mel_to_hz", "mel_filterbank", "bin_frequencies"]

MEL_SCALES = ("htk", "slaney")

_F_SP = 200.0 / 3  # slaney: hertz per mel below the break
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = math.log(6.4) / 27.0


def hz_to_mel(hz, mel_scale: str = "htk") -> torch.Tensor:
    """Hertz → mel on the given scale (float64)."""
    f = torch.as_tensor(hz, dtype=torch.float64)
    if mel_scale == "htk":
        return 2595.0 * torch.log10(1.0 + f / 700.0)
    if mel_scale == "slaney":
        linear = f / _F_SP
        log = _MIN_LOG_MEL + torch.log(torch.clamp(f, min=_MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOGSTEP
        return torch.where(f >= _MIN_LOG_HZ, log, linear)
    raise ValueError(f"unknown mel_scale {mel_scale!r}; choose from {MEL_SCALES}")


def mel_to_hz(mel, mel_scale: str = "htk") -> torch.Tensor:
    """Inverse of :func:`hz_to_mel`."""
    m = torch.as_tensor(mel, dtype=torch.float64)
    if mel_scale == "htk":
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)
    if mel_scale == "slaney":
        linear = _F_SP * m
        log = _MIN_LOG_HZ * torch.exp(_LOGSTEP * (m - _MIN_LOG_MEL))
        return torch.where(m >= _MIN_LOG_MEL, log, linear)
    raise ValueError(f"unknown mel_scale {mel_scale!r}; choose from {MEL_SCALES}")


def bin_frequencies(sample_rate: float, n_fft: int) -> torch.Tensor:
    """Centre frequency in hertz of each of the ``n_fft // 2 + 1`` bins (float64)."""
    return torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)


def mel_centres(n_mels: int, f_min: float, f_max: float, mel_scale: str = "htk") -> torch.Tensor:
    """The ``n_mels + 2`` corner frequencies (hertz) of the triangles: band ``m`` rises from
    ``[m]``, peaks at ``[m + 1]`` and falls to zero at ``[m + 2]``."""
    lo, hi = hz_to_mel(f_min, mel_scale), hz_to_mel(f_max, mel_scale)
    return mel_to_hz(
        torch.linspace(float(lo), float(hi), n_mels + 2, dtype=torch.float64), mel_scale
    )


def mel_filterbank(
    sample_rate: float,
    n_fft: int,
    n_mels: int,
    f_min: float = 0.0,
    f_max: float | None = None,
    *,
    mel_scale: str = "htk",
    norm: str | None = None,
) -> torch.Tensor:
    """Triangular mel filterbank ``(n_mels, n_fft // 2 + 1)``, float64.

    Equal to ``librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=f_min,
    fmax=f_max, htk=mel_scale == "htk", norm=norm)``.
    """
    if norm not in (None, "slaney"):
        raise ValueError(f"unknown filterbank norm {norm!r}; choose None or 'slaney'")
    f_max = sample_rate / 2 if f_max is None else f_max
    fft_freqs = bin_frequencies(sample_rate, n_fft)
    hz_points = mel_centres(n_mels, f_min, f_max, mel_scale)
    widths = torch.diff(hz_points)  # (n_mels + 1,)
    ramps = hz_points[:, None] - fft_freqs[None, :]  # (n_mels + 2, bins)
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    fb = torch.clamp(torch.minimum(lower, upper), min=0.0)
    if norm == "slaney":
        fb = fb * (2.0 / (hz_points[2:] - hz_points[:-2]))[:, None]
    return fb
