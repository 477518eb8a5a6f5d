"""Localisation scores of recent audio-explanation benchmarks, against annotated event boxes.

An event box is what ``events.csv`` says of a planted event: ``(onset_s, offset_s, low_hz,
high_hz)``; only the *signature* events (those of the clip's class) count, and only for
clips whose explained class is their label (:func:`event_boxes`). The map scored is the
attribution on the listening STFT grid ``(batch, bins, frames)`` (the heatmap mapped
through seconds and hertz, min-max normalised); bin ``k`` lies at ``k · sr / n_fft`` Hz,
frame ``t`` at sample ``t · hop`` (centred frames).

* **Pointing game** (Zhang et al. 2018; Dumpis and Virtanen 2026 for audio): a hit when the
  map's maximum lies inside an event box (bounds included). Where several bins share the
  maximum (a flat map, or a mel band spread over many linear bins), each counts equally:
  the score is the share of the maximal bins that lie inside a box (1 or 0 for a unique
  maximum). A map that points nowhere in particular therefore scores the boxes' share of
  the TF plane, the chance level. (↑, in [0, 1])
* **Segment ROC-AUC** (Bolaños et al., Interspeech 2025): the map's time profile (its mean
  over the frequency bins, per frame) is averaged over the frames whose centre falls in each
  ``segment_s`` (100 ms) segment of the clip; a segment is labelled 1 when signature events
  cover at least ``min_overlap`` (half) of it. The score is the area under the ROC curve of
  the segment scores against the labels: the probability that a random event segment
  scores above a random background one, ties counting half (the Mann–Whitney ``U / (n₁ n₀)``,
  computed from average ranks: :func:`roc_auc`). Clips whose segments are all events or all
  background are skipped (NaN). 0.5 = chance. (↑, in [0, 1])

Segment arithmetic is in integer samples (a segment is ``round(segment_s · sr)`` samples),
so a frame centre on a segment boundary is never split by float rounding.

Shapes:
    attribution   (batch, freq_bins, frames)
    boxes         per clip: a list of (onset_s, offset_s, low_hz, high_hz), or None
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = [
    "Box",
    "event_boxes",
    "box_mask",
    "pointing_game",
    "segment_scores",
    "segment_labels",
    "roc_auc",
    "segment_auc",
    "SEGMENT_S",
    "MIN_OVERLAP",
]

#: Segment length of the ROC-AUC, seconds (Bolaños et al. 2025).
SEGMENT_S = 0.1
#: Share of a segment the events must cover for it to count as an event segment.
MIN_OVERLAP = 0.5

Box = tuple[float, float, float, float]  # (onset_s, offset_s, low_hz, high_hz)


def event_boxes(events, role: str = "signature") -> list[Box]:
    """The ``(onset_s, offset_s, low_hz, high_hz)`` of the ``events``
    (:class:`~listenable.data.scenes.Event`) of ``role``."""
    return [(e.onset_s, e.offset_s, e.low_hz, e.high_hz) for e in events if e.role == role]


def box_mask(boxes: Sequence[Box], frequencies: torch.Tensor, times: torch.Tensor) -> torch.Tensor:
    """``(bins, frames)`` bool: the TF bins inside any box (bounds included);
    ``frequencies (bins,)`` in Hz, ``times (frames,)`` in seconds."""
    frequencies = frequencies.double()
    times = times.double()
    inside = torch.zeros(len(frequencies), len(times), dtype=torch.bool, device=times.device)
    for onset, offset, low, high in boxes:
        f = (frequencies >= low) & (frequencies <= high)
        t = (times >= onset) & (times <= offset)
        inside |= f[:, None] & t[None, :]
    return inside


def pointing_game(
    attribution: torch.Tensor,
    boxes: Sequence[Sequence[Box] | None],
    *,
    frequencies: torch.Tensor,
    times: torch.Tensor,
) -> torch.Tensor:
    """Per clip ``(batch,)`` float64: the share of the map's maximal bins that lie inside
    one of the clip's boxes; NaN for a clip without boxes (``None`` or empty).

    Args:
        attribution: ``(batch, bins, frames)``.
        boxes: per clip, its signature event boxes.
        frequencies: ``(bins,)`` Hz of the bins; times: ``(frames,)`` seconds of the frames.
    """
    if attribution.ndim != 3 or len(boxes) != attribution.shape[0]:
        raise ValueError(
            f"expected (batch, bins, frames) and one box list per clip, got "
            f"{tuple(attribution.shape)} and {len(boxes)} lists"
        )
    out = torch.full((attribution.shape[0],), math.nan, dtype=torch.float64)
    for j, clip_boxes in enumerate(boxes):
        if not clip_boxes:
            continue
        a = attribution[j].detach()
        peak = a == a.amax()
        inside = box_mask(clip_boxes, frequencies.to(a.device), times.to(a.device))
        out[j] = float((peak & inside).sum()) / float(peak.sum())
    return out


def _segment_samples(segment_s: float, sample_rate: int) -> int:
    samples = round(segment_s * sample_rate)
    if samples < 1:
        raise ValueError(f"segment_s={segment_s} is shorter than one sample at {sample_rate} Hz")
    return samples


def segment_scores(
    attribution: torch.Tensor,
    frame_samples: torch.Tensor,
    *,
    length: int,
    sample_rate: int,
    segment_s: float = SEGMENT_S,
) -> torch.Tensor:
    """The map's time profile averaged per segment: ``(batch, segments)`` float64,
    ``segments = ceil(length / segment samples)``; a segment that no frame centre falls in
    is NaN.

    Args:
        attribution: ``(batch, bins, frames)``.
        frame_samples: ``(frames,)`` integer sample of each frame's centre.
        length: samples of the clip.
    """
    seg = _segment_samples(segment_s, sample_rate)
    n_segments = -(-int(length) // seg)
    profile = attribution.detach().double().mean(dim=1)  # (batch, frames)
    index = (frame_samples.to(torch.int64) // seg).clamp(0, n_segments - 1).to(profile.device)
    sums = torch.zeros(profile.shape[0], n_segments, dtype=torch.float64, device=profile.device)
    sums.index_add_(1, index, profile)
    counts = torch.zeros(n_segments, dtype=torch.float64, device=profile.device)
    counts.index_add_(0, index, torch.ones_like(index, dtype=torch.float64))
    return torch.where(counts > 0, sums / counts.clamp_min(1), math.nan)


def segment_labels(
    boxes: Sequence[Box],
    *,
    length: int,
    sample_rate: int,
    segment_s: float = SEGMENT_S,
    min_overlap: float = MIN_OVERLAP,
) -> torch.Tensor:
    """``(segments,)`` bool: segments that the boxes' time spans (merged) cover for at least
    ``min_overlap`` of their length (the last, shorter segment: of its own length)."""
    seg = _segment_samples(segment_s, sample_rate)
    n_segments = -(-int(length) // seg)
    starts = torch.arange(n_segments, dtype=torch.float64) * seg
    ends = torch.clamp(starts + seg, max=float(length))
    covered = torch.zeros(n_segments, dtype=torch.float64)
    for onset, offset in _merge([(b[0] * sample_rate, b[1] * sample_rate) for b in boxes]):
        covered += (torch.clamp(ends, max=offset) - torch.clamp(starts, min=onset)).clamp_min(0)
    return covered >= min_overlap * (ends - starts)


def _merge(spans: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Union of intervals, as disjoint intervals (overlapping events count once)."""
    merged: list[list[float]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(a, b) for a, b in merged]


def roc_auc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Area under the ROC curve of ``scores (n,)`` against ``labels (n,)`` bool, from
    average ranks: ``(R₁ − n₁ (n₁ + 1) / 2) / (n₁ n₀)`` with ``R₁`` the rank sum of the
    positives (ties share their average rank, so a tied pair counts half). NaN when all
    labels are equal; NaN scores are left out."""
    scores = scores.detach().double().flatten()
    labels = labels.flatten().bool().to(scores.device)
    keep = ~torch.isnan(scores)
    scores, labels = scores[keep], labels[keep]
    n1 = int(labels.sum())
    n0 = int(labels.numel()) - n1
    if n1 == 0 or n0 == 0:
        return math.nan
    ordered = scores.sort().values
    below = torch.searchsorted(ordered, scores, right=False)
    up_to = torch.searchsorted(ordered, scores, right=True)
    ranks = (below + up_to + 1).double() / 2  # 1-based average ranks
    r1 = float(ranks[labels].sum())
    return (r1 - n1 * (n1 + 1) / 2) / (n1 * n0)


def segment_auc(
    attribution: torch.Tensor,
    boxes: Sequence[Sequence[Box] | None],
    frame_samples: torch.Tensor,
    *,
    length: int,
    sample_rate: int,
    segment_s: float = SEGMENT_S,
    min_overlap: float = MIN_OVERLAP,
) -> torch.Tensor:
    """Per clip ``(batch,)`` float64: :func:`roc_auc` of :func:`segment_scores` against
    :func:`segment_labels`; NaN for clips without boxes or with one label only."""
    if attribution.ndim != 3 or len(boxes) != attribution.shape[0]:
        raise ValueError(
            f"expected (batch, bins, frames) and one box list per clip, got "
            f"{tuple(attribution.shape)} and {len(boxes)} lists"
        )
    scores = segment_scores(
        attribution, frame_samples, length=length, sample_rate=sample_rate, segment_s=segment_s
    )
    out = torch.full((attribution.shape[0],), math.nan, dtype=torch.float64)
    for j, clip_boxes in enumerate(boxes):
        if not clip_boxes:
            continue
        labels = segment_labels(
            clip_boxes,
            length=length,
            sample_rate=sample_rate,
            segment_s=segment_s,
            min_overlap=min_overlap,
        )
        out[j] = roc_auc(scores[j], labels)
    return out
