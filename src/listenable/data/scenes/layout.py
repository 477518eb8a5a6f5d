"""The TAU 2019 development layout of a scenes folder: writing and reading it.

``audio/*.wav``, ``meta.csv``, ``evaluation_setup/fold1_*.csv``, ``events.csv`` and
``scenes.json``; see :func:`write_scenes`.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable
from pathlib import Path

import soundfile as sf

from listenable.atomic import atomic_path, write_text
from listenable.data.scenes.events import CLASSES, EVENT_TYPES, Event
from listenable.data.scenes.rendering import (
    DISTRACTOR_PROBABILITY,
    DISTRACTOR_SNR_DB,
    DURATION,
    SAMPLE_RATE,
    SIGNATURE_SNR_DB,
    SceneClip,
    render_clip,
)
from listenable.errors import DatasetError

__all__ = ["GENERATOR_VERSION", "write_scenes", "load_events", "read_manifest", "render_scene_file"]

log = logging.getLogger(__name__)

GENERATOR_VERSION = "1"
_EVENTS_HEADER = (
    "filename",
    "event_label",
    "onset_s",
    "offset_s",
    "low_hz",
    "high_hz",
    "left_gain",
    "right_gain",
    "role",
    "snr_db",
)


def _clip_name(seed: int, class_index: int, clip_index: int) -> str:
    """``audio/{scene}-{city}-{location}-{segment}-{device}.wav`` as TAU names its files."""
    return f"audio/{CLASSES[class_index]}-synth{seed}-{clip_index}-0-a.wav"


def _is_evaluate(clip_index: int, fraction: float) -> bool:
    """Spread ``round(n * fraction)`` of the first ``n`` clips evenly (1 of 3 for 0.3)."""
    return math.floor((clip_index + 1) * fraction + 0.5) > math.floor(clip_index * fraction + 0.5)


def write_scenes(
    out_dir: str | os.PathLike,
    *,
    clips_per_class: int = 50,
    seed: int = 0,
    evaluate_fraction: float = 0.3,
    sample_rate: int = SAMPLE_RATE,
    duration: float = DURATION,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write a synthetic data set in the TAU 2019 development layout; return ``out_dir``.

    Writes ``audio/*.wav`` (24-bit PCM), ``meta.csv``, ``evaluation_setup/fold1_{train,
    evaluate,test}.csv`` (tab-separated, with header, ``audio/`` prefix), ``events.csv``
    (``filename event_label onset_s offset_s low_hz high_hz left_gain right_gain role
    snr_db``) and ``scenes.json`` (settings and ``filename -> [seed, class_index,
    clip_index]``). Every file is written atomically. Resumable: audio files already there
    are kept (their events come from ``events.csv`` when it lists them, else the clip is
    rendered again), and text files whose content would not change are not rewritten.
    ``progress(n_done, n_total)`` is called after each clip.
    """
    out = Path(out_dir)
    check_counts(clips_per_class, evaluate_fraction, seed)
    settings = {
        "generator": "listenable.data.scenes",
        "version": GENERATOR_VERSION,
        "seed": int(seed),
        "sample_rate": int(sample_rate),
        "duration": float(duration),
    }
    known = _previous_events(out, settings)
    specs = [(c, i) for c in range(len(CLASSES)) for i in range(clips_per_class)]
    events: dict[str, list[Event]] = {}
    clips: dict[str, list[int]] = {}
    rendered = 0
    for done, (c, i) in enumerate(specs, start=1):
        name = _clip_name(seed, c, i)
        path = out / name
        clips[name] = [int(seed), c, i]
        if path.is_file() and name in known:
            events[name] = known[name]
        else:
            clip = render_clip(seed, c, i, sample_rate, duration)
            events[name] = clip.events
            if not path.is_file():
                with atomic_path(path) as tmp:
                    sf.write(str(tmp), clip.mixture.T, sample_rate, subtype="PCM_24")
            rendered += 1
            if rendered % 100 == 0:  # checkpoint, so that a killed run resumes cheaply
                _write_manifest(out, settings, clips_per_class, evaluate_fraction, events, clips)
        if progress is not None:
            progress(done, len(specs))
    _write_manifest(out, settings, clips_per_class, evaluate_fraction, events, clips)
    _write_tables(
        out,
        [
            (
                _clip_name(seed, c, i),
                CLASSES[c],
                f"synth{seed}-{i}",
                _is_evaluate(i, evaluate_fraction),
            )
            for c, i in specs
        ],
    )
    log.info("synthetic scenes in %s: %d clips (%d rendered)", out, len(specs), rendered)
    return out


def _write_manifest(out, settings, clips_per_class, evaluate_fraction, events, clips) -> None:
    _write_events(out, events)
    manifest = {
        **settings,
        "clips_per_class": clips_per_class,
        "evaluate_fraction": evaluate_fraction,
        "classes": list(CLASSES),
        "event_types": EVENT_TYPES,
        "signature_snr_db": list(SIGNATURE_SNR_DB),
        "distractor_snr_db": list(DISTRACTOR_SNR_DB),
        "distractor_probability": DISTRACTOR_PROBABILITY,
        "clips": {name: clips[name] for name in events},
    }
    _write_json(out / "scenes.json", manifest)


def _write_events(out: Path, events: dict[str, list[Event]]) -> None:
    """``events.csv``: one tab-separated row per event, clips in ``events``' order."""
    lines = ["\t".join(_EVENTS_HEADER)]
    for name, clip_events in events.items():
        for e in clip_events:
            lines.append(
                f"{name}\t{e.label}\t{e.onset_s:.6f}\t{e.offset_s:.6f}\t{e.low_hz:.3f}\t"
                f"{e.high_hz:.3f}\t{e.left_gain:.6f}\t{e.right_gain:.6f}\t{e.role}\t"
                f"{e.snr_db:.3f}"
            )
    _write_if_changed(out / "events.csv", lines)


def _write_json(path: Path, obj: dict) -> None:
    text = json.dumps(obj, indent=2) + "\n"
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        write_text(path, text)


def _write_tables(out: Path, rows: list[tuple[str, str, str, bool]]) -> None:
    """``meta.csv`` and ``evaluation_setup/fold1_{train,evaluate,test}.csv`` from
    ``(filename, scene_label, identifier, is_evaluate)`` rows (device ``a``)."""
    splits: dict[str, list[str]] = {"train": [], "evaluate": []}
    meta = []
    for name, label, identifier, evaluate in rows:
        row = f"{name}\t{label}"
        meta.append(f"{row}\t{identifier}\ta")
        splits["evaluate" if evaluate else "train"].append(row)
    _write_if_changed(out / "meta.csv", ["filename\tscene_label\tidentifier\tsource_label", *meta])
    setup = out / "evaluation_setup"
    for split, lines in splits.items():
        _write_if_changed(setup / f"fold1_{split}.csv", ["filename\tscene_label", *lines])
    test = [line.split("\t")[0] for line in splits["evaluate"]]
    _write_if_changed(setup / "fold1_test.csv", ["filename", *test])


def _write_if_changed(path: Path, lines: list[str]) -> None:
    text = "\n".join(lines) + "\n"
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return
    write_text(path, text)


def _previous_events(out: Path, settings: dict) -> dict[str, list[Event]]:
    """Events of a previous run into ``out`` with the same settings (for resuming)."""
    manifest_path = out / "scenes.json"
    if not manifest_path.is_file():
        return {}
    manifest = read_manifest(out)
    different = {k: (manifest.get(k), v) for k, v in settings.items() if manifest.get(k) != v}
    if different:
        detail = ", ".join(f"{k} {old!r} != {new!r}" for k, (old, new) in different.items())
        raise DatasetError(
            f"{manifest_path}: the folder holds scenes made with other settings ({detail}); "
            "write into a new folder"
        )
    if not (out / "events.csv").is_file():
        return {}
    clips = manifest.get("clips", {})
    return {name: ev for name, ev in load_events(out).items() if name in clips}


# --------------------------------------------------------------------------- reading


def read_manifest(root: str | os.PathLike) -> dict:
    """The ``scenes.json`` of a scenes folder (:func:`write_scenes`, :func:`~listenable.data.scenes.real.write_real_scenes`)."""
    path = Path(root) / "scenes.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DatasetError(f"{path}: not found (not a scenes folder?)") from None
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{path}: unreadable ({exc})") from None


def load_events(root: str | os.PathLike) -> dict[str, list[Event]]:
    """Read ``events.csv`` (in folder ``root``, or the file itself) -> filename -> events.

    Filenames keep the ``audio/`` prefix, as in ``meta.csv``.
    """
    path = Path(root)
    if path.is_dir():
        path = path / "events.csv"
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DatasetError(f"{path}: not found") from None
    header = lines[0].split("\t") if lines else []
    required = _EVENTS_HEADER[:-1]
    missing = [c for c in required if c not in header]
    if missing:
        raise DatasetError(f"{path}, line 1: header lacks {', '.join(missing)} (tab-separated)")
    col = {name: header.index(name) for name in header}
    events: dict[str, list[Event]] = {}
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.split("\t")
        try:
            row = {name: fields[i] for name, i in col.items()}
            event = Event(
                label=row["event_label"],
                role=row["role"],
                onset_s=float(row["onset_s"]),
                offset_s=float(row["offset_s"]),
                low_hz=float(row["low_hz"]),
                high_hz=float(row["high_hz"]),
                left_gain=float(row["left_gain"]),
                right_gain=float(row["right_gain"]),
                snr_db=float(row.get("snr_db", "nan")),
            )
        except (IndexError, ValueError) as exc:
            raise DatasetError(f"{path}, line {number}: malformed row ({exc})") from None
        events.setdefault(row["filename"], []).append(event)
    return events


def render_scene_file(root: str | os.PathLike, filename: str) -> SceneClip:
    """The clip ``filename`` (``audio/...wav``) of the data set in ``root`` with its
    background and isolated events: rendered again from ``scenes.json`` (synthetic scenes),
    or read from the clip and its stems (real scenes, :mod:`listenable.data.scenes.real`)."""
    manifest = read_manifest(root)
    key = filename if filename.startswith("audio/") else f"audio/{Path(filename).name}"
    if key not in manifest.get("clips", {}):
        raise DatasetError(f"{Path(root) / 'scenes.json'}: no clip {filename!r}")
    if manifest.get("sources", "synthetic") == "real":
        from listenable.data.scenes.real import read_real_clip

        return read_real_clip(root, key, manifest)
    seed, class_index, clip_index = manifest["clips"][key]
    return render_clip(seed, class_index, clip_index, manifest["sample_rate"], manifest["duration"])


def check_counts(clips_per_class: int, evaluate_fraction: float, seed: int) -> None:
    """Refuse a scenes set that cannot be written (both generators share the rule)."""
    if clips_per_class < 1 or not 0.0 <= evaluate_fraction < 1.0 or seed < 0:
        raise DatasetError(
            f"need clips_per_class >= 1, 0 <= evaluate_fraction < 1 and seed >= 0; got "
            f"{clips_per_class}, {evaluate_fraction}, {seed}"
        )
