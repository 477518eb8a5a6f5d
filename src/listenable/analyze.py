"""The paper's experiment as one resumable run: explain every clip of a data split, keep the
confident ones, write their listenable audio and figures, and a manifest of everything.

Layout of ``out``::

    manifest.jsonl           one line per clip (the last line of a clip_id wins)
    summary.json             per class: clips, selected, accuracy; settings; clips/s
    <class>/<clip_id>.{original,listenable,residual}.wav, .png, .json   (selected clips)

Crash safety: outputs are written to a temporary name and renamed; a batch's manifest lines
are appended (and fsynced) only after its files exist. A run killed at any moment loses at
most the batch in flight; the next run with the same arguments skips every clip already in
the manifest (finished or failed) and ends by rewriting the manifest compactly.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from listenable.atomic import write_json, write_text
from listenable.errors import ListenableError
from listenable.io import load_for, write_audio
from listenable.masking import DEFAULT_DELTA, DEFAULT_PERCENTILE

__all__ = ["AnalyzeConfig", "analyze", "read_manifest", "clip_ids", "slug"]

log = logging.getLogger(__name__)
MANIFEST = "manifest.jsonl"


@dataclass
class AnalyzeConfig:
    split: str = "train"
    min_confidence: float = 0.8
    correct_only: bool = False
    method: str = "gradcam"
    layer: str | None = None
    percentile: float = DEFAULT_PERCENTILE
    delta: float = DEFAULT_DELTA
    mode: str = "sigmoid"
    batch_size: int = 8
    workers: int = 0
    figures: bool = True
    method_options: dict = field(default_factory=dict)
    #: audio of the selected clips: "ogg" (Vorbis, the default), "mp3", "flac" or "wav"
    audio_format: str = "ogg"
    #: More methods to compute for every selected clip (their listenable and residual
    #: tracks and mask area, side by side with ``method``'s in the gallery).
    compare: list = field(default_factory=list)


def slug(name: str) -> str:
    """A file- and URL-safe folder name for a class name, stable and unique per name."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name).strip(".") or "class"
    if safe != name:
        safe = f"{safe[:40]}-{hashlib.sha1(name.encode()).hexdigest()[:6]}"
    return safe


def clip_ids(paths: list[Path]) -> list[str]:
    """Unique, stable ids: the file stem, plus a hash of the path where stems repeat."""
    stems = [Path(p).stem for p in paths]
    seen: dict[str, int] = {}
    for s in stems:
        seen[s] = seen.get(s, 0) + 1
    return [
        s if seen[s] == 1 else f"{s}-{hashlib.sha1(str(p).encode()).hexdigest()[:8]}"
        for s, p in zip(stems, paths)
    ]


def read_manifest(out: str | os.PathLike) -> dict[str, dict]:
    """``clip_id -> row`` of a manifest; the last line of a clip wins; a torn last line
    (a run killed mid-write) is ignored."""
    path = Path(out) / MANIFEST
    rows: dict[str, dict] = {}
    if not path.exists():
        return rows
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                log.warning("%s: ignoring a torn line", path)
                continue
            if isinstance(row, dict) and "clip_id" in row:
                rows[row["clip_id"]] = row
    return rows


def _write_manifest(out: Path, rows: dict[str, dict], order: list[str]) -> None:
    known = set(order)
    ordered = [rows[c] for c in order if c in rows] + [r for c, r in rows.items() if c not in known]
    write_text(out / MANIFEST, "".join(_line(r) for r in ordered))


def _line(row: dict) -> str:
    """One manifest line, UTF-8; ``\\u`` escapes only where a path holds bytes that are not
    UTF-8 (``b"caf\\xe9.wav"`` decodes to a lone surrogate, which UTF-8 cannot encode)."""
    text = json.dumps(row, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(row)
    return text + "\n"


class _Clips(Dataset):
    """Decodes clips in DataLoader workers; a bad file becomes an error record, not a crash."""

    def __init__(self, items: list[tuple[int, Path]], front_end) -> None:
        self.items = items
        self.front_end = front_end

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        index, path = self.items[i]
        try:
            wave, notes = load_for(path, self.front_end)
            return index, wave, notes, None
        except ListenableError as exc:
            return index, None, [], str(exc)
        except Exception as exc:  # an unexpected decoder failure must not stop the run
            return index, None, [], f"{path}: {type(exc).__name__}: {exc}"


def _collate(batch):
    return batch


def analyze(
    data,
    out: str | os.PathLike,
    model,
    meta: dict,
    cfg: AnalyzeConfig,
    *,
    progress: Callable[[int, dict], None] | None = None,
    shard: tuple[int, int] = (0, 1),
    manifest_name: str = MANIFEST,
) -> dict:
    """Run the experiment on ``data`` (an :class:`~listenable.data.AudioDataset`) into ``out``
    with ``model`` (an :class:`~listenable.models.Explainable`; ``meta`` its checkpoint's
    metadata, for the summary). Clips are loaded at the model's rate and channel count.

    ``progress(n_clips, stats)`` is called after each batch. ``shard = (rank, world)``
    processes every ``world``-th clip (see :mod:`listenable.distributed`). Returns the
    summary (also written to ``out/summary.json`` when ``shard`` is the whole set).
    """
    from listenable.explain import Explainer
    from listenable.writers import explanation_record

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if shard[1] == 1:  # sharded: rank 0 does it before the ranks start (distributed.py)
        remove_stale_temporaries(out)
    data_names = list(data.class_names)
    paths = [Path(p) for p in data.paths]
    labels = list(data.labels)
    ids = clip_ids(paths)
    manifest_path = out / manifest_name
    done = read_manifest(out)
    done.update(read_rank_manifests(out))  # also what a killed sharded run left
    rank, world = shard
    # rewrite what is there compactly first: drops a torn last line, so appends stay whole
    if manifest_path.exists():
        own = read_manifest(out) if manifest_name == MANIFEST else _read_lines(manifest_path)
        write_text(manifest_path, "".join(_line(r) for r in own.values()))
    todo = [(i, paths[i]) for i in range(len(paths)) if i % world == rank and ids[i] not in done]
    from listenable.checkpoint import explainable_for

    meta = meta or getattr(model, "checkpoint_meta", None) or {}
    explainer = Explainer(
        explainable_for(model, meta),
        method=cfg.method,
        layer=cfg.layer,
        percentile=cfg.percentile,
        delta=cfg.delta,
        mode=cfg.mode,
        method_options=cfg.method_options,
    )
    class_names = list(explainer.class_names)
    comparers = {
        m: Explainer(
            explainer.model,
            method=m,
            layer=cfg.layer,
            percentile=cfg.percentile,
            delta=cfg.delta,
            mode=cfg.mode,
        )
        for m in cfg.compare
        if m != cfg.method
    }
    listening = explainer.listening.settings
    meta = {
        **meta,
        "sample_rate": listening["sample_rate"],
        "stft": {"n_fft": listening["n_fft"], "hop_length": listening["hop_length"]},
        "model": explainer.model.describe(),
        "class_names": class_names,
    }
    loader = DataLoader(
        _Clips(todo, explainer.front_end.cpu()),
        batch_size=cfg.batch_size,
        num_workers=cfg.workers,
        collate_fn=_collate,
        persistent_workers=False,
        prefetch_factor=4 if cfg.workers else None,
    )
    t0, processed = time.perf_counter(), 0
    protected = frozenset(os.path.realpath(p) for p in paths)  # outputs never replace these
    with open(manifest_path, "a", encoding="utf-8") as manifest:
        for batch in loader:
            rows = _process_batch(
                batch,
                explainer,
                out,
                cfg,
                ids,
                paths,
                labels,
                data_names,
                class_names,
                explanation_record,
                protected,
                comparers,
            )
            manifest.write("".join(_line(r) for r in rows))
            manifest.flush()
            os.fsync(manifest.fileno())
            processed += len(rows)
            if progress:
                elapsed = time.perf_counter() - t0
                progress(
                    len(rows),
                    {
                        "clips_per_s": processed / max(elapsed, 1e-9),
                        "failed": sum(r["status"] != "ok" for r in rows),
                    },
                )
    elapsed = time.perf_counter() - t0
    if world > 1:
        return {"processed": processed, "seconds": elapsed, "meta": meta}
    return finish(out, ids, class_names, cfg, meta, processed, elapsed)


def remove_stale_temporaries(out: Path) -> int:
    """Delete the temporary files a killed run left behind (``.<stem>.tmp-*``)."""
    count = 0
    for path in out.rglob(".*.tmp-*"):
        if path.is_file():
            path.unlink(missing_ok=True)
            count += 1
    return count


def read_rank_manifests(out: str | os.PathLike) -> dict[str, dict]:
    """``clip_id -> row`` of the per-rank manifests (``manifest.rank*.jsonl``) that a sharded
    run appends to until :func:`finish` merges them."""
    rows: dict[str, dict] = {}
    for path in sorted(Path(out).glob("manifest.rank*.jsonl")):
        rows.update(_read_lines(path))
    return rows


def _read_lines(path: Path) -> dict[str, dict]:
    rows: dict[str, dict] = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
                rows[row["clip_id"]] = row
            except (json.JSONDecodeError, KeyError, TypeError):
                continue
    return rows


def finish(
    out: Path,
    ids: list[str],
    class_names: list[str],
    cfg: AnalyzeConfig,
    meta: dict,
    processed: int,
    elapsed: float,
) -> dict:
    """Compact the manifest (one row per clip, data-set order) and write ``summary.json``."""
    rows = read_manifest(out)
    for extra in sorted(out.glob("manifest.rank*.jsonl")):
        rows.update(_read_lines(extra))
    _write_manifest(out, rows, ids)
    for extra in out.glob("manifest.rank*.jsonl"):
        extra.unlink()
    summary = summarise(rows.values(), class_names, cfg, meta)
    rate = meta.get("sample_rate")
    summary["class_profiles"] = class_profiles(rows.values(), class_names, rate)
    if meta.get("stft"):
        summary["stft"] = meta["stft"]
    summary["clips_per_s"] = processed / elapsed if processed and elapsed > 0 else None
    summary["processed_this_run"] = processed
    write_json(out / "summary.json", summary)
    return summary


def summarise(rows, class_names: list[str], cfg: AnalyzeConfig, meta: dict) -> dict:
    per_class = {
        c: {"clips": 0, "selected": 0, "correct": 0, "labelled": 0, "failed": 0}
        for c in class_names
    }
    totals = {"clips": 0, "selected": 0, "failed": 0, "correct": 0, "labelled": 0}
    for row in rows:
        totals["clips"] += 1
        key = row.get("label") or row.get("predicted")
        entry = (
            per_class.setdefault(
                key, {"clips": 0, "selected": 0, "correct": 0, "labelled": 0, "failed": 0}
            )
            if key
            else None
        )
        for bucket in filter(None, (entry, totals)):
            if entry is not None and bucket is entry:
                bucket["clips"] += 1
            if row["status"] != "ok":
                bucket["failed"] += 1
                continue
            bucket["selected"] += bool(row["selected"])
            if row.get("correct") is not None:
                bucket["labelled"] += 1
                bucket["correct"] += bool(row["correct"])
    for bucket in [*per_class.values(), totals]:
        bucket["accuracy"] = bucket["correct"] / bucket["labelled"] if bucket["labelled"] else None
    return {
        "class_names": class_names,
        "classes": per_class,
        "totals": totals,
        "settings": asdict(cfg),
        "checkpoint": meta.get("checkpoint_path"),
        "model": meta.get("model"),
    }


def _process_batch(
    batch,
    explainer,
    out,
    cfg,
    ids,
    paths,
    labels,
    data_names,
    class_names,
    explanation_record,
    protected=frozenset(),
    comparers=None,
) -> list[dict]:
    rows: list[dict] = []
    good = []
    for index, wave, notes, error in batch:
        if error is not None:
            rows.append(_row(index, ids, paths, labels, data_names, error=error))
        else:
            good.append((index, wave, notes))
    # clips of different lengths are explained in separate sub-batches (no padding: padding
    # would change the global average pool and so the explanation)
    by_length: dict[int, list] = {}
    for item in good:
        by_length.setdefault(item[1].shape[-1], []).append(item)
    for group in by_length.values():
        try:
            waves = torch.stack([w for _, w, _ in group])
            expl = explainer(waves)
        except (ListenableError, ValueError, RuntimeError) as exc:
            for index, _, _ in group:
                rows.append(
                    _row(
                        index,
                        ids,
                        paths,
                        labels,
                        data_names,
                        error=f"{paths[index]}: {type(exc).__name__}: {exc}",
                    )
                )
            continue
        compared = {}  # the other methods, on the same clips and the same explained class
        for name, other in (comparers or {}).items():
            try:
                compared[name] = other(waves, expl.target.tolist())
            except (ListenableError, ValueError, RuntimeError) as exc:
                log.warning("method %s failed on a batch: %s", name, exc)
        for j, (index, wave, notes) in enumerate(group):
            one = expl.item(j)
            one.notes = notes
            record = explanation_record(one, class_names)
            label = data_names[labels[index]] if labels[index] >= 0 else None
            correct = None if label is None else record["predicted"] == label
            selected = record["confidence"] >= cfg.min_confidence and (
                not cfg.correct_only or bool(correct)
            )
            files, methods = {}, {}
            if selected:
                try:
                    files = _write_outputs(
                        out,
                        ids[index],
                        record["predicted"],
                        one,
                        wave,
                        explainer,
                        cfg,
                        record,
                        paths[index],
                        inputs=protected,
                    )
                    methods = {
                        name: _write_compared(
                            out, ids[index], record["predicted"], name, other.item(j), cfg
                        )
                        for name, other in compared.items()
                    }
                except (OSError, ValueError, ListenableError) as exc:  # NaN JSON, disk full
                    rows.append(
                        _row(
                            index,
                            ids,
                            paths,
                            labels,
                            data_names,
                            error=f"{paths[index]}: cannot write outputs ({exc})",
                        )
                    )
                    continue
            rows.append(
                {
                    "clip_id": ids[index],
                    "path": str(paths[index]),
                    "mask_profile": mask_profile(one.mask, explainer.listening),
                    "label": label,
                    "predicted": record["predicted"],
                    "confidence": record["confidence"],
                    "probabilities": record["probabilities"],
                    "target": record["target"],
                    "selected": selected,
                    "correct": correct,
                    "mask_area": record["mask_area"],
                    "empty_mask": record["empty_mask"],
                    "notes": record["notes"],
                    "status": "ok",
                    "error": None,
                    "files": files,
                    "method": cfg.method,
                    "methods": methods,
                }
            )
    order = {ids[i]: k for k, (i, *_rest) in enumerate(batch)}  # O(1) per row, not ids.index
    rows.sort(key=lambda r: order.get(r["clip_id"], 0))
    return rows


#: Bands of the per-clip mask profile: log-spaced from 50 Hz to Nyquist (and 0–50 Hz).
PROFILE_BANDS = 32


def profile_frequencies(sample_rate: int) -> list[float]:
    """Centre frequencies (Hz) of the :data:`PROFILE_BANDS` bands of a mask profile."""
    edges = _profile_edges(sample_rate)
    return [round(float((lo * hi) ** 0.5 if lo > 0 else hi / 2), 1) for lo, hi in edges]


def _profile_edges(sample_rate: int) -> list[tuple[float, float]]:
    import numpy as np

    top = np.geomspace(50.0, sample_rate / 2, PROFILE_BANDS)
    return [(0.0, 50.0)] + list(zip(top[:-1], top[1:]))


def mask_profile(mask: torch.Tensor, stft) -> list[float]:
    """How much of each frequency band the mask keeps, averaged over time: ``mask
    (bins, frames)`` → :data:`PROFILE_BANDS` values in [0, 1] (what the model listens to, in
    hertz; the gallery's class summary is their mean over a class's clips)."""
    freqs = stft.frequencies().to(mask.device)
    over_time = mask.float().mean(dim=-1)
    out = []
    for lo, hi in _profile_edges(stft.sample_rate):
        inside = (freqs >= lo) & (freqs <= hi)
        out.append(round(float(over_time[inside].mean()), 4) if bool(inside.any()) else 0.0)
    return out


def class_profiles(rows, class_names: list[str], sample_rate: int | None) -> dict:
    """Per predicted class: the mean mask profile of its explained clips (``summary.json``'s
    ``class_profiles``: ``{class: {"frequencies_hz": [...], "mean_mask": [...], "clips": n}}``)."""
    sums: dict[str, list] = {}
    for row in rows:
        profile = row.get("mask_profile")
        name = row.get("predicted")
        if row.get("status") != "ok" or not isinstance(profile, list) or not name:
            continue
        entry = sums.setdefault(name, [[0.0] * len(profile), 0])
        if len(entry[0]) != len(profile):
            continue
        entry[0] = [a + float(b) for a, b in zip(entry[0], profile)]
        entry[1] += 1
    if sample_rate is None:
        return {}
    freqs = profile_frequencies(sample_rate)
    return {
        name: {
            "frequencies_hz": freqs,
            "mean_mask": [round(v / n, 4) for v in total],
            "clips": n,
        }
        for name, (total, n) in sums.items()
        if n and len(total) == len(freqs)
    }


def _row(index, ids, paths, labels, data_names, *, error: str) -> dict:
    return {
        "clip_id": ids[index],
        "path": str(paths[index]),
        "label": data_names[labels[index]] if labels[index] >= 0 else None,
        "predicted": None,
        "confidence": None,
        "probabilities": None,
        "target": None,
        "selected": False,
        "correct": None,
        "mask_area": None,
        "empty_mask": None,
        "notes": [],
        "status": "error",
        "error": error.splitlines()[0] if error else "error",
        "files": {},
    }


def _write_compared(out: Path, clip_id: str, class_name: str, method: str, expl, cfg) -> dict:
    """Another method's listenable and residual tracks of a selected clip; the manifest
    row's ``methods[method]`` (what the gallery's comparison reads)."""
    from listenable.report.audio import audio_suffix, write_track

    folder, ext, tag = slug(class_name), audio_suffix(cfg.audio_format), slug(method)
    files = {}
    for kind in ("listenable", "residual"):
        rel = f"{folder}/{clip_id}.{kind}.{tag}{ext}"
        write_track(out / rel, getattr(expl, kind), expl.sample_rate, cfg.audio_format)
        files[kind] = rel
    return {"files": files, "mask_area": float(expl.mask_area)}


def _write_outputs(
    out: Path,
    clip_id: str,
    class_name: str,
    expl,
    wave,
    explainer,
    cfg,
    record: dict,
    source: Path,
    *,
    inputs: frozenset = frozenset(),
) -> dict:
    """Write a selected clip's outputs; ``inputs`` = real paths of every input clip.

    Audio in ``cfg.audio_format`` (:mod:`listenable.report.audio`); with ``cfg.figures``
    also the paper's Fig. 1 and the gallery's spectrogram view and mask outline, drawn here
    from the exact waves (the gallery draws the view itself from the audio files if not).
    """
    from listenable.report.audio import audio_suffix, write_track

    folder = slug(class_name)
    ext = audio_suffix(cfg.audio_format)
    rel = {
        "original": f"{folder}/{clip_id}.original{ext}",
        "listenable": f"{folder}/{clip_id}.listenable{ext}",
        "residual": f"{folder}/{clip_id}.residual{ext}",
        "json": f"{folder}/{clip_id}.json",
    }
    if cfg.figures:
        rel["figure"] = f"{folder}/{clip_id}.png"
        rel["view"] = f"{folder}/{clip_id}.view.webp"
        rel["outline"] = f"{folder}/{clip_id}.outline.png"
    src = os.path.realpath(source)
    for r in rel.values():
        real = os.path.realpath(out / r)
        # another clip of the data set (out = the data root): checked only for existing files
        if real == src or real in inputs:
            raise ListenableError(f"{source}: output {out / r} would overwrite an input")
    tracks = {"original": wave, "listenable": expl.listenable, "residual": expl.residual}
    for kind, track in tracks.items():
        if cfg.audio_format == "wav":  # as before
            write_audio(out / rel[kind], track, expl.sample_rate, subtype="PCM_16")
        else:
            write_track(out / rel[kind], track, expl.sample_rate, cfg.audio_format)
    if cfg.figures:
        from listenable.report.views import write_view
        from listenable.writers import figure_for

        figure_for(out / rel["figure"], expl, wave, explainer)
        grid = getattr(explainer, "listening", None)
        stft = {
            "n_fft": getattr(grid, "n_fft", None),
            "hop_length": getattr(grid, "hop_length", None),
        }
        waves = [t.detach().cpu().float().numpy() for t in tracks.values()]
        write_view(out / rel["view"], out / rel["outline"], waves, expl.sample_rate, stft=stft)
    write_json(out / rel["json"], {**record, "source": str(source), "clip_id": clip_id})
    return rel
