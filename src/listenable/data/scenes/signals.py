"""Signal building blocks of the synthetic scenes: noise, envelopes, fades, harmonics.

Mono arrays are ``(samples,)``, stereo ``(2, samples)``, numpy float64 unless said.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.fft


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
