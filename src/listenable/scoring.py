"""Scoring a checkpoint on a data split: accuracy, per-class recall, confusion matrix.

A clip that cannot be loaded is recorded and left out; the others are still scored."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from listenable.atomic import write_json
from listenable.checkpoint import front_end_for
from listenable.data.datasets import Guarded, collate_clips, group_by_length
from listenable.errors import AudioError, DatasetError
from listenable.models import as_explainable

log = logging.getLogger(__name__)

__all__ = ["predict", "score", "write_score"]


def _as_list(batch):
    return batch


@torch.no_grad()
def predict(
    model,
    meta: dict,
    dataset,
    *,
    batch_size: int = 16,
    workers: int = 0,
    progress: Callable[[int], None] | None = None,
    failed: list[tuple[str, str]] | None = None,
) -> tuple[np.ndarray, np.ndarray, list]:
    """Probabilities ``(clips, classes)`` (the model's softmax or sigmoid), labels
    ``(clips,)`` and paths; clips loaded at the model's rate and channel count.

    Clips of different lengths in one batch run as separate sub-batches
    (:func:`~listenable.data.datasets.group_by_length`). A clip that cannot be loaded is
    left out of the results and appended to ``failed`` as ``(path, one-line error)``;
    with ``failed=None`` it raises its :class:`~listenable.errors.AudioError`.
    """
    model = as_explainable(model, front_end_for(meta) if meta else None)
    dataset.front_end = model.front_end.cpu()
    device = model.device
    loader = DataLoader(
        Guarded(dataset), batch_size=batch_size, num_workers=workers, collate_fn=_as_list
    )
    probs, labels, paths = [], [], []
    for batch in loader:
        good = []
        for wave, label, path, error in batch:
            if error is None:
                good.append((wave, label, path))
            elif failed is None:
                raise AudioError(error)
            else:
                log.info("not scored: %s", error)
                failed.append((path, error))
        batch_probs = [None] * len(good)  # back in data-set order after the sub-batches
        lengths = [wave.shape[-1] for wave, _, _ in good]
        for group in group_by_length(range(len(good)), lengths.__getitem__):
            wave, _, _ = collate_clips([good[i] for i in group])
            logits = model(model.inputs(wave.to(device)))
            for i, row in zip(group, model.probabilities(logits).cpu()):
                batch_probs[i] = row
        if good:
            probs.append(torch.stack(batch_probs))
            labels.append(torch.tensor([label for _, label, _ in good], dtype=torch.long))
            paths.extend(path for _, _, path in good)
        if progress:
            progress(len(batch))
    if not probs:
        n = len(model.class_names)
        return np.zeros((0, n), np.float32), np.zeros(0, np.int64), []
    return torch.cat(probs).numpy(), torch.cat(labels).numpy(), paths


def score(model, meta: dict, dataset, **kwargs) -> dict:
    """Accuracy, per-class recall and the confusion matrix of ``model`` on ``dataset``.

    The data set's classes are matched to the checkpoint's by name (``meta``: the
    checkpoint's metadata; ``None``: the model's own class names). A clip that cannot be
    loaded is not scored: it is listed under ``"failed"`` as ``{"path", "error"}``.
    """
    model = as_explainable(model, front_end_for(meta) if meta else None)
    names = list(meta["class_names"]) if meta else list(model.class_names)
    data_names = list(dataset.class_names)
    missing = [n for n in data_names if n not in names]
    if missing:
        raise DatasetError(f"data classes {missing} are not among the checkpoint's {names}")
    failed: list[tuple[str, str]] = []
    probs, labels, _ = predict(model, meta, dataset, failed=failed, **kwargs)
    true = np.array([names.index(data_names[i]) for i in labels], dtype=int)
    pred = probs.argmax(axis=1)
    n = len(names)
    confusion = np.zeros((n, n), dtype=int)
    np.add.at(confusion, (true, pred), 1)
    support = confusion.sum(axis=1)
    recall = {
        names[i]: (float(confusion[i, i] / support[i]) if support[i] else None) for i in range(n)
    }
    return {
        "clips": int(len(true)),
        "accuracy": float((pred == true).mean()) if len(true) else 0.0,
        "per_class_recall": recall,
        "class_names": names,
        "confusion": confusion.tolist(),
        "failed": [{"path": path, "error": error} for path, error in failed],
    }


def write_score(result: dict, out: Path) -> None:
    """``out/score.json`` and ``out/confusion.png``."""
    from listenable.report.figures import confusion_figure

    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "score.json", result)
    confusion_figure(
        out / "confusion.png",
        np.array(result["confusion"]),
        result["class_names"],
        title=f"accuracy {result['accuracy']:.3f} ({result['clips']} clips)",
    )
