"""Figures (matplotlib, headless): the paper's Fig. 1 per clip, Fig. 4-style class sheets,
confusion matrices and confidence histograms. Every figure is written atomically.

Text that comes from data (class names, clip ids) is shown literally: ``$`` would otherwise
switch matplotlib to mathtext (and unbalanced TeX in a class name would fail at draw time).
"""

from __future__ import annotations

import os
import warnings

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from listenable.atomic import atomic_path  # noqa: E402

__all__ = [
    "explanation_figure",
    "class_sheet",
    "confusion_figure",
    "confidence_histogram",
    "db_spectrogram",
]


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
    """``text`` as literal matplotlib text (no mathtext)."""
    return str(text).replace("$", r"\$")


def _save(fig, path) -> None:
    try:
        with warnings.catch_warnings():
            # class names in scripts the bundled font lacks: boxes, not an error
            warnings.filterwarnings("ignore", message=r"Glyph \d+ .*missing from font")
            warnings.filterwarnings("ignore", message=r"Matplotlib currently does not support")
            with atomic_path(path) as tmp:
                fig.savefig(tmp, dpi=90, bbox_inches="tight")
    finally:
        plt.close(fig)


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
    ``(bins, frames)`` on the STFT grid (heatmap normalised to [0, 1]).
    """
    power = spectrum.abs().square().mean(dim=0)
    db = db_spectrogram(power)
    masked_db = db_spectrogram(power * mask.square().cpu(), ref=float(power.max()))
    bins, frames = db.shape
    extent = [0, frames * hop_length / sample_rate, 0, sample_rate / 2000]
    fig, axes = plt.subplots(4, 1, figsize=(8, 9), sharex=True)
    panels = [
        ("spectrogram (dB)", db, "magma"),
        ("heatmap (mapped to STFT grid)", heatmap_grid.cpu().numpy(), "jet"),
        (None, None, None),
        ("masked spectrogram (listenable)", masked_db, "magma"),
    ]
    for ax, (name, img, cmap) in zip(axes, panels):
        if img is not None:
            ax.imshow(
                img,
                origin="lower",
                aspect="auto",
                extent=extent,
                cmap=cmap,
                interpolation="nearest",
            )
            ax.set_title(name, fontsize=9)
    axes[2].imshow(
        db, origin="lower", aspect="auto", extent=extent, cmap="gray", interpolation="nearest"
    )
    axes[2].imshow(
        heatmap_grid.cpu().numpy(),
        origin="lower",
        aspect="auto",
        extent=extent,
        cmap="jet",
        alpha=0.45,
        interpolation="nearest",
    )
    axes[2].set_title("superimposed", fontsize=9)
    for ax in axes:
        ax.set_ylabel("kHz")
    axes[-1].set_xlabel("time (s)")
    if title:
        fig.suptitle(_plain(title), fontsize=10)
    _save(fig, path)


def class_sheet(
    path: str | os.PathLike,
    spectra_masked: list[np.ndarray],
    titles: list[str],
    class_name: str,
    *,
    sample_rate: int = 48_000,
    hop_length: int = 1024,
) -> None:
    """A Fig. 4-style sheet: masked spectrograms (dB arrays ``(bins, frames)``) in a grid,
    up to four per row, each titled (clip id, confidence). An empty list gives a sheet
    that says so."""
    n = max(len(spectra_masked), 1)
    cols = min(n, 4)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(
        rows, cols, figsize=(3.2 * cols, 0.4 + 2.4 * rows), squeeze=False, layout="constrained"
    )
    for ax in axes.flat:
        ax.axis("off")
    if not spectra_masked:
        axes[0, 0].text(0.5, 0.5, "no selected clips", ha="center", va="center", fontsize=9)
    for ax, img, title in zip(axes.flat, spectra_masked, titles):
        bins, frames = img.shape
        ax.imshow(
            img,
            origin="lower",
            aspect="auto",
            cmap="magma",
            interpolation="nearest",
            extent=[0, frames * hop_length / sample_rate, 0, sample_rate / 2000],
        )
        ax.set_title(_plain(title), fontsize=7)
        ax.axis("on")
        ax.tick_params(labelsize=6)
        ax.set_xlabel("s", fontsize=6, labelpad=1)
        ax.set_ylabel("kHz", fontsize=6, labelpad=1)
    fig.suptitle(
        f"{_plain(class_name)}: masked spectrograms of the most confident clips", fontsize=9
    )
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
