"""Real scenes: events and backgrounds cut from recordings that Debian packages ship.

The design is the synthetic one (:mod:`listenable.data.scenes`), with recordings in place
of the generators:

* each class has one **signature event type** (:attr:`SourceTable.event_types`) with a list
  of source recordings; the train and evaluate clips cut their events from *different*
  recordings (the last ~30 % of each type's recordings, at least one, go to evaluate;
  files cut from one original recording stay on one side), or, for a type with a single
  recording, from different parts of it (the first 70 % for train, the rest for evaluate);
* 2-4 signature events a clip, planned, placed, panned and scaled to an SNR over their
  annotated box exactly as the synthetic events are, and with probability
  :data:`~listenable.data.scenes.DISTRACTOR_PROBABILITY` one distractor of another class;
* the **background** is cut from one shared pool of ambience recordings (the same pool for
  every class, so that it carries no class information): segments of random files at
  random offsets, joined by equal-power crossfades, the right channel a decorrelated copy
  (the same files at other offsets) mixed in at a random correlation, sometimes a second
  quieter layer, at a random level.

Every recording is read at its own rate, made mono, its mean removed, and resampled to
48 kHz (soxr). Clip ``i`` of class ``c`` depends only on ``(seed, c, i)`` and the source
files. The packages are fetched with ``apt-get download`` and extracted with
``dpkg-deb -x`` into a cache folder (reused on later runs), or read from a tree extracted
beforehand (``sources_dir``). The recordings themselves are never written to the data set;
each clip's exact stems are (``stems/<clip>.events.flac`` and
``stems/<clip>.distractors.flac``, 24-bit), so that :func:`read_real_clip` gives
``background = mixture - events - distractors`` without the sources.

Shapes: clips ``(2, N)``, recordings ``(N,)``, numpy float32 in a
:class:`~listenable.data.scenes.SceneClip`, float64 inside.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf

from listenable.atomic import atomic_path
from listenable.data.scenes.backgrounds import BACKGROUND_DBFS
from listenable.data.scenes.layout import (
    _is_evaluate,
    _previous_events,
    _write_events,
    _write_if_changed,
    _write_json,
    _write_tables,
    check_counts,
    load_events,
    read_manifest,
)
from listenable.data.scenes.recordings import RealSources, fetch_packages, load_sources
from listenable.data.scenes.rendering import (
    _MARGIN_S,
    DISTRACTOR_PROBABILITY,
    DISTRACTOR_SNR_DB,
    DURATION,
    SAMPLE_RATE,
    SIGNATURE_SNR_DB,
    SceneClip,
    _add_event,
    _finish,
    _plan_events,
)
from listenable.data.scenes.signals import _rms
from listenable.data.scenes.sources import (
    DEBIAN_SOURCES,
    REAL_CLASSES,
    REAL_EVENT_TYPES,
    Package,
    SourceFile,
    SourceTable,
)
from listenable.errors import DatasetError

__all__ = [
    "DEBIAN_SOURCES",
    "REAL_CLASSES",
    "REAL_EVENT_TYPES",
    "Package",
    "RealSources",
    "SourceFile",
    "SourceTable",
    "fetch_packages",
    "load_sources",
    "read_real_clip",
    "render_real_clip",
    "write_real_scenes",
]

log = logging.getLogger(__name__)

REAL_GENERATOR_VERSION = "1"
_CROSSFADE_S = 0.25  # between background segments
_SEGMENT_S = (2.5, 6.0)  # background segments


# --------------------------------------------------------------------------- rendering


def render_real_clip(
    sources: RealSources,
    seed: int,
    class_index: int,
    clip_index: int,
    *,
    split: str = "train",
    duration: float = DURATION,
) -> tuple[SceneClip, dict]:
    """Clip ``clip_index`` of class ``sources.table.classes[class_index]``, its events cut
    from the ``split`` recordings; and its provenance ``{"events": [[file id, offset_s,
    length_s], ...] (in the order drawn), "background": [[file id, layer, channel,
    start_s, offset_s, length_s], ...]}``. Deterministic for the same arguments and sources.
    """
    table = sources.table
    if not 0 <= class_index < len(table.classes):
        raise DatasetError(f"class_index {class_index} outside 0..{len(table.classes) - 1}")
    if seed < 0 or clip_index < 0 or split not in ("train", "evaluate"):
        raise DatasetError(
            f"need seed, clip_index >= 0 and split train|evaluate, got {seed}, {clip_index}, {split!r}"
        )
    if duration < 1.0:
        raise DatasetError(f"need duration >= 1 s, got {duration} s")
    sr = sources.sample_rate
    n = int(round(duration * sr))
    bg_seq, ev_seq = np.random.SeedSequence([seed, class_index, clip_index]).spawn(2)
    background, bg_used = _background(np.random.default_rng(bg_seq), sources, n)
    rng = np.random.default_rng(ev_seq)

    kind = table.event_types[table.classes[class_index]]
    event_audio = np.zeros((2, n))
    distractor_audio = np.zeros((2, n))
    events, used = [], []
    for onset, length in _plan_events(rng, table.durations[kind], n, sr):
        snr = rng.uniform(*SIGNATURE_SNR_DB)
        mono, where = sources.cut_event(rng, kind, split, length)
        events.append(
            _add_event(rng, mono, kind, "signature", onset, snr, background, event_audio, sr)
        )
        used.append(where)
    k = len(table.classes)
    if rng.random() < DISTRACTOR_PROBABILITY:
        other = table.event_types[table.classes[(class_index + rng.integers(1, k)) % k]]
        lo, hi = table.durations[other]
        hi = min(hi, 2.0, duration / 3)
        length = int(rng.uniform(min(lo, hi), hi) * sr)
        margin = int(_MARGIN_S * sr)
        onset = int(rng.integers(margin, max(margin + 1, n - margin - length)))
        snr = rng.uniform(*DISTRACTOR_SNR_DB)
        mono, where = sources.cut_event(rng, other, split, length)
        events.append(
            _add_event(rng, mono, other, "distractor", onset, snr, background, distractor_audio, sr)
        )
        used.append(where)
    clip = _finish(
        background,
        event_audio,
        distractor_audio,
        events,
        (seed, class_index, clip_index),
        sr,
        table.classes,
    )
    return clip, {"events": used, "background": bg_used}


def _background(rng, sources: RealSources, n: int) -> tuple[np.ndarray, list]:
    """Stereo ambience ``(2, n)`` from the shared pool at a random RMS level (dBFS)."""
    out = np.zeros((2, n))
    used = []
    for layer in range(1 + int(rng.random() < 0.6)):
        left, right, where = _ambience(rng, sources, n)
        rho = rng.uniform(0.2, 0.9)
        gain = 1.0 if layer == 0 else 10 ** (rng.uniform(-12.0, -3.0) / 20)
        out[0] += gain * left
        out[1] += gain * (rho * left + math.sqrt(1 - rho**2) * right)
        used += [[w[0], layer, *w[1:]] for w in where]
    level = 10 ** (rng.uniform(*BACKGROUND_DBFS) / 20)
    return out * (level / _rms(out)), used


def _ambience(rng, sources: RealSources, n: int) -> tuple[np.ndarray, np.ndarray, list]:
    """Two channels ``(n,)`` of random pool segments joined by equal-power crossfades, each
    at the level of its whole recording +-3 dB; the second channel cuts the same recordings
    at other offsets (segments are at most 3/4 of a recording). Provenance ``[file id, channel, start_s, offset_s, length_s]``."""
    sr = sources.sample_rate
    xf = int(_CROSSFADE_S * sr)
    channels = np.zeros((2, n))
    used = []
    pos = 0
    first = True
    while pos < n:
        f = sources.background[int(rng.integers(len(sources.background)))]
        audio = sources.audio[f.id]
        # at most 3/4 of the recording, so that the two channels can cut it at other offsets
        m = min(
            len(audio) * 3 // 4, int(rng.uniform(*_SEGMENT_S) * sr), n - pos + (0 if first else xf)
        )
        fade = min(xf, m // 3)
        gain = 10 ** (rng.uniform(-3.0, 3.0) / 20) / _rms(audio)
        start = pos if first else pos - fade
        ramp = np.sin(0.5 * np.pi * (np.arange(fade) + 0.5) / fade) if fade else np.ones(0)
        window = np.ones(m)
        if not first:
            window[:fade] = ramp
        if start + m < n:
            window[m - fade :] = ramp[::-1]
        for channel in range(2):
            offset = int(rng.integers(0, len(audio) - m + 1))
            piece = audio[offset : offset + m] * gain * window
            end = min(n, start + m)
            channels[channel, start:end] += piece[: end - start]
            used.append(
                [f.id, channel, round(start / sr, 6), round(offset / sr, 6), round(m / sr, 6)]
            )
        pos = start + m
        first = False
    return channels[0], channels[1], used


# --------------------------------------------------------------------------- writing


def _clip_name(seed: int, label: str, clip_index: int) -> str:
    return f"audio/{label}-real{seed}-{clip_index}-0-a.wav"


def _stem_paths(root: Path, name: str) -> tuple[Path, Path]:
    stem = Path(name).stem
    return root / "stems" / f"{stem}.events.flac", root / "stems" / f"{stem}.distractors.flac"


def write_real_scenes(
    out_dir: str | os.PathLike,
    *,
    clips_per_class: int = 50,
    seed: int = 0,
    evaluate_fraction: float = 0.3,
    sources_dir: str | os.PathLike | None = None,
    sources_cache: str | os.PathLike | None = None,
    table: SourceTable = DEBIAN_SOURCES,
    sample_rate: int = SAMPLE_RATE,
    duration: float = DURATION,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write a data set of real scenes in the TAU 2019 development layout; return ``out_dir``.

    The same files as :func:`~listenable.data.scenes.write_scenes` (``audio/*.wav``,
    ``meta.csv``, ``evaluation_setup/``, ``events.csv``, ``scenes.json`` with
    ``"sources": "real"``, the packages, the recordings used and each clip's provenance),
    plus ``stems/<clip>.{events,distractors}.flac`` and ``CREDITS.md``. The recordings come
    from ``sources_dir`` (extracted packages) or are fetched into ``sources_cache``
    (default ``out_dir/.sources``), only when some clip has to be rendered. Resumable as
    :func:`~listenable.data.scenes.write_scenes`: files already there are kept.
    """
    out = Path(out_dir)
    check_counts(clips_per_class, evaluate_fraction, seed)
    settings = {
        "generator": "listenable.data.scenes.real",
        "version": REAL_GENERATOR_VERSION,
        "sources": "real",
        "source_table": table.name,
        "seed": int(seed),
        "sample_rate": int(sample_rate),
        "duration": float(duration),
    }
    sizes = {"clips_per_class": clips_per_class, "evaluate_fraction": evaluate_fraction}
    known = _previous_events(out, settings)
    previous = read_manifest(out) if (out / "scenes.json").is_file() else {}
    known_provenance = previous.get("provenance", {})
    cache = Path(sources_cache) if sources_cache is not None else out / ".sources"
    sources: RealSources | None = None
    specs = [(c, i) for c in range(len(table.classes)) for i in range(clips_per_class)]
    events: dict[str, list] = {}
    clips: dict[str, list[int]] = {}
    provenance: dict[str, dict] = {}
    rendered = 0
    for done, (c, i) in enumerate(specs, start=1):
        name = _clip_name(seed, table.classes[c], i)
        path = out / name
        stems = _stem_paths(out, name)
        clips[name] = [int(seed), c, i]
        kept = path.is_file() and all(p.is_file() for p in stems)
        if kept and name in known and name in known_provenance:
            events[name], provenance[name] = known[name], known_provenance[name]
        else:
            if sources is None:
                sources = load_sources(
                    sources_dir=sources_dir, cache=cache, table=table, sample_rate=sample_rate
                )
            split = "evaluate" if _is_evaluate(i, evaluate_fraction) else "train"
            clip, provenance[name] = render_real_clip(
                sources, seed, c, i, split=split, duration=duration
            )
            events[name] = clip.events
            for target, audio in (
                (path, clip.mixture),
                (stems[0], clip.event_audio),
                (stems[1], clip.distractor_audio),
            ):
                if not target.is_file():
                    with atomic_path(target) as tmp:
                        sf.write(str(tmp), audio.T, sample_rate, subtype="PCM_24")
            rendered += 1
            if rendered % 100 == 0:  # checkpoint, so that a killed run resumes cheaply
                _write_manifest(
                    out, settings, table, sources, previous, sizes, events, clips, provenance
                )
        if progress is not None:
            progress(done, len(specs))
    _write_manifest(out, settings, table, sources, previous, sizes, events, clips, provenance)
    _write_tables(
        out,
        [
            (
                _clip_name(seed, table.classes[c], i),
                table.classes[c],
                f"real{seed}-{i}",
                _is_evaluate(i, evaluate_fraction),
            )
            for c, i in specs
        ],
    )
    log.info("real scenes in %s: %d clips (%d rendered)", out, len(specs), rendered)
    return out


def _write_manifest(out, settings, table, sources, previous, sizes, events, clips, provenance):
    """``events.csv``, ``scenes.json`` and ``CREDITS.md`` for the clips in ``events``."""
    _write_events(out, events)
    used = sorted(
        {
            p[0]
            for name in events
            for kind in ("events", "background")
            for p in provenance[name][kind]
        }
    )
    if sources is not None:
        packages = {
            p.name: {
                "version": sources.versions[p.name],
                "copyright": p.copyright,
                "licence": p.licence,
                "copyright_file": f"usr/share/doc/{p.name}/copyright",
            }
            for p in table.packages
        }
        files = {file_id: sources.describe(file_id) for file_id in used}
    else:  # nothing rendered this run: what the previous run recorded
        packages = previous.get("packages", {})
        files = {k: v for k, v in previous.get("source_files", {}).items() if k in used}
    manifest = {
        **settings,
        **sizes,
        "classes": list(table.classes),
        "event_types": dict(table.event_types),
        "signature_snr_db": list(SIGNATURE_SNR_DB),
        "distractor_snr_db": list(DISTRACTOR_SNR_DB),
        "distractor_probability": DISTRACTOR_PROBABILITY,
        "stems": "stems/<clip>.events.flac, stems/<clip>.distractors.flac (24-bit); "
        "background = mixture - events - distractors",
        "packages": packages,
        "source_files": files,
        "clips": {name: clips[name] for name in events},
        "provenance": {name: provenance[name] for name in events},
    }
    _write_json(out / "scenes.json", manifest)
    _write_if_changed(out / "CREDITS.md", _credits(packages, files))


def _credits(packages: dict, files: dict) -> list[str]:
    lines = [
        "# Credits",
        "",
        "The clips of this folder are mixtures of cuts of the recordings below, resampled, "
        "scaled and panned by listenable (`listenable scenes --sources real`). They are "
        "adaptations of those recordings, under the licences stated here; the ShareAlike "
        "licences apply to the clips too.",
        "",
        "## Packages",
        "",
    ]
    for name, p in packages.items():
        lines += [
            f"### {name} {p['version']}",
            "",
            f"- Copyright: {p['copyright']}",
            f"- Licence: {p['licence']}",
            f"- As stated in: {p['copyright_file']} (Debian package {name})",
            "",
        ]
    lines += [
        "## Recordings used",
        "",
        "| file | kind | credit | licence |",
        "| --- | --- | --- | --- |",
    ]
    for file_id, f in files.items():
        cells = [file_id, f["kind"], f["credit"], f["licence"]]
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return lines


# --------------------------------------------------------------------------- reading


def read_real_clip(
    root: str | os.PathLike, filename: str, manifest: dict | None = None
) -> SceneClip:
    """The clip ``filename`` (``audio/...wav``) of the real scenes in ``root`` and its
    parts: the mixture as written, the events and distractors from their stems, and
    ``background = mixture - events - distractors``. The sources are not needed."""
    root = Path(root)
    manifest = read_manifest(root) if manifest is None else manifest
    if filename not in manifest.get("clips", {}):
        raise DatasetError(f"{root / 'scenes.json'}: no clip {filename!r}")
    seed, class_index, clip_index = manifest["clips"][filename]
    rate = manifest["sample_rate"]
    parts = []
    for path in (root / filename, *_stem_paths(root, filename)):
        try:
            audio, sr = sf.read(str(path), dtype="float64", always_2d=True)
        except (sf.LibsndfileError, RuntimeError) as exc:
            raise DatasetError(f"{path}: missing or unreadable ({exc})") from None
        if sr != rate or (parts and audio.T.shape != parts[0].shape):
            raise DatasetError(
                f"{path}: {sr} Hz {audio.shape[::-1]}, expected {rate} Hz and the clip's shape"
            )
        parts.append(audio.T)
    mixture, event_audio, distractor_audio = parts
    events = load_events(root).get(filename)
    if events is None:
        raise DatasetError(f"{root / 'events.csv'}: no events for {filename}")
    background = mixture - event_audio - distractor_audio
    return SceneClip(
        mixture.astype(np.float32),
        background.astype(np.float32),
        event_audio.astype(np.float32),
        distractor_audio.astype(np.float32),
        events=events,
        class_index=class_index,
        sample_rate=rate,
        spec=(seed, class_index, clip_index),
        classes=tuple(manifest["classes"]),
    )
