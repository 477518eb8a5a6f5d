"""The paper's experiment as one resumable run: explain every clip of a data split, keep the
confident ones, write their listenable audio and figures, and a manifest of everything.

Layout of ``out``::

    manifest.jsonl           one line per clip (the last line of a clip_id wins)
    manifest.dropped.jsonl   rows of clips that are not in the data set of the last run
    summary.json             per class: clips, selected, accuracy; settings; clips/s
    .analyze.lock            the lock of the run writing into ``out``
    <class>/<clip_id>.{original,listenable,residual}.<ext>, .png, .json   (selected clips)

One writer at a time: a run holds an exclusive lock on ``out`` (``fcntl.flock`` on
``.analyze.lock``) from start to end; a second run on the same ``out`` is refused with
:class:`~listenable.manifest.RunLockedError` (exit status 2). Temporaries of killed runs
are removed only by the run holding the lock.

Resuming: every row records the fingerprint of the settings that shape the outputs
(method, layer, percentile, δ, mode, threshold_on, method options, compared methods,
selection, audio format, figures, the model's weights and front end), the data root and
the clip's path relative to it. A rerun skips a clip whose row is ``ok`` with the same
fingerprint, root and path and whose files exist; every other clip (new, failed before,
made with other settings or another file) is explained again. Rows of clips that are not
in the data set are moved to ``manifest.dropped.jsonl`` at the end and not counted.
A data set that lists a file twice has it explained once.

Clip ids: the file stem; where stems repeat in the data set, the stem plus 8 hex digits of
the SHA-1 of the path relative to the data root; a clip keeps the id its row already has,
so a same-stem file added later never renames an explained clip
(:func:`listenable.manifest.assign_ids`).

Crash safety: outputs are written to a temporary name and renamed; a batch's manifest lines
are appended (and fsynced) only after its files exist. A run killed at any moment loses at
most the batch in flight; the next run explains what is left and ends by rewriting the
manifest compactly, in data-set order.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from listenable.atomic import write_json, write_text
from listenable.data.datasets import group_by_length
from listenable.errors import ListenableError, UsageError
from listenable.io import load_for
from listenable.manifest import (
    DROPPED,
    MANIFEST,
    Plan,
    assign_ids,
    compact,
    fingerprint,
    format_line,
    last_rows,
    make_plan,
    model_identity,
    open_append,
    read_lines,
    read_rows,
    refuse_links,
    relative_path,
    run_lock,
    still_good,
)
from listenable.masking import (
    DEFAULT_DELTA,
    DEFAULT_PERCENTILE,
    DEFAULT_THRESHOLD_ON,
    MODES,
    THRESHOLD_ON,
)
from listenable.writers import OutputWriter, explanation_record, write_error_reason

__all__ = ["AnalyzeConfig", "AnalyzeConfigError", "analyze", "read_manifest", "clip_ids", "slug"]

log = logging.getLogger(__name__)
#: Bumped when the fingerprint's contents change (older rows are then explained again).
FINGERPRINT_VERSION = 1


class AnalyzeConfigError(UsageError, ValueError):
    """A setting of :class:`AnalyzeConfig` that cannot work (exit status 2)."""


@dataclass
class AnalyzeConfig:
    """Settings of one :func:`analyze` run, checked when it is made
    (:class:`AnalyzeConfigError` naming the setting and its command-line option)."""

    split: str = "train"
    min_confidence: float = 0.8
    correct_only: bool = False
    #: the attribution method; ``None``: the model's default
    #: (:func:`~listenable.cams.default_method`), recorded in the manifest and summary
    method: str | None = None
    layer: str | None = None
    percentile: float = DEFAULT_PERCENTILE
    delta: float = DEFAULT_DELTA
    mode: str = "sigmoid"
    #: where θ is taken: "heatmap" (its own cells) or "stft" (the linear bins)
    threshold_on: str = DEFAULT_THRESHOLD_ON
    batch_size: int = 8
    workers: int = 0
    figures: bool = True
    method_options: dict = field(default_factory=dict)
    #: audio of the selected clips: "ogg" (Vorbis, the default), "mp3", "flac" or "wav"
    audio_format: str = "ogg"
    #: More methods to compute for every selected clip (their listenable and residual
    #: tracks and mask area, side by side with ``method``'s in the gallery).
    compare: list = field(default_factory=list)

    def __post_init__(self) -> None:
        from listenable.report.audio import AUDIO_FORMATS

        _number("min_confidence", self.min_confidence, 0.0, 1.0)
        _number("percentile", self.percentile, 0.0, 100.0)
        _number("delta", self.delta, -math.inf, math.inf)
        _integer("batch_size", self.batch_size, 1)
        _integer("workers", self.workers, 0)
        _choice("mode", self.mode, MODES)
        _choice("threshold_on", self.threshold_on, THRESHOLD_ON)
        _choice("audio_format", self.audio_format, tuple(AUDIO_FORMATS))
        if self.method is not None and (not isinstance(self.method, str) or not self.method):
            raise AnalyzeConfigError(
                f"method (--method) must be a method name, got {self.method!r}"
            )
        if not isinstance(self.compare, list | tuple) or not all(
            isinstance(m, str) and m for m in self.compare
        ):
            raise AnalyzeConfigError(
                f"compare (--compare) must be method names, got {self.compare!r}"
            )
        if not isinstance(self.method_options, dict):
            raise AnalyzeConfigError("method_options must be a dict")


def _option(name: str) -> str:
    return f"{name} (--{name.replace('_', '-')})"


def _number(name: str, value, lo: float, hi: float) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or not lo <= value <= hi:
        where = "a finite number" if math.isinf(lo) else f"a number in [{lo:g}, {hi:g}]"
        raise AnalyzeConfigError(f"{_option(name)} must be {where}, got {value!r}")


def _integer(name: str, value, lo: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < lo:
        raise AnalyzeConfigError(f"{_option(name)} must be an integer >= {lo}, got {value!r}")


def _choice(name: str, value, choices: tuple) -> None:
    if value not in choices:
        raise AnalyzeConfigError(
            f"{_option(name)} must be one of {', '.join(choices)}, got {value!r}"
        )


def slug(name: str) -> str:
    """A file- and URL-safe folder name for a class name, stable and unique per name."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name).strip(".") or "class"
    if safe != name:
        safe = f"{safe[:40]}-{hashlib.sha1(name.encode()).hexdigest()[:6]}"
    return safe


def clip_ids(paths: list, root=None, *, known: dict[str, str] | None = None) -> list[str]:
    """Unique, stable ids of ``paths`` (one data set, rooted at ``root``): the file stem,
    or where stems repeat the stem plus a hash of the path relative to ``root``; ``known``
    (``relative path -> id``) keeps the ids a manifest already gives. See
    :func:`listenable.manifest.assign_ids`."""
    return assign_ids([relative_path(p, root) for p in paths], known)


def read_manifest(out: str | os.PathLike) -> dict[str, dict]:
    """``clip_id -> row`` of ``out/manifest.jsonl``; the last line of a clip wins; a line
    that is not a valid row (a torn last line of a killed run) is skipped with a warning."""
    return read_rows(Path(out) / MANIFEST)


def read_rank_manifests(out: str | os.PathLike) -> dict[str, dict]:
    """``clip_id -> row`` of the per-rank manifests (``manifest.rank*.jsonl``) that a sharded
    run appends to until :func:`finish` merges them."""
    rows: dict[str, dict] = {}
    for path in sorted(Path(out).glob("manifest.rank*.jsonl")):
        rows.update(read_rows(path))
    return rows


def remove_stale_temporaries(out: Path) -> int:
    """Delete the temporary files a killed run left behind (``.<head>.tmp-*``), never
    following a link. Call it only while holding ``out``'s lock (:func:`run_lock`)."""
    count = 0
    for folder, _dirs, names in os.walk(out):  # does not descend into linked folders
        for name in names:
            path = os.path.join(folder, name)
            if name.startswith(".") and ".tmp-" in name[1:] and not os.path.islink(path):
                os.unlink(path)
                count += 1
    return count


def run_settings(cfg: AnalyzeConfig, explainer) -> dict:
    """What the run's fingerprint covers: every setting that changes a row or its files."""
    front_end = getattr(explainer.front_end, "settings", None)
    listening = getattr(explainer.listening, "settings", None)
    return {
        "version": FINGERPRINT_VERSION,
        "method": cfg.method,
        "layer": explainer.layer,
        "percentile": cfg.percentile,
        "delta": cfg.delta,
        "mode": cfg.mode,
        "threshold_on": getattr(cfg, "threshold_on", None),
        "target": getattr(cfg, "target", None),
        "method_options": cfg.method_options,
        "compare": [m for m in cfg.compare if m != cfg.method],
        "min_confidence": cfg.min_confidence,
        "correct_only": cfg.correct_only,
        "audio_format": cfg.audio_format,
        "figures": cfg.figures,
        "precision": getattr(explainer, "precision", None),
        "model": model_identity(explainer),
        "class_names": list(explainer.class_names),
        "front_end": front_end,
        "listening": listening,
    }


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


def analyze(
    data,
    out: str | os.PathLike,
    model,
    meta: dict,
    cfg: AnalyzeConfig,
    *,
    progress: Callable[[int, dict], None] | None = None,
    on_plan: Callable[[int, int], None] | None = None,
    shard: tuple[int, int] = (0, 1),
    manifest_name: str = MANIFEST,
) -> dict:
    """Run the experiment on ``data`` (an :class:`~listenable.data.AudioDataset`) into ``out``
    with ``model`` (an :class:`~listenable.models.Explainable`; ``meta`` its checkpoint's
    metadata, for the summary). Clips are loaded at the model's rate and channel count.

    ``on_plan(to_do, done)`` is called once the clips to explain are known, and
    ``progress(n_clips, stats)`` after each batch. ``shard = (rank, world)`` processes every
    ``world``-th clip into ``manifest_name`` and leaves the lock, the temporaries and the
    merge to the caller (see :mod:`listenable.distributed`). Returns the summary (also
    written to ``out/summary.json`` when ``shard`` is the whole set).

    Raises:
        RunLockedError: another process holds ``out``'s lock.
        OutputLinkError: the manifest or summary in ``out`` is a symbolic link.
    """
    out = Path(out)
    if shard[1] > 1:
        return _analyze(data, out, model, meta, cfg, progress, on_plan, shard, manifest_name)
    with run_lock(out):
        remove_stale_temporaries(out)
        return _analyze(data, out, model, meta, cfg, progress, on_plan, shard, manifest_name)


def _analyze(data, out, model, meta, cfg, progress, on_plan, shard, manifest_name) -> dict:
    from listenable.checkpoint import explainable_for
    from listenable.explain import Explainer

    out.mkdir(parents=True, exist_ok=True)
    manifest_path = out / manifest_name
    for name in (MANIFEST, manifest_name, DROPPED, "summary.json"):
        refuse_links(out, out / name)
    meta = meta or getattr(model, "checkpoint_meta", None) or {}
    options = dict(layer=cfg.layer, percentile=cfg.percentile, delta=cfg.delta, mode=cfg.mode,
                   threshold_on=cfg.threshold_on)  # fmt: skip
    explainer = Explainer(
        explainable_for(model, meta), method=cfg.method, method_options=cfg.method_options,
        **options,
    )  # fmt: skip
    cfg = replace(cfg, method=explainer.method)  # the model's default, where none was named
    comparers = {
        m: Explainer(explainer.model, method=m, **options) for m in cfg.compare if m != cfg.method
    }
    fp = fingerprint(run_settings(cfg, explainer))
    main = read_lines(out / MANIFEST)
    done = {**last_rows(main), **read_rank_manifests(out)}  # also what a killed sharded run left
    plan = make_plan(data, done, fp)
    # rewrite what is there compactly first: drops a torn last line, so appends stay whole
    if manifest_path.exists():
        own = main if manifest_name == MANIFEST else read_lines(manifest_path)
        write_text(manifest_path, "".join(format_line(r) for r in compact(own)))
    rank, world = shard
    mine = range(rank, len(plan.paths), world)
    todo = [i for i in mine if not still_good(out, done.get(plan.ids[i]), plan, i)]
    failed = sum(done[plan.ids[i]]["status"] != "ok" for i in todo if plan.ids[i] in done)
    stale = sum(plan.ids[i] in done for i in todo) - failed
    if failed:
        log.info("%s: %d clip(s) that failed before are tried again", out, failed)
    if stale:
        rows = [done[plan.ids[i]] for i in todo if plan.ids[i] in done]
        before = sorted({str(r.get("method")) for r in rows if r.get("method")} - {cfg.method})
        hint = (
            f"; they were explained with {', '.join(before)}, this run uses {cfg.method} "
            f"(--method {before[0]} keeps them)"
            if before
            else ""
        )
        log.warning(
            "%s: %d clip(s) explained with other settings, for another file or with files "
            "missing are explained again%s", out, stale, hint,
        )  # fmt: skip
    if on_plan:
        on_plan(len(todo), len(mine) - len(todo))

    class_names = list(explainer.class_names)
    listening = explainer.listening.settings
    meta = {
        **meta,
        "sample_rate": listening["sample_rate"],
        "stft": {"n_fft": listening["n_fft"], "hop_length": listening["hop_length"]},
        "model": explainer.model.describe(),
        "class_names": class_names,
    }
    writer = _writer(out, explainer, cfg, plan.paths)
    loader = DataLoader(
        _Clips([(i, plan.paths[i]) for i in todo], explainer.front_end.cpu()),
        batch_size=cfg.batch_size,
        num_workers=cfg.workers,
        collate_fn=list,  # a batch stays a list of (index, wave, notes, error)
        persistent_workers=False,
        prefetch_factor=4 if cfg.workers else None,
    )
    t0, processed = time.perf_counter(), 0
    data_names = list(data.class_names)
    with open_append(manifest_path) as manifest:
        for batch in loader:
            rows = _process_batch(batch, explainer, comparers, writer, plan, cfg, data_names)
            try:
                manifest.write("".join(format_line(r) for r in rows))
                manifest.flush()
                os.fsync(manifest.fileno())
            except OSError as exc:
                raise ListenableError(
                    f"{manifest_path}: cannot append ({write_error_reason(exc)}); the clips "
                    "recorded so far are kept, run again to go on"
                ) from None
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
        return {"processed": processed, "seconds": elapsed, "meta": meta, "plan": plan, "cfg": cfg}
    return finish(out, plan, cfg, meta, processed, elapsed)


def _writer(out: Path, explainer, cfg: AnalyzeConfig, inputs) -> OutputWriter:
    return OutputWriter(
        out, explainer, figures=cfg.figures, audio_format=cfg.audio_format, original=True,
        views=True, inputs=inputs,
    )  # fmt: skip


def finish(
    out: Path, plan: Plan, cfg: AnalyzeConfig, meta: dict, processed: int, elapsed: float
) -> dict:
    """Merge the rank manifests, move rows of clips not in the data set to
    ``manifest.dropped.jsonl``, compact the manifest (one row per clip, data-set order) and
    write ``summary.json``."""
    lines = read_lines(out / MANIFEST)
    for extra in sorted(out.glob("manifest.rank*.jsonl")):
        lines += read_lines(extra)
    keys = plan.keys()

    def in_plan(row) -> bool:
        return keys.get(row["clip_id"]) == (row.get("data_root"), row.get("rel_path"))

    kept = {c: r for c, r in last_rows(lines).items() if in_plan(r)}
    dropped = compact([r for r in lines if not in_plan(r)])  # also rows another file replaced
    if dropped:  # appended before the manifest loses them: a crash between keeps both
        with open_append(out / DROPPED) as archive:
            archive.write("".join(format_line(r) for r in dropped))
            archive.flush()
            os.fsync(archive.fileno())
        log.warning(
            "%s: %d row(s) of clips not in this data set moved to %s", out, len(dropped), DROPPED
        )
    order = [kept[c] for c in plan.ids if c in kept]
    write_text(out / MANIFEST, "".join(format_line(r) for r in order))
    for extra in out.glob("manifest.rank*.jsonl"):
        extra.unlink()
    class_names = list(meta.get("class_names") or [])
    summary = summarise(order, class_names, cfg, meta)
    summary["fingerprint"] = plan.fingerprint
    summary["data_root"] = plan.root
    summary["dropped_rows"] = len(dropped)
    rate = meta.get("sample_rate")
    summary["class_profiles"] = class_profiles(order, class_names, rate)
    from listenable.evaluation.content import class_content

    summary["class_content"] = class_content(order)
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


def _process_batch(batch, explainer, comparers, writer, plan: Plan, cfg, data_names) -> list[dict]:
    """Explain one batch and write the selected clips' outputs; one row per clip."""
    rows: list[dict] = []
    good = []
    for index, wave, notes, error in batch:
        if error is not None:
            rows.append(_row(index, plan, data_names, error=error))
        else:
            good.append((index, wave, notes))
    # clips of different lengths are explained in separate sub-batches (no padding: padding
    # would change the global average pool and so the explanation)
    for group in group_by_length(good, lambda item: item[1].shape[-1]):
        try:
            waves = torch.stack([w for _, w, _ in group])
            expl = explainer(waves)
        except (ListenableError, ValueError, RuntimeError) as exc:
            for index, _, _ in group:
                error = f"{plan.paths[index]}: {type(exc).__name__}: {exc}"
                rows.append(_row(index, plan, data_names, error=error))
            continue
        compared = {}  # the other methods, on the same clips and the same explained class
        for name, other in comparers.items():
            try:
                compared[name] = other(waves, expl.target.tolist())
            except (ListenableError, ValueError, RuntimeError) as exc:
                log.warning("method %s failed on a batch: %s", name, exc)
        for j, (index, wave, notes) in enumerate(group):
            rows.append(
                _explained(index, wave, notes, expl.item(j), compared, j, writer, plan, cfg,
                           data_names, explainer)
            )  # fmt: skip
    order = {plan.ids[i]: k for k, (i, *_rest) in enumerate(batch)}  # O(1) per row
    rows.sort(key=lambda r: order.get(r["clip_id"], 0))
    return rows


def _explained(index, wave, notes, one, compared, j, writer, plan, cfg, data_names, explainer):
    """The row of an explained clip, its outputs written if it is selected."""
    one.notes = notes
    record = explanation_record(one, list(explainer.class_names))
    label = data_names[plan.labels[index]] if plan.labels[index] >= 0 else None
    correct = None if label is None else record["predicted"] == label
    selected = record["confidence"] >= cfg.min_confidence and (
        not cfg.correct_only or bool(correct)
    )
    files, methods = {}, {}
    if selected:
        clip_id, source = plan.ids[index], plan.paths[index]
        others = {name: e.item(j) for name, e in compared.items()}
        try:
            files = _write_outputs(
                writer.out, clip_id, record["predicted"], one, wave, explainer, cfg, record,
                source, others=others, writer=writer,
            )  # fmt: skip
        except (OSError, ValueError, RuntimeError, ListenableError) as exc:  # NaN JSON, disk full
            reason = write_error_reason(exc)
            return _row(index, plan, data_names, error=f"{source}: cannot write outputs ({reason})")
        stem = f"{slug(record['predicted'])}/{clip_id}"
        methods = {
            name: {
                "files": {
                    k: _rel(writer.out, p) for k, p in writer.method_paths(stem, slug(name)).items()
                },
                "mask_area": float(other.mask_area),
            }
            for name, other in others.items()
        }
    return {
        **_keys(index, plan),
        "mask_profile": mask_profile(one.mask, explainer.listening),
        "time_profile": time_profile(one.mask),
        "content": _content(plan, index, one.mask, wave, explainer),
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


#: Bands of the per-clip mask profile: log-spaced from 50 Hz to Nyquist (and 0–50 Hz).
PROFILE_BANDS = 32
#: Equal parts of the clip's duration in the per-clip time profile.
TIME_SEGMENTS = 20


def time_profile(mask: torch.Tensor) -> list[float]:
    """How much of each :data:`TIME_SEGMENTS`-th of the clip the mask keeps, averaged over
    frequency: ``mask (bins, frames)`` → values in [0, 1], first to last part."""
    over_freq = mask.float().mean(dim=0)
    frames = over_freq.shape[0]
    edges = [round(k * frames / TIME_SEGMENTS) for k in range(TIME_SEGMENTS + 1)]
    return [
        round(float(over_freq[a : max(b, a + 1)].mean()), 4) if a < frames else 0.0
        for a, b in zip(edges[:-1], edges[1:])
    ]


def _content(plan, index: int, mask, wave, explainer) -> dict | None:
    """Which annotated event labels the listenable output holds, and how much
    (:func:`listenable.evaluation.content.listened_content`), for a scenes data set (one
    with ``scenes.json`` and ``events.csv``); ``None`` elsewhere or when it cannot say."""
    root = Path(plan.root) if plan.root else None
    if root is None or not (root / "scenes.json").is_file() or not (root / "events.csv").is_file():
        return None
    from listenable.evaluation.content import listened_content

    try:
        return listened_content(
            root, plan.rels[index], mask, explainer.listening,
            channels=wave.shape[0], length=wave.shape[-1],
        )  # fmt: skip
    except (ListenableError, OSError, ValueError) as exc:
        log.warning("%s: no event content (%s)", plan.paths[index], exc)
        return None


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
    """Per predicted class: the mean mask profiles of its explained clips (``summary.json``'s
    ``class_profiles``: ``{class: {"frequencies_hz": [...], "mean_mask": [...],
    "mean_time_profile": [...] (over :data:`TIME_SEGMENTS` equal parts of the clip),
    "clips": n}}``)."""
    sums: dict[str, list] = {}
    for row in rows:
        profile = row.get("mask_profile")
        name = row.get("predicted")
        if row.get("status") != "ok" or not isinstance(profile, list) or not name:
            continue
        entry = sums.setdefault(name, [[0.0] * len(profile), 0, [0.0] * TIME_SEGMENTS, 0])
        if len(entry[0]) != len(profile):
            continue
        entry[0] = [a + float(b) for a, b in zip(entry[0], profile)]
        entry[1] += 1
        times = row.get("time_profile")
        if isinstance(times, list) and len(times) == TIME_SEGMENTS:
            entry[2] = [a + float(b) for a, b in zip(entry[2], times)]
            entry[3] += 1
    if sample_rate is None:
        return {}
    freqs = profile_frequencies(sample_rate)
    return {
        name: {
            "frequencies_hz": freqs,
            "mean_mask": [round(v / n, 4) for v in total],
            "mean_time_profile": [round(v / m, 4) for v in times] if m else None,
            "clips": n,
        }
        for name, (total, n, times, m) in sums.items()
        if n and len(total) == len(freqs)
    }


def _keys(index: int, plan: Plan) -> dict:
    return {
        "clip_id": plan.ids[index],
        "path": str(plan.paths[index]),
        "data_root": plan.root,
        "rel_path": plan.rels[index],
        "fingerprint": plan.fingerprint,
    }


def _row(index: int, plan: Plan, data_names, *, error: str) -> dict:
    label = plan.labels[index]
    return {
        **_keys(index, plan),
        "label": data_names[label] if label >= 0 else None,
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


def _rel(out: Path, path: Path) -> str:
    return path.relative_to(out).as_posix()


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
    inputs=frozenset(),
    others: dict | None = None,
    writer: OutputWriter | None = None,
) -> dict:
    """Write a selected clip's outputs as ``<class>/<clip_id>.*`` with the run's
    :class:`~listenable.writers.OutputWriter` (one for ``out``, ``explainer`` and ``cfg``
    when not given; ``inputs`` = every input clip); returns their paths relative to ``out``.

    Audio in ``cfg.audio_format`` (:mod:`listenable.report.audio`); with ``cfg.figures``
    also the paper's Fig. 1 and the gallery's spectrogram view and mask outline, drawn here
    from the exact waves (the gallery draws the view itself from the audio files if not).
    ``others``: ``{method: explanation}``, tracks of further methods.
    """
    writer = writer or _writer(Path(out), explainer, cfg, inputs)
    tags = {slug(name): e for name, e in (others or {}).items()}
    paths = writer.write(
        expl, wave, f"{slug(class_name)}/{clip_id}", source=source, record=record,
        extra={"clip_id": clip_id}, others=tags,
    )  # fmt: skip
    return {kind: _rel(writer.out, p) for kind, p in paths.items()}
