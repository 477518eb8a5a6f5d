"""Figures (matplotlib, headless): the paper's Fig. 1 per clip, Fig. 4-style class sheets,
confusion matrices and confidence histograms. Every figure is written atomically."""

from __future__ import annotations

import os

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


def _save(fig, path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, bbox_inches="tight")
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
        fig.suptitle(title, fontsize=10)
    _save(fig, path)


def class_sheet(
    path,
    spectra_masked: list[np.ndarray],
    titles: list[str],
    class_name: str,
    *,
    sample_rate: int = 48_000,
    hop_length: int = 1024,
) -> None:
    """A Fig. 4-style sheet: masked spectrograms (dB arrays ``(bins, frames)``) in a grid."""
    n = max(len(spectra_masked), 1)
    cols = min(n, 4)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
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
        ax.set_title(title, fontsize=7)
        ax.axis("on")
        ax.tick_params(labelsize=6)
    fig.suptitle(f"{class_name}: masked spectrograms of the most confident clips", fontsize=9)
    _save(fig, path)


def confusion_figure(path, matrix: np.ndarray, class_names: list[str], title: str = "") -> None:
    """Confusion matrix (rows: true, columns: predicted), counts in the cells."""
    matrix = np.asarray(matrix)
    n = len(class_names)
    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * n, 1.0 + 0.5 * n))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(n), class_names, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(n), class_names, fontsize=7)
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
                color="white" if matrix[i, j] > top / 2 else "black",
            )
    if title:
        ax.set_title(title, fontsize=9)
    _save(fig, path)


def confidence_histogram(path, confidences: list[float], threshold: float) -> None:
    """Histogram of the top-class confidences with the selection threshold marked."""
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.hist(confidences, bins=20, range=(0, 1), color="#4a7")
    ax.axvline(threshold, color="crimson", linestyle="--", label=f"threshold {threshold:g}")
    ax.set_xlabel("confidence (softmax of the predicted class)")
    ax.set_ylabel("clips")
    ax.legend(fontsize=8)
    _save(fig, path)
