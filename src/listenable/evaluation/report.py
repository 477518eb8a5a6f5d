"""The report of an evaluation: ``results.md`` (tables), ``metrics.png`` and ``sanity.png``.

Everything is read off ``results.json``'s content and the metric registry
(:mod:`listenable.evaluation.registry`): one table of the metrics, one of their ``soft``
variant (the continuous map as the mask), one of the ``shuffled`` floor, the random-order
reference of deletion/insertion, the sanity check. A key missing from an older
``results.json`` prints as "—".
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from listenable.atomic import atomic_path
from listenable.evaluation.registry import REGISTRY, VARIANTS

__all__ = ["markdown_table", "metrics_figure", "sanity_figure"]

_TITLES = {
    None: "Explanation metrics",
    "soft": "Soft maps: the continuous attribution as the mask (mode soft; L-MAC's baselines)",
    "shuffled": "Floor: the same mask with its values shuffled over the TF bins",
}


def _fmt(key: str, value) -> str:
    """A value as the tables print it (the registry's format for a known key)."""
    metric = REGISTRY.get(key)
    if metric is None:
        for variant in VARIANTS:
            base = key.removesuffix(f"_{variant}")
            if base != key and base in REGISTRY:
                metric = REGISTRY[base]
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    return metric.format(value) if metric is not None else f"{value:.3f}"


def _table(results: dict, variant: str | None) -> list[str]:
    metrics = [m for m in REGISTRY.values() if variant is None or variant in m.variants]
    keys = [m.key(variant) for m in metrics]
    lines = [
        "| method | " + " | ".join(f"{m.key(variant)} {m.direction}" for m in metrics) + " |",
        "|" + "---|" * (len(keys) + 1),
    ]
    for name, row in results["methods"].items():
        if row is None:
            lines.append(f"| {name} | " + " | ".join("failed" for _ in keys) + " |")
        else:
            lines.append(f"| {name} | " + " | ".join(_fmt(k, row.get(k)) for k in keys) + " |")
    if variant is None:
        ref = results.get("reference", {}).get("random_order", {})
        lines.append(
            "| *random order* | "
            + " | ".join(_fmt(k, ref.get(k)) if k in ref else "" for k in keys)
            + " |"
        )
    return lines


def markdown_table(results: dict) -> str:
    """``results.md``: methods × metrics, their soft and shuffled variants, the random-order
    reference, and the sanity check."""
    s = results["settings"]
    lines = ["# Explanation metrics", ""] + _table(results, None)
    apply_to = s.get("apply_to", "audio")
    lines += [
        "",
        f"{s['clips']} clips of `{s['data']}` ({s['split']}), explained class: {s['target']}; "
        f"mask applied to the {'re-synthesised audio' if apply_to == 'audio' else 'classifier input spectrum'} "
        f"(apply_to={apply_to}); deletion/insertion in {s['steps']} steps, removed bins → "
        f"{s['baseline']}; AI/AD/AG ×100, FF and AUCs in probability units; SPS/COMP, "
        "pointing game and segment AUC on the normalised attribution, the rest on the mask. "
        "Ground truth: "
        + (
            "signature events of the scenes (events.csv)."
            if s["ground_truth"]
            else (
                "event boxes of events.csv (no scenes.json: no energy ground truth)."
                if s.get("events_annotated")
                else "none (no events.csv)."
            )
        ),
    ]
    for variant in VARIANTS:
        lines += ["", f"## {_TITLES.get(variant, variant)}", ""] + _table(results, variant)
    lines += [
        "",
        "Read each metric against its floor: the shuffled mask keeps the same values (same "
        "area, same sparseness) in random places.",
    ]
    if results["sanity"]:
        stages = [r["stage"] for r in next(iter(results["sanity"].values()))]
        lines += [
            "",
            "## Sanity: cascading randomisation (Spearman / SSIM against the trained model; "
            "lower = the map depends on the weights)",
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


def metrics_figure(results: dict, path: Path) -> None:
    """``metrics.png``: one panel per metric, a bar per method; the soft variant as a hollow
    circle, the shuffled floor as a black bar, the random-order reference as a dashed line."""
    plt = _pyplot()
    names = list(results["methods"])
    metrics = list(REGISTRY.values())
    cols = 5
    rows = math.ceil(len(metrics) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False)
    ref = results["reference"]["random_order"]
    xs = np.arange(len(names))
    for ax, metric in zip(axes.flat, metrics):
        key = metric.name
        rows_ = [results["methods"][n] or {} for n in names]
        vals = [r.get(key) for r in rows_]
        ax.bar(xs, [v if v is not None else 0.0 for v in vals], color="tab:blue")
        if all(v is None for v in vals):
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
        for variant, style in (
            ("soft", {"marker": "o", "mfc": "none", "color": "tab:orange", "ls": "none"}),
            ("shuffled", {"marker": "_", "ms": 14, "mew": 2, "color": "black", "ls": "none"}),
        ):
            if variant in metric.variants:
                ys = [r.get(metric.key(variant)) for r in rows_]
                if any(y is not None for y in ys):
                    ax.plot(
                        xs,
                        [y if y is not None else np.nan for y in ys],
                        label=variant,
                        **style,
                    )
        if key in ref and ref[key] is not None:
            ax.axhline(ref[key], color="tab:red", linestyle="--", linewidth=1, label="random order")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6, loc="best")
        ax.set_title(f"{key} {metric.direction}", fontsize=9)
        ax.set_xticks(xs)
        ax.set_xticklabels(names, rotation=60, ha="right", fontsize=7)
        ax.tick_params(axis="y", labelsize=7)
    for ax in list(axes.flat)[len(metrics) :]:
        ax.axis("off")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90)
    plt.close(fig)


def sanity_figure(results: dict, path: Path) -> None:
    """``sanity.png``: Spearman and SSIM against the trained model's map, per stage."""
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
