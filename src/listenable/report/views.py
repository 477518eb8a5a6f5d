"""Spectrogram views for the gallery's player: one image per clip, any rate and channel count.

A *view* is a column of equal panels, one per track in the player's order (original,
listenable, residual, then the listenable track of every further method), each
:data:`PANEL_W` × :data:`PANEL_H` pixels: time runs linearly over the whole clip from the
left edge to the right one (so a click at 40 % of the width is 40 % of the duration), and
frequency runs on a log axis from :data:`F_LO` Hz at the bottom to the Nyquist frequency at
the top (:func:`freq_position`). Every panel is in dB on the *original's* scale — 0 dB is
the loudest bin of the original, :data:`DB_RANGE` below it is black — so a masked track
looks as much quieter as it is. The view is written as lossy WebP (a few tens of kB).

An *outline* image has the same panels, transparent except for the outline of the mask
each panel's track went through: where the listenable track keeps at least a quarter of
the original's power (half its amplitude), estimated from the audio itself, so it works
for any front end, STFT or method. It is a 2-colour PNG drawn over the view.

The STFT of a view is the run's when the manifest row or the summary gives one
(``stft: {"n_fft", "hop_length"}``), else about 43 ms of Hann window with 50 % overlap
(:func:`stft_settings`): 2048 / 1024 at 44.1 and 48 kHz, 512 / 256 at 16 kHz.
"""

from __future__ import annotations

import io
import math
import os
from pathlib import Path

import numpy as np

from listenable.atomic import atomic_path

__all__ = [
    "DB_RANGE",
    "F_LO",
    "PANEL_H",
    "PANEL_W",
    "freq_position",
    "freq_ticks",
    "panel_count",
    "render_view",
    "stft_settings",
    "time_ticks",
    "write_view",
]

PANEL_W = 640
PANEL_H = 128
#: Lowest frequency a view shows (Hz); the top is the Nyquist frequency.
F_LO = 40.0
#: dB below the original's loudest bin that a view still shows.
DB_RANGE = 70.0
#: The listenable track keeps at least this share of the original's power inside the outline.
OUTLINE_POWER = 0.25
WEBP_QUALITY = 62
_OUTLINE_RGB = (0, 229, 255)


def stft_settings(rate: int, stft: dict | None = None) -> tuple[int, int]:
    """``(n_fft, hop_length)``: ``stft``'s when it gives valid ones, else ~43 ms / 50 %."""
    if isinstance(stft, dict):
        n_fft, hop = stft.get("n_fft"), stft.get("hop_length", stft.get("hop"))
        if _positive_int(n_fft) and _positive_int(hop) and hop <= n_fft:
            return int(n_fft), int(hop)
    n_fft = 2 ** max(6, round(math.log2(0.043 * rate)))
    return n_fft, n_fft // 2


def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 1 << 20


def freq_position(freq: float, rate: int) -> float:
    """Height of ``freq`` (Hz) in a panel, 0 at the bottom (:data:`F_LO`) to 1 (Nyquist)."""
    top = rate / 2
    return math.log(max(freq, F_LO) / F_LO) / math.log(top / F_LO)


def freq_ticks(rate: int) -> list[tuple[float, str]]:
    """``[(position, label)]`` of the frequency axis: 50 Hz, 100 Hz, 200 Hz, 500 Hz, 1 kHz..."""
    ticks = []
    for decade in (10, 100, 1000, 10_000, 100_000):
        for step in (1, 2, 5):
            f = decade * step
            if F_LO <= f < rate / 2 and freq_position(f, rate) <= 0.9:
                label = f"{f // 1000:g}k" if f >= 1000 else f"{f:g}"
                ticks.append((freq_position(f, rate), label))
    return ticks


def time_ticks(duration: float) -> list[tuple[float, str]]:
    """``[(position, label)]`` of the time axis in seconds, about 5–10 ticks."""
    if not duration > 0:
        return []
    step = next(s for s in (0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1e9)
                if duration / s <= 10)  # fmt: skip
    count = int(duration / step + 1e-9)
    return [
        (k * step / duration, f"{k * step:g}" + (" s" if k == 0 else "")) for k in range(count + 1)
    ]


# --------------------------------------------------------------------------- rendering


def _power(wave: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """``(channels, samples)`` → power ``(n_fft // 2 + 1, frames)`` averaged over channels;
    Hann window, centred frames (frame ``j`` is centred on sample ``j * hop``). Computed
    in blocks of frames, so a long clip needs little memory."""
    wave = np.asarray(wave, dtype=np.float32)
    pad = n_fft // 2
    mode = "reflect" if wave.shape[1] > pad else "constant"
    padded = np.pad(wave, ((0, 0), (pad, pad)), mode=mode)
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft, axis=1)[:, ::hop]
    window = np.hanning(n_fft + 1)[:-1].astype(np.float32)
    power = np.zeros((frames.shape[1], n_fft // 2 + 1))
    for start in range(0, frames.shape[1], 512):
        for channel in frames[:, start : start + 512]:
            spectrum = np.fft.rfft(channel * window, axis=-1)
            power[start : start + 512] += spectrum.real**2 + spectrum.imag**2
    return power.T / max(len(frames), 1)


def _weights(centres: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """``(len(edges) - 1, len(centres))`` resampling matrix: each output cell averages the
    inputs centred inside it, or interpolates linearly where none is (a sparse input)."""
    n_out, n_in = len(edges) - 1, len(centres)
    matrix = np.zeros((n_out, n_in))
    lo = np.searchsorted(centres, edges[:-1], side="left")
    hi = np.searchsorted(centres, edges[1:], side="left")
    for i in range(n_out):
        if hi[i] > lo[i]:
            matrix[i, lo[i] : hi[i]] = 1.0 / (hi[i] - lo[i])
            continue
        x = 0.5 * (edges[i] + edges[i + 1])
        j = int(np.clip(np.searchsorted(centres, x) - 1, 0, max(n_in - 2, 0)))
        if n_in == 1:
            matrix[i, 0] = 1.0
            continue
        t = float(np.clip((x - centres[j]) / (centres[j + 1] - centres[j]), 0.0, 1.0))
        matrix[i, j], matrix[i, j + 1] = 1.0 - t, t
    return matrix


def _grid(wave: np.ndarray, rate: int, n_fft: int, hop: int, samples: int) -> np.ndarray:
    """Power on the view grid ``(PANEL_H, PANEL_W)``, row 0 = the top (Nyquist)."""
    power = _power(wave, n_fft, hop)
    bins, frames = power.shape
    freqs = np.arange(bins) * rate / n_fft
    top = rate / 2
    f_edges = F_LO * (top / F_LO) ** (np.arange(PANEL_H + 1) / PANEL_H)
    times = np.arange(frames) * hop
    t_edges = np.linspace(0, max(samples, 1), PANEL_W + 1)
    grid = _weights(freqs, f_edges) @ power @ _weights(times, t_edges).T
    return grid[::-1]


def render_view(
    tracks: list[np.ndarray | None], rate: int, *, stft: dict | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``(rgb (n·PANEL_H, PANEL_W, 3) uint8, outline (n·PANEL_H, PANEL_W) bool)`` for
    ``tracks`` = ``[original, listenable, residual, listenable of method 2, ...]``, each
    ``(channels, samples)`` or None (missing: a black panel, no outline)."""
    from matplotlib import colormaps

    n_fft, hop = stft_settings(rate, stft)
    samples = max((t.shape[-1] for t in tracks if t is not None), default=1)
    grids = [None if t is None else _grid(t, rate, n_fft, hop, samples) for t in tracks]
    reference = grids[0] if grids and grids[0] is not None else None
    ref = float(reference.max()) if reference is not None else 0.0
    if not ref > 0:
        ref = max((float(g.max()) for g in grids if g is not None), default=1.0) or 1.0
    lut = (colormaps["magma"](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.uint8)
    panels, outlines = [], []
    for k, grid in enumerate(grids):
        if grid is None:
            panels.append(np.zeros((PANEL_H, PANEL_W, 3), np.uint8))
            outlines.append(np.zeros((PANEL_H, PANEL_W), bool))
            continue
        db = 10 * np.log10(np.maximum(grid, 1e-30) / ref)
        level = np.clip((db + DB_RANGE) / DB_RANGE, 0.0, 1.0)
        panels.append(lut[np.round(level * 255).astype(np.int64)])
        kept = grids[1] if k in (0, 2) and len(grids) > 1 else grid  # its listenable track
        outlines.append(_outline(kept, reference, ref))
    return np.concatenate(panels), np.concatenate(outlines)


def _outline(kept: np.ndarray | None, reference: np.ndarray | None, ref: float) -> np.ndarray:
    if kept is None or reference is None:
        return np.zeros((PANEL_H, PANEL_W), bool)
    audible = reference > ref * 10 ** (-DB_RANGE / 10)
    inside = audible & (_smooth(kept) >= OUTLINE_POWER * _smooth(reference))
    core = inside.copy()
    core[1:] &= inside[:-1]
    core[:-1] &= inside[1:]
    core[:, 1:] &= inside[:, :-1]
    core[:, :-1] &= inside[:, 1:]
    return inside & ~core


def _smooth(grid: np.ndarray) -> np.ndarray:
    """3 × 3 mean: the outline follows regions, not single noisy cells (a lossy codec's)."""
    padded = np.pad(grid, 1, mode="edge")
    rows, cols = grid.shape
    return sum(padded[i : i + rows, j : j + cols] for i in range(3) for j in range(3)) / 9.0


def write_view(
    view_path: str | os.PathLike,
    outline_path: str | os.PathLike,
    tracks: list[np.ndarray | None],
    rate: int,
    *,
    stft: dict | None = None,
) -> None:
    """Render ``tracks`` (see :func:`render_view`) and write the view (WebP) and its
    outline (PNG), atomically."""
    from PIL import Image

    rgb, outline = render_view(tracks, rate, stft=stft)
    buffer = io.BytesIO()
    Image.fromarray(rgb, "RGB").save(buffer, "WEBP", quality=WEBP_QUALITY, method=6)
    _write_bytes(view_path, buffer.getvalue())
    mask = Image.fromarray(outline.astype(np.uint8), "P")
    mask.putpalette([0, 0, 0, *_OUTLINE_RGB])
    buffer = io.BytesIO()
    mask.save(buffer, "PNG", optimize=True, transparency=0, bits=1)
    _write_bytes(outline_path, buffer.getvalue())


def panel_count(path: str | os.PathLike) -> int | None:
    """How many panels the view image at ``path`` holds; None if it is not a view."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            width, height = image.size
    except (OSError, ValueError, SyntaxError):
        return None
    if width != PANEL_W or height % PANEL_H or not height:
        return None
    return height // PANEL_H


def _write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(Path(path)) as tmp:
        tmp.write_bytes(data)
