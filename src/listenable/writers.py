"""Write one explanation to disk: listenable and residual WAVs, a JSON record, a figure.

Used by ``listenable explain`` and by ``analyze``. Every file is written atomically; an
output never replaces an input.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from listenable.atomic import write_json
from listenable.errors import ListenableError
from listenable.explain import Explainer, Explanation
from listenable.io import load_for, write_audio

__all__ = ["ExplanationWriter", "explanation_record"]


def explanation_record(expl: Explanation, class_names: list[str]) -> dict:
    """The JSON-serialisable summary of one (unbatched) explanation."""
    probs = expl.probabilities.tolist()
    predicted = int(torch.as_tensor(expl.probabilities).argmax())
    return {
        "predicted": class_names[predicted],
        "confidence": probs[predicted],
        "probabilities": dict(zip(class_names, probs)),
        "target": expl.class_name,
        "target_index": int(expl.target),
        "mask_area": float(expl.mask_area),
        "empty_mask": bool(expl.empty),
        "settings": expl.settings,
        "layer": expl.layer,
        "geometry": expl.geometry.describe() if expl.geometry is not None else None,
        "notes": list(expl.notes),
    }


class ExplanationWriter:
    """Explain files one by one into ``out``: ``<stem>.listenable.wav``, ``<stem>.residual.wav``,
    ``<stem>.json`` and ``<stem>.png``. No output may replace one of ``inputs`` (pass every
    clip of the run: ``a.wav``'s ``a.listenable.wav`` could be another input). The audio is
    read and written at the model's rate and channel count.

    ``model`` is an :class:`~listenable.models.Explainable`, or a checkpoint's module with
    its metadata ``meta`` (then the front end it was trained with is used)."""

    def __init__(
        self,
        model,
        meta: dict | None,
        out: Path,
        *,
        target: str | None = None,
        figures: bool = True,
        inputs=(),
        **settings,
    ) -> None:
        from listenable.checkpoint import explainable_for

        self.explainer = Explainer(explainable_for(model, meta), **settings)
        self.class_names = list(self.explainer.class_names)
        self.out = Path(out)
        self.target = target
        self.figures = figures
        self._stems: set[str] = set()
        #: files no output may replace: every input of the run, not just the clip at hand
        self.inputs = {os.path.realpath(p) for p in inputs}
        if target is not None:
            self.explainer.target_index(target)  # unknown class: fail before any work

    def unique_stem(self, path: Path) -> str:
        stem, n = path.stem, 1
        while stem in self._stems:
            n += 1
            stem = f"{path.stem}-{n}"
        self._stems.add(stem)
        return stem

    def explain_file(self, path: Path, stem: str | None = None) -> str:
        """Explain one file and write its outputs; returns the output stem."""
        wave, notes = load_for(path, self.explainer.front_end)
        stem = stem or self.unique_stem(path)
        expl = self.explainer(wave[None], self.target).item(0)
        expl.notes = notes
        self.write(expl, wave, stem, source=path)
        return stem

    def write(
        self,
        expl: Explanation,
        wave: torch.Tensor,
        stem: str,
        *,
        source: Path | None = None,
        extra: dict | None = None,
    ) -> dict[str, Path]:
        out = self.out
        paths = {
            "listenable": out / f"{stem}.listenable.wav",
            "residual": out / f"{stem}.residual.wav",
            "json": out / f"{stem}.json",
            "figure": out / f"{stem}.png",
        }
        protected = self.inputs | ({os.path.realpath(source)} if source is not None else set())
        for p in paths.values():
            if os.path.realpath(p) in protected:
                raise ListenableError(f"{source or stem}: output {p} would overwrite an input")
        write_audio(paths["listenable"], expl.listenable, expl.sample_rate)
        write_audio(paths["residual"], expl.residual, expl.sample_rate)
        if self.figures:
            figure_for(paths["figure"], expl, wave, self.explainer)
        record = explanation_record(expl, self.class_names)
        record["source"] = str(source) if source is not None else None
        record["duration_s"] = wave.shape[-1] / expl.sample_rate
        record.update(extra or {})
        write_json(paths["json"], record)
        return paths


def figure_for(path: Path, expl: Explanation, wave: torch.Tensor, explainer: Explainer) -> None:
    """The paper's Fig. 1 (spectrogram, heatmap, superimposed) plus the masked spectrogram."""
    from listenable.masking import normalise
    from listenable.report.figures import explanation_figure

    stft = explainer.listening
    spectrum = stft(wave[None].to(stft.window.device))[0].cpu()
    grid = explainer.projection(expl.heatmap[None].to(stft.window.device), expl.geometry,
                                spectrum.shape[-1])  # fmt: skip
    normed, _ = normalise(grid.cpu())
    explanation_figure(
        path, spectrum, normed[0], expl.mask.cpu(), title=source_title(expl),
        sample_rate=stft.sample_rate, hop_length=stft.hop_length,
    )  # fmt: skip


def source_title(expl: Explanation) -> str:
    p = float(expl.probabilities[int(expl.target)])
    return (
        f"explained class: {expl.class_name} (p = {p:.2f}), mask area {float(expl.mask_area):.2f}"
    )
