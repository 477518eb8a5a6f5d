"""``evaluate``: measure every attribution method on a data split, write results and figures.

For each clip (an evenly spread subset of the split when ``max_clips`` is set) and method,
the explanation is computed once (:meth:`listenable.explain.Explainer.masks`), giving two
maps on the listening STFT grid:

* the **mask** ``M``, the listenable output's (the explainer's ``mode``, ``percentile``,
  ``delta``, ``threshold_on``; by default the sigmoid at the 75th percentile, i.e.
  binarised);
* the **attribution**: the heatmap mapped to the STFT grid and min-max normalised per clip
  (the continuous map; the mask of ``mode="soft"``).

Every metric of the registry (:mod:`listenable.evaluation.registry`) is computed from them:
faithfulness (AI, AD, AG, FF, Fid-In) with ``M``, deletion/insertion ordered by the
attribution, SPS/COMP of the attribution, ground truth with ``M`` and localisation (pointing
game, segment ROC-AUC) of the attribution; and each metric's variants: ``_soft``
(faithfulness with the attribution as the mask) and ``_shuffled`` (the floor: ``M`` and the
attribution with their values permuted over the TF bins, :func:`~listenable.evaluation.
metrics.shuffle_bins`). The masked clips are re-synthesised and run through the whole
pipeline (``apply_to="audio"``), or their features computed from the masked spectrum
(``"features"``, :func:`~listenable.evaluation.metrics.check_apply_to`).

Ground truth (synthetic scenes): with ``events.csv``, the signature events' boxes (pointing
game, segment AUC); with ``scenes.json`` too, their audio rendered again (event recall,
precision, TF IoU, time smear; :mod:`listenable.evaluation.groundtruth`). Both only on the
clips whose explained class is their labelled class (the signature events are evidence
for that class only; with ``target="predicted"`` the misclassified clips are left out).
Sanity (cascading randomisation) runs on ``sanity_clips`` clips for the methods in
``sanity_methods`` (default: all but the multi-pass ones, :data:`COSTLY_FOR_SANITY`).

Cost per clip and method: the explanation, plus ``2 (steps − 1)`` forward passes for
deletion/insertion and 2 for each of the mask, its soft and its shuffled variant (36 for
16 steps), in chunks of ``batch_size``; per clip once: the random-order reference and the
baseline. The outputs in ``out_dir``: ``results.json``, ``results.md``, ``metrics.png``,
``sanity.png`` (:mod:`listenable.evaluation.report`); every file is written atomically.
Library code logs; ``progress(done, total)`` is called after every (batch, method) and every
sanity (stage, method).
"""

from __future__ import annotations

import inspect
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from listenable.atomic import write_json, write_text
from listenable.errors import DatasetError
from listenable.evaluation import groundtruth as gt
from listenable.evaluation import localisation as loc
from listenable.evaluation import registry
from listenable.evaluation.metrics import (
    APPLY_TO,
    BASELINES,
    baseline_spectrum,
    check_apply_to,
    deletion_insertion,
    masked_probabilities,
    model_probabilities,
    pipeline_probabilities,
    shuffle_bins,
)
from listenable.evaluation.registry import (
    DIRECTIONS,
    METRICS,
    REGISTRY,
    VARIANTS,
    Inputs,
    metric_keys,
    needs_of,
)
from listenable.evaluation.report import markdown_table, metrics_figure, sanity_figure
from listenable.evaluation.sanity import cascading_randomisation, randomisation_stages

__all__ = [
    "evaluate",
    "METRICS",
    "DIRECTIONS",
    "COSTLY_FOR_SANITY",
    "TARGETS",
    "MASK_OPTIONS",
    "markdown_table",
]

log = logging.getLogger(__name__)

#: Methods left out of the sanity check by default: each explanation costs many passes.
COSTLY_FOR_SANITY = frozenset({"scorecam", "integrated_gradients", "smoothgrad"})
TARGETS = ("predicted", "label")
#: Mask options of :class:`~listenable.explain.Explainer` that :func:`evaluate` passes on.
MASK_OPTIONS = ("percentile", "delta", "mode", "threshold_on")


def _spread(n: int, k: int | None) -> list[int]:
    """``k`` indices spread evenly over ``range(n)`` (all when ``k`` is None or ≥ n)."""
    if k is None or k >= n:
        return list(range(n))
    if k <= 0:
        return []
    return sorted({int(round(x)) for x in np.linspace(0, n - 1, k)})


def _batches(dataset, indices: Sequence[int], batch_size: int):
    """Yield ``(indices, waves (B, 2, N))`` of consecutive clips with equal length."""
    group: list[tuple[int, torch.Tensor]] = []
    for i in indices:
        wave, _label, _path = dataset[i]
        if group and (len(group) == batch_size or wave.shape != group[0][1].shape):
            yield [g[0] for g in group], torch.stack([g[1] for g in group])
            group = []
        group.append((i, wave))
    if group:
        yield [g[0] for g in group], torch.stack([g[1] for g in group])


def _mean(values: list[float]) -> float | None:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(finite)) if finite else None


def _finite(x: float) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


def _resolve_methods(methods: Sequence[str] | str | None) -> list[str]:
    from listenable.cams import METHODS

    if methods is None:
        return list(METHODS)
    if isinstance(methods, str):
        methods = [m.strip() for m in methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from {sorted(METHODS)}")
    if not methods:
        raise ValueError("no methods to evaluate")
    return list(dict.fromkeys(methods))


def _mask_options(percentile, delta, mode, threshold_on) -> dict:
    """The mask options given (not None), checked against the Explainer's signature."""
    from listenable.explain import Explainer

    given = {
        k: v for k, v in zip(MASK_OPTIONS, (percentile, delta, mode, threshold_on)) if v is not None
    }
    accepted = inspect.signature(Explainer).parameters
    missing = [k for k in given if k not in accepted]
    if missing:
        raise ValueError(f"this listenable's Explainer does not take {missing}")
    # fail before the model is loaded and probed (the Explainer checks them again)
    from listenable import masking

    masking.binarise(
        torch.zeros(1, 2, 2),
        mode=given.get("mode", "sigmoid"),
        percentile_=given.get("percentile", masking.DEFAULT_PERCENTILE),
        delta=given.get("delta", masking.DEFAULT_DELTA),
    )
    choices = getattr(masking, "THRESHOLD_ON", None)
    if "threshold_on" in given and choices is not None and given["threshold_on"] not in choices:
        raise ValueError(f"unknown threshold_on {given['threshold_on']!r}; choose from {choices}")
    return given


def evaluate(
    dataset_root: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    model=None,
    checkpoint: str | os.PathLike | None = None,
    split: str = "evaluate",
    methods: Sequence[str] | str | None = None,
    max_clips: int | None = None,
    device: str | torch.device = "cpu",
    batch_size: int = 8,
    steps: int = 16,
    baseline: str = "zero",
    target: str = "predicted",
    apply_to: str = "audio",
    percentile: float | None = None,
    delta: float | None = None,
    mode: str | None = None,
    threshold_on: str | None = None,
    segment_s: float = loc.SEGMENT_S,
    sanity_clips: int = 2,
    sanity_methods: Sequence[str] | None = None,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Measure the attribution ``methods`` on clips of ``dataset_root`` and write the results.

    Args:
        dataset_root: a data set :func:`listenable.data.open_dataset` reads (TAU tree,
            synthetic scenes, class folders, CSV).
        out_dir: where ``results.json``, ``results.md``, ``metrics.png``, ``sanity.png`` go.
        model: an :class:`~listenable.models.Explainable` or a ``--model`` spec
            (:func:`listenable.models.spec.load_model`; default: the shipped model).
        checkpoint: a safetensors checkpoint (the same as ``model=path``).
        split: the data split (TAU layout).
        methods: method names (default: every method of :data:`listenable.cams.METHODS`).
        max_clips: evaluate this many clips, spread evenly over the split (default all).
        device: ``"cpu"``, ``"cuda"``...
        batch_size: clips per batch, and items per forward pass.
        steps: deletion / insertion steps.
        baseline: what removed TF bins become (``"zero"`` or ``"blur"``, see
            :func:`listenable.evaluation.metrics.baseline_spectrum`).
        target: explain the ``"predicted"`` class or the ``"label"``.
        apply_to: ``"audio"`` (mask the listening STFT, re-synthesise, run the whole
            pipeline) or ``"features"`` (mask the classifier's input spectrum; front ends
            that share the listening STFT only).
        percentile, delta, mode, threshold_on: the mask, passed to every
            :class:`~listenable.explain.Explainer` (``None``: the Explainer's default).
        segment_s: segment length of the segment ROC-AUC (seconds).
        sanity_clips: clips for the cascading randomisation (0 = skip it).
        sanity_methods: methods for it (default: the evaluated ones but
            :data:`COSTLY_FOR_SANITY`).
        seed: for tie-breaking, the random-order reference, the shuffled floor and the
            re-initialisation.
        progress: ``progress(done, total)`` callback.

    Returns:
        The ``results.json`` content: ``{"methods": {name: {key: mean}}, "sanity":
        {name: [{"stage", "spearman", "ssim"}]}, "reference": {...}, "settings": {...},
        "timing": {...}, "errors": {name: message}}`` with the keys :data:`METRICS` (the
        registry's metrics, then their ``_soft`` and ``_shuffled`` variants); a value is
        ``None`` where it could not be computed (ground truth without ``events.csv``).
    """
    from listenable.data import open_dataset
    from listenable.explain import Explainer
    from listenable.models import Explainable
    from listenable.models.spec import load_model

    started = time.perf_counter()
    if baseline not in BASELINES:
        raise ValueError(f"baseline must be one of {BASELINES}, got {baseline!r}")
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    if apply_to not in APPLY_TO:
        raise ValueError(f"apply_to must be one of {APPLY_TO}, got {apply_to!r}")
    if batch_size < 1 or steps < 1:
        raise ValueError(f"batch_size and steps must be >= 1, got {batch_size}, {steps}")
    mask_options = _mask_options(percentile, delta, mode, threshold_on)
    methods = _resolve_methods(methods)
    sanity_list = (
        [m for m in methods if m not in COSTLY_FOR_SANITY]
        if sanity_methods is None
        else _resolve_methods(sanity_methods)
    )
    root = Path(dataset_root)
    out = Path(out_dir)
    spec = model if model is not None else checkpoint
    model = spec if isinstance(spec, Explainable) else load_model(spec, device=device)
    model.n_classes  # noqa: B018 (names the classes of a model that has none)
    class_names = list(model.class_names)
    listening = model.listening
    explainers = {m: Explainer(model, method=m, **mask_options) for m in methods}
    check_apply_to(_any(explainers), apply_to)
    dataset = open_dataset(root, split=split, default_split="evaluate")
    dataset.front_end = model.front_end.cpu()
    indices = _spread(len(dataset), max_clips)
    if not indices:
        raise DatasetError(f"{root}: no clips to evaluate in split {split!r}")
    label_map = {
        i: (class_names.index(name) if name in class_names else -1)
        for i, name in enumerate(dataset.class_names)
    }
    label_map[-1] = -1  # unlabelled clips (TAU test split)
    if target == "label" and any(label_map[dataset.items[i][1]] < 0 for i in indices):
        raise DatasetError(
            f"{root}: target='label' but some clips are unlabelled or labelled outside the "
            f"checkpoint's classes {class_names}; use target='predicted'"
        )
    needed = needs_of()  # what the registered metrics need, together
    has_events = root.is_dir() and (root / "events.csv").is_file()
    has_truth = has_events and (root / "scenes.json").is_file()
    annotations = {}
    if has_events and "boxes" in needed:
        from listenable.data.scenes import load_events

        annotations = load_events(root)
    generator = torch.Generator().manual_seed(seed)
    shuffler = torch.Generator().manual_seed(seed)

    per_clip: dict[str, dict[str, list[float]]] = {
        m: {k: [] for k in registry.METRICS} for m in methods
    }
    reference: dict[str, list[float]] = {"deletion_auc": [], "insertion_auc": [], "p_empty": []}
    errors: dict[str, str] = {}
    seconds = dict.fromkeys(methods, 0.0)
    seconds_reference = 0.0
    clips_info: list[dict] = []
    n_stages = len(randomisation_stages(model))
    sanity_total = len(sanity_list) * n_stages if sanity_clips > 0 else 0
    total = len(indices) * len(methods) + sanity_total
    done = 0

    for batch_idx, waves in _batches(dataset, indices, batch_size):
        t0 = time.perf_counter()
        waves = waves.to(device)
        length = waves.shape[-1]
        spectrum = listening(waves)
        with torch.no_grad():
            probs_x = model_probabilities(_any(explainers), model.inputs(waves, spectrum))
        labels = torch.tensor(
            [label_map[dataset.items[i][1]] for i in batch_idx], device=probs_x.device
        )
        tgt = probs_x.argmax(dim=1) if target == "predicted" else labels
        p_x = probs_x.gather(1, tgt[:, None])[:, 0]
        base = baseline_spectrum(spectrum, baseline)
        p_empty = pipeline_probabilities(
            _any(explainers), base, length, batch_size=batch_size, apply_to=apply_to
        )
        p_empty = p_empty.gather(1, tgt[:, None])[:, 0]
        truth, boxes = [], []
        for j, i in enumerate(batch_idx):
            name = Path(os.path.relpath(dataset.items[i][0], root.resolve())).as_posix()
            info = {
                "file": name,
                "label": class_names[int(labels[j])] if labels[j] >= 0 else None,
                "target": class_names[int(tgt[j])],
                "p_target": float(p_x[j]),
            }
            clips_info.append(info)
            explained_is_label = int(labels[j]) == int(tgt[j])
            clip_truth = None
            if has_truth and explained_is_label and "truth" in needed:
                try:
                    clip_truth = gt.scene_truth(
                        root, name, listening, length=length, channels=model.front_end.channels
                    )
                except DatasetError as exc:
                    log.warning("no ground truth for %s: %s", name, exc)
            truth.append(clip_truth)
            clip_boxes = None
            if has_events and explained_is_label and "boxes" in needed:
                clip_boxes = loc.event_boxes(annotations.get(name, [])) or None
            boxes.append(clip_boxes)
        attribution = torch.rand(spectrum.shape[:1] + spectrum.shape[2:], generator=generator)
        ref = deletion_insertion(
            _any(explainers),
            spectrum,
            attribution.to(spectrum.device),
            tgt,
            length,
            steps=steps,
            baseline=baseline,
            p_full=p_x,
            p_empty=p_empty,
            generator=generator,
            batch_size=batch_size,
            apply_to=apply_to,
        )
        reference["deletion_auc"] += ref.deletion_auc.tolist()
        reference["insertion_auc"] += ref.insertion_auc.tolist()
        reference["p_empty"] += p_empty.tolist()
        seconds_reference += time.perf_counter() - t0

        for method in methods:
            if method in errors:
                done += len(batch_idx)
                continue
            t0 = time.perf_counter()
            try:
                values = _measure(
                    explainers[method],
                    waves,
                    spectrum,
                    length,
                    tgt,
                    probs_x,
                    p_empty,
                    truth,
                    boxes,
                    steps=steps,
                    baseline=baseline,
                    generator=generator,
                    shuffler=shuffler,
                    batch_size=batch_size,
                    apply_to=apply_to,
                    segment_s=segment_s,
                )
            except Exception as exc:  # a broken method must not sink a long run
                log.exception("method %s failed; left out of the results", method)
                errors[method] = f"{type(exc).__name__}: {exc}"
                values = None
            if values is not None:
                for key, vals in values.items():
                    per_clip[method][key] += vals
            seconds[method] += time.perf_counter() - t0
            done += len(batch_idx)
            if progress is not None:
                progress(done, total)

    # --- sanity --------------------------------------------------------------------
    t0 = time.perf_counter()
    sanity: dict[str, list[dict]] = {}
    sanity_list = [m for m in sanity_list if m not in errors]
    if sanity_clips > 0 and sanity_list:
        chosen = [indices[k] for k in _spread(len(indices), sanity_clips)]
        waves = [dataset[i][0] for i in chosen]
        shortest = min(w.shape[-1] for w in waves)
        waves = torch.stack([w[..., :shortest] for w in waves]).to(device)
        sanity_target = (
            None if target == "predicted" else [label_map[dataset.items[i][1]] for i in chosen]
        )
        base_done = done

        def sanity_progress(d, _t):
            if progress is not None:
                progress(base_done + d, total)

        try:
            raw = cascading_randomisation(
                model,
                waves,
                methods=sanity_list,
                target=sanity_target,
                seed=seed,
                explainer_options=dict(mask_options),
                progress=sanity_progress,
            )
            sanity = {
                m: [
                    {
                        "stage": r["stage"],
                        "spearman": _finite(r["spearman"]),
                        "ssim": _finite(r["ssim"]),
                    }
                    for r in rows
                ]
                for m, rows in raw.items()
            }
        except Exception as exc:  # keep the faithfulness results of a long run
            log.exception("sanity check failed")
            errors["sanity"] = f"{type(exc).__name__}: {exc}"
    seconds_sanity = time.perf_counter() - t0

    def counted(key: str) -> dict[str, int]:
        return {
            m: sum(v is not None and math.isfinite(v) for v in per_clip[m][key]) for m in methods
        }

    results = {
        "methods": {
            m: None if m in errors else {k: _mean(per_clip[m][k]) for k in registry.METRICS}
            for m in methods
        },
        # every metric's value on every clip, in the order of settings.clip_list (None where
        # it is undefined): what a paired comparison of two methods needs
        "per_clip": {
            m: {k: [_finite(v) for v in vals] for k, vals in per_clip[m].items()}
            for m in methods
            if m not in errors
        },
        "sanity": sanity,
        "reference": {
            "random_order": {
                "deletion_auc": _mean(reference["deletion_auc"]),
                "insertion_auc": _mean(reference["insertion_auc"]),
            },
            "p_target": _mean([c["p_target"] for c in clips_info]),
            "p_target_baseline": _mean(reference["p_empty"]),
        },
        "settings": {
            "data": str(root),
            "split": split,
            "model": spec if isinstance(spec, str) else (model.name if spec else "shipped"),
            "clips": len(indices),
            "methods": methods,
            "target": target,
            "accuracy_on_clips": _mean(
                [float(c["label"] == c["target"]) for c in clips_info if c["label"] is not None]
            ),
            "mask": {k: v for k, v in _any(explainers).settings.items() if k != "method"},
            "apply_to": apply_to,
            "attribution": "heatmap mapped to the STFT grid, min-max normalised per clip",
            "sps_comp_on": "attribution (soft mask)",
            "localisation_on": "attribution",
            "faithfulness_and_ground_truth_on": "mask",
            "variants": dict(VARIANTS),
            "metrics": {
                k: {
                    "direction": m.direction,
                    "needs": sorted(m.needs),
                    "variants": list(m.variants),
                    "description": m.description,
                }
                for k, m in REGISTRY.items()
            },
            "segment_s": segment_s,
            "steps": steps,
            "baseline": baseline,
            "ground_truth": has_truth,
            "events_annotated": has_events,
            "ground_truth_clips": counted("event_recall") if has_truth else None,
            "localisation_clips": counted("pointing_game") if has_events else None,
            "sanity_clips": min(sanity_clips, len(indices)) if sanity_list else 0,
            "sanity_methods": sanity_list,
            "seed": seed,
            "device": str(device),
            "batch_size": batch_size,
            "clip_list": clips_info,
        },
        "timing": {
            "methods_s": {m: round(s, 2) for m, s in seconds.items()},
            "reference_s": round(seconds_reference, 2),
            "sanity_s": round(seconds_sanity, 2),
            "total_s": round(time.perf_counter() - started, 2),
        },
        "errors": errors,
    }
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "results.json", results)
    write_text(out / "results.md", markdown_table(results))
    metrics_figure(results, out / "metrics.png")
    sanity_figure(results, out / "sanity.png")
    log.info("evaluation written to %s in %.0f s", out, results["timing"]["total_s"])
    return results


def _any(explainers: dict):
    """Any explainer: they share the model and the features."""
    return next(iter(explainers.values()))


def _measure(
    explainer,
    waves,
    spectrum,
    length,
    tgt,
    probs_x,
    p_empty,
    truth,
    boxes,
    *,
    steps,
    baseline,
    generator,
    shuffler,
    batch_size,
    apply_to,
    segment_s=loc.SEGMENT_S,
) -> dict[str, list[float]]:
    """Per-clip values of every registered metric and variant for one method on one batch.

    Only what the registered metrics need is computed (:func:`~listenable.evaluation.
    registry.needs_of`): the masked re-runs per variant, the deletion/insertion curves."""
    from listenable.masking import normalise

    result, mask, _empty = explainer.masks(spectrum, tgt.tolist(), waveforms=waves)
    with torch.no_grad():
        grid = explainer.projection(result.heatmap.float(), result.geometry, spectrum.shape[-1])
        attribution, _ = normalise(grid)
    common = {
        "target": tgt,
        "probs_x": probs_x,
        "spectrum": spectrum,
        "listening": explainer.listening,
        "length": length,
        "truth": truth,
        "boxes": boxes,
        "segment_s": segment_s,
    }
    views = {None: Inputs(mask=mask, attribution=attribution, **common)}
    if metric_keys("soft"):
        views["soft"] = Inputs(mask=attribution, attribution=attribution, **common)
    if metric_keys("shuffled"):
        s_mask, s_attr = shuffle_bins([mask, attribution], shuffler)
        views["shuffled"] = Inputs(mask=s_mask, attribution=s_attr, **common)
    for variant, inputs in views.items():
        need = needs_of(variant)
        if "masked" in need:
            inputs.probs_masked, inputs.probs_inverse = masked_probabilities(
                explainer, spectrum, inputs.mask, length, batch_size=batch_size, apply_to=apply_to
            )
        if "curves" in need:
            inputs.curves = deletion_insertion(
                explainer,
                spectrum,
                inputs.attribution,
                tgt,
                length,
                steps=steps,
                baseline=baseline,
                p_full=probs_x.gather(1, tgt[:, None])[:, 0],
                p_empty=p_empty,
                generator=generator,
                batch_size=batch_size,
                apply_to=apply_to,
            )
    out: dict[str, list[float]] = {}
    for metric in REGISTRY.values():
        for variant in (None, *metric.variants):
            values = metric.compute(views[variant])
            out[metric.key(variant)] = [float(x) for x in values.double().cpu().tolist()]
    return out
