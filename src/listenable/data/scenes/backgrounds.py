"""The synthetic background: a class-neutral stereo texture at a random level."""

from __future__ import annotations

import math

import numpy as np

from listenable.data.scenes.signals import (
    _harmonic_sum,
    _rms,
    _smooth_edge,
    _smooth_noise,
    _stereo_noise,
    _upsample,
)

#: Background RMS level, dBFS (both channels).
BACKGROUND_DBFS = (-50.0, -36.0)


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
