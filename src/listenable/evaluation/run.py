"""``evaluate``: measure every attribution method on a data split, write results and figures.

For each clip (an evenly spread subset of the split when ``max_clips`` is set) and method,
the explanation is computed once (:meth:`listenable.explain.Explainer.masks`) and:

* **faithfulness** with the mask ``M`` (the listenable output's mask: sigmoid at the 75th
  percentile, so every method keeps about the same 25 % of the TF bins): AI, AD, AG, FF,
  Fid-In from one batched re-run of ``M⊙x`` and ``(1−M)⊙x``
  (:mod:`listenable.evaluation.metrics`);
* **deletion / insertion** (RISE) in ``steps`` steps, ordered by the attribution = the
  heatmap mapped to the STFT grid and min-max normalised; the method-independent end
  points and a random-order reference are computed once per clip;
* **SPS / COMP** on that attribution (the continuous map, i.e. the mask in ``soft`` mode:
  the thresholded mask has a fixed area by construction, so its Gini index would say
  little);
* **ground truth** (synthetic scenes only, where the data root has ``events.csv`` and
  ``scenes.json``; the events are rendered again) with the mask ``M``: event recall,
  precision, TF IoU, time smear against the annotated event frames
  (:mod:`listenable.evaluation.groundtruth`), on the clips whose explained class is their
  labelled class (the signature events are evidence for that class only; with
  ``target="predicted"`` the misclassified clips are left out);
* **sanity** (cascading randomisation) on ``sanity_clips`` clips for the methods in
  ``sanity_methods`` (default: all but the multi-pass ones, :data:`COSTLY_FOR_SANITY`).

Cost per clip and method: the explanation, plus ``2 + 2 (steps − 1)`` forward passes of
the pipeline (32 for 16 steps), in chunks of ``batch_size``. The outputs in ``out_dir``:
``results.json``, ``results.md`` (methods × metrics), ``metrics.png``, ``sanity.png``;
every file is written atomically. Library code logs; ``progress(done, total)`` is called
after every (batch, method) and every sanity (stage, method).
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from listenable.atomic import atomic_path, write_json, write_text
from listenable.errors import DatasetError
from listenable.evaluation import groundtruth as gt
from listenable.evaluation.metrics import (
    BASELINES,
    average_drop,
    average_gain,
    average_increase,
    baseline_spectrum,
    complexity,
    deletion_insertion,
    faithfulness,
    fid_in,
    masked_probabilities,
    model_probabilities,
    pipeline_probabilities,
    sparseness,
)
from listenable.evaluation.sanity import cascading_randomisation, randomisation_stages

__all__ = ["evaluate", "METRICS", "DIRECTIONS", "COSTLY_FOR_SANITY", "TARGETS", "markdown_table"]

log = logging.getLogger(__name__)

#: Metric keys of ``results.json``, in table order.
METRICS = (
    "AI",
    "AD",
    "AG",
    "FF",
    "fid_in",
    "deletion_auc",
    "insertion_auc",
    "sps",
    "comp",
    "event_recall",
    "event_precision",
    "tf_iou",
    "time_smear",
)
#: Which way is better ("time_smear": 1 is ideal, more is smear).
DIRECTIONS = {
    "AI": "↑",
    "AD": "↓",
    "AG": "↑",
    "FF": "↑",
    "fid_in": "↑",
    "deletion_auc": "↓",
    "insertion_auc": "↑",
    "sps": "↑",
    "comp": "↓",
    "event_recall": "↑",
    "event_precision": "↑",
    "tf_iou": "↑",
    "time_smear": "→1",
}
_GROUND_TRUTH = ("event_recall", "event_precision", "tf_iou", "time_smear")
#: Methods left out of the sanity check by default: each explanation costs many passes.
COSTLY_FOR_SANITY = frozenset({"scorecam", "integrated_gradients", "smoothgrad"})
TARGETS = ("predicted", "label")


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
        sanity_clips: clips for the cascading randomisation (0 = skip it).
        sanity_methods: methods for it (default: the evaluated ones but
            :data:`COSTLY_FOR_SANITY`).
        seed: for tie-breaking, the random-order reference and the re-initialisation.
        progress: ``progress(done, total)`` callback.

    Returns:
        The ``results.json`` content: ``{"methods": {name: {metric: mean}}, "sanity":
        {name: [{"stage", "spearman", "ssim"}]}, "reference": {...}, "settings": {...},
        "timing": {...}, "errors": {name: message}}``; a metric is ``None`` where it could
        not be computed (ground truth without ``events.csv``).
    """
    from listenable.data import open_dataset
    from listenable.explain import Explainer
    from listenable.masking import normalise
    from listenable.models import Explainable
    from listenable.models.spec import load_model

    started = time.perf_counter()
    if baseline not in BASELINES:
        raise ValueError(f"baseline must be one of {BASELINES}, got {baseline!r}")
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    if batch_size < 1 or steps < 1:
        raise ValueError(f"batch_size and steps must be >= 1, got {batch_size}, {steps}")
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
    dataset = open_dataset(root, split=split)
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
    has_truth = (
        root.is_dir() and (root / "events.csv").is_file() and (root / "scenes.json").is_file()
    )
    explainers = {m: Explainer(model, method=m) for m in methods}
    generator = torch.Generator().manual_seed(seed)

    per_clip: dict[str, dict[str, list[float]]] = {m: {k: [] for k in METRICS} for m in methods}
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
        p_empty = pipeline_probabilities(_any(explainers), base, length, batch_size=batch_size)
        p_empty = p_empty.gather(1, tgt[:, None])[:, 0]
        events = []
        for j, i in enumerate(batch_idx):
            name = Path(os.path.relpath(dataset.items[i][0], root.resolve())).as_posix()
            info = {
                "file": name,
                "label": class_names[int(labels[j])] if labels[j] >= 0 else None,
                "target": class_names[int(tgt[j])],
                "p_target": float(p_x[j]),
            }
            clips_info.append(info)
            truth = None
            if has_truth and int(labels[j]) == int(tgt[j]):
                try:
                    truth = gt.scene_truth(
                        root, name, listening, length=length, channels=model.front_end.channels
                    )
                except DatasetError as exc:
                    log.warning("no ground truth for %s: %s", name, exc)
            events.append(truth)
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
                    events,
                    steps=steps,
                    baseline=baseline,
                    generator=generator,
                    batch_size=batch_size,
                    normalise=normalise,
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
                explainer_options={},
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

    truth_clips = {
        m: sum(v is not None and math.isfinite(v) for v in per_clip[m]["event_recall"])
        for m in methods
    }
    results = {
        "methods": {
            m: (
                None
                if m in errors
                else {
                    k: (_mean(per_clip[m][k]) if (k not in _GROUND_TRUTH or has_truth) else None)
                    for k in METRICS
                }
            )
            for m in methods
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
            "attribution": "heatmap mapped to the STFT grid, min-max normalised per clip",
            "sps_comp_on": "attribution (soft mask)",
            "faithfulness_and_ground_truth_on": "mask",
            "steps": steps,
            "baseline": baseline,
            "ground_truth": has_truth,
            "ground_truth_clips": truth_clips if has_truth else None,
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
    _metrics_figure(results, out / "metrics.png")
    _sanity_figure(results, out / "sanity.png")
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
    events,
    *,
    steps,
    baseline,
    generator,
    batch_size,
    normalise,
) -> dict[str, list[float]]:
    """Per-clip values of every metric for one method on one batch."""
    result, mask, _empty = explainer.masks(spectrum, tgt.tolist(), waveforms=waves)
    with torch.no_grad():
        grid = explainer.projection(result.heatmap, result.geometry, spectrum.shape[-1])
        attribution, _ = normalise(grid)
    p_m, p_inv = masked_probabilities(explainer, spectrum, mask, length, batch_size=batch_size)
    p_x = probs_x.gather(1, tgt[:, None])[:, 0]
    pc_m = p_m.gather(1, tgt[:, None])[:, 0]
    pc_inv = p_inv.gather(1, tgt[:, None])[:, 0]
    curves = deletion_insertion(
        explainer,
        spectrum,
        attribution,
        tgt,
        length,
        steps=steps,
        baseline=baseline,
        p_full=p_x,
        p_empty=p_empty,
        generator=generator,
        batch_size=batch_size,
    )
    values = {
        "AI": average_increase(p_x, pc_m, reduction="none"),
        "AD": average_drop(p_x, pc_m, reduction="none"),
        "AG": average_gain(p_x, pc_m, reduction="none"),
        "FF": faithfulness(p_x, pc_inv, reduction="none"),
        "fid_in": fid_in(probs_x, p_m, reduction="none"),
        "deletion_auc": curves.deletion_auc,
        "insertion_auc": curves.insertion_auc,
        "sps": sparseness(attribution, reduction="none"),
        "comp": complexity(attribution, reduction="none"),
    }
    out = {k: [float(x) for x in v.tolist()] for k, v in values.items()}
    for key in _GROUND_TRUTH:
        out[key] = []
    for j, truth in enumerate(events):
        if truth is None:
            for key in _GROUND_TRUTH:
                out[key].append(math.nan)
            continue
        spec_e, frames_e = truth
        m, x = mask[j : j + 1], spectrum[j : j + 1]
        out["event_recall"].append(float(gt.event_recall(m, spec_e)))
        out["event_precision"].append(float(gt.event_precision(m, spec_e, x)))
        out["tf_iou"].append(float(gt.tf_iou(m, spec_e, x)))
        out["time_smear"].append(float(gt.time_smear(m, spec_e, x, event_frames=frames_e)))
    return out


# --------------------------------------------------------------------------- reports


def _fmt(key: str, value) -> str:
    if value is None:
        return "—"
    if key in ("AI", "AD", "AG"):
        return f"{value:.1f}"
    return f"{value:.3f}"


def markdown_table(results: dict) -> str:
    """``results.md``: methods × metrics, the random-order reference, and the sanity check."""
    header = "| method | " + " | ".join(f"{k} {DIRECTIONS[k]}" for k in METRICS) + " |"
    lines = [
        "# Explanation metrics",
        "",
        header,
        "|" + "---|" * (len(METRICS) + 1),
    ]
    for name, row in results["methods"].items():
        if row is None:
            lines.append(f"| {name} | " + " | ".join("failed" for _ in METRICS) + " |")
        else:
            lines.append(f"| {name} | " + " | ".join(_fmt(k, row[k]) for k in METRICS) + " |")
    ref = results["reference"]["random_order"]
    lines.append(
        "| *random order* | "
        + " | ".join(_fmt(k, ref.get(k)) if k in ref else "" for k in METRICS)
        + " |"
    )
    s = results["settings"]
    lines += [
        "",
        f"{s['clips']} clips of `{s['data']}` ({s['split']}), explained class: {s['target']}; "
        f"deletion/insertion in {s['steps']} steps, removed bins → {s['baseline']}; "
        "AI/AD/AG ×100, FF and AUCs in probability units; SPS/COMP on the normalised "
        "attribution, the rest on the mask. Ground truth: "
        + (
            "signature events of the synthetic scenes."
            if s["ground_truth"]
            else "none (no events.csv)."
        ),
    ]
    if results["sanity"]:
        stages = [r["stage"] for r in next(iter(results["sanity"].values()))]
        lines += [
            "",
            "## Sanity: cascading randomisation (Spearman / SSIM against the trained model; lower = the map depends on the weights)",
            "",
            "| method | " + " | ".join(f"{st} randomised" for st in stages) + " |",
            "|" + "---|" * (len(stages) + 1),
        ]
        for name, rows in results["sanity"].items():
            cells = [f"{_fmt('', r['spearman'])} / {_fmt('', r['ssim'])}" for r in rows]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if results.get("errors"):
        lines += ["", "## Errors", ""] + [f"- {k}: {v}" for k, v in results["errors"].items()]
    return "\n".join(lines) + "\n"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _metrics_figure(results: dict, path: Path) -> None:
    plt = _pyplot()
    names = list(results["methods"])
    cols = 5
    rows = math.ceil(len(METRICS) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False)
    ref = results["reference"]["random_order"]
    for ax, key in zip(axes.flat, METRICS):
        vals = [(results["methods"][n] or {}).get(key) for n in names]
        heights = [v if v is not None else 0.0 for v in vals]
        ax.bar(range(len(names)), heights, color="tab:blue")
        if all(v is None for v in vals):
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
        if key in ref and ref[key] is not None:
            ax.axhline(ref[key], color="tab:red", linestyle="--", linewidth=1, label="random order")
            ax.legend(fontsize=6, loc="best")
        ax.set_title(f"{key} {DIRECTIONS[key]}", fontsize=9)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=60, ha="right", fontsize=7)
        ax.tick_params(axis="y", labelsize=7)
    for ax in list(axes.flat)[len(METRICS) :]:
        ax.axis("off")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90)
    plt.close(fig)


def _sanity_figure(results: dict, path: Path) -> None:
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    sanity = results["sanity"]
    for ax, key in zip(axes, ("spearman", "ssim")):
        for name, rows in sanity.items():
            xs = ["trained"] + [r["stage"] for r in rows]
            ys = [1.0] + [r[key] if r[key] is not None else np.nan for r in rows]
            ax.plot(xs, ys, marker="o", label=name)
        ax.axhline(0.0, color="grey", linewidth=0.8)
        ax.set_title(f"{'Spearman' if key == 'spearman' else 'SSIM'} vs the trained map")
        ax.set_xlabel("cumulatively randomised, from the top")
        ax.tick_params(axis="x", rotation=30)
        ax.set_ylim(-1.05, 1.05)
        if not sanity:
            ax.text(
                0.5, 0.5, "no sanity check run", ha="center", va="center", transform=ax.transAxes
            )
    if sanity:
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, fontsize=7, loc="center right")
        fig.tight_layout(rect=(0, 0, 0.86, 1))
    else:
        fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90)
    plt.close(fig)


# --------------------------------------------------------------------------- CLI
