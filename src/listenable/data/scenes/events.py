"""The scene classes, the :class:`Event` record and the synthetic event generators.

Each class has one signature event type (:data:`EVENT_TYPES`) with its own time-frequency
pattern; a generator ``(rng, samples, sample_rate) -> mono float64 (samples,)`` makes one
event of that type at any level (the renderer sets the level).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.fft

from listenable.data.scenes.signals import (
    _band_noise,
    _fade,
    _harmonic_sum,
    _rms,
    _smooth_edge,
    _smooth_noise,
)

__all__ = ["CLASSES", "EVENT_TYPES", "Event"]

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
