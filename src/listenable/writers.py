"""Write one explanation to disk: its audio (listenable, residual and, for ``analyze``, the
original), a JSON record, the paper's figure and the gallery's spectrogram view.

The one writer of explanation outputs: :class:`OutputWriter` (``analyze`` makes one per run)
and :class:`ExplanationWriter`, which also explains files (``listenable explain``). Every
file is written atomically. An output never replaces an input and never goes through a
symbolic link inside the output folder. A clip whose writing fails leaves none of its
files behind, and a full disk is reported as ``OSError(ENOSPC)`` ("No space left on
device"), also where libsndfile only says "System error.".
"""

from __future__ import annotations

import errno
import logging
import math
import os
from pathlib import Path

import torch

from listenable.atomic import write_json
from listenable.errors import ListenableError
from listenable.explain import Explainer, Explanation
from listenable.io import load_for, write_audio

__all__ = ["ExplanationWriter", "OutputWriter", "explanation_record", "write_error_reason"]

log = logging.getLogger(__name__)

#: Free space (bytes) below which a libsndfile "System error." on a write means a full disk.
LOW_SPACE = 64 * 1024 * 1024
_SFE_SYSTEM = 2  # libsndfile's error code for a failed system call (write, seek)
_FULL = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))


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


def free_bytes(folder: str | os.PathLike) -> float:
    """Bytes an unprivileged process may still write in ``folder``'s file system (inf if
    that cannot be told)."""
    try:
        stat = os.statvfs(folder)
    except (OSError, AttributeError):
        return math.inf
    return float(stat.f_bavail * stat.f_frsize)


def _disk_full(exc: BaseException, folder: Path) -> bool:
    if isinstance(exc, OSError):
        return exc.errno in _FULL
    code = getattr(exc, "code", None)  # soundfile.LibsndfileError
    if type(exc).__name__ == "LibsndfileError" and code == _SFE_SYSTEM:
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        return free_bytes(folder) < LOW_SPACE
    return False


def write_error_reason(exc: BaseException) -> str:
    """One line on why writing outputs failed: ``no space left on device`` for a full disk
    (or quota), else the error's own first line."""
    if isinstance(exc, OSError) and exc.errno in _FULL:
        return "no space left on device"
    text = (str(exc).splitlines() or [""])[0]
    return text or type(exc).__name__


class OutputWriter:
    """Writes explanations into ``out``: ``<stem>.listenable<ext>``, ``<stem>.residual<ext>``
    (and ``<stem>.original<ext>`` with ``original``), ``<stem>.json``, and with ``figures``
    ``<stem>.png`` (the paper's Fig. 1) plus, with ``views``, the gallery's
    ``<stem>.view.webp`` and ``<stem>.outline.png``. ``stem`` may hold a folder
    (``park/clip``).

    ``audio_format`` None: 32-bit float WAV (nothing clipped); else a format of
    :mod:`listenable.report.audio` (``"ogg"``, ``"flac"``...). ``explainer`` draws the
    figures and names the classes of the record. No output may replace one of ``inputs``
    (pass every clip of the run: ``a.wav``'s ``a.listenable.wav`` could be another input).
    """

    def __init__(
        self,
        out: str | os.PathLike,
        explainer: Explainer | None = None,
        *,
        figures: bool = True,
        audio_format: str | None = None,
        original: bool = False,
        views: bool = False,
        inputs=(),
    ) -> None:
        self.out = Path(out)
        self.explainer = explainer
        self.class_names = list(explainer.class_names) if explainer is not None else []
        self.figures = figures
        self.audio_format = audio_format
        self.original = original
        self.views = views
        #: files no output may replace: every input of the run, not just the clip at hand
        self.inputs = {os.path.realpath(p) for p in inputs}
        if audio_format is not None:
            from listenable.report.audio import audio_suffix

            audio_suffix(audio_format)  # an unknown format: ValueError before any work

    @property
    def suffix(self) -> str:
        if self.audio_format is None:
            return ".wav"
        from listenable.report.audio import audio_suffix

        return audio_suffix(self.audio_format)

    def paths(self, stem: str) -> dict[str, Path]:
        """Where :meth:`write` puts the files of ``stem``, by kind."""
        kinds = (
            ("original", "listenable", "residual") if self.original else ("listenable", "residual")
        )
        paths = {kind: self.out / f"{stem}.{kind}{self.suffix}" for kind in kinds}
        paths["json"] = self.out / f"{stem}.json"
        if self.figures:
            paths["figure"] = self.out / f"{stem}.png"
            if self.views:
                paths["view"] = self.out / f"{stem}.view.webp"
                paths["outline"] = self.out / f"{stem}.outline.png"
        return paths

    def method_paths(self, stem: str, tag: str) -> dict[str, Path]:
        """Where another method's (``tag``) listenable and residual tracks of ``stem`` go."""
        return {
            kind: self.out / f"{stem}.{kind}.{tag}{self.suffix}"
            for kind in ("listenable", "residual")
        }

    def write(
        self,
        expl: Explanation,
        wave: torch.Tensor,
        stem: str,
        *,
        source: Path | None = None,
        extra: dict | None = None,
        record: dict | None = None,
        others: dict[str, Explanation] | None = None,
    ) -> dict[str, Path]:
        """Write ``expl`` of ``wave (channels, samples)`` as ``stem``; returns the paths by
        kind. ``record``: the JSON record (default :func:`explanation_record`); ``extra``
        is added to it. ``others``: ``{tag: explanation}`` of further methods, whose tracks
        go to :meth:`method_paths`. On failure every file of ``stem`` is removed again."""
        paths = self.paths(stem)
        more = {tag: self.method_paths(stem, tag) for tag in others or {}}
        every = [*paths.values(), *(p for m in more.values() for p in m.values())]
        self._check(every, source if source is not None else stem)
        try:
            tracks = {"listenable": expl.listenable, "residual": expl.residual}
            if self.original:
                tracks = {"original": wave, **tracks}
            for kind, track in tracks.items():
                self._audio(paths[kind], track, expl.sample_rate)
            for tag, other in (others or {}).items():
                for kind in ("listenable", "residual"):
                    self._audio(more[tag][kind], getattr(other, kind), other.sample_rate)
            if self.figures:
                figure_for(paths["figure"], expl, wave, self.explainer)
                if self.views:
                    self._view(paths, list(tracks.values()), expl.sample_rate)
            if record is None:
                record = explanation_record(expl, self.class_names)
            record = {
                **record,
                "source": str(source) if source is not None else None,
                "duration_s": wave.shape[-1] / expl.sample_rate,
                **(extra or {}),
            }
            write_json(paths["json"], record)
        except BaseException as exc:
            for path in every:  # none of the clip's files, old or new, stays behind
                try:
                    if path.is_file() and not path.is_symlink():
                        path.unlink()
                except OSError as cleanup:
                    log.warning("%s: cannot remove a partial output (%s)", path, cleanup)
            full = isinstance(exc, Exception) and not isinstance(exc, OSError)
            if full and _disk_full(exc, paths["json"].parent):  # libsndfile's "System error."
                raise OSError(
                    errno.ENOSPC, "No space left on device", str(paths["json"].parent)
                ) from exc
            raise
        return paths

    def _check(self, paths: list[Path], what) -> None:
        from listenable.manifest import refuse_links

        for p in paths:
            if os.path.realpath(p) in self.inputs or (
                isinstance(what, Path) and os.path.realpath(p) == os.path.realpath(what)
            ):
                raise ListenableError(f"{what}: output {p} would overwrite an input")
            refuse_links(self.out, p)

    def _audio(self, path: Path, track, rate: int) -> None:
        if self.audio_format is None:
            write_audio(path, track, rate)
        else:
            from listenable.report.audio import write_track

            write_track(path, track, rate, self.audio_format)

    def _view(self, paths: dict[str, Path], tracks: list, rate: int) -> None:
        from listenable.report.views import write_view

        grid = getattr(self.explainer, "listening", None)
        stft = {
            "n_fft": getattr(grid, "n_fft", None),
            "hop_length": getattr(grid, "hop_length", None),
        }
        waves = [t.detach().cpu().float().numpy() for t in tracks]
        write_view(paths["view"], paths["outline"], waves, rate, stft=stft)


class ExplanationWriter(OutputWriter):
    """Explain files one by one into ``out``: ``<stem>.listenable.wav``, ``<stem>.residual.wav``
    (32-bit float), ``<stem>.json`` and ``<stem>.png``. The audio is read and written at
    the model's rate and channel count.

    ``model`` is an :class:`~listenable.models.Explainable`, or a checkpoint's module with
    its metadata ``meta`` (then the front end it was trained with is used); ``settings`` go
    to the :class:`~listenable.explain.Explainer`."""

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

        explainer = Explainer(explainable_for(model, meta), **settings)
        super().__init__(out, explainer, figures=figures, inputs=inputs)
        self.target = target
        self._stems: set[str] = set()
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
