"""``report.md`` of the shortcut experiment: the numbers of ``report.json`` in a page a person
reads (:func:`markdown`)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["markdown"]


def _pct(value) -> str:
    return "–" if value is None else f"{100 * value:.1f} %"


def _num(value, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _times(value) -> str:
    return "–" if value is None else f"{value:.1f}×"


def _level(db: float) -> str:
    return f"{-db:g} dB below" if db < 0 else f"{db:g} dB above"


def _rel(path: str | None, out: Path) -> str | None:
    if not path:
        return None
    file, _, anchor = path.partition("#")
    rel = os.path.relpath(file, out)
    return rel + (f"#{anchor}" if anchor else "")


def markdown(report: dict, out: str | os.PathLike) -> str:
    """The report as Markdown; links relative to ``out`` (where ``report.md`` lies)."""
    out = Path(out)
    s, r = report["settings"], report["results"]
    cls, acc, cheat = s["cue_class"], r["accuracy"], r["cheating"]
    rec = r["cue_recall"]
    main, hij, pred = (
        rec["cue_class_explained"],
        rec["hijacked_clips"],
        rec["predicted_class_explained"],
    )
    prec, flip, keep = r["cue_precision"], r["residual_flip"], r["listenable_keeps_cue_class"]
    model = report["model"]
    lines = [
        "# Shortcut experiment: a model caught cheating",
        "",
        f"Cue: {report['cue']['description']}, {_level(s['cue_db'])} the clip (RMS), in "
        f"every **{cls}** training clip and in no other; every test clip of every class "
        f"twice, with and without it ({r['clips']['test_clips']} test clips, "
        f"{r['clips']['cue_class']} of them {cls}).",
        f"Model: {model['name']}, {model['epochs_done'] or '–'} epochs "
        f"on {s['clips_per_class']} clips per class (test share {s['evaluate_fraction']:g}), "
        f"seed {s['seed']}; explained with `{s['method']}`.",
        "",
        "## The model cheats",
        "",
        "| test clips | clean | with the cue |",
        "|---|---|---|",
        f"| accuracy, all classes | {_pct(acc['clean'])} | {_pct(acc['cued'])} |",
        f"| accuracy, {cls} | {_pct(acc['cue_class_clean'])} | {_pct(acc['cue_class_cued'])} |",
        f"| accuracy, other classes | {_pct(acc['other_classes_clean'])} | "
        f"{_pct(acc['other_classes_cued'])} |",
        f"| other classes called {cls} | {_pct(cheat['other_classes_clean_called_cue_class'])} | "
        f"{_pct(cheat['other_classes_cued_called_cue_class'])} |",
        "",
        "## listenable finds the cue",
        "",
        f"Cue recall: the share of the cue's energy the listenable output keeps "
        f"(Σ M²|C|² / Σ|C|² on the listening STFT, C the cue stem's STFT), against the mask's "
        f"values shuffled over the TF bins (same area; expected {_num(rec['shuffled_expected'])} "
        f"for a cue spread evenly).",
        "",
        "| mask | clips | mask area | cue recall | shuffled mask | ratio |",
        "|---|---|---|---|---|---|",
        f"| explaining {cls}, every cued clip | {main['clips']} | {_num(main['mask_area'])} | "
        f"**{_num(main['listenable'])}** | {_num(main['shuffled'])} | **{_times(main['ratio'])}** |",
        f"| explaining {cls}, other-class clips called {cls} | {hij['clips']} | "
        f"{_num(hij['mask_area'])} | {_num(hij['listenable'])} | {_num(hij['shuffled'])} | "
        f"{_times(hij['ratio'])} |",
        f"| explaining the predicted class | {pred['clips']} | {_num(pred['mask_area'])} | "
        f"{_num(pred['listenable'])} | {_num(pred['shuffled'])} | {_times(pred['ratio'])} |",
        "",
        f"Bar: cue recall at least {r['bar']['recall_ratio_at_least']:g}× the shuffled mask's: "
        f"**{'met' if r['bar']['met'] else 'not met'}**.",
        "",
        f"Cue precision (share of the listenable output's energy that is cue): "
        f"{_num(prec['listenable'])}, shuffled mask {_num(prec['shuffled'])}; the cue is "
        f"{_num(prec['cue_share_of_clip'], 4)} of a cued clip's energy.",
        "",
        f"## Removing what the mask kept (the residual), on the {flip['clips']} cued clips "
        f"called {cls}",
        "",
        "| removed | decision leaves " + cls + " |",
        "|---|---|",
        f"| the listenable output (the mask) | **{_pct(flip['listenable_mask'])}** |",
        f"| a random part of the same area (shuffled mask) | {_pct(flip['shuffled_mask'])} |",
        f"| exactly the cue (the clean clip) | {_pct(flip['exact_cue_removed'])} |",
        "",
        f"Of the {cheat['hijacked_clips']} other-class clips the cue made {cls}, the residual "
        f"goes back to the true class for {_pct(flip['hijacked_back_to_true_class'])} "
        f"(shuffled mask: {_pct(flip['hijacked_back_to_true_class_shuffled'])}). The "
        f"listenable output alone is still called {cls} for {_pct(keep['listenable_mask'])} "
        f"(shuffled mask: {_pct(keep['shuffled_mask'])}).",
    ]
    gallery = report.get("gallery")
    if gallery:
        page = _rel(gallery.get("page"), out)
        lines += ["", "## Hear it", ""]
        if page:
            lines.append(
                f"[{gallery['clip']}]({page}): a {gallery['clip_label']} clip with the cue, "
                f"called {gallery['clip_predicted']}; its listenable track is what the model "
                f"used. All cued test clips: [{_rel(gallery['index'], out)}]"
                f"({_rel(gallery['index'], out)})."
            )
        else:
            lines.append(f"Gallery: {_rel(gallery['index'], out)}")
    seconds = report.get("seconds_this_run") or {}
    if seconds:
        parts = ", ".join(f"{k.replace('_', ' ')} {v:.0f} s" for k, v in seconds.items())
        lines += ["", f"This run: {sum(seconds.values()):.0f} s ({parts})."]
    lines += ["", "Per-clip numbers: `measurements.jsonl`; all numbers: `report.json`.", ""]
    return "\n".join(lines)
