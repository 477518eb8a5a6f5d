"""Localisation against planted events: how much of the event the listenable output keeps,
how much of what it keeps is the event, and how far the mask smears in time.

Synthetic scenes (:mod:`listenable.data.scenes`) know their signature events: the isolated
event audio of a clip is rendered again (:func:`event_spectrum`). Everything is computed on
the STFT grid of the model's front end, both channels summed. ``M`` is the mask
``(batch, bins, frames)`` in [0, 1] (shared by the channels), ``E`` the complex STFT of the
signature events' audio and ``X`` that of the mixture, ``(batch, channels, bins, frames)``;
``X − E`` is everything else (background and distractor events).

* ``event_recall = Σ|M·E|² / Σ|E|²`` — the share of the events' energy the listenable
  output keeps (↑). A mask drawn at random with area ``a`` keeps about ``a``.
* ``event_precision = min(1, Σ|M·E|² / Σ|M·X|²)`` — the share of the listenable output's
  energy that belongs to the events (↑). Clipped at 1 because ``|M·X|²`` has cross terms
  between ``E`` and ``X − E`` that can cancel.
* ``tf_iou`` — intersection over union of the binarised mask ``M ≥ 0.5`` and the ideal
  binary mask ``IBM = Σ_ch|E|² > Σ_ch|X − E|²`` (the events louder than everything else) (↑).
* ``time_smear`` — the time extent of the mask over that of the events:
  ``#{frames t : mean_f [M ≥ 0.5](f, t) > τ} / #{event frames}``, ``τ = 0.01`` (a frame of
  the mask counts when more than 1 % of its frequency bins are kept). The event frames are
  the annotated ones when known (:func:`annotated_frames`: STFT frames whose centre lies
  between a signature event's ``onset_s`` and ``offset_s``; what :func:`evaluate` uses),
  else the frames of the ideal binary mask with the same rule. 1.0 = the mask is active
  exactly as long as the events; > 1 = it smears beyond them (the paper's complaint: a CAM
  at 1/16 time resolution) or keeps sound elsewhere; < 1 = it misses part of them. With a
  fixed-area mask (the 75th percentile keeps 25 % of the bins) a ratio above 1 is forced
  whenever the events fill less than that area's share of the frames.

An ideal mask (1 where the event is, 0 elsewhere, when events and background do not overlap
in the TF plane) gives recall = precision = IoU = time_smear = 1. Clips whose events have no
energy (or no IBM frame) give NaN, left out of the means.

Shapes:
    mask                (batch, freq_bins, frames)
    event, mixture      (batch, channels, freq_bins, frames)   complex
"""

from __future__ import annotations

import os

import numpy as np
import torch

__all__ = [
    "event_recall",
    "event_precision",
    "tf_iou",
    "time_smear",
    "ideal_binary_mask",
    "active_frames",
    "annotated_frames",
    "scene_truth",
    "FRAME_SHARE",
]

#: A frame is active when more than this share of its frequency bins is on.
FRAME_SHARE = 0.01


def _reduce(values: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "none":
        return values
    if reduction == "mean":
        return values.nanmean()
    raise ValueError(f"reduction must be 'none' or 'mean', got {reduction!r}")


def _power(spectrum: torch.Tensor) -> torch.Tensor:
    """``(batch, channels, bins, frames)`` complex → channel-summed power ``(batch, bins, frames)``."""
    return (spectrum.real.double().square() + spectrum.imag.double().square()).sum(dim=1)


def _check(mask: torch.Tensor, *spectra: torch.Tensor) -> None:
    for s in spectra:
        if s.ndim != 4 or s.shape[:1] + s.shape[2:] != mask.shape:
            raise ValueError(
                f"mask {tuple(mask.shape)} and spectrum {tuple(s.shape)} do not share the "
                "(batch, bins, frames) grid"
            )


def _ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    return torch.where(den > 0, num / den.clamp_min(1e-300), torch.full_like(num, float("nan")))


def event_recall(
    mask: torch.Tensor, event: torch.Tensor, *, reduction: str = "mean"
) -> torch.Tensor:
    """``Σ|M·E|² / Σ|E|²`` per clip: the share of the events' energy the mask keeps."""
    _check(mask, event)
    m2 = mask.double().square()
    e2 = _power(event)
    return _reduce(_ratio((m2 * e2).sum(dim=(1, 2)), e2.sum(dim=(1, 2))), reduction)


def event_precision(
    mask: torch.Tensor, event: torch.Tensor, mixture: torch.Tensor, *, reduction: str = "mean"
) -> torch.Tensor:
    """``min(1, Σ|M·E|² / Σ|M·X|²)`` per clip: the share of the kept energy that is the events."""
    _check(mask, event, mixture)
    m2 = mask.double().square()
    kept_event = (m2 * _power(event)).sum(dim=(1, 2))
    kept = (m2 * _power(mixture)).sum(dim=(1, 2))
    return _reduce(_ratio(kept_event, kept).clamp(max=1.0), reduction)


def ideal_binary_mask(event: torch.Tensor, mixture: torch.Tensor) -> torch.Tensor:
    """``Σ_ch|E|² > Σ_ch|X − E|²``: ``(batch, bins, frames)`` bool."""
    return _power(event) > _power(mixture - event)


def tf_iou(
    mask: torch.Tensor,
    event: torch.Tensor,
    mixture: torch.Tensor,
    *,
    threshold: float = 0.5,
    reduction: str = "mean",
) -> torch.Tensor:
    """IoU of ``M ≥ threshold`` and the ideal binary mask, per clip."""
    _check(mask, event, mixture)
    kept = mask >= threshold
    ideal = ideal_binary_mask(event, mixture)
    inter = (kept & ideal).sum(dim=(1, 2)).double()
    union = (kept | ideal).sum(dim=(1, 2)).double()
    return _reduce(_ratio(inter, union), reduction)


def active_frames(binary: torch.Tensor, share: float = FRAME_SHARE) -> torch.Tensor:
    """``(batch, bins, frames)`` bool → ``(batch, frames)``: more than ``share`` of the bins on."""
    return binary.double().mean(dim=1) > share


def time_smear(
    mask: torch.Tensor,
    event: torch.Tensor,
    mixture: torch.Tensor,
    *,
    event_frames: torch.Tensor | None = None,
    threshold: float = 0.5,
    share: float = FRAME_SHARE,
    reduction: str = "mean",
) -> torch.Tensor:
    """Active frames of ``M ≥ threshold`` over the event frames: ``event_frames``
    ``(batch, frames)`` bool when given (:func:`annotated_frames`), else the active frames
    of the ideal binary mask."""
    _check(mask, event, mixture)
    kept = active_frames(mask >= threshold, share).sum(dim=1).double()
    if event_frames is None:
        event_frames = active_frames(ideal_binary_mask(event, mixture), share)
    if event_frames.shape != mask.shape[:1] + mask.shape[2:]:
        raise ValueError(
            f"event_frames {tuple(event_frames.shape)} do not match the mask's (batch, frames) "
            f"{tuple(mask.shape[:1] + mask.shape[2:])}"
        )
    ideal = event_frames.to(mask.device).sum(dim=1).double()
    return _reduce(_ratio(kept, ideal), reduction)


def annotated_frames(
    events, frames: int, hop_length: int, sample_rate: int, *, role: str = "signature"
) -> torch.Tensor:
    """``(frames,)`` bool: STFT frames (centred, frame ``t`` at ``t · hop / sr`` seconds)
    that lie within ``[onset_s, offset_s]`` of an event of ``role``
    (:class:`~listenable.data.scenes.Event`)."""
    times = torch.arange(frames, dtype=torch.float64) * hop_length / sample_rate
    out = torch.zeros(frames, dtype=torch.bool)
    for e in events:
        if e.role == role:
            out |= (times >= e.onset_s) & (times <= e.offset_s)
    return out


def scene_truth(
    root: str | os.PathLike,
    filename: str,
    features,
    *,
    length: int | None = None,
    channels: int = 2,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ground truth of clip ``filename`` (``audio/...wav``) of the synthetic data set in
    ``root``, rendered again: the complex STFT ``(1, 2, bins, frames)`` of its signature
    events' audio (with ``features``, the listening :class:`~listenable.frontends.STFT`, on
    its device) and their annotated frames
    ``(1, frames)`` bool. The events are resampled and mixed down as the clip was for the
    model (its rate, ``channels``).

    Raises :class:`~listenable.errors.DatasetError` when the clip is not in the data set, or
    its sample rate / length (``length`` samples, when given) differ from the audio the
    model saw.
    """
    from listenable.data.scenes import render_scene_file
    from listenable.errors import DatasetError

    clip = render_scene_file(root, filename)
    audio = np.asarray(clip.event_audio, dtype=np.float32)
    if channels == 1 and audio.shape[0] == 2:
        audio = audio.mean(axis=0, keepdims=True)
    if clip.sample_rate != features.sample_rate:
        import soxr

        audio = soxr.resample(audio.T, clip.sample_rate, features.sample_rate, quality="HQ").T
    audio = np.ascontiguousarray(audio, dtype=np.float32)
    if length is not None and audio.shape[-1] != length:
        raise DatasetError(
            f"{filename}: rendered events have {audio.shape[-1]} samples, the clip {length}"
        )
    wave = torch.from_numpy(audio)[None].to(features.window.device)
    spectrum = features(wave)
    frames = annotated_frames(
        clip.events, spectrum.shape[-1], features.hop_length, features.sample_rate
    )
    return spectrum, frames[None].to(spectrum.device)
