"""The gallery's figures: confusion matrix, confidence histogram, one Fig. 4-style sheet of
masked spectrograms per class (cut from the clips' views, so on each original's colour
scale and on the same log-frequency axis) and the per-class profile of what the model
listens to (from ``summary.json``'s ``class_profiles``, see :mod:`listenable.report`)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from listenable.report.clips import number

__all__ = ["FIGURES", "class_profile", "write_figures"]

log = logging.getLogger(__name__)

FIGURES = "figures"


def write_figures(
    out: Path,
    rows: list[dict],
    names: list[str],
    slugs: dict[str, str],
    contexts: dict[str, list[dict]],
    summary: dict,
    threshold: float | None,
    sheet_clips: int,
) -> dict:
    """Write ``figures/*.png``; returns ``{"confusion": rel | None, "confidence": rel | None,
    "sheets": {class: rel}, "profiles": {class: rel}}`` for the figures that were drawn."""
    from listenable.report import figures as fg

    folder = out / FIGURES
    drawn: dict = {"confusion": None, "confidence": None, "sheets": {}, "profiles": {}}
    ok = [r for r in rows if r.get("status") == "ok"]

    labelled = [r for r in ok if r.get("label") is not None and r.get("predicted") is not None]
    if labelled:
        index = {name: i for i, name in enumerate(names)}
        matrix = np.zeros((len(names), len(names)), dtype=np.int64)
        for r in labelled:
            matrix[index[str(r["label"])], index[str(r["predicted"])]] += 1
        accuracy = float(np.trace(matrix) / matrix.sum())
        fg.confusion_figure(
            folder / "confusion.png",
            matrix,
            names,
            title=f"accuracy {accuracy:.3f} ({len(labelled)} labelled clips)",
        )
        drawn["confusion"] = f"{FIGURES}/confusion.png"

    confidences = [c for c in (number(r.get("confidence")) for r in ok) if c is not None]
    if confidences:
        fg.confidence_histogram(folder / "confidence.png", confidences, threshold)
        drawn["confidence"] = f"{FIGURES}/confidence.png"

    for name in names:
        panels, titles, rates, durations = [], [], [], []
        for clip in contexts[name]:
            if len(panels) == sheet_clips:
                break
            panel = _listenable_panel(out, clip)
            if panel is None:
                continue
            panels.append(panel)
            conf = clip["confidence"]
            titles.append(_short(clip["id"], 30) + (f"  {conf:.2f}" if conf is not None else ""))
            rates.append(clip["rate"])
            durations.append(clip["duration"])
        if panels:
            rel = f"{FIGURES}/sheet-{slugs[name]}.png"
            fg.class_sheet(out / rel, panels, titles, name, rates=rates, durations=durations)
            drawn["sheets"][name] = rel
        profile = class_profile(summary, name)
        if profile is not None:
            rel = f"{FIGURES}/profile-{slugs[name]}.png"
            fg.profile_figure(out / rel, *profile, name)
            drawn["profiles"][name] = rel
    return drawn


def _listenable_panel(out: Path, clip: dict) -> np.ndarray | None:
    """The listenable panel of a clip's view as RGB ``(PANEL_H, PANEL_W, 3)``."""
    from PIL import Image

    from listenable.report.views import PANEL_H, PANEL_W

    if clip["view"] is None or clip["tracks"][1]["src"] is None:
        return None
    try:
        with Image.open(out / clip["view"]["image"]) as image:
            return np.asarray(image.convert("RGB").crop((0, PANEL_H, PANEL_W, 2 * PANEL_H)))
    except (OSError, ValueError) as exc:
        log.warning("%s: cannot read its view (%s), left off the sheet", clip["id"], exc)
        return None


def class_profile(summary: dict, name: str) -> tuple[list[float], list[float]] | None:
    """``(frequencies_hz, mean_mask)`` of ``summary["class_profiles"][name]`` when it is
    there and valid (same length ≥ 2, frequencies positive and increasing, finite values)."""
    profiles = summary.get("class_profiles")
    entry = profiles.get(name) if isinstance(profiles, dict) else None
    if not isinstance(entry, dict):
        return None
    freqs, values = entry.get("frequencies_hz"), entry.get("mean_mask")
    if not isinstance(freqs, list) or not isinstance(values, list) or len(freqs) != len(values):
        log.warning(
            "class_profiles[%r]: frequencies_hz and mean_mask must be lists of one length", name
        )
        return None
    f = [number(x) for x in freqs]
    v = [number(x) for x in values]
    if len(f) < 2 or None in f or None in v or any(b <= a for a, b in zip(f, f[1:])) or f[0] < 0:
        log.warning("class_profiles[%r]: not an increasing frequency axis with finite values", name)
        return None
    return f, v


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
