"""A model caught cheating: train on scenes where one class always carries a spurious cue,
then show with numbers that the listenable output finds the cue.

The experiment (:func:`run_shortcut`, ``listenable shortcut OUT``), in ``OUT``::

    scenes/            synthetic scenes (listenable.data.scenes.write_scenes)
    data/              the cued copy at the model's rate (listenable.experiments.cues)
    model.safetensors  the small CNN trained on data/'s training split (resumable)
    measurements.jsonl one line per test clip: decisions, cue recall, flips
    gallery/           analyze + gallery of the cued test clips
    report.md, report.json

What is measured (:func:`measure`), on every test clip ``x`` of every class, with the cue
stem ``c`` (so the cued clip is ``x + c``, exactly):

* the decisions on ``x`` and on ``x + c``: accuracy with and without the cue, and how often
  a cued clip of *another* class is called the cue class (the model cheats);
* the mask ``M`` of the explanation of the cue class on ``x + c`` (and of the predicted
  class); on the listening STFT, with ``C`` the STFT of the cue stem and ``X`` that of the
  cued clip: **cue recall** ``Σ M²|C|² / Σ|C|²`` — the share of the cue's energy the
  listenable output keeps (:func:`cue_recall`, the ground-truth ``event_recall`` with the
  cue as the event) — and **cue precision** ``min(1, Σ M²|C|² / Σ M²|X|²)``;
* the same for a **shuffled mask**: ``M``'s values permuted over the TF bins with a seeded
  generator (:func:`shuffled_masks`), so it has exactly ``M``'s area and values but no
  position; for a cue spread evenly over the bins its recall is ``mean(M²)``;
* the **residual flip**: on the cued clips the model calls the cue class, the model's
  decision on the residual ``x + c − listenable`` (the audio with what the mask kept removed)
  — does it leave the cue class? — against the residual of the shuffled mask, and against
  removing exactly the cue (the clean clip ``x``).

Shapes: waveforms ``(batch, channels, samples)``; masks ``(batch, bins, frames)``; spectra
``(batch, channels, bins, frames)`` complex.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from listenable.atomic import write_json, write_text
from listenable.errors import UsageError
from listenable.evaluation.groundtruth import event_precision, event_recall
from listenable.experiments.cues import CuedClip, parse_cue, write_cued_data

__all__ = [
    "ShortcutConfig",
    "cue_recall",
    "cue_precision",
    "shuffled_masks",
    "measure",
    "summarise",
    "run_shortcut",
    "RECALL_BAR",
]

log = logging.getLogger(__name__)

#: The bar: the listenable output keeps at least this many times the shuffled mask's share
#: of the cue's energy.
RECALL_BAR = 2.0
#: The settings a folder's data and model depend on (a rerun with others is refused).
_FIXED = (
    "clips_per_class",
    "evaluate_fraction",
    "duration",
    "seed",
    "cue_class",
    "cue",
    "cue_db",
    "architecture",
)


@dataclass
class ShortcutConfig:
    """The experiment's settings (defaults: the run in ``docs/shortcut.md``)."""

    clips_per_class: int = 24
    #: share of each class's clips kept for testing (24 → 18 training, 6 test clips)
    evaluate_fraction: float = 0.25
    #: clip length, s (5 s: half the cost of the scenes' 10 s; the small model's 544-frame
    #: crops then keep the whole clip)
    duration: float = 5.0
    seed: int = 0
    #: the class with the cue: metro_station, whose door chimes the small model finds the
    #: hardest signature (a shortcut pays most there; with bus it cheats too, see the docs)
    cue_class: str = "metro_station"
    #: 4 kHz: in the 3.7-5.2 kHz row of the small model's ``block4`` (a fifth of the linear
    #: bins); at 6 kHz, in the top row (a third of them), the masks came out larger
    cue: str = "tone:4000"
    #: the cue's RMS over the clean clip's RMS, dB (at -20 dB the model ignored the cue)
    cue_db: float = -10.0
    architecture: str = "small"
    epochs: int = 6
    batch_size: int = 16
    precise_bn: int = 8
    method: str = "gradcam"
    explain_batch: int = 8
    gallery: bool = True
    #: also the per-clip figure PNGs (slow on a CPU; the gallery's own views are drawn anyway)
    figures: bool = False
    audio_format: str = "ogg"
    device: str = "cpu"


# --------------------------------------------------------------------------- metrics


def cue_recall(mask: torch.Tensor, cue: torch.Tensor) -> torch.Tensor:
    """``Σ M²|C|² / Σ|C|²`` per clip ``(batch,)`` float64: the share of the cue's energy the
    listenable output ``M ⊙ X`` keeps (``mask (batch, bins, frames)``, ``cue`` the complex
    STFT of the cue stem ``(batch, channels, bins, frames)``; NaN for a silent cue)."""
    return event_recall(mask, cue, reduction="none")


def cue_precision(mask: torch.Tensor, cue: torch.Tensor, mixture: torch.Tensor) -> torch.Tensor:
    """``min(1, Σ M²|C|² / Σ M²|X|²)`` per clip: the share of the listenable output's energy
    that is cue (``mixture`` the STFT of the cued clip, shaped as ``cue``)."""
    return event_precision(mask, cue, mixture, reduction="none")


def shuffled_masks(mask: torch.Tensor, seeds: list[int]) -> torch.Tensor:
    """Each clip's mask ``(batch, bins, frames)`` with its values permuted over the TF bins
    (generator seeded with ``seeds[i]``): the same area and values, no position."""
    if len(seeds) != len(mask):
        raise ValueError(f"{len(seeds)} seeds for {len(mask)} masks")
    out = torch.empty_like(mask, memory_format=torch.contiguous_format)
    for i, seed in enumerate(seeds):
        flat = mask[i].reshape(-1)
        perm = torch.randperm(flat.numel(), generator=torch.Generator().manual_seed(seed))
        out[i] = flat[perm.to(flat.device)].view(mask.shape[1:])
    return out


# --------------------------------------------------------------------------- measuring


def _pairs(clips: list[CuedClip]) -> list[tuple[CuedClip, CuedClip]]:
    """``(clean, cued)`` versions of every test clip, in data order."""
    clean = {c.source: c for c in clips if c.split == "test" and not c.cued}
    return [(clean[c.source], c) for c in clips if c.split == "test" and c.cued]


def _load(paths, front_end) -> torch.Tensor:
    from listenable.io import load_for

    return torch.stack([load_for(p, front_end)[0] for p in paths])


def measure(
    explainer,
    clips: list[CuedClip],
    *,
    cue_class: str,
    seed: int = 0,
    batch_size: int = 8,
    progress: Callable[[int, int], None] | None = None,
) -> list[dict]:
    """One row per test clip (see the module docstring): its decisions with and without the
    cue, the cue recall and precision of the cue class's and of the predicted class's
    masks and of their shuffled versions, and the decisions on the listenable and residual
    outputs of the mask and of the shuffled mask. ``explainer`` is an
    :class:`~listenable.explain.Explainer`; ``progress(n_done, n_total)`` after each batch."""
    names = list(explainer.class_names)
    if cue_class not in names:
        raise UsageError(f"cue class {cue_class!r} is not one of the model's classes {names}")
    cue_index = names.index(cue_class)
    pairs = _pairs(clips)
    fe, listening = explainer.front_end, explainer.listening
    rows: list[dict] = []
    for start in range(0, len(pairs), batch_size):
        part = pairs[start : start + batch_size]
        clean = _load([a.path for a, _ in part], fe).to(explainer.device)
        cued = _load([b.path for _, b in part], fe).to(explainer.device)
        stem = _load([b.cue_path for _, b in part], fe).to(explainer.device)
        n, length = len(part), cued.shape[-1]
        logits_clean = explainer.logits(clean)
        expl = explainer(cued, [cue_index] * n)  # its forward pass decides the cued clips
        prob_cued = expl.probabilities
        pred_cued = prob_cued.argmax(1)
        with torch.no_grad():
            spectrum, cue_spec = listening(cued), listening(stem)
            mask = expl.mask
            seeds = [seed * 1_000_003 + start + i for i in range(n)]
            shuffled = shuffled_masks(mask, seeds)
            rand_listenable = listening.istft(spectrum, length, mask=shuffled)
            rand_residual = cued - rand_listenable
            recall, recall_shuf = cue_recall(mask, cue_spec), cue_recall(shuffled, cue_spec)
            precision = cue_precision(mask, cue_spec, spectrum)
            precision_shuf = cue_precision(shuffled, cue_spec, spectrum)
            cue_power = cue_spec.abs().double().square().sum(dim=(1, 2, 3))
            share = cue_power / spectrum.abs().double().square().sum(dim=(1, 2, 3))
        keys = ("listenable", "residual", "listenable_shuffled", "residual_shuffled")
        audio = torch.cat([expl.listenable, expl.residual, rand_listenable, rand_residual])
        decided = dict(zip(keys, explainer.logits(audio).argmax(1).split(n)))
        # the predicted class's mask, where it is not the cue class's
        other = [i for i in range(n) if int(pred_cued[i]) != cue_index]
        pred_recall = recall.clone()
        pred_recall_shuf = recall_shuf.clone()
        pred_area = expl.mask_area.clone()
        if other:
            ex = explainer(cued[other])
            pred_recall[other] = cue_recall(ex.mask, cue_spec[other])
            pred_recall_shuf[other] = cue_recall(
                shuffled_masks(ex.mask, [s + 500_009 for s in (seeds[i] for i in other)]),
                cue_spec[other],
            )
            pred_area[other] = ex.mask_area
        p_clean = explainer.model.probabilities(logits_clean)[:, cue_index]
        p_cued = prob_cued[:, cue_index]
        for i, (a, b) in enumerate(part):
            rows.append(
                {
                    "source": a.source,
                    "label": a.label,
                    "clean_file": a.filename,
                    "cued_file": b.filename,
                    "cue_file": f"cues/{b.cue_path.name}",
                    "predicted_clean": names[int(logits_clean[i].argmax())],
                    "predicted_cued": names[int(pred_cued[i])],
                    "p_cue_class_clean": float(p_clean[i]),
                    "p_cue_class_cued": float(p_cued[i]),
                    "mask_area": float(expl.mask_area[i]),
                    "mask_mean_square": float(mask[i].double().square().mean()),
                    "cue_recall": float(recall[i]),
                    "cue_recall_shuffled": float(recall_shuf[i]),
                    "cue_precision": float(precision[i]),
                    "cue_precision_shuffled": float(precision_shuf[i]),
                    "cue_share_of_clip": float(share[i]),
                    "predicted_class_mask_area": float(pred_area[i]),
                    "predicted_class_cue_recall": float(pred_recall[i]),
                    "predicted_class_cue_recall_shuffled": float(pred_recall_shuf[i]),
                    **{f"predicted_{k}": names[int(v[i])] for k, v in decided.items()},
                }
            )
        if progress is not None:
            progress(len(rows), len(pairs))
    return rows


def _mean(values) -> float | None:
    values = [v for v in values if v is not None and not math.isnan(v)]
    return sum(values) / len(values) if values else None


def _rate(flags) -> float | None:
    flags = list(flags)
    return sum(flags) / len(flags) if flags else None


def _recall_block(rows: list[dict], prefix: str = "") -> dict:
    kept = _mean(r[f"{prefix}cue_recall"] for r in rows)
    shuffled = _mean(r[f"{prefix}cue_recall_shuffled"] for r in rows)
    return {
        "clips": len(rows),
        "listenable": kept,
        "shuffled": shuffled,
        "ratio": kept / shuffled if kept is not None and shuffled else None,
        "mask_area": _mean(r[f"{prefix}mask_area"] for r in rows),
    }


def summarise(rows: list[dict], cue_class: str) -> dict:
    """The experiment's numbers from :func:`measure`'s rows (see ``report.json``)."""
    others = [r for r in rows if r["label"] != cue_class]
    own = [r for r in rows if r["label"] == cue_class]
    hijacked = [r for r in others if r["predicted_cued"] == cue_class]
    called_cue = [r for r in rows if r["predicted_cued"] == cue_class]

    def accuracy(subset, key):
        return _rate(r[key] == r["label"] for r in subset)

    per_class = {}
    for r in rows:
        entry = per_class.setdefault(
            r["label"], {"clips": 0, "clean_correct": 0, "cued_correct": 0, "cued_as_cue_class": 0}
        )
        entry["clips"] += 1
        entry["clean_correct"] += r["predicted_clean"] == r["label"]
        entry["cued_correct"] += r["predicted_cued"] == r["label"]
        entry["cued_as_cue_class"] += r["predicted_cued"] == cue_class
    recall = _recall_block(rows)
    return {
        "clips": {"test_clips": len(rows), "cue_class": len(own), "other_classes": len(others)},
        "accuracy": {
            "clean": accuracy(rows, "predicted_clean"),
            "cued": accuracy(rows, "predicted_cued"),
            "cue_class_clean": accuracy(own, "predicted_clean"),
            "cue_class_cued": accuracy(own, "predicted_cued"),
            "other_classes_clean": accuracy(others, "predicted_clean"),
            "other_classes_cued": accuracy(others, "predicted_cued"),
        },
        "cheating": {
            "other_classes_cued_called_cue_class": _rate(
                r["predicted_cued"] == cue_class for r in others
            ),
            "other_classes_clean_called_cue_class": _rate(
                r["predicted_clean"] == cue_class for r in others
            ),
            "hijacked_clips": len(hijacked),
            "mean_p_cue_class_other_clean": _mean(r["p_cue_class_clean"] for r in others),
            "mean_p_cue_class_other_cued": _mean(r["p_cue_class_cued"] for r in others),
        },
        "cue_recall": {
            "cue_class_explained": recall,
            "hijacked_clips": _recall_block(hijacked),
            "predicted_class_explained": _recall_block(rows, "predicted_class_"),
            "shuffled_expected": _mean(r["mask_mean_square"] for r in rows),
        },
        "cue_precision": {
            "listenable": _mean(r["cue_precision"] for r in rows),
            "shuffled": _mean(r["cue_precision_shuffled"] for r in rows),
            "cue_share_of_clip": _mean(r["cue_share_of_clip"] for r in rows),
        },
        "residual_flip": {
            "clips": len(called_cue),
            "listenable_mask": _rate(r["predicted_residual"] != cue_class for r in called_cue),
            "shuffled_mask": _rate(
                r["predicted_residual_shuffled"] != cue_class for r in called_cue
            ),
            "exact_cue_removed": _rate(r["predicted_clean"] != cue_class for r in called_cue),
            "hijacked_back_to_true_class": _rate(
                r["predicted_residual"] == r["label"] for r in hijacked
            ),
            "hijacked_back_to_true_class_shuffled": _rate(
                r["predicted_residual_shuffled"] == r["label"] for r in hijacked
            ),
        },
        "listenable_keeps_cue_class": {
            "clips": len(called_cue),
            "listenable_mask": _rate(r["predicted_listenable"] == cue_class for r in called_cue),
            "shuffled_mask": _rate(
                r["predicted_listenable_shuffled"] == cue_class for r in called_cue
            ),
        },
        "per_class": per_class,
        "bar": {
            "recall_ratio_at_least": RECALL_BAR,
            "met": bool(recall["ratio"] is not None and recall["ratio"] >= RECALL_BAR),
        },
    }


# --------------------------------------------------------------------------- the run


def _check_settings(out: Path, cfg: ShortcutConfig) -> None:
    path = out / "shortcut.json"
    fixed = {k: getattr(cfg, k) for k in _FIXED}
    if path.is_file():
        old = json.loads(path.read_text(encoding="utf-8"))
        diff = {k: (old.get(k), v) for k, v in fixed.items() if old.get(k) != v}
        if diff:
            detail = ", ".join(f"{k} {a!r} != {b!r}" for k, (a, b) in diff.items())
            raise UsageError(
                f"{path}: {out} holds an experiment with other settings ({detail}); "
                "use a new output folder"
            )
        return
    write_json(path, fixed)


def run_shortcut(
    out: str | os.PathLike,
    cfg: ShortcutConfig,
    *,
    model=None,
    stage: Callable[[str], None] | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    on_batch: Callable[[dict], None] | None = None,
    on_epoch: Callable[[dict], None] | None = None,
) -> dict:
    """Run the whole experiment into ``out`` (see the module docstring); return the report.

    ``model``: an :class:`~listenable.models.Explainable` to measure instead of training one
    (e.g. an oracle); its class names must include the scenes' classes. Resumable: the
    scenes, the cued data and the checkpoint are reused, and training resumes.
    ``stage(text)`` names each step; ``progress(step, n_done, n_total)`` inside the data,
    measuring and gallery steps; ``on_batch``/``on_epoch`` are :func:`listenable.train.train`'s.
    """
    from listenable.data.scenes import CLASSES, write_scenes
    from listenable.explain import Explainer
    from listenable.train import TrainConfig

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.cue_class not in CLASSES:
        raise UsageError(f"cue class {cfg.cue_class!r} is not a scene class: {list(CLASSES)}")
    train_cfg = TrainConfig(
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        device=cfg.device,
        precise_bn_batches=cfg.precise_bn,
        architecture=cfg.architecture,
        extra={"provenance": {"experiment": "shortcut", "settings": asdict(cfg)}},
    )
    front_end = model.front_end if model is not None else train_cfg.front_end()
    cue = parse_cue(cfg.cue, front_end.sample_rate)
    _check_settings(out, cfg)
    say = stage or (lambda text: None)
    seconds: dict[str, float] = {}
    clock = [time.perf_counter()]

    def lap(name: str) -> None:
        now = time.perf_counter()
        seconds[name] = round(now - clock[0], 1)
        clock[0] = now

    def step(name):
        return (lambda done, total: progress(name, done, total)) if progress else None

    say(f"1/5 synthetic scenes ({cfg.clips_per_class} clips per class) in {out / 'scenes'}")
    write_scenes(
        out / "scenes",
        clips_per_class=cfg.clips_per_class,
        seed=cfg.seed,
        evaluate_fraction=cfg.evaluate_fraction,
        duration=cfg.duration,
        progress=step("scenes"),
    )
    lap("scenes")
    say(
        f"2/5 cued copy: {cue.describe()} at {cfg.cue_db:g} dB in every {cfg.cue_class} "
        f"training clip; every test clip with and without it"
    )
    clips = write_cued_data(
        out / "scenes",
        out / "data",
        cue=cue,
        cue_class=cfg.cue_class,
        cue_db=cfg.cue_db,
        front_end=front_end,
        seed=cfg.seed,
        progress=step("cued data"),
    )
    lap("cued_data")
    checkpoint = None
    if model is None:
        from listenable.checkpoint import load_explainable
        from listenable.data import AudioDataset
        from listenable.train import train

        train_clips = [(c.path, CLASSES.index(c.label)) for c in clips if c.split == "train"]
        say(
            f"3/5 training the {cfg.architecture} model on {len(train_clips)} clips, "
            f"{cfg.epochs} epochs (resumable)"
        )
        dataset = AudioDataset(train_clips, CLASSES, out / "data")
        checkpoint = train(
            dataset,
            out / "model.safetensors",
            train_cfg,
            resume=True,
            on_batch=on_batch,
            on_epoch=on_epoch,
        )
        model = load_explainable(checkpoint, device=cfg.device)
    else:
        say("3/5 the given model (no training)")
    lap("training")
    explainer = Explainer(model, method=cfg.method)
    say(f"4/5 measuring {cfg.method} on {sum(c.split == 'test' for c in clips) // 2} test clips")
    rows = measure(
        explainer,
        clips,
        cue_class=cfg.cue_class,
        seed=cfg.seed,
        batch_size=cfg.explain_batch,
        progress=step("measure"),
    )
    write_text(out / "measurements.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    lap("measure")
    report = {
        "experiment": "shortcut",
        "settings": asdict(cfg),
        "cue": {"spec": cue.spec, "description": cue.describe(), "level_db": cfg.cue_db},
        "model": _model_info(model, checkpoint),
        "results": summarise(rows, cfg.cue_class),
        "gallery": None,
        "seconds_this_run": seconds,
    }
    if cfg.gallery:
        say("5/5 gallery of the cued test clips")
        report["gallery"] = _gallery(out, model, clips, rows, cfg, step("gallery"))
    else:
        say("5/5 gallery skipped")
    lap("gallery")
    from listenable.experiments.shortcut_report import markdown

    write_json(out / "report.json", report)
    write_text(out / "report.md", markdown(report, out))
    return report


def _model_info(model, checkpoint: Path | None) -> dict:
    meta = getattr(model, "checkpoint_meta", None) or {}
    training = meta.get("training", {})
    history = training.get("history") or []
    return {
        "name": getattr(model, "name", type(model).__name__),
        "checkpoint": str(checkpoint) if checkpoint else None,
        "epochs_done": training.get("epochs_done"),
        "train_accuracy_last_epoch": history[-1]["accuracy"] if history else None,
        "train_seconds": sum(h.get("seconds", 0.0) for h in history) if history else None,
    }


def _gallery(out: Path, model, clips, rows, cfg: ShortcutConfig, progress) -> dict:
    """``analyze`` the cued test clips into ``out/gallery`` and build its pages; return the
    index and the page (with anchor) of the cued clip of another class that the model calls
    the cue class most confidently (else the most cue-like cued clip)."""
    from listenable.analyze import AnalyzeConfig, analyze, clip_ids
    from listenable.data import AudioDataset
    from listenable.data.scenes import CLASSES
    from listenable.report.gallery import build_gallery

    cued = [c for c in clips if c.split == "test" and c.cued]
    data = AudioDataset([(c.path, CLASSES.index(c.label)) for c in cued], CLASSES, out / "data")
    acfg = AnalyzeConfig(
        split="evaluate",
        min_confidence=0.0,
        method=cfg.method,
        figures=cfg.figures,
        batch_size=cfg.explain_batch,
        audio_format=cfg.audio_format,
    )
    total = len(cued)
    done = [0]

    def tick(n, _stats):
        done[0] += n
        if progress:
            progress(min(done[0], total), total)

    meta = {**(getattr(model, "checkpoint_meta", None) or {}), "checkpoint_path": "shortcut"}
    analyze(data, out / "gallery", model, meta, acfg, progress=tick)
    index = build_gallery(out / "gallery")
    ids = dict(zip([c.filename for c in cued], clip_ids([c.path for c in cued])))
    hijacked = [
        r for r in rows if r["label"] != cfg.cue_class and r["predicted_cued"] == cfg.cue_class
    ]
    pool = hijacked or rows
    best = max(pool, key=lambda r: r["p_cue_class_cued"]) if pool else None
    page = _page_of(out / "gallery", ids[best["cued_file"]]) if best else None
    return {
        "index": str(index),
        "clip": best["cued_file"] if best else None,
        "clip_label": best["label"] if best else None,
        "clip_predicted": best["predicted_cued"] if best else None,
        "page": page,
    }


def _page_of(gallery: Path, clip_id: str) -> str | None:
    """``gallery/class-….html#anchor`` of the page listing ``clip_id``."""
    import re

    needle = f'data-id="{clip_id}"'
    for page in sorted(gallery.glob("class-*.html")):
        text = page.read_text(encoding="utf-8")
        at = text.find(needle)
        if at >= 0:
            head = text.rfind("<li", 0, at)
            found = re.search(r'id="([^"]+)"', text[head:at])
            return str(page) + (f"#{found.group(1)}" if found else "")
    log.warning("%s: no page lists clip %s", gallery, clip_id)
    return None
