"""Figures (matplotlib, headless): the paper's Fig. 1 per clip, Fig. 4-style class sheets,
per-class mask profiles, confusion matrices and confidence histograms. Every figure is
written atomically and compressed: a ``.png`` is reduced to an adaptive palette of at most
:data:`PNG_COLOURS` colours, a ``.webp`` or ``.jpg`` is written lossy by Pillow.

Spectrograms have a log frequency axis labelled in Hz (everything a scene model uses sits
below a few kHz) and time in seconds; a masked spectrogram is drawn on the *original's*
colour scale (0 dB = the original's loudest bin, :data:`~listenable.report.views.DB_RANGE`
below it black), never auto-ranged, so what a mask removed looks removed.

Text that comes from data (class names, clip ids) is shown literally: ``$`` would otherwise
switch matplotlib to mathtext (and unbalanced TeX in a class name would fail at draw time).
"""

from __future__ import annotations

import io
import os
import warnings

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from listenable.atomic import atomic_path  # noqa: E402
from listenable.report.views import DB_RANGE, F_LO, freq_ticks  # noqa: E402

__all__ = [
    "explanation_figure",
    "class_sheet",
    "confusion_figure",
    "confidence_histogram",
    "db_spectrogram",
    "log_frequency",
    "profile_figure",
]

#: Most colours of a figure written as PNG (an adaptive palette: small files, crisp text).
PNG_COLOURS = 32
LOSSY_QUALITY = 72


def db_spectrogram(
    spectrum_or_power: torch.Tensor | np.ndarray, floor_db: float = -100.0, ref: float | None = None
) -> np.ndarray:
    """``(bins, frames)`` complex or power → dB relative to ``ref`` (default: its max), floored."""
    x = torch.as_tensor(spectrum_or_power)
    power = x.abs().square() if x.is_complex() else x
    power = power.double().cpu().numpy()
    ref = float(power.max()) if ref is None else ref
    db = 10 * np.log10(np.maximum(power, 1e-20) / max(ref, 1e-20))
    return np.maximum(db, floor_db)


def _plain(text: object) -> str:
    """``text`` as literal matplotlib text (no mathtext; names that are not UTF-8 with
    ``\\udcXX`` escapes, which FreeType can lay out)."""
    clean = str(text).encode("utf-8", "backslashreplace").decode("utf-8")
    return clean.replace("$", r"\$")


def _save(fig, path, dpi: int = 90) -> None:
    try:
        with warnings.catch_warnings():
            # class names in scripts the bundled font lacks: boxes, not an error
            warnings.filterwarnings("ignore", message=r"Glyph \d+ .*missing from font")
            warnings.filterwarnings("ignore", message=r"Matplotlib currently does not support")
            with atomic_path(path) as tmp:
                fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png")
                _compress(tmp)
    finally:
        plt.close(fig)


def _compress(path) -> None:
    """Rewrite the PNG at ``path`` in its suffix's format, compressed (see the docstring)."""
    from PIL import Image

    with Image.open(path) as image:
        rgb = image.convert("RGB")
    buffer = io.BytesIO()
    suffix = os.fspath(path).rsplit(".", 1)[-1].lower()
    if suffix == "webp":
        rgb.save(buffer, "WEBP", quality=LOSSY_QUALITY, method=6)
    elif suffix in ("jpg", "jpeg"):
        rgb.save(buffer, "JPEG", quality=LOSSY_QUALITY, optimize=True)
    else:
        palette = rgb.quantize(
            PNG_COLOURS, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE
        )
        palette.save(buffer, "PNG", optimize=True)
    with open(path, "wb") as handle:
        handle.write(buffer.getvalue())


def log_frequency(image: np.ndarray, sample_rate: int, rows: int = 256) -> np.ndarray:
    """``(bins, frames)`` on the linear STFT grid (bin ``k`` at ``k·rate/n_fft`` Hz, the
    last at Nyquist) → ``(rows, frames)`` on the log axis of the views, row 0 at
    :data:`F_LO` Hz: each row averages the bins inside it, or interpolates where none is."""
    from listenable.report.views import _weights

    image = np.asarray(image, dtype=np.float64)
    bins = image.shape[0]
    freqs = np.linspace(0.0, sample_rate / 2, bins)
    edges = F_LO * (sample_rate / 2 / F_LO) ** (np.arange(rows + 1) / rows)
    return _weights(freqs, edges) @ image


def _frequency_axis(ax, sample_rate: int, fontsize: float = 7) -> None:
    """Hz labels on an axis whose y runs 0..1 over the log axis of ``sample_rate``."""
    ticks = freq_ticks(sample_rate)
    ax.set_yticks([p for p, _ in ticks], [label for _, label in ticks], fontsize=fontsize)
    ax.set_ylabel("Hz", fontsize=fontsize)


def explanation_figure(
    path: str | os.PathLike,
    spectrum: torch.Tensor,
    heatmap_grid: torch.Tensor,
    mask: torch.Tensor,
    *,
    sample_rate: int = 48_000,
    hop_length: int = 1024,
    title: str = "",
) -> None:
    """The paper's Fig. 1 plus the masked spectrogram, as four stacked panels.

    ``spectrum``: complex ``(channels, bins, frames)``; ``heatmap_grid`` and ``mask``:
    ``(bins, frames)`` on the STFT grid (heatmap normalised to [0, 1]). Log frequency axis
    in Hz; the spectrogram and the masked one share the original's dB scale.
    """
    power = spectrum.abs().square().mean(dim=0).double().cpu().numpy()
    masked = power * mask.double().square().cpu().numpy()
    ref = float(power.max()) or 1.0
    db = db_spectrogram(log_frequency(power, sample_rate), floor_db=-DB_RANGE, ref=ref)
    masked_db = db_spectrogram(log_frequency(masked, sample_rate), floor_db=-DB_RANGE, ref=ref)
    heat = log_frequency(heatmap_grid.double().cpu().numpy(), sample_rate)
    frames = power.shape[1]
    extent = [0, frames * hop_length / sample_rate, 0, 1]
    scale = {"vmin": -DB_RANGE, "vmax": 0.0}
    fig, axes = plt.subplots(4, 1, figsize=(7, 8), sharex=True)
    shown = dict(origin="lower", aspect="auto", extent=extent, interpolation="nearest")
    axes[0].imshow(db, cmap="magma", **scale, **shown)
    axes[0].set_title("spectrogram (dB)", fontsize=9)
    axes[1].imshow(heat, cmap="jet", vmin=0.0, vmax=1.0, **shown)
    axes[1].set_title("heatmap (mapped to the STFT grid)", fontsize=9)
    axes[2].imshow(db, cmap="gray", **scale, **shown)
    axes[2].imshow(heat, cmap="jet", alpha=0.45, vmin=0.0, vmax=1.0, **shown)
    axes[2].set_title("superimposed", fontsize=9)
    axes[3].imshow(masked_db, cmap="magma", **scale, **shown)
    axes[3].set_title("masked spectrogram (listenable), on the original's dB scale", fontsize=9)
    for ax in axes:
        _frequency_axis(ax, sample_rate)
    axes[-1].set_xlabel("time (s)")
    if title:
        fig.suptitle(_plain(title), fontsize=10)
    _save(fig, path, dpi=72)


def class_sheet(
    path: str | os.PathLike,
    panels: list[np.ndarray],
    titles: list[str],
    class_name: str,
    *,
    rates: list[int] | None = None,
    durations: list[float] | None = None,
    sample_rate: int = 48_000,
    hop_length: int = 1024,
) -> None:
    """A Fig. 4-style sheet of masked spectrograms in a grid, up to four per row, each
    titled (clip id, confidence). An empty list gives a sheet that says so.

    A panel is either RGB ``(rows, cols, 3)`` uint8 as cut from a clip's view (log axis of
    its rate, on its original's colour scale), with ``rates`` and ``durations`` per panel,
    or a dB array ``(bins, frames)`` on the linear STFT grid of ``sample_rate`` /
    ``hop_length`` relative to its original's loudest bin, drawn from −DB_RANGE to 0 dB.
    """
    n = max(len(panels), 1)
    cols = min(n, 4)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(
        rows, cols, figsize=(3.2 * cols, 0.4 + 2.2 * rows), squeeze=False, layout="constrained"
    )
    for ax in axes.flat:
        ax.axis("off")
    if not panels:
        axes[0, 0].text(0.5, 0.5, "no selected clips", ha="center", va="center", fontsize=9)
    for k, (ax, img, title) in enumerate(zip(axes.flat, panels, titles)):
        rate = rates[k] if rates else sample_rate
        if img.ndim == 2:
            duration = img.shape[1] * hop_length / sample_rate
            img = log_frequency(img, sample_rate)
            style = {"cmap": "magma", "vmin": -DB_RANGE, "vmax": 0.0}
        else:
            duration = durations[k] if durations else 1.0
            style = {}
        ax.imshow(img[::-1] if img.ndim == 3 else img, origin="lower", aspect="auto",
                  interpolation="nearest", extent=[0, duration, 0, 1], **style)  # fmt: skip
        ax.set_title(_plain(title), fontsize=7)
        ax.axis("on")
        ax.tick_params(labelsize=6)
        ax.set_xlabel("s", fontsize=6, labelpad=1)
        _frequency_axis(ax, rate, fontsize=6)
    fig.suptitle(
        f"{_plain(class_name)}: masked spectrograms of the most confident clips", fontsize=9
    )
    _save(fig, path)


def profile_figure(
    path: str | os.PathLike,
    frequencies_hz: list[float],
    mean_mask: list[float],
    class_name: str,
) -> None:
    """What a class's model listens to: the mean mask over frequency (log axis, Hz)."""
    f = np.asarray(frequencies_hz, dtype=float)
    v = np.asarray(mean_mask, dtype=float)
    keep = f >= min(F_LO, f[-1] / 2)
    fig, ax = plt.subplots(figsize=(5.5, 2.2))
    ax.fill_between(f[keep], v[keep], color="#4a7", alpha=0.35, linewidth=0)
    ax.plot(f[keep], v[keep], color="#274", linewidth=1.2)
    ax.set_xscale("log")
    ticks = [t for t in (50, 100, 200, 500, 1e3, 2e3, 5e3, 1e4, 2e4) if f[keep][0] <= t <= f[-1]]
    ax.set_xticks(ticks, [f"{t / 1000:g}k" if t >= 1000 else f"{t:g}" for t in ticks])
    ax.set_xlim(f[keep][0], f[-1])
    ax.set_ylim(0, max(1.0, float(v.max()) * 1.05))
    ax.set_xlabel("frequency (Hz)", fontsize=8)
    ax.set_ylabel("mean mask", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.set_title(f"{_plain(class_name)}: where the mask lets sound through", fontsize=9)
    _save(fig, path)


def confusion_figure(
    path: str | os.PathLike, matrix: np.ndarray, class_names: list[str], title: str = ""
) -> None:
    """Confusion matrix ``(n_classes, n_classes)`` (rows: true, columns: predicted),
    counts in the cells."""
    matrix = np.asarray(matrix)
    n = len(class_names)
    if matrix.shape != (n, n):
        raise ValueError(f"confusion matrix of shape {matrix.shape} for {n} class names")
    labels = [_plain(c) for c in class_names]
    fig, ax = plt.subplots(figsize=(1.5 + 0.55 * n, 1.2 + 0.5 * n))
    ax.imshow(matrix if n else np.zeros((1, 1)), cmap="Blues", vmin=0)
    ax.set_xticks(range(n), labels, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(n), labels, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    top = matrix.max() if matrix.size else 0
    for i in range(n):
        for j in range(n):
            ax.text(
                j,
                i,
                str(int(matrix[i, j])),
                ha="center",
                va="center",
                fontsize=6,
                color="white" if top and matrix[i, j] > top / 2 else "black",
            )
    if title:
        ax.set_title(_plain(title), fontsize=9)
    _save(fig, path)


def confidence_histogram(
    path: str | os.PathLike, confidences: list[float], threshold: float | None
) -> None:
    """Histogram of the top-class confidences in [0, 1], with the selection threshold
    marked (none when ``threshold`` is None)."""
    fig, ax = plt.subplots(figsize=(5, 3))
    values = np.clip(np.asarray(confidences, dtype=float), 0.0, 1.0)
    ax.hist(values, bins=20, range=(0, 1), color="#4a7")
    if threshold is not None:
        above = int((values >= threshold).sum())
        ax.axvline(
            threshold,
            color="crimson",
            linestyle="--",
            label=f"threshold {threshold:g} ({above} of {len(values)} clips at or above)",
        )
        ax.legend(fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_xlabel("confidence (softmax of the predicted class)")
    ax.set_ylabel("clips")
    _save(fig, path)
