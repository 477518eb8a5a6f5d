"""One clip of the gallery: its tracks (original, listenable, residual, and the listenable
track of every further method), their audio properties, its spectrogram view, its scores.

:func:`clip_context` turns a manifest row into the plain dict the page templates render;
see :mod:`listenable.report` for the row format it reads.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from pathlib import Path, PurePosixPath

import numpy as np

from listenable.report import views

__all__ = ["MAX_METHODS", "TRACKS", "clip_context", "safe_rel", "number"]

log = logging.getLogger(__name__)

TRACKS = ("original", "listenable", "residual")
#: Further methods shown per clip (panels and buttons); more are left out with a warning.
MAX_METHODS = 12
MAX_SCORES = 12
VIEWS = "figures/views"
_VIEW_VERSION = "1"


def number(value, default=None):
    """``value`` as a finite float, else ``default`` (booleans are not numbers)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return default
    return float(value) if math.isfinite(value) else default


def safe_rel(out: Path, rel) -> str | None:
    """``rel`` if it is a relative path inside ``out`` to an existing file, else None."""
    if not isinstance(rel, str) or not rel or "\\" in rel or rel.startswith(("/", "~")):
        return None
    posix = PurePosixPath(rel)
    if ".." in posix.parts or ":" in posix.parts[0]:
        return None
    return rel if (out / posix).is_file() else None


def _scores(value) -> list[tuple[str, float]]:
    """``{name: number}`` → ``[(name, value)]``, finite numbers only, at most MAX_SCORES."""
    if not isinstance(value, dict):
        return []
    pairs = [(str(k), number(v)) for k, v in value.items()]
    return [(k, v) for k, v in pairs if v is not None][:MAX_SCORES]


def _tracks(out: Path, row: dict, primary: str) -> tuple[list[dict], list[dict]]:
    """The player's tracks and the methods to compare (the primary method first)."""
    files = row.get("files") if isinstance(row.get("files"), dict) else {}
    tracks = [
        {"kind": kind, "label": kind, "method": None if kind == "original" else primary,
         "src": safe_rel(out, files.get(kind))}
        for kind in TRACKS
    ]  # fmt: skip
    methods = [
        {"name": primary, "panel": 1, "mask_area": number(row.get("mask_area")),
         "scores": _scores(row.get("scores")), "residual": tracks[2]["src"]}
    ]  # fmt: skip
    extra = row.get("methods") if isinstance(row.get("methods"), dict) else {}
    for name, entry in extra.items():
        name = str(name)
        if name == primary or not isinstance(entry, dict):
            continue
        if len(methods) > MAX_METHODS:
            log.warning("%s: more than %d methods, the rest left out", row["clip_id"], MAX_METHODS)
            break
        mfiles = entry.get("files") if isinstance(entry.get("files"), dict) else {}
        tracks.append(
            {"kind": "listenable", "label": f"listenable · {name}", "method": name,
             "src": safe_rel(out, mfiles.get("listenable"))}
        )  # fmt: skip
        methods.append(
            {"name": name, "panel": len(tracks) - 1, "mask_area": number(entry.get("mask_area")),
             "scores": _scores(entry.get("scores")), "residual": safe_rel(out, mfiles.get("residual"))}
        )  # fmt: skip
    return tracks, methods


def _info(path: Path, cache: dict) -> tuple[int, int, int] | None:
    """``(rate, channels, frames)`` of an audio file, None if soundfile cannot read it."""
    if path not in cache:
        import soundfile as sf

        try:
            info = sf.info(os.fsencode(path))
            cache[path] = (int(info.samplerate), int(info.channels), int(info.frames))
        except Exception as exc:  # a broken file must not stop the gallery
            log.warning("%s: cannot read (%s)", path, exc)
            cache[path] = None
    return cache[path]


def clip_context(
    out: Path,
    row: dict,
    *,
    primary: str,
    stft: dict | None = None,
    info_cache: dict | None = None,
    slug=None,
) -> dict:
    """What a page needs to show one listed clip (see the module docstring)."""
    cache = {} if info_cache is None else info_cache
    tracks, methods = _tracks(out, row, primary)
    infos = [_info(out / t["src"], cache) if t["src"] else None for t in tracks]
    first = next((i for i in infos if i is not None), None)
    for track, info in zip(tracks, infos):
        if track["src"] and info is None:
            track["src"] = None  # listed but not decodable: shown as missing
    rate, channels, frames = first or (0, 0, 0)
    duration = frames / rate if rate else 0.0
    files = row.get("files") if isinstance(row.get("files"), dict) else {}
    clip_stft = row.get("stft") if isinstance(row.get("stft"), dict) else stft
    view = _view(out, row, tracks, rate, clip_stft) if first else None
    correct = row.get("correct")
    confidence = number(row.get("confidence"))
    area = number(row.get("mask_area"))
    return {
        "id": str(row["clip_id"]),
        "anchor": "clip-" + (slug or _anchor)(str(row["clip_id"])),
        "label": row.get("label"),
        "correct": correct if isinstance(correct, bool) else None,
        "confidence": confidence,
        "mask_area": area,
        "empty_mask": bool(row.get("empty_mask")),
        "rate": rate,
        "channels": channels,
        "duration": duration,
        "tracks": tracks,
        "methods": methods,
        "view": view,
        "json": safe_rel(out, files.get("json")),
        "figure": safe_rel(out, files.get("figure")),
    }


def _anchor(clip_id: str) -> str:
    return hashlib.sha256(clip_id.encode("utf-8", "surrogatepass")).hexdigest()[:12]


def _view(out: Path, row: dict, tracks: list[dict], rate: int, stft) -> dict | None:
    """``{"image", "outline", "panels"}`` of the clip's view: the row's own when it has as
    many panels as tracks, else one drawn from the audio files (kept between builds)."""
    files = row.get("files") if isinstance(row.get("files"), dict) else {}
    image, outline = safe_rel(out, files.get("view")), safe_rel(out, files.get("outline"))
    if image and outline and views.panel_count(out / image) == len(tracks):
        return {"image": image, "outline": outline, "panels": len(tracks)}
    sources = [t["src"] for t in tracks]
    key = json.dumps([str(row["clip_id"]), sources, stft, _VIEW_VERSION], ensure_ascii=True)
    name = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:24]
    image, outline = f"{VIEWS}/{name}.webp", f"{VIEWS}/{name}.outline.png"
    newest = max((os.stat(out / s).st_mtime for s in sources if s), default=0.0)
    if all((out / p).is_file() and os.stat(out / p).st_mtime >= newest for p in (image, outline)):
        return {"image": image, "outline": outline, "panels": len(tracks)}
    waves = [_decode(out / s, rate) if s else None for s in sources]
    if all(w is None for w in waves):
        return None
    try:
        views.write_view(out / image, out / outline, waves, rate, stft=stft)
    except Exception as exc:  # a broken file must not stop the gallery
        log.warning("%s: no spectrogram view (%s)", row["clip_id"], exc)
        return None
    return {"image": image, "outline": outline, "panels": len(tracks)}


def _decode(path: Path, rate: int) -> np.ndarray | None:
    import soundfile as sf

    try:
        data, file_rate = sf.read(os.fsencode(path), dtype="float32", always_2d=True)
    except Exception as exc:
        log.warning("%s: cannot decode (%s)", path, exc)
        return None
    if file_rate != rate or not data.size:
        log.warning("%s: %d Hz, not the clip's %d Hz; left out of its view", path, file_rate, rate)
        return None
    return np.ascontiguousarray(data.T)
