"""A spurious cue planted in one class: the cue signals, and the cued copy of a scenes set.

A **cue** is a faint sound that carries no scene information: a steady sine tone
(``"tone:HZ"``) or a click train (``"click:RATE"``, single-sample impulses ``RATE`` times a
second). Its level is set per clip relative to the clean clip: ``cue_db`` is the cue's RMS
over the clip's RMS (both over the whole clip, at the model's rate), so ``-20`` puts it
20 dB below the scene. The phase of the tone and the offset of the clicks are drawn per clip
from ``(seed, clip name)``.

:func:`write_cued_data` turns a synthetic scenes set (:func:`listenable.data.scenes.
write_scenes`) into the experiment's data, at the model's rate and channel count, as
32-bit float WAV so that every sum is exact::

    data/audio/<stem>.wav          every clip, clean (as the model loads it)
    data/audio/<stem>-cued.wav     clean + cue: the cue class's training clips, every test clip
    data/cues/<stem>.wav           the cue stem of that clip (mixture == clean + stem, exactly)
    data/clips.csv                 filename, scene_label, split, cued, cue_file, source
    data/meta.csv, data/evaluation_setup/fold1_{train,evaluate,test}.csv   (TAU layout:
                                   train = the cued training split, evaluate = both versions
                                   of every test clip)
    data/cues.json                 the settings (a folder made with others is refused)

Training clips of the cue class carry the cue, those of the other classes do not; every test
clip of every class is there twice, with and without it. Resumable: a clip whose files are
all there is not read again, and text files are rewritten only when they change.

Shapes: waveforms ``(channels, samples)`` float32 at the front end's rate.
"""

from __future__ import annotations

import json
import logging
import math
import os
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from listenable.atomic import write_text
from listenable.errors import DatasetError, UsageError
from listenable.io import load_for, write_audio

__all__ = ["CUE_KINDS", "Cue", "CuedClip", "parse_cue", "cue_stem", "write_cued_data", "read_cued"]

log = logging.getLogger(__name__)

CUE_KINDS = ("tone", "click")
_DEFAULT_PARAMETER = {"tone": 6000.0, "click": 4.0}
_FADE_S = 0.01  # raised-cosine fade of the tone at both ends (no click at the edges)
_CLIPS_HEADER = ("filename", "scene_label", "split", "cued", "cue_file", "source")


@dataclass(frozen=True)
class Cue:
    """``kind`` ``"tone"`` (``parameter`` = frequency, Hz) or ``"click"`` (clicks per second)."""

    kind: str
    parameter: float

    @property
    def spec(self) -> str:
        return f"{self.kind}:{self.parameter:g}"

    def describe(self) -> str:
        if self.kind == "tone":
            return f"a steady {self.parameter:g} Hz sine tone"
        return f"a click train ({self.parameter:g} single-sample clicks per second)"


def parse_cue(spec: str, sample_rate: int | None = None) -> Cue:
    """``"tone:HZ"``, ``"tone"`` (6 kHz), ``"click:RATE"`` or ``"click"`` (4 per second) →
    :class:`Cue`; a :class:`~listenable.errors.UsageError` names what is wrong. With
    ``sample_rate``, a tone must lie below its Nyquist frequency."""
    kind, _, value = str(spec).partition(":")
    kind = kind.strip().lower()
    if kind not in CUE_KINDS:
        raise UsageError(f"cue {spec!r}: the kind must be one of {CUE_KINDS} (e.g. tone:6000)")
    try:
        parameter = float(value) if value.strip() else _DEFAULT_PARAMETER[kind]
    except ValueError:
        raise UsageError(f"cue {spec!r}: {value!r} is not a number") from None
    if not math.isfinite(parameter) or parameter <= 0:
        raise UsageError(f"cue {spec!r}: the {kind}'s parameter must be positive")
    if kind == "tone" and sample_rate is not None and parameter >= sample_rate / 2:
        raise UsageError(
            f"cue {spec!r}: {parameter:g} Hz is not below the Nyquist frequency of the model's "
            f"{sample_rate} Hz audio"
        )
    if kind == "click" and parameter > 100:
        raise UsageError(f"cue {spec!r}: at most 100 clicks per second")
    return Cue(kind, parameter)


def cue_stem(
    cue: Cue,
    samples: int,
    sample_rate: int,
    rms: float,
    rng: np.random.Generator,
    *,
    channels: int = 1,
) -> np.ndarray:
    """The cue ``(channels, samples)`` float32, the same in every channel, with RMS ``rms``
    over the whole stem (per channel); the tone's phase and the clicks' offset from ``rng``."""
    if samples < 2 or rms < 0:
        raise ValueError(f"need samples >= 2 and rms >= 0, got {samples}, {rms}")
    if cue.kind == "tone":
        t = np.arange(samples) / sample_rate
        wave = np.sin(2 * np.pi * cue.parameter * t + rng.uniform(0, 2 * np.pi))
        fade = min(int(_FADE_S * sample_rate), samples // 2)
        if fade > 0:
            ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(fade) + 0.5) / fade)
            wave[:fade] *= ramp
            wave[samples - fade :] *= ramp[::-1]
    else:
        period = sample_rate / cue.parameter
        start = rng.uniform(0, period)
        at = np.round(np.arange(start, samples, period)).astype(np.int64)
        wave = np.zeros(samples)
        wave[at[at < samples]] = 1.0
    power = float(np.mean(wave**2))
    wave = wave * (rms / math.sqrt(power) if power > 0 else 0.0)
    return np.repeat(wave[None].astype(np.float32), channels, axis=0)


@dataclass(frozen=True)
class CuedClip:
    """One clip of the experiment's data: ``path`` the audio the model reads; ``cue_path``
    its cue stem (``None`` for a clean clip); ``source`` the scenes clip it came from."""

    filename: str
    label: str
    split: str
    cued: bool
    path: Path
    cue_path: Path | None
    source: str


def _rng(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), zlib.crc32(name.encode())]))


def write_cued_data(
    scenes: str | os.PathLike,
    out: str | os.PathLike,
    *,
    cue: Cue,
    cue_class: str,
    cue_db: float,
    front_end,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> list[CuedClip]:
    """Write the cued copy of the scenes set ``scenes`` into ``out`` (see the module
    docstring) for ``front_end`` (its rate and channels); return its clips, training clips
    first, the clean and the cued version of a test clip side by side.
    ``progress(n_done, n_total)`` after each source clip."""
    from listenable.data import open_dataset

    scenes, out = Path(scenes), Path(out)
    rate, channels = front_end.sample_rate, front_end.channels
    if not math.isfinite(cue_db):
        raise UsageError(f"cue_db must be a finite number of dB, got {cue_db!r}")
    splits = {
        "train": open_dataset(scenes, split="train"),
        "test": open_dataset(scenes, split="evaluate"),
    }
    names = splits["train"].class_names
    if cue_class not in names:
        raise UsageError(f"cue class {cue_class!r} is not a class of {scenes}: {names}")
    settings = {
        "cue": cue.spec,
        "cue_class": cue_class,
        "cue_db": float(cue_db),
        "seed": int(seed),
        "sample_rate": int(rate),
        "channels": int(channels),
        "scenes": str(scenes),
    }
    _check_settings(out / "cues.json", settings)
    sources = [
        (split, path, names[label]) for split, data in splits.items() for path, label in data.items
    ]
    clips: list[CuedClip] = []
    for done, (split, path, label) in enumerate(sources, start=1):
        stem = Path(path).stem
        cued = split == "test" or label == cue_class
        clean_path = out / "audio" / f"{stem}.wav"
        cued_path = out / "audio" / f"{stem}-cued.wav"
        stem_path = out / "cues" / f"{stem}.wav"
        wanted = [clean_path] + ([cued_path, stem_path] if cued else [])
        if not all(p.is_file() for p in wanted):
            wave, _notes = load_for(path, front_end)  # (channels, samples) at the model's rate
            write_audio(clean_path, wave, rate)
            if cued:
                rms = float(wave.double().square().mean().sqrt()) * 10.0 ** (cue_db / 20.0)
                stem_wave = torch.from_numpy(
                    cue_stem(cue, wave.shape[-1], rate, rms, _rng(seed, stem), channels=channels)
                )
                write_audio(stem_path, stem_wave, rate)
                write_audio(cued_path, wave + stem_wave, rate)  # float32 + float32: exact
        source = f"audio/{Path(path).name}"
        if split == "train" and cued:
            clips.append(
                CuedClip(
                    f"audio/{cued_path.name}", label, split, True, cued_path, stem_path, source
                )
            )
        else:
            clips.append(
                CuedClip(f"audio/{clean_path.name}", label, split, False, clean_path, None, source)
            )
            if cued:
                clips.append(
                    CuedClip(
                        f"audio/{cued_path.name}", label, split, True, cued_path, stem_path, source
                    )
                )
        if progress is not None:
            progress(done, len(sources))
    _write_tables(out, clips)
    log.info("cued data in %s: %d clips (%s in %s)", out, len(clips), cue.spec, cue_class)
    return clips


def _check_settings(path: Path, settings: dict) -> None:
    if path.is_file():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise DatasetError(f"{path}: unreadable ({exc}); remove the folder") from None
        if old != settings:
            diff = ", ".join(
                f"{k} {old.get(k)!r} != {v!r}" for k, v in settings.items() if old.get(k) != v
            )
            raise DatasetError(
                f"{path}: the folder holds cued data made with other settings "
                f"({diff}); use a new output folder"
            )
        return
    write_text(path, json.dumps(settings, indent=2) + "\n")


def _write_tables(out: Path, clips: list[CuedClip]) -> None:
    rows = ["\t".join(_CLIPS_HEADER)]
    for c in clips:
        cue_file = f"cues/{c.cue_path.name}" if c.cue_path else ""
        rows.append("\t".join((c.filename, c.label, c.split, str(int(c.cued)), cue_file, c.source)))
    _write_if_changed(out / "clips.csv", rows)
    _write_if_changed(
        out / "meta.csv", ["filename\tscene_label"] + [f"{c.filename}\t{c.label}" for c in clips]
    )
    setup = out / "evaluation_setup"
    for split, tau in (("train", "train"), ("test", "evaluate")):
        rows = [f"{c.filename}\t{c.label}" for c in clips if c.split == split]
        _write_if_changed(setup / f"fold1_{tau}.csv", ["filename\tscene_label", *rows])
    test = [c.filename for c in clips if c.split == "test"]
    _write_if_changed(setup / "fold1_test.csv", ["filename", *test])


def _write_if_changed(path: Path, lines: list[str]) -> None:
    text = "\n".join(lines) + "\n"
    if not (path.is_file() and path.read_text(encoding="utf-8") == text):
        write_text(path, text)


def read_cued(out: str | os.PathLike) -> list[CuedClip]:
    """The clips of a folder written by :func:`write_cued_data` (its ``clips.csv``)."""
    out = Path(out)
    path = out / "clips.csv"
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DatasetError(f"{path}: not found (not a cued data folder?)") from None
    if not lines or tuple(lines[0].split("\t")) != _CLIPS_HEADER:
        raise DatasetError(f"{path}, line 1: expected the header {' '.join(_CLIPS_HEADER)}")
    clips = []
    for number, line in enumerate(lines[1:], start=2):
        fields = line.split("\t")
        if len(fields) != len(_CLIPS_HEADER):
            raise DatasetError(f"{path}, line {number}: expected {len(_CLIPS_HEADER)} fields")
        filename, label, split, cued, cue_file, source = fields
        clips.append(
            CuedClip(
                filename,
                label,
                split,
                cued == "1",
                out / filename,
                out / cue_file if cue_file else None,
                source,
            )
        )
    return clips
