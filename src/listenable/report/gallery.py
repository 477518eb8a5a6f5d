"""A static, listenable web gallery of a data-set analysis (the paper's per-class pages).

:func:`build_gallery` reads what ``listenable analyze DATA --out DIR`` wrote::

    DIR/manifest.jsonl           one JSON object per clip (the last line of a clip_id wins)
    DIR/summary.json             class names, per-class counts, totals, settings, profiles
    DIR/evaluation/results.json  optional, from ``listenable evaluate`` (+ *.png, results.md)

(the row and summary keys it reads are listed in :mod:`listenable.report`) and writes::

    DIR/index.html               summary table, confusion matrix, confidence histogram,
                                 one sheet of masked spectrograms per class, evaluation
    DIR/class-<slug>.html        one player per selected clip explained as the class
                                 (-p2, -p3... past ``page_clips`` clips), sortable and
                                 filterable, with a "play in a row" mode and the class profile
    DIR/static/                  gallery.css and player.js, the pages' only style and script
    DIR/figures/                 the figures above, the axes and the clips' spectrogram views

The pages come from Jinja2 templates with autoescape on, load nothing from outside ``DIR``
and work from ``file://`` as well as from any static host; a Content-Security-Policy
admits only the gallery's own script and style files.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import unicodedata
from pathlib import Path

from listenable.atomic import write_text
from listenable.errors import ListenableError
from listenable.manifest import MANIFEST, read_rows
from listenable.report import pages
from listenable.report.clips import VIEWS, clip_context, number
from listenable.report.sheets import write_figures

__all__ = ["build_gallery", "class_page_name", "page_slug", "read_manifest_rows"]

log = logging.getLogger(__name__)

SUMMARY = "summary.json"
EVALUATION = "evaluation"
#: Clips per class on the Fig. 4-style sheet (the most confident selected ones).
SHEET_CLIPS = 8
#: Clips per class page; more go on ``class-<slug>-p2.html``... A page of 1,000 clips opens
#: in well under 2 s: players, audio and images are created only when needed.
PAGE_CLIPS = 1000


def build_gallery(
    out_dir: str | os.PathLike, *, sheet_clips: int = SHEET_CLIPS, page_clips: int = PAGE_CLIPS
) -> Path:
    """Write the figures and pages of the gallery for the analysis in ``out_dir``.

    Returns the path of ``out_dir/index.html``. Safe to call again (after a resumed run):
    every file is rewritten atomically and a clip's spectrogram view is drawn again only
    when its audio changed. A listed file that is missing or unreadable shows as
    "missing". A class with more than ``page_clips`` selected clips gets several pages,
    the most confident clips first.

    Raises:
        ListenableError: ``out_dir/manifest.jsonl`` is missing, or ``summary.json`` is not
            valid JSON.
    """
    out = Path(out_dir)
    manifest = out / MANIFEST
    if not manifest.is_file():
        raise ListenableError(
            f"{manifest}: not found; run `listenable analyze DATA --out {out}` first"
        )
    if page_clips < 1 or sheet_clips < 1:
        raise ListenableError(
            f"page_clips and sheet_clips must be at least 1, got {page_clips}, {sheet_clips}"
        )
    rows = read_manifest_rows(manifest)
    summary = _read_json(out / SUMMARY) or {}
    settings = summary.get("settings") if isinstance(summary.get("settings"), dict) else {}
    names = _class_names(summary, rows)
    slugs = _unique_slugs(names)
    by_class: dict[str, list[dict]] = {name: [] for name in names}
    for row in rows:
        if _listed(row):
            by_class[_target(row)].append(row)
    for clips in by_class.values():
        clips.sort(key=lambda r: -number(r.get("confidence"), 0.0))
    threshold = number(settings.get("min_confidence"))
    primary = str(settings.get("method") or "listenable")
    stft = next(
        (s for s in (summary.get("stft"), settings.get("stft")) if isinstance(s, dict)), None
    )

    cache: dict = {}
    contexts = {
        name: [
            clip_context(out, row, primary=str(row.get("method") or primary), stft=stft,
                         info_cache=cache, slug=page_slug)
            for row in by_class[name]
        ]
        for name in names
    }  # fmt: skip
    for clips in contexts.values():
        for order, clip in enumerate(clips):
            clip["order"] = order
    everything = [clip for clips in contexts.values() for clip in clips]
    pages.write_static(out)
    axes_css = pages.write_axes(out, everything)
    _prune_views(out, everything)
    figures = write_figures(out, rows, names, slugs, contexts, summary, threshold, sheet_clips)
    for name in names:
        clips = contexts[name]
        chunks = [clips[i : i + page_clips] for i in range(0, len(clips), page_clips)] or [[]]
        files = [class_page_name(slugs[name], k) for k in range(len(chunks))]
        links = [{"number": k + 1, "file": f} for k, f in enumerate(files)]
        for k, chunk in enumerate(chunks):
            page = pages.render(
                "class.html",
                title=f"{name} · listenable gallery",
                name=name,
                clips=chunk,
                total=len(clips),
                threshold=threshold,
                pages=[dict(link, current=i == k) for i, link in enumerate(links)],
                profile=figures["profiles"].get(name),
                row_tracks=["listenable", "original", "residual"],
                axes_css=axes_css,
            )
            write_text(out / files[k], page)
    try:
        evaluation = _read_json(out / EVALUATION / "results.json")
    except ListenableError as exc:  # optional: a broken one must not cost the gallery
        log.warning("%s; evaluation left out of the gallery", exc)
        evaluation = None
    index = out / "index.html"  # last: it links to everything above
    write_text(index, _index_page(out, summary, rows, names, slugs, by_class, figures, evaluation))
    return index


def class_page_name(slug: str, number: int = 0) -> str:
    """File name of page ``number`` (from 0) of a class: ``class-<slug>.html``, then
    ``class-<slug>-p2.html``... (never a slug of another class: see :func:`page_slug`)."""
    return f"class-{slug}.html" if number == 0 else f"class-{slug}-p{number + 1}.html"


def _prune_views(out: Path, clips: list[dict]) -> None:
    """Remove the views an earlier build drew for clips that are no longer listed."""
    folder = out / VIEWS
    if not folder.is_dir():
        return
    used = {Path(c["view"][k]).name for c in clips if c["view"] for k in ("image", "outline")}
    for path in folder.iterdir():
        if path.is_file() and path.name not in used and path.suffix in (".webp", ".png"):
            path.unlink(missing_ok=True)


# --------------------------------------------------------------------------- inputs


def read_manifest_rows(path: str | os.PathLike) -> list[dict]:
    """The rows of a ``manifest.jsonl``, one per clip_id (its last line wins), in order of
    first appearance. Lines that are not valid rows (a torn last line of a killed run, a
    row without ``status``...) are skipped with a warning naming the file and line
    (:func:`listenable.manifest.read_rows`, the reader ``analyze`` uses too)."""
    return list(read_rows(path).values())


def _read_json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ListenableError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise ListenableError(f"{path}: expected a JSON object, got {type(value).__name__}")
    return value


def _class_names(summary: dict, rows: list[dict]) -> list[str]:
    """The summary's class names, then any other class the manifest names, in order."""
    names = [str(c) for c in summary.get("class_names") or []]
    names += [str(c) for c in summary.get("classes") or {}]
    for row in rows:
        names += [str(row[k]) for k in ("label", "predicted", "target") if row.get(k) is not None]
    return list(dict.fromkeys(names))


def _target(row: dict) -> str:
    """The class a clip was explained for (the predicted one unless analyze chose another)."""
    target = row.get("target")
    return str(target if target is not None else row.get("predicted"))


def _listed(row: dict) -> bool:
    """A clip with outputs to show: explained successfully and selected."""
    return (
        row.get("status") == "ok"
        and bool(row.get("selected"))
        and bool(row.get("files"))
        and (row.get("target") is not None or row.get("predicted") is not None)
    )


def page_slug(name: str) -> str:
    """A file- and URL-safe, stable form of a class name for page and figure names.

    Names made only of ``[a-z0-9_]`` are kept as they are; any other name becomes an ASCII
    transliteration of it plus ``-`` and 10 hex digits of its SHA-256, so two names never
    share a slug (kept names contain no ``-``), also on case-insensitive file systems.
    """
    if re.fullmatch(r"[a-z0-9_]{1,64}", name):
        return name
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    stem = re.sub(r"[^a-z0-9_]+", "-", ascii_name.lower()).strip("-")[:40].strip("-")
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:10]
    return f"{stem}-{digest}" if stem else f"class-{digest}"


def _unique_slugs(names: list[str]) -> dict[str, str]:
    slugs = {name: page_slug(name) for name in names}
    if len(set(slugs.values())) != len(slugs):  # a 40-bit hash collision: never in practice
        raise ListenableError(f"two class names share a page name: {sorted(slugs.values())}")
    return slugs


# --------------------------------------------------------------------------- pages


def _index_page(out, summary, rows, names, slugs, by_class, figures, evaluation) -> str:
    classes = summary.get("classes") if isinstance(summary.get("classes"), dict) else {}
    totals = summary.get("totals") if isinstance(summary.get("totals"), dict) else {}
    counted = _count(rows, names)
    table = []
    for name in names:
        entry = {**counted[name], **(classes.get(name) or {})}
        table.append(
            {"name": name, "page": class_page_name(slugs[name]), "clips": entry.get("clips"),
             "selected": entry.get("selected"), "accuracy": number(entry.get("accuracy")),
             "listed": len(by_class[name])}
        )  # fmt: skip
    total = {**counted["\0total"], **totals}
    total = {
        "clips": total.get("clips"), "selected": total.get("selected"),
        "failed": total.get("failed"), "accuracy": number(total.get("accuracy")),
        "listed": sum(len(v) for v in by_class.values()),
    }  # fmt: skip
    meta = []
    if summary.get("checkpoint"):
        meta.append(("checkpoint", str(summary["checkpoint"])))
    speed = number(summary.get("clips_per_s"))
    if speed is not None:
        meta.append((f"{speed:.2f} clips/s", None))
    settings = summary.get("settings")
    return pages.render(
        "index.html",
        title="listenable gallery",
        meta=meta,
        classes=table,
        listens=_listens(summary, names, slugs),
        total=total,
        figures=figures,
        failed=[r for r in rows if r.get("status") != "ok"],
        evaluation=_evaluation(out, evaluation) if evaluation is not None else None,
        settings=settings if isinstance(settings, dict) and settings else None,
    )


def _listens(summary: dict, names: list[str], slugs: dict) -> list[dict]:
    """Per class, what its listenable outputs hold (``summary.json``'s ``class_content``:
    event labels by share of the output's energy) and the band its masks keep most
    (``class_profiles``); classes with neither are left out."""
    content = summary.get("class_content")
    content = content if isinstance(content, dict) else {}
    profiles = summary.get("class_profiles")
    profiles = profiles if isinstance(profiles, dict) else {}
    out = []
    for name in names:
        entry = content.get(name) if isinstance(content.get(name), dict) else {}
        labels = entry.get("labels") if isinstance(entry.get("labels"), dict) else {}
        held = [
            {"label": str(label), "share": number(v.get("share")), "kept": number(v.get("kept"))}
            for label, v in labels.items()
            if isinstance(v, dict) and number(v.get("share")) is not None
        ]
        band = None
        profile = profiles.get(name) if isinstance(profiles.get(name), dict) else {}
        freqs, mean = profile.get("frequencies_hz"), profile.get("mean_mask")
        if isinstance(freqs, list) and isinstance(mean, list) and len(freqs) == len(mean) and mean:
            values = [number(v) for v in mean]
            if all(v is not None for v in values) and max(values) > 0:
                top = max(range(len(values)), key=values.__getitem__)
                band = {"hz": number(freqs[top]), "kept": values[top]}
        if held or band:
            out.append({"name": name, "page": class_page_name(slugs[name]), "held": held,
                        "band": band, "clips": entry.get("clips")})  # fmt: skip
    return out


def _count(rows: list[dict], names: list[str]) -> dict[str, dict]:
    """Per-class counts from the manifest, for classes the summary does not cover."""
    zero = {"clips": 0, "selected": 0, "failed": 0, "correct": 0, "labelled": 0}
    counts = {n: dict(zero) for n in [*names, "\0total"]}
    for row in rows:
        key = row.get("label") if row.get("label") is not None else row.get("predicted")
        ok = row.get("status") == "ok"
        for name in [str(key), "\0total"] if key is not None else ["\0total"]:
            counts[name]["clips"] += 1
            counts[name]["failed"] += not ok
            counts[name]["selected"] += ok and bool(row.get("selected"))
            counts[name]["labelled"] += ok and isinstance(row.get("correct"), bool)
            counts[name]["correct"] += ok and row.get("correct") is True
    for entry in counts.values():
        entry["accuracy"] = entry["correct"] / entry["labelled"] if entry["labelled"] else None
    return counts


def _evaluation(out: Path, evaluation: dict) -> dict:
    methods = evaluation.get("methods")
    methods = list(methods.items()) if isinstance(methods, dict) else []
    metrics = list(dict.fromkeys(m for _, v in methods if isinstance(v, dict) for m in v))
    details = [
        (key, evaluation[key])
        for key in ("sanity", "settings")
        if isinstance(evaluation.get(key), dict) and evaluation[key]
    ]
    folder = out / EVALUATION
    return {
        "methods": methods,
        "metrics": metrics,
        "details": details,
        "markdown": f"{EVALUATION}/results.md" if (folder / "results.md").is_file() else None,
        "images": [
            {"rel": f"{EVALUATION}/{p.name}", "name": p.name, "alt": p.stem}
            for p in sorted(folder.glob("*.png"))
        ],
    }
