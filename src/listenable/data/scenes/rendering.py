"""Rendering one clip: background, signature events at an SNR over their box, a distractor.

The SNR of an event is measured over its annotated box (see the package docstring);
:func:`_add_event` scales, pans, places and annotates one mono event, for synthetic and
real scenes alike.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from listenable.data.scenes.backgrounds import _background
from listenable.data.scenes.events import _DURATIONS, _GENERATORS, CLASSES, EVENT_TYPES, Event
from listenable.errors import DatasetError

__all__ = [
    "SIGNATURE_SNR_DB",
    "DISTRACTOR_SNR_DB",
    "DISTRACTOR_PROBABILITY",
    "PEAK_LIMIT",
    "SceneClip",
    "render_clip",
]

log = logging.getLogger(__name__)

SIGNATURE_SNR_DB = (3.0, 15.0)
DISTRACTOR_SNR_DB = (-10.0, -2.0)
DISTRACTOR_PROBABILITY = 0.3
PEAK_LIMIT = 0.89
SAMPLE_RATE = 48_000
DURATION = 10.0

_N_FFT = 2048
_HOP = 1024
_BAND_TAIL = 0.025  # energy left out on each side of the annotated band
_AUDIBLE_DB = 30.0  # onset/offset: 10 ms blocks within this many dB of the loudest
_MARGIN_S = 0.1  # events keep this far from the clip's edges


@dataclass
class SceneClip:
    """A rendered clip and its parts, each ``(2, N)`` float32:
    ``mixture == background + event_audio + distractor_audio`` (to float rounding)."""

    mixture: np.ndarray
    background: np.ndarray
    event_audio: np.ndarray
    distractor_audio: np.ndarray
    events: list[Event]
    class_index: int
    sample_rate: int
    spec: tuple[int, int, int]  # (seed, class_index, clip_index)
    classes: tuple[str, ...] = CLASSES  # the data set's classes (real scenes have their own)

    @property
    def label(self) -> str:
        return self.classes[self.class_index]


def render_clip(
    seed: int,
    class_index: int,
    clip_index: int,
    sample_rate: int = SAMPLE_RATE,
    duration: float = DURATION,
) -> SceneClip:
    """Render clip ``clip_index`` of class ``CLASSES[class_index]`` for ``seed``.

    Deterministic: the same arguments give the same samples (on the same numpy build).
    """
    if not 0 <= class_index < len(CLASSES):
        raise DatasetError(f"class_index {class_index} outside 0..{len(CLASSES) - 1}")
    if seed < 0 or clip_index < 0:
        raise DatasetError(f"seed and clip_index must be >= 0, got {seed}, {clip_index}")
    if duration < 1.0 or sample_rate < 16_000:
        raise DatasetError(
            f"need duration >= 1 s and sample_rate >= 16000 Hz, got {duration} s, {sample_rate} Hz"
        )
    sr = sample_rate
    n = int(round(duration * sr))
    bg_seq, ev_seq = np.random.SeedSequence([seed, class_index, clip_index]).spawn(2)
    background = _background(np.random.default_rng(bg_seq), n, sr)
    rng = np.random.default_rng(ev_seq)

    kind = EVENT_TYPES[CLASSES[class_index]]
    event_audio = np.zeros((2, n))
    distractor_audio = np.zeros((2, n))
    events = []
    for onset, length in _plan_events(rng, _DURATIONS[kind], n, sr):
        snr = rng.uniform(*SIGNATURE_SNR_DB)
        mono = _GENERATORS[kind](rng, length, sr)
        events.append(
            _add_event(rng, mono, kind, "signature", onset, snr, background, event_audio, sr)
        )
    if rng.random() < DISTRACTOR_PROBABILITY:
        other = EVENT_TYPES[CLASSES[(class_index + rng.integers(1, len(CLASSES))) % len(CLASSES)]]
        lo, hi = _DURATIONS[other]
        hi = min(hi, 2.0, duration / 3)  # short clips: the distractor must still fit
        length = int(rng.uniform(min(lo, hi), hi) * sr)
        margin = int(_MARGIN_S * sr)
        onset = int(rng.integers(margin, max(margin + 1, n - margin - length)))
        snr = rng.uniform(*DISTRACTOR_SNR_DB)
        mono = _GENERATORS[other](rng, length, sr)
        events.append(
            _add_event(rng, mono, other, "distractor", onset, snr, background, distractor_audio, sr)
        )

    return _finish(
        background, event_audio, distractor_audio, events, (seed, class_index, clip_index), sr
    )


def _finish(background, event_audio, distractor_audio, events, spec, sr, classes=CLASSES):
    """The clip from its float64 parts ``(2, n)``: one gain for all of them when the
    mixture's peak would pass :data:`PEAK_LIMIT`, cast to float32, events sorted."""
    mixture = background + event_audio + distractor_audio
    peak = float(np.abs(mixture).max())
    gain = 1.0 if peak <= PEAK_LIMIT else PEAK_LIMIT / peak
    if gain != 1.0:
        log.debug("clip %s: peak %.2f scaled to %.2f", spec, peak, gain)
    parts = [
        np.asarray(x * gain, dtype=np.float32) for x in (background, event_audio, distractor_audio)
    ]
    mixture32 = (parts[0] + parts[1] + parts[2]).astype(np.float32)
    events.sort(key=lambda e: (e.onset_s, e.role))
    return SceneClip(
        mixture32,
        *parts,
        events=events,
        class_index=spec[1],
        sample_rate=sr,
        spec=tuple(spec),
        classes=tuple(classes),
    )


def _plan_events(rng, durations: tuple[float, float], n: int, sr: int) -> list[tuple[int, int]]:
    """2-4 non-overlapping ``(onset, length)`` in samples covering ~15-50 % of the clip, each
    ``durations = (shortest, longest)`` seconds long."""
    duration = n / sr
    count = int(rng.integers(2, 5))
    coverage = rng.uniform(0.15, 0.5) * duration
    lo, hi = durations
    lengths = np.clip(coverage * rng.dirichlet(np.full(count, 4.0)), lo, hi)
    room = duration - 2 * _MARGIN_S
    if lengths.sum() > 0.8 * room:  # only for short clips
        lengths *= 0.8 * room / lengths.sum()
    gaps = (room - lengths.sum()) * rng.dirichlet(np.ones(count + 1))
    onsets = _MARGIN_S + np.cumsum(np.concatenate([[gaps[0]], lengths[:-1] + gaps[1:-1]]))
    return [(int(o * sr), int(d * sr)) for o, d in zip(onsets, lengths)]


def _add_event(rng, mono, kind, role, onset, snr_db, background, out, sr) -> Event:
    """Scale the event ``mono (length,)`` to ``snr_db`` over its box, pan it, add it to
    ``out (2, n)`` at ``onset`` (samples), and describe it."""
    length = len(mono)
    pan = rng.uniform(-0.8, 0.8)
    theta = (pan + 1) * math.pi / 4
    left, right = math.cos(theta), math.sin(theta)

    n = background.shape[-1]
    first, last = _audible_span(mono, sr)
    seg0, seg1 = max(0, onset - _N_FFT), min(n, onset + length + _N_FFT)
    placed = np.zeros(seg1 - seg0)
    placed[onset - seg0 : onset - seg0 + length] = mono
    power = _power_frames(placed)  # (frames, bins)
    lo_bin, hi_bin = _energy_band(power.sum(axis=0))
    centres = seg0 + _N_FFT // 2 + _HOP * np.arange(power.shape[0])
    in_span = (centres >= onset + first) & (centres <= onset + last)
    if not in_span.any():
        in_span[np.argmin(np.abs(centres - (onset + (first + last) / 2)))] = True
    event_energy = power[in_span, lo_bin : hi_bin + 1].sum()
    bg_power = _power_frames(background[:, seg0:seg1])
    bg_energy = bg_power[:, in_span, lo_bin : hi_bin + 1].sum()
    gain = math.sqrt(10 ** (snr_db / 10) * bg_energy / max(event_energy, 1e-30))
    out[0, onset : onset + length] += gain * left * mono
    out[1, onset : onset + length] += gain * right * mono

    df = sr / _N_FFT
    return Event(
        label=kind,
        role=role,
        onset_s=(onset + first) / sr,
        offset_s=(onset + last) / sr,
        low_hz=max(0.0, (lo_bin - 0.5) * df),
        high_hz=min(sr / 2, (hi_bin + 0.5) * df),
        left_gain=left,
        right_gain=right,
        snr_db=float(snr_db),
    )


def _audible_span(mono: np.ndarray, sr: int) -> tuple[int, int]:
    """First and last sample (block-aligned, 10 ms) within 30 dB of the loudest block."""
    block = max(1, sr // 100)
    count = len(mono) // block
    if count == 0:
        return 0, len(mono)
    energy = np.square(mono[: count * block]).reshape(count, block).sum(axis=1)
    loud = np.flatnonzero(energy >= energy.max() * 10 ** (-_AUDIBLE_DB / 10))
    return int(loud[0] * block), int(min(len(mono), (loud[-1] + 1) * block))


def _energy_band(spectrum: np.ndarray) -> tuple[int, int]:
    """Bins holding the central ``1 - 2 * _BAND_TAIL`` of the energy of ``spectrum (bins,)``."""
    cumulative = np.cumsum(spectrum) / spectrum.sum()
    lo = int(np.searchsorted(cumulative, _BAND_TAIL))
    hi = int(np.searchsorted(cumulative, 1 - _BAND_TAIL))
    return lo, min(hi, len(spectrum) - 1)


def _power_frames(x: np.ndarray) -> np.ndarray:
    """|STFT|² of ``(..., samples)`` -> ``(..., frames, bins)``; Hann 2048, hop 1024, uncentred."""
    if x.shape[-1] < _N_FFT:
        x = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, _N_FFT - x.shape[-1])])
    frames = np.lib.stride_tricks.sliding_window_view(x, _N_FFT, axis=-1)[..., ::_HOP, :]
    spec = np.fft.rfft(frames * _hann(_N_FFT), axis=-1)
    return spec.real**2 + spec.imag**2


def _hann(n: int) -> np.ndarray:
    return 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)  # periodic, as torch/librosa
