"""Scoring a checkpoint on a data split: accuracy, per-class recall, confusion matrix."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from listenable.atomic import write_json
from listenable.checkpoint import front_end_for
from listenable.models import as_explainable

__all__ = ["predict", "score", "write_score"]


@torch.no_grad()
def predict(
    model,
    meta: dict,
    dataset,
    *,
    batch_size: int = 16,
    workers: int = 0,
    progress: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray, list]:
    """Probabilities ``(clips, classes)`` (the model's softmax or sigmoid), labels
    ``(clips,)`` and paths; clips loaded at the model's rate and channel count."""
    from listenable.data import collate_clips

    model = as_explainable(model, front_end_for(meta) if meta else None)
    dataset.front_end = model.front_end.cpu()
    device = model.device
    loader = DataLoader(
        dataset, batch_size=batch_size, num_workers=workers, collate_fn=collate_clips
    )
    probs, labels, paths = [], [], []
    for wave, label, path in loader:
        logits = model(model.inputs(wave.to(device)))
        probs.append(model.probabilities(logits).cpu())
        labels.append(label)
        paths.extend(path)
        if progress:
            progress(len(path))
    return torch.cat(probs).numpy(), torch.cat(labels).numpy(), paths


def score(model, meta: dict, dataset, **kwargs) -> dict:
    """Accuracy, per-class recall and the confusion matrix of ``model`` on ``dataset``.

    The data set's classes are matched to the checkpoint's by name.
    """
    names = list(meta["class_names"])
    probs, labels, _ = predict(model, meta, dataset, **kwargs)
    data_names = list(dataset.class_names)
    missing = [n for n in data_names if n not in names]
    if missing:
        from listenable.errors import DatasetError

        raise DatasetError(f"data classes {missing} are not among the checkpoint's {names}")
    true = np.array([names.index(data_names[i]) for i in labels])
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
