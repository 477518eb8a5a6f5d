"""Synthetic acoustic scenes with planted events: the embedded data set and its ground truth.

Every clip is 10 s of 48 kHz stereo made of two parts:

* a **background** drawn independently of the class (coloured noise with a random spectral
  tilt and stereo correlation, mains hum with harmonics at 50 or 60 Hz, babble-like
  amplitude-modulated speech-band noise) at a random level, so that the background alone
  carries no class information;
* 2-4 **signature events** of the clip's class (each class has one event type with its own
  time-frequency pattern, see :data:`EVENT_TYPES`), non-overlapping, 0.3-3 s each, covering
  roughly 15-50 % of the clip, at an event-to-background SNR drawn from
  :data:`SIGNATURE_SNR_DB` and a random constant-power stereo position; with probability
  :data:`DISTRACTOR_PROBABILITY`, one **distractor** event of another class at a lower SNR
  (:data:`DISTRACTOR_SNR_DB`), anywhere in the clip.

The SNR of an event is measured over its annotated box: the STFT bins (n_fft 2048,
hop 1024, Hann, as the model's front end) between ``low_hz`` and ``high_hz`` and the frames
between ``onset_s`` and ``offset_s``, event energy over background energy, both channels
summed. ``low_hz``/``high_hz`` bound the central 95 % of the event's STFT energy;
``onset_s``/``offset_s`` are the first and last 10 ms blocks within 30 dB of its loudest.

Clip ``i`` of class ``c`` depends only on ``(seed, c, i)``, so any clip, its background
and its isolated events can be rendered again (:func:`render_clip`,
:func:`render_scene_file`). No peak normalisation depends on the events (it would make the
background's level depend on the class): the background gets a random level and the whole
clip is scaled down only in the rare case its peak would pass :data:`PEAK_LIMIT`, with one
gain for all parts, so ``mixture == background + event_audio + distractor_audio``.

Shapes: audio arrays are ``(channels, samples)`` = ``(2, N)`` numpy float32.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.fft
import soundfile as sf

from listenable.atomic import atomic_path, write_text
from listenable.errors import DatasetError

__all__ = [
    "CLASSES",
    "EVENT_TYPES",
    "GENERATOR_VERSION",
    "SIGNATURE_SNR_DB",
    "DISTRACTOR_SNR_DB",
    "DISTRACTOR_PROBABILITY",
    "PEAK_LIMIT",
    "Event",
    "SceneClip",
    "render_clip",
    "render_scene_file",
    "write_scenes",
    "load_events",
    "read_manifest",
]

log = logging.getLogger(__name__)

CLASSES = (
    "airport",
    "bus",
    "metro",
    "metro_station",
    "park",
    "public_square",
    "shopping_mall",
    "street_pedestrian",
    "street_traffic",
    "tram",
)
#: The signature event type of each class (``events.csv`` ``event_label``).
EVENT_TYPES = {
    "airport": "announcement",
    "bus": "engine",
    "metro": "whine",
    "metro_station": "door_chime",
    "park": "birdsong",
    "public_square": "fountain",
    "shopping_mall": "music",
    "street_pedestrian": "footsteps",
    "street_traffic": "car_horn",
    "tram": "rail_squeal",
}
GENERATOR_VERSION = "1"
SIGNATURE_SNR_DB = (3.0, 15.0)
DISTRACTOR_SNR_DB = (-10.0, -2.0)
DISTRACTOR_PROBABILITY = 0.3
#: Background RMS level, dBFS (both channels).
BACKGROUND_DBFS = (-50.0, -36.0)
PEAK_LIMIT = 0.89
SAMPLE_RATE = 48_000
DURATION = 10.0

_N_FFT = 2048
_HOP = 1024
_BAND_TAIL = 0.025  # energy left out on each side of the annotated band
_AUDIBLE_DB = 30.0  # onset/offset: 10 ms blocks within this many dB of the loudest
_MARGIN_S = 0.1  # events keep this far from the clip's edges
_EVENTS_HEADER = (
    "filename",
    "event_label",
    "onset_s",
    "offset_s",
    "low_hz",
    "high_hz",
    "left_gain",
    "right_gain",
    "role",
    "snr_db",
)


@dataclass(frozen=True)
class Event:
    """One planted event: what, when (s), where in frequency (Hz), and its stereo position.

    ``role`` is ``"signature"`` (an event of the clip's class) or ``"distractor"``.
    ``left_gain**2 + right_gain**2 == 1`` (constant-power pan).
    """

    label: str
    role: str
    onset_s: float
    offset_s: float
    low_hz: float
    high_hz: float
    left_gain: float
    right_gain: float
    snr_db: float = float("nan")


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

    @property
    def label(self) -> str:
        return CLASSES[self.class_index]


# --------------------------------------------------------------------------- rendering


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
    for onset, length in _plan_events(rng, kind, n, sr):
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

    mixture = background + event_audio + distractor_audio
    peak = float(np.abs(mixture).max())
    gain = 1.0 if peak <= PEAK_LIMIT else PEAK_LIMIT / peak
    if gain != 1.0:
        log.debug("clip %s: peak %.2f scaled to %.2f", (seed, class_index, clip_index), peak, gain)
    parts = [
        np.asarray(x * gain, dtype=np.float32) for x in (background, event_audio, distractor_audio)
    ]
    mixture32 = (parts[0] + parts[1] + parts[2]).astype(np.float32)
    events.sort(key=lambda e: (e.onset_s, e.role))
    return SceneClip(
        mixture32,
        *parts,
        events=events,
        class_index=class_index,
        sample_rate=sr,
        spec=(seed, class_index, clip_index),
    )


_DURATIONS = {  # seconds: (shortest, longest) event of each type
    "announcement": (0.8, 3.0),
    "engine": (0.8, 3.0),
    "whine": (0.6, 3.0),
    "door_chime": (0.8, 2.5),
    "birdsong": (0.3, 2.5),
    "fountain": (0.6, 3.0),
    "music": (0.8, 3.0),
    "footsteps": (1.0, 3.0),
    "car_horn": (0.3, 1.6),
    "rail_squeal": (0.6, 3.0),
}


def _plan_events(rng, kind: str, n: int, sr: int) -> list[tuple[int, int]]:
    """2-4 non-overlapping ``(onset, length)`` in samples covering ~15-50 % of the clip."""
    duration = n / sr
    count = int(rng.integers(2, 5))
    coverage = rng.uniform(0.15, 0.5) * duration
    lo, hi = _DURATIONS[kind]
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


# --------------------------------------------------------------------------- background


def _background(rng, n: int, sr: int) -> np.ndarray:
    """Class-neutral stereo texture ``(2, n)`` at a random RMS level (dBFS)."""
    freqs = np.fft.rfftfreq(n, 1 / sr)
    f = np.maximum(freqs, 20.0)
    # coloured noise: a random mix of white, pink and brown, a random extra tilt, and a
    # random correlation between left and right
    mix = rng.dirichlet(np.ones(3))
    shape = sum(w * f ** (-alpha) / np.mean(f ** (-alpha)) for w, alpha in zip(mix, (0, 1, 2)))
    shape = np.sqrt(shape * (f / 1000.0) ** rng.uniform(-0.3, 0.3))
    shape[0] = 0.0
    noise = _stereo_noise(rng, shape, n, rng.uniform(0.0, 0.9))
    hop = max(1, sr // 200)  # envelopes are drawn at 200 Hz, then interpolated
    n_ctrl = n // hop + 2
    drift = 10 ** (1.5 * _smooth_noise(rng, n_ctrl, 0.3 / 200) / 20)  # +-1.5 dB
    out = noise * _upsample(drift, n, hop)
    if rng.random() < 0.5:  # mains hum
        mains = 50.0 if rng.random() < 0.5 else 60.0
        amps = rng.uniform(0.2, 1.0, 8) * np.arange(1, 9) ** -rng.uniform(0.5, 1.5)
        phase = 2 * np.pi * mains * np.arange(n) / sr + rng.uniform(0, 2 * np.pi)
        hum = _harmonic_sum(phase, amps, mains, sr)
        level = 10 ** (rng.uniform(-30, -12) / 20) / _rms(hum)
        out += level * rng.uniform(0.7, 1.0, 2)[:, None] * hum
    if rng.random() < 0.6:  # babble: speech-band noise under syllable-rate envelopes
        out += 10 ** (rng.uniform(-20, -6) / 20) * _babble(rng, n, sr, freqs, hop)
    level = 10 ** (rng.uniform(*BACKGROUND_DBFS) / 20)
    return out * (level / _rms(out))


def _babble(rng, n: int, sr: int, freqs: np.ndarray, hop: int) -> np.ndarray:
    low, high = rng.uniform(200, 400), rng.uniform(2500, 4000)
    peak = rng.uniform(400, 700)
    band = np.where(freqs < peak, (freqs / peak) ** 2, peak / np.maximum(freqs, 1.0))
    band *= _smooth_edge(freqs, low, 0.3) * (1 - _smooth_edge(freqs, high, 0.3))
    carrier = _stereo_noise(rng, band, n, rng.uniform(0.2, 0.8))
    n_ctrl = n // hop + 2
    ctrl_rate = sr / hop
    envelope = np.zeros((2, n_ctrl))
    for _ in range(int(rng.integers(3, 9))):  # talkers
        rate = rng.uniform(3.0, 6.0)
        syllables = np.maximum(_smooth_noise(rng, n_ctrl, 2 * rate / ctrl_rate), 0.0) ** 1.5
        spurts = np.clip(_smooth_noise(rng, n_ctrl, 0.5 / ctrl_rate) + 0.8, 0.0, 1.0)
        theta = rng.uniform(0.1, 0.9) * math.pi / 2
        talker = (0.5 + syllables) * (0.3 + 0.7 * spurts)  # talk spurts and pauses
        envelope += np.array([[math.cos(theta)], [math.sin(theta)]]) * talker
    babble = carrier * np.stack([_upsample(e, n, hop) for e in envelope])
    return babble / _rms(babble)


def _stereo_noise(rng, shape: np.ndarray, n: int, correlation: float) -> np.ndarray:
    """Two noise channels ``(2, n)`` of spectral magnitude ``shape``, correlated, unit RMS.

    Drawn in single precision (twice as fast; plenty for noise)."""
    z = rng.standard_normal((2, 2, len(shape)), dtype=np.float32)
    spec = np.empty((2, len(shape)), dtype=np.complex64)
    spec.real, spec.imag = z[:, 0], z[:, 1]
    spec[1] = correlation * spec[0] + math.sqrt(1 - correlation**2) * spec[1]
    spec *= shape.astype(np.float32)
    noise = scipy.fft.irfft(spec, n)
    return noise.astype(np.float64) / _rms(noise)


def _smooth_noise(rng, n: int, step: float) -> np.ndarray:
    """Zero-mean, unit-scale random curve ``(n,)`` with a new random value every
    ``1 / step`` points, joined by smoothsteps."""
    points = int(math.ceil(n * step)) + 2
    values = rng.standard_normal(points)
    x = np.arange(n) * step
    i = np.minimum(x.astype(int), points - 2)
    frac = x - i
    smooth = frac * frac * (3 - 2 * frac)
    return values[i] * (1 - smooth) + values[i + 1] * smooth


def _upsample(curve: np.ndarray, n: int, hop: int) -> np.ndarray:
    """Linear interpolation of a control curve (one point every ``hop`` samples) to ``n``."""
    return np.interp(np.arange(n), np.arange(len(curve)) * hop, curve)


def _smooth_edge(freqs: np.ndarray, edge: float, width: float) -> np.ndarray:
    """0 well below ``edge`` Hz, 1 above; a raised-cosine ramp ``width * edge`` wide."""
    r = np.clip((freqs - edge) / (width * edge) + 0.5, 0.0, 1.0)
    return 0.5 - 0.5 * np.cos(np.pi * r)


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x)))) or 1e-12


def _harmonic_sum(phase: np.ndarray, amps, f0_max: float, sr: int) -> np.ndarray:
    """``sum_k amps[k-1] * sin(k * phase)``, harmonics up to 0.45 sr; amps may be ``(K, n)``."""
    z1 = np.exp(1j * phase)
    z = z1.copy()
    out = np.zeros(phase.shape)
    for k, amp in enumerate(amps, start=1):
        if k * f0_max >= 0.45 * sr:
            break
        if k > 1:
            z *= z1
        out += amp * z.imag
    return out


def _fade(n: int, sr: int, attack: float, release: float) -> np.ndarray:
    env = np.ones(n)
    for ramp, where in ((attack, slice(None)), (release, slice(None, None, -1))):
        m = min(n // 2, max(1, int(ramp * sr)))
        env[where][:m] *= 0.5 - 0.5 * np.cos(np.pi * np.arange(m) / m)
    return env


def _band_noise(rng, n: int, sr: int, low: float, high: float, width=0.2) -> np.ndarray:
    """Mono noise ``(n,)`` between ``low`` and ``high`` Hz (raised-cosine edges), unit RMS."""
    m = scipy.fft.next_fast_len(n, real=True)
    freqs = np.fft.rfftfreq(m, 1 / sr)
    band = _smooth_edge(freqs, low, width) * (1 - _smooth_edge(freqs, high, width))
    z = rng.standard_normal((2, len(freqs)))
    noise = np.fft.irfft(band * (z[0] + 1j * z[1]), m)[:n]
    return noise / _rms(noise)


# --------------------------------------------------------------------------- events
# Each generator: (rng, samples, sample_rate) -> mono float64 (samples,), any level.


def _announcement(rng, n, sr):
    """Voice-like: harmonic 150-250 Hz source with intonation, vowel formants, syllables."""
    t = np.arange(n) / sr
    dur = n / sr
    f0 = rng.uniform(150, 250) * (
        1 + 0.06 * np.sin(2 * np.pi * rng.uniform(0.3, 0.8) * t + rng.uniform(0, 2 * np.pi))
    )
    f0 *= 1 - rng.uniform(0.05, 0.15) * t / dur  # declination
    vowels = np.array(
        [
            [730, 1090, 2440],
            [270, 2290, 3010],
            [300, 870, 2240],
            [530, 1840, 2480],
            [570, 840, 2410],
        ],
        dtype=float,
    )
    hop = max(1, sr // 200)
    ctrl = np.arange(0, n + hop, hop)
    formants = np.tile(vowels[0], (len(ctrl), 1))
    envelope = np.zeros(n)
    pos = rng.uniform(0.0, 0.05)
    while pos < dur - 0.1:
        length = min(rng.uniform(0.12, 0.28), dur - pos)
        a, b = int(pos * sr), int((pos + length) * sr)
        envelope[a:b] = np.sin(np.pi * np.linspace(0, 1, b - a)) ** 0.6
        formants[ctrl >= a] = vowels[rng.integers(len(vowels))] * rng.uniform(0.92, 1.08)
        pos += length + (rng.uniform(0.15, 0.3) if rng.random() < 0.12 else rng.uniform(0.02, 0.08))
    f0_ctrl = np.interp(ctrl, np.arange(n), f0)
    gains, widths = np.array([1.0, 0.6, 0.35]), np.array([90.0, 130.0, 180.0])
    k_max = int(min(4500, 0.45 * sr) // f0.max())
    amps = []
    for k in range(1, k_max + 1):
        fk = k * f0_ctrl[:, None]
        a_ctrl = (np.exp(-0.5 * ((fk - formants) / widths) ** 2) @ gains + 0.02) * k**-0.5
        amps.append(np.interp(np.arange(n), ctrl, a_ctrl))
    voice = _harmonic_sum(2 * np.pi * np.cumsum(f0) / sr, amps, f0.max(), sr)
    return voice * envelope


def _engine(rng, n, sr):
    """Engine: 40-110 Hz fundamental, many harmonics, slow RPM modulation, rumble."""
    t = np.arange(n) / sr
    dur = n / sr
    f0 = rng.uniform(40, 110) * (1 + rng.uniform(-0.15, 0.25) * t / dur)
    f0 *= 1 + rng.uniform(0.04, 0.12) * np.sin(
        2 * np.pi * rng.uniform(0.15, 0.6) * t + rng.uniform(0, 2 * np.pi)
    )
    k = np.arange(1, int(1500 // f0.max()) + 1)
    firing = int(rng.integers(2, 4))
    amps = k**-0.7 * (1 + 1.5 * (k % firing == 0)) * rng.uniform(0.5, 1.5, len(k))
    engine = _harmonic_sum(2 * np.pi * np.cumsum(f0) / sr, amps, f0.max(), sr)
    engine /= _rms(engine)
    rumble = _band_noise(rng, n, sr, 30, 250)
    engine = engine + 10 ** (rng.uniform(-16, -8) / 20) * rumble
    return engine * _fade(n, sr, rng.uniform(0.1, 0.3), rng.uniform(0.1, 0.3))


def _whine(rng, n, sr):
    """Inverter whine: a tonal sweep between 500 and 2000 Hz (rising or falling) + partials."""
    t = np.arange(n) / sr
    dur = n / sr
    f_a, f_b = rng.uniform(500, 900), rng.uniform(1200, 2000)
    if rng.random() < 0.5:
        f_a, f_b = f_b, f_a
    sweep_end = rng.uniform(0.6, 1.0) * dur
    x = np.minimum(t / sweep_end, 1.0)
    freq = f_a * (f_b / f_a) ** x
    phase = 2 * np.pi * np.cumsum(freq) / sr
    ratio = rng.choice([1.5, 2.0])
    tone = np.sin(phase) + rng.uniform(0.2, 0.5) * np.sin(ratio * phase)
    tone += rng.uniform(0.0, 0.25) * np.sin(3 * phase) * (3 * max(f_a, f_b) < 0.45 * sr)
    return tone * _fade(n, sr, rng.uniform(0.1, 0.2), rng.uniform(0.1, 0.2))


def _door_chime(rng, n, sr):
    """Door chime: alternating two-tone bell notes (~700 / ~550 Hz), decaying partials."""
    high = rng.uniform(640, 760)
    tones = (high, high * rng.uniform(0.76, 0.82))
    spacing = rng.uniform(0.35, 0.55)
    count = max(2, int((n / sr - 0.2) / spacing) + 1)
    ratios = np.array([1.0, 2.0, 2.98, 4.2])
    amps = np.array([1.0, 0.45, 0.25, 0.12])
    tau = rng.uniform(0.35, 0.7) / ratios**0.7
    out = np.zeros(n)
    for i in range(count):
        start = int(i * spacing * sr)
        if start >= n:
            break
        m = min(n - start, int(4 * tau[0] * sr))
        t = np.arange(m) / sr
        attack = np.minimum(t / 0.003, 1.0)
        note = sum(
            a * np.exp(-t / d) * np.sin(2 * np.pi * tones[i % 2] * r * t)
            for a, d, r in zip(amps, tau, ratios)
            if tones[i % 2] * r < 0.45 * sr
        )
        out[start : start + m] += attack * note
    return out * _fade(n, sr, 0.0, 0.05)


def _birdsong(rng, n, sr):
    """Bird chirps: trains of fast 2-6 kHz FM sweeps, 7-14 chirps a second."""
    top = min(rng.uniform(4000, 6500), 0.42 * sr)
    bottom = min(rng.uniform(2000, 3500), 0.6 * top)
    rate = rng.uniform(7, 14)
    length = rng.uniform(0.03, 0.08)
    downward = rng.random() < 0.7
    out = np.zeros(n)
    pos = rng.uniform(0.0, 0.03)
    dur = n / sr
    while pos < dur - length:
        train_end = min(dur, pos + rng.uniform(0.25, 0.8))
        while pos < train_end - length:
            m = int(length * sr * rng.uniform(0.85, 1.15))
            jitter = rng.uniform(0.95, 1.05)
            f1, f2 = (top, bottom) if downward else (bottom, top)
            freq = np.linspace(f1, f2, m) * jitter
            phase = 2 * np.pi * np.cumsum(freq) / sr
            chirp = np.hanning(m) * (
                np.sin(phase) + 0.1 * np.sin(2 * phase) * (2 * top < 0.45 * sr)
            )
            a = int(pos * sr)
            out[a : a + m] += chirp[: n - a]
            pos += 1 / rate * rng.uniform(0.9, 1.1)
        pos = train_end + rng.uniform(0.05, 0.2)
    return out


def _fountain(rng, n, sr):
    """Fountain spray: high band noise (~5-14 kHz) with a fast random flutter."""
    high = min(rng.uniform(10000, 14000), 0.45 * sr)
    low = min(rng.uniform(4000, 6000), high / 2)
    spray = _band_noise(rng, n, sr, low, high)
    flutter = np.clip(1 + 0.5 * _smooth_noise(rng, n, 30.0 / sr), 0.2, None)
    return spray * flutter * _fade(n, sr, rng.uniform(0.15, 0.3), rng.uniform(0.15, 0.3))


def _music(rng, n, sr):
    """Music: sustained triads (roots ~200-330 Hz) with a few harmonics, changing chords."""
    key = int(rng.integers(55, 65))  # MIDI root, G3..E4
    degrees = [0, 5, 7, 9, 2, 4]
    chord_len = rng.uniform(0.5, 1.0)
    bass = rng.random() < 0.7
    harmonics = np.array([1.0, 0.5, 0.25, 0.12])
    out = np.zeros(n)
    start = 0
    previous = -1
    while start < n:
        m = min(n - start, int(chord_len * sr))
        degree = previous
        while degree == previous:
            degree = degrees[int(rng.integers(len(degrees)))]
        previous = degree
        minor = degree in (2, 4, 9)
        notes = [key + degree + i for i in (0, 3 if minor else 4, 7)]
        if bass:
            notes.append(key + degree - 12)
        t = np.arange(m) / sr
        env = np.minimum(t / 0.02, 1.0) * (0.6 + 0.4 * np.exp(-t / 0.3))
        chord = np.zeros(m)
        for note in notes:
            f = 440.0 * 2 ** ((note - 69) / 12)
            for h, a in enumerate(harmonics, start=1):
                if h * f < 0.45 * sr:
                    chord += a * np.sin(2 * np.pi * h * f * t + rng.uniform(0, 2 * np.pi))
        out[start : start + m] = chord * env * _fade(m, sr, 0.0, 0.03)
        start += m
    return out * _fade(n, sr, 0.02, 0.1)


def _footsteps(rng, n, sr):
    """Footsteps: ~2 steps a second, each a low-passed heel + toe noise burst with a thump."""
    rate = rng.uniform(1.7, 2.4)
    cutoff = rng.uniform(2500, 5000)
    out = np.zeros(n)
    pos = rng.uniform(0.0, 0.08)
    dur = n / sr
    while pos < dur - 0.1:
        for delay, level in ((0.0, 1.0), (rng.uniform(0.05, 0.09), 0.6)):
            tau = rng.uniform(0.012, 0.03)
            m = int(5 * tau * sr)
            a = int((pos + delay) * sr)
            if a >= n:
                break
            t = np.arange(m) / sr
            burst = rng.standard_normal(m) * np.exp(-t / tau)
            thump = 0.8 * np.sin(2 * np.pi * rng.uniform(80, 120) * t) * np.exp(-t / 0.02)
            out[a : a + m] += (level * (burst + thump))[: n - a]
        pos += 1 / rate + rng.uniform(-0.03, 0.03)
    m = scipy.fft.next_fast_len(n + 4096, real=True)  # zero padding: no wrap-around of the tails
    freqs = np.fft.rfftfreq(m, 1 / sr)
    shape = 1 / (1 + (freqs / cutoff) ** 4) * _smooth_edge(freqs, 60.0, 0.5)
    return np.fft.irfft(np.fft.rfft(out, m) * shape, m)[:n]


def _car_horn(rng, n, sr):
    """Car horn: one or two honks of a bright (dual-)tone at 350-450 Hz."""
    f1 = rng.uniform(350, 450)
    tones = [f1, f1 * rng.uniform(1.2, 1.3)] if rng.random() < 0.6 else [f1]
    dur = n / sr
    if dur < 0.9:
        honks = [(0, n)]
    else:
        first = int(rng.uniform(0.3, 0.5) * n)
        gap = int(rng.uniform(0.1, 0.25) * sr)
        honks = [(0, first), (first + gap, n)]
    k = np.arange(1, 13)
    amps = 1.0 / k * np.where(k % 2 == 1, 1.0, 0.5)
    out = np.zeros(n)
    for a, b in honks:
        t = np.arange(b - a) / sr
        honk = sum(_harmonic_sum(2 * np.pi * f * t, amps, f, sr) for f in tones)
        out[a:b] = honk * _fade(b - a, sr, 0.015, 0.03)
    return out


def _rail_squeal(rng, n, sr):
    """Rail squeal: a high narrowband tone (3-7.5 kHz) with wobble, beating and flutter."""
    t = np.arange(n) / sr
    dur = n / sr
    centre = min(rng.uniform(3000, 7500), 0.4 * sr)
    freq = centre * (
        1 + 0.01 * np.sin(2 * np.pi * rng.uniform(2, 6) * t) + rng.uniform(-0.03, 0.03) * t / dur
    )
    phase = 2 * np.pi * np.cumsum(freq) / sr
    tone = np.sin(phase)
    if rng.random() < 0.5:
        tone += 0.5 * np.sin(phase * rng.uniform(1.02, 1.06))
    flutter = np.clip(1 + 0.4 * _smooth_noise(rng, n, 8.0 / sr), 0.3, None)
    return tone * flutter * _fade(n, sr, rng.uniform(0.05, 0.2), rng.uniform(0.05, 0.2))


_GENERATORS: dict[str, Callable] = {
    "announcement": _announcement,
    "engine": _engine,
    "whine": _whine,
    "door_chime": _door_chime,
    "birdsong": _birdsong,
    "fountain": _fountain,
    "music": _music,
    "footsteps": _footsteps,
    "car_horn": _car_horn,
    "rail_squeal": _rail_squeal,
}


# --------------------------------------------------------------------------- writing


def _clip_name(seed: int, class_index: int, clip_index: int) -> str:
    """``audio/{scene}-{city}-{location}-{segment}-{device}.wav`` as TAU names its files."""
    return f"audio/{CLASSES[class_index]}-synth{seed}-{clip_index}-0-a.wav"


def _is_evaluate(clip_index: int, fraction: float) -> bool:
    """Spread ``round(n * fraction)`` of the first ``n`` clips evenly (1 of 3 for 0.3)."""
    return math.floor((clip_index + 1) * fraction + 0.5) > math.floor(clip_index * fraction + 0.5)


def write_scenes(
    out_dir: str | os.PathLike,
    *,
    clips_per_class: int = 50,
    seed: int = 0,
    evaluate_fraction: float = 0.3,
    sample_rate: int = SAMPLE_RATE,
    duration: float = DURATION,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write a synthetic data set in the TAU 2019 development layout; return ``out_dir``.

    Writes ``audio/*.wav`` (24-bit PCM), ``meta.csv``, ``evaluation_setup/fold1_{train,
    evaluate,test}.csv`` (tab-separated, with header, ``audio/`` prefix), ``events.csv``
    (``filename event_label onset_s offset_s low_hz high_hz left_gain right_gain role
    snr_db``) and ``scenes.json`` (settings and ``filename -> [seed, class_index,
    clip_index]``). Every file is written atomically. Resumable: audio files already there
    are kept (their events come from ``events.csv`` when it lists them, else the clip is
    rendered again), and text files whose content would not change are not rewritten.
    ``progress(n_done, n_total)`` is called after each clip.
    """
    out = Path(out_dir)
    if clips_per_class < 1 or not 0.0 <= evaluate_fraction < 1.0 or seed < 0:
        raise DatasetError(
            f"need clips_per_class >= 1, 0 <= evaluate_fraction < 1 and seed >= 0; got "
            f"{clips_per_class}, {evaluate_fraction}, {seed}"
        )
    settings = {
        "generator": "listenable.data.scenes",
        "version": GENERATOR_VERSION,
        "seed": int(seed),
        "sample_rate": int(sample_rate),
        "duration": float(duration),
    }
    known = _previous_events(out, settings)
    specs = [(c, i) for c in range(len(CLASSES)) for i in range(clips_per_class)]
    events: dict[str, list[Event]] = {}
    clips: dict[str, list[int]] = {}
    rendered = 0
    for done, (c, i) in enumerate(specs, start=1):
        name = _clip_name(seed, c, i)
        path = out / name
        clips[name] = [int(seed), c, i]
        if path.is_file() and name in known:
            events[name] = known[name]
        else:
            clip = render_clip(seed, c, i, sample_rate, duration)
            events[name] = clip.events
            if not path.is_file():
                with atomic_path(path) as tmp:
                    sf.write(str(tmp), clip.mixture.T, sample_rate, subtype="PCM_24")
            rendered += 1
            if rendered % 100 == 0:  # checkpoint, so that a killed run resumes cheaply
                _write_manifest(out, settings, clips_per_class, evaluate_fraction, events, clips)
        if progress is not None:
            progress(done, len(specs))
    _write_manifest(out, settings, clips_per_class, evaluate_fraction, events, clips)
    splits = {"train": [], "evaluate": []}
    meta = []
    for c, i in specs:
        name = _clip_name(seed, c, i)
        row = f"{name}\t{CLASSES[c]}"
        meta.append(f"{row}\tsynth{seed}-{i}\ta")
        splits["evaluate" if _is_evaluate(i, evaluate_fraction) else "train"].append(row)
    _write_if_changed(out / "meta.csv", ["filename\tscene_label\tidentifier\tsource_label", *meta])
    setup = out / "evaluation_setup"
    for split, rows in splits.items():
        _write_if_changed(setup / f"fold1_{split}.csv", ["filename\tscene_label", *rows])
    test = [row.split("\t")[0] for row in splits["evaluate"]]
    _write_if_changed(setup / "fold1_test.csv", ["filename", *test])
    log.info("synthetic scenes in %s: %d clips (%d rendered)", out, len(specs), rendered)
    return out


def _write_manifest(out, settings, clips_per_class, evaluate_fraction, events, clips) -> None:
    lines = ["\t".join(_EVENTS_HEADER)]
    for name, clip_events in events.items():
        for e in clip_events:
            lines.append(
                f"{name}\t{e.label}\t{e.onset_s:.6f}\t{e.offset_s:.6f}\t{e.low_hz:.3f}\t"
                f"{e.high_hz:.3f}\t{e.left_gain:.6f}\t{e.right_gain:.6f}\t{e.role}\t"
                f"{e.snr_db:.3f}"
            )
    _write_if_changed(out / "events.csv", lines)
    manifest = {
        **settings,
        "clips_per_class": clips_per_class,
        "evaluate_fraction": evaluate_fraction,
        "classes": list(CLASSES),
        "event_types": EVENT_TYPES,
        "signature_snr_db": list(SIGNATURE_SNR_DB),
        "distractor_snr_db": list(DISTRACTOR_SNR_DB),
        "distractor_probability": DISTRACTOR_PROBABILITY,
        "clips": {name: clips[name] for name in events},
    }
    text = json.dumps(manifest, indent=2) + "\n"
    path = out / "scenes.json"
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        write_text(path, text)


def _write_if_changed(path: Path, lines: list[str]) -> None:
    text = "\n".join(lines) + "\n"
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return
    write_text(path, text)


def _previous_events(out: Path, settings: dict) -> dict[str, list[Event]]:
    """Events of a previous run into ``out`` with the same settings (for resuming)."""
    manifest_path = out / "scenes.json"
    if not manifest_path.is_file():
        return {}
    manifest = read_manifest(out)
    different = {k: (manifest.get(k), v) for k, v in settings.items() if manifest.get(k) != v}
    if different:
        detail = ", ".join(f"{k} {old!r} != {new!r}" for k, (old, new) in different.items())
        raise DatasetError(
            f"{manifest_path}: the folder holds scenes made with other settings ({detail}); "
            "write into a new folder"
        )
    if not (out / "events.csv").is_file():
        return {}
    clips = manifest.get("clips", {})
    return {name: ev for name, ev in load_events(out).items() if name in clips}


# --------------------------------------------------------------------------- reading


def read_manifest(root: str | os.PathLike) -> dict:
    """The ``scenes.json`` of a synthetic data set written by :func:`write_scenes`."""
    path = Path(root) / "scenes.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DatasetError(f"{path}: not found (not a synthetic scenes folder?)") from None
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{path}: unreadable ({exc})") from None


def load_events(root: str | os.PathLike) -> dict[str, list[Event]]:
    """Read ``events.csv`` (in folder ``root``, or the file itself) -> filename -> events.

    Filenames keep the ``audio/`` prefix, as in ``meta.csv``.
    """
    path = Path(root)
    if path.is_dir():
        path = path / "events.csv"
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DatasetError(f"{path}: not found") from None
    header = lines[0].split("\t") if lines else []
    required = _EVENTS_HEADER[:-1]
    missing = [c for c in required if c not in header]
    if missing:
        raise DatasetError(f"{path}, line 1: header lacks {', '.join(missing)} (tab-separated)")
    col = {name: header.index(name) for name in header}
    events: dict[str, list[Event]] = {}
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.split("\t")
        try:
            row = {name: fields[i] for name, i in col.items()}
            event = Event(
                label=row["event_label"],
                role=row["role"],
                onset_s=float(row["onset_s"]),
                offset_s=float(row["offset_s"]),
                low_hz=float(row["low_hz"]),
                high_hz=float(row["high_hz"]),
                left_gain=float(row["left_gain"]),
                right_gain=float(row["right_gain"]),
                snr_db=float(row.get("snr_db", "nan")),
            )
        except (IndexError, ValueError) as exc:
            raise DatasetError(f"{path}, line {number}: malformed row ({exc})") from None
        events.setdefault(row["filename"], []).append(event)
    return events


def render_scene_file(root: str | os.PathLike, filename: str) -> SceneClip:
    """Render again the clip ``filename`` (``audio/...wav``) of the data set in ``root``,
    with its background and isolated events, from ``scenes.json``."""
    manifest = read_manifest(root)
    key = filename if filename.startswith("audio/") else f"audio/{Path(filename).name}"
    if key not in manifest.get("clips", {}):
        raise DatasetError(f"{Path(root) / 'scenes.json'}: no clip {filename!r}")
    seed, class_index, clip_index = manifest["clips"][key]
    return render_clip(seed, class_index, clip_index, manifest["sample_rate"], manifest["duration"])
