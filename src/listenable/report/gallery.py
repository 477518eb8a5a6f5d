"""A static, listenable web gallery of a data-set analysis (the paper's per-class pages).

:func:`build_gallery` reads what ``listenable analyze DATA --out DIR`` wrote::

    DIR/manifest.jsonl           one JSON object per clip (the last line of a clip_id wins)
    DIR/summary.json             class names, per-class counts, totals, settings
    DIR/evaluation/results.json  optional, from ``listenable evaluate`` (+ *.png, results.md)

and writes ``DIR/figures/*.png`` (confusion matrix, confidence histogram, one Fig. 4-style
sheet of masked spectrograms per class), ``DIR/index.html`` and one ``DIR/class-<slug>.html``
per class, with the original, listenable and residual audio of every selected clip side by
side. The pages are plain HTML with inline CSS and one small inline script (sorting by
confidence); they load nothing from outside ``DIR`` and work from ``file://`` as well as
from any static host. Everything from the data is HTML-escaped, every URL percent-encoded,
and a Content-Security-Policy admits only the page's own script (by hash) as a second line
of defence.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import logging
import math
import os
import re
import unicodedata
from pathlib import Path, PurePosixPath
from urllib.parse import quote

import numpy as np

from listenable.atomic import write_text
from listenable.errors import ListenableError

__all__ = ["build_gallery", "class_page_name", "page_slug", "read_manifest_rows"]

log = logging.getLogger(__name__)

MANIFEST = "manifest.jsonl"
SUMMARY = "summary.json"
FIGURES = "figures"
EVALUATION = "evaluation"
#: Clips per class on the Fig. 4-style sheet (the most confident selected ones).
SHEET_CLIPS = 8
#: Clips per class page (three audio players each); more go on ``class-<slug>-p2.html``...
PAGE_CLIPS = 100


def build_gallery(
    out_dir: str | os.PathLike, *, sheet_clips: int = SHEET_CLIPS, page_clips: int = PAGE_CLIPS
) -> Path:
    """Write the figures and pages of the gallery for the analysis in ``out_dir``.

    Returns the path of ``out_dir/index.html``. Safe to call again (after a resumed run):
    every file is rewritten atomically. A clip whose audio cannot be read is left off the
    class sheet with a logged warning; a listed file that is missing shows as "missing".
    A class with more than ``page_clips`` selected clips gets several pages, the most
    confident clips first (browsers cope badly with thousands of players on one page).

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
    names = _class_names(summary, rows)
    slugs = _unique_slugs(names)
    by_class: dict[str, list[dict]] = {name: [] for name in names}
    for row in rows:
        if _listed(row):
            by_class[_target(row)].append(row)
    for clips in by_class.values():
        clips.sort(key=lambda r: -_num(r.get("confidence"), 0.0))
    threshold = _num((summary.get("settings") or {}).get("min_confidence"), None)

    figures = _write_figures(out, rows, names, slugs, by_class, threshold, sheet_clips)
    for name in names:
        clips = by_class[name]
        chunks = [clips[i : i + page_clips] for i in range(0, len(clips), page_clips)] or [[]]
        files = [class_page_name(slugs[name], k) for k in range(len(chunks))]
        for k, chunk in enumerate(chunks):
            page = _class_page(out, name, chunk, threshold, files=files, number=k, total=len(clips))
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


# --------------------------------------------------------------------------- inputs


def read_manifest_rows(path: str | os.PathLike) -> list[dict]:
    """The rows of a ``manifest.jsonl``, one per clip_id (its last line wins), in order of
    first appearance. Lines that are not JSON objects with a ``clip_id`` (a torn last line
    of a killed run) are skipped with a warning."""
    rows: dict[str, dict] = {}
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                log.warning("%s:%d: not JSON, skipped (a torn line?)", path, number)
                continue
            if not isinstance(row, dict) or "clip_id" not in row:
                log.warning("%s:%d: no clip_id, skipped", path, number)
                continue
            rows[str(row["clip_id"])] = row
    return list(rows.values())


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


def _num(value, default):
    """``value`` as a finite float, else ``default``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return default
    return float(value) if math.isfinite(value) else default


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
    digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:10]
    return f"{stem}-{digest}" if stem else f"class-{digest}"


def _unique_slugs(names: list[str]) -> dict[str, str]:
    slugs = {name: page_slug(name) for name in names}
    if len(set(slugs.values())) != len(slugs):  # a 40-bit hash collision: never in practice
        raise ListenableError(f"two class names share a page name: {sorted(slugs.values())}")
    return slugs


def _safe_rel(out: Path, rel) -> str | None:
    """``rel`` if it is a relative path inside ``out`` to an existing file, else None."""
    if not isinstance(rel, str) or not rel or "\\" in rel:
        return None
    posix = PurePosixPath(rel)
    if posix.is_absolute() or ".." in posix.parts or re.match(r"^[A-Za-z]:", rel):
        return None
    return rel if (out / posix).is_file() else None


# --------------------------------------------------------------------------- figures


def _write_figures(out, rows, names, slugs, by_class, threshold, sheet_clips) -> dict:
    """Write ``figures/*.png``; returns ``{"confusion": rel | None, "confidence": rel | None,
    "sheets": {class: rel}}`` for the figures that were drawn."""
    from listenable.report import figures as fg

    folder = out / FIGURES
    drawn: dict = {"confusion": None, "confidence": None, "sheets": {}}
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

    confidences = [c for c in (_num(r.get("confidence"), None) for r in ok) if c is not None]
    if confidences:
        fg.confidence_histogram(folder / "confidence.png", confidences, threshold)
        drawn["confidence"] = f"{FIGURES}/confidence.png"

    for name in names:
        images, titles, rate, hop = [], [], 48_000, 1024
        for row in by_class[name]:
            if len(images) == sheet_clips:
                break
            rel = _safe_rel(out, (row.get("files") or {}).get("listenable"))
            if rel is None:
                log.warning("%s: no listenable audio, left off the sheet", row.get("clip_id"))
                continue
            try:
                db, rate, hop = _masked_db(out / rel)
            except Exception as exc:  # a broken file must not stop the gallery
                log.warning("%s: cannot read %s (%s), left off the sheet", row["clip_id"], rel, exc)
                continue
            images.append(db)
            conf = _num(row.get("confidence"), None)
            titles.append(
                _short(str(row["clip_id"]), 30) + (f"  {conf:.2f}" if conf is not None else "")
            )
        if images:
            rel = f"{FIGURES}/sheet-{slugs[name]}.png"
            fg.class_sheet(out / rel, images, titles, name, sample_rate=rate, hop_length=hop)
            drawn["sheets"][name] = rel
    return drawn


def _masked_db(path: Path, n_fft: int = 2048, hop: int = 1024) -> tuple[np.ndarray, int, int]:
    """dB spectrogram ``(n_fft // 2 + 1, frames)`` of a listenable WAV, power averaged over
    channels, Hann window, centred STFT (the model's grid)."""
    import soundfile as sf
    import torch

    from listenable.report.figures import db_spectrogram

    data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    wave = torch.from_numpy(np.ascontiguousarray(data.T))  # (channels, samples)
    if wave.shape[1] == 0:
        raise ValueError("no audio frames")
    spec = torch.stft(
        wave,
        n_fft=n_fft,
        hop_length=hop,
        window=torch.hann_window(n_fft),
        center=True,
        pad_mode="reflect" if wave.shape[1] > n_fft // 2 else "constant",
        return_complex=True,
    )
    return db_spectrogram(spec.abs().square().mean(dim=0)), int(rate), hop


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --------------------------------------------------------------------------- HTML

_CSS = """
:root { color-scheme: light dark; --line: #8884; --muted: #777; }
body { font: 15px/1.45 system-ui, sans-serif; margin: 0 auto; max-width: 1200px;
       padding: 1rem 1.5rem 3rem; }
h1 { font-size: 1.5rem; margin: .5rem 0 1rem; overflow-wrap: anywhere; }
h2 { font-size: 1.15rem; margin-top: 2rem; border-bottom: 1px solid var(--line); }
table { border-collapse: collapse; margin: .5rem 0; }
th, td { border-bottom: 1px solid var(--line); padding: .3rem .6rem; text-align: left;
         vertical-align: top; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
code, .id { font-family: ui-monospace, monospace; font-size: .9em; overflow-wrap: anywhere; }
.muted { color: var(--muted); }
nav { margin-bottom: .5rem; }
img { max-width: 100%; height: auto; }
figure { margin: .5rem 0 1.5rem; }
figcaption { font-size: .85rem; color: var(--muted); }
.players { display: grid; gap: .2rem; }
.players .kind { font-size: .8rem; color: var(--muted); display: block; }
audio { width: 260px; height: 32px; }
td.fig img { width: 360px; }
button.sort { font: inherit; font-weight: bold; background: none; border: 0; padding: 0;
              cursor: pointer; color: inherit; text-decoration: underline dotted;
              white-space: nowrap; }
.missing { color: crimson; }
"""

#: Sorts the clip table of a class page by confidence; descending first, toggles on click.
_SORT_JS = """
(function () {
  var table = document.getElementById("clips");
  if (!table) return;
  var body = table.tBodies[0];
  var button = document.getElementById("sort-confidence");
  var header = button.closest("th");
  function sortRows(descending) {
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = parseFloat(a.getAttribute("data-confidence"));
      var y = parseFloat(b.getAttribute("data-confidence"));
      return descending ? y - x : x - y;
    });
    rows.forEach(function (row) { body.appendChild(row); });
    header.setAttribute("aria-sort", descending ? "descending" : "ascending");
    button.setAttribute("data-order", descending ? "descending" : "ascending");
    button.textContent = "confidence " + (descending ? "\\u25bc" : "\\u25b2");
  }
  button.addEventListener("click", function () {
    sortRows(button.getAttribute("data-order") !== "descending");
  });
  sortRows(true);
})();
"""


def _e(value) -> str:
    # names that are not UTF-8 (lone surrogates) show as \udcXX escapes instead of failing
    text = str(value).encode("utf-8", "backslashreplace").decode("utf-8")
    return html.escape(text, quote=True)


def _href(rel: str) -> str:
    """A relative URL for an attribute: percent-encoded, then HTML-escaped."""
    return _e(quote(os.fsencode(rel), safe="/"))  # bytes: names that are not UTF-8 too


def _page(title: str, body: str, script: str | None = None) -> str:
    if script is None:
        script_src, tail = "'none'", ""
    else:
        digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode()
        script_src, tail = f"'sha256-{digest}'", f"<script>{script}</script>\n"
    csp = (
        "default-src 'none'; img-src 'self' data:; media-src 'self'; style-src 'unsafe-inline'; "
        f"script-src {script_src}; base-uri 'none'; form-action 'none'"
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{_e(csp)}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<meta name="referrer" content="no-referrer">\n'
        '<link rel="icon" href="data:,">\n'  # no favicon request (a 404 on static hosts)
        f"<title>{_e(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f"{body}\n{tail}</body>\n</html>\n"
    )


def _fmt(value, digits: int = 3) -> str:
    """A table cell's text (not yet escaped)."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if math.isfinite(value) else str(value)
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _fmt_metric(value) -> str:
    if isinstance(value, float) and math.isfinite(value):
        return f"{value:.4g}"
    return _short(_fmt(value), 120)


def _kv_table(mapping: dict, caption: str = "") -> str:
    rows = "".join(
        f"<tr><th scope='row'>{_e(k)}</th><td><code>{_e(_short(_fmt(v), 300))}</code></td></tr>"
        for k, v in mapping.items()
    )
    cap = f"<caption>{_e(caption)}</caption>" if caption else ""
    return f"<table>{cap}<tbody>{rows}</tbody></table>"


def _figure(rel: str, alt: str, caption: str = "", link: str | None = None) -> str:
    img = f'<img src="{_href(rel)}" alt="{_e(alt)}">'
    if link:
        img = f'<a href="{_href(link)}">{img}</a>'
    cap = f"<figcaption>{caption}</figcaption>" if caption else ""
    return f"<figure>{img}{cap}</figure>"


def _index_page(out, summary, rows, names, slugs, by_class, figures, evaluation) -> str:
    classes = summary.get("classes") or {}
    totals = summary.get("totals") or {}
    counted = _count(rows, names)
    parts = ["<h1>listenable: what the classifier listened to</h1>"]
    meta = []
    if summary.get("checkpoint"):
        meta.append(f"checkpoint <code>{_e(summary['checkpoint'])}</code>")
    speed = _num(summary.get("clips_per_s"), None)
    if speed is not None:
        meta.append(f"{speed:.2f} clips/s")
    if meta:
        parts.append(f"<p class='muted'>{' · '.join(meta)}</p>")

    parts.append("<h2 id='classes'>Classes</h2>")
    head = (
        "<tr><th scope='col'>class</th><th scope='col' class='num'>clips</th>"
        "<th scope='col' class='num'>selected</th><th scope='col' class='num'>accuracy</th>"
        "<th scope='col' class='num'>listenable clips</th></tr>"
    )
    body = []
    for name in names:
        entry = {**counted[name], **(classes.get(name) or {})}
        body.append(
            f"<tr><th scope='row'><a class='class-link' href='{_href(class_page_name(slugs[name]))}'>"
            f"{_e(name)}</a></th>"
            f"<td class='num'>{_e(_fmt(entry.get('clips')))}</td>"
            f"<td class='num'>{_e(_fmt(entry.get('selected')))}</td>"
            f"<td class='num'>{_e(_fmt(_num(entry.get('accuracy'), None)))}</td>"
            f"<td class='num'>{len(by_class[name])}</td></tr>"
        )
    total = {**counted["\0total"], **totals}
    body.append(
        "<tr><th scope='row'>all</th>"
        f"<td class='num'>{_e(_fmt(total.get('clips')))}</td>"
        f"<td class='num'>{_e(_fmt(total.get('selected')))}</td>"
        f"<td class='num'>{_e(_fmt(_num(total.get('accuracy'), None)))}</td>"
        f"<td class='num'>{sum(len(v) for v in by_class.values())}</td></tr>"
    )
    parts.append(f"<table id='summary'><thead>{head}</thead><tbody>{''.join(body)}</tbody></table>")
    parts.append(
        "<p class='muted'>clips, selected and accuracy count clips by their true label (by the "
        "predicted class where there is none); a class page lists the selected clips "
        f"explained as that class. Failed: {_e(_fmt(total.get('failed')))}.</p>"
    )

    if figures["confusion"] or figures["confidence"]:
        parts.append("<h2 id='figures'>Predictions</h2>")
    if figures["confusion"]:
        parts.append(
            _figure(figures["confusion"], "confusion matrix", "true (rows) against predicted")
        )
    if figures["confidence"]:
        parts.append(
            _figure(
                figures["confidence"],
                "histogram of confidences",
                "confidence of the predicted class; the dashed line is the selection threshold",
            )
        )

    if figures["sheets"]:
        parts.append("<h2 id='sheets'>Masked spectrograms, most confident clips per class</h2>")
        for name, rel in figures["sheets"].items():
            page = class_page_name(slugs[name])
            caption = f"<a href='{_href(page)}'>{_e(name)}</a>"
            parts.append(_figure(rel, f"masked spectrograms of {name}", caption, link=page))

    failed = [r for r in rows if r.get("status") != "ok"]
    if failed:
        items = "".join(
            f"<tr><td class='id'>{_e(r.get('clip_id'))}</td>"
            f"<td>{_e(_short(_fmt(r.get('error')), 300))}</td></tr>"
            for r in failed[:500]
        )
        more = f"<p class='muted'>and {len(failed) - 500} more</p>" if len(failed) > 500 else ""
        parts.append(
            f"<h2 id='failed'>Failed clips ({len(failed)})</h2><details><summary>show</summary>"
            f"<table><thead><tr><th>clip</th><th>error</th></tr></thead><tbody>{items}"
            f"</tbody></table>{more}</details>"
        )

    if evaluation is not None:
        parts.append(_evaluation_section(out, evaluation))

    settings = summary.get("settings")
    if isinstance(settings, dict) and settings:
        parts.append("<h2 id='settings'>Settings</h2>" + _kv_table(settings))
    return _page("listenable gallery", "\n".join(parts))


def _count(rows: list[dict], names: list[str]) -> dict[str, dict]:
    """Per-class counts from the manifest, for classes the summary does not cover."""
    counts = {n: {"clips": 0, "selected": 0, "failed": 0} for n in [*names, "\0total"]}
    for row in rows:
        key = row.get("label") if row.get("label") is not None else row.get("predicted")
        for name in [str(key), "\0total"] if key is not None else ["\0total"]:
            counts[name]["clips"] += 1
            counts[name]["failed"] += row.get("status") != "ok"
            counts[name]["selected"] += row.get("status") == "ok" and bool(row.get("selected"))
    return counts


def _evaluation_section(out: Path, evaluation: dict) -> str:
    parts = ["<h2 id='evaluation'>Evaluation</h2>"]
    methods = evaluation.get("methods")
    if isinstance(methods, dict) and methods:
        metrics = list(dict.fromkeys(m for v in methods.values() if isinstance(v, dict) for m in v))
        head = "".join(f"<th scope='col' class='num'>{_e(m)}</th>" for m in metrics)
        body = "".join(
            f"<tr><th scope='row'>{_e(name)}</th>"
            + "".join(
                f"<td class='num'>{_e(_fmt_metric((values or {}).get(m)))}</td>"
                if isinstance(values, dict)
                else "<td></td>"
                for m in metrics
            )
            + "</tr>"
            for name, values in methods.items()
        )
        parts.append(
            f"<table id='evaluation-table'><thead><tr><th scope='col'>method</th>{head}</tr>"
            f"</thead><tbody>{body}</tbody></table>"
        )
    for key in ("sanity", "settings"):
        if isinstance(evaluation.get(key), dict) and evaluation[key]:
            parts.append(
                f"<details><summary>{_e(key)}</summary>{_kv_table(evaluation[key])}</details>"
            )
    if (out / EVALUATION / "results.md").is_file():
        parts.append(f"<p><a href='{_href(f'{EVALUATION}/results.md')}'>results.md</a></p>")
    for png in sorted((out / EVALUATION).glob("*.png")):
        rel = f"{EVALUATION}/{png.name}"
        parts.append(_figure(rel, png.stem, _e(png.name)))
    return "\n".join(parts)


def _class_page(
    out: Path,
    name: str,
    clips: list[dict],
    threshold: float | None,
    *,
    files: list[str],
    number: int,
    total: int,
) -> str:
    parts = [
        "<nav><a href='index.html' id='back'>← all classes</a></nav>",
        f"<h1>{_e(name)}</h1>",
    ]
    limit = f" (confidence at least {threshold:g})" if threshold is not None else ""
    parts.append(
        f"<p>{total} selected clip{'s' if total != 1 else ''} explained as this "
        f"class{_e(limit)}. <em>listenable</em> is what the model used, <em>residual</em> "
        "what it did not.</p>"
    )
    if len(files) > 1:
        links = " ".join(
            f"<strong aria-current='page'>{k + 1}</strong>"
            if k == number
            else f"<a href='{_href(f)}'>{k + 1}</a>"
            for k, f in enumerate(files)
        )
        parts.append(
            f"<nav class='pages'>pages, most confident first: {links} "
            "<span class='muted'>(sorting applies within a page)</span></nav>"
        )
    if not clips:
        parts.append("<p class='muted'>No clips selected for this class.</p>")
        return _page(f"{name} · listenable gallery", "\n".join(parts))
    rows = []
    for row in clips:
        files = row.get("files") or {}
        conf = _num(row.get("confidence"), None)
        area = _num(row.get("mask_area"), None)
        players = "".join(_player(out, kind, files.get(kind)) for kind in _AUDIO)
        figure = _safe_rel(out, files.get("figure"))
        fig_cell = (
            f"<a href='{_href(figure)}'><img src='{_href(figure)}' loading='lazy' "
            f"alt='explanation of {_e(row.get('clip_id'))}'></a>"
            if figure
            else "<span class='muted'>no figure</span>"
        )
        details = _safe_rel(out, files.get("json"))
        json_link = f" <a href='{_href(details)}'>json</a>" if details else ""
        label = row.get("label")
        mark = "" if row.get("correct") is None else (" ✓" if row.get("correct") else " ✗")
        rows.append(
            f"<tr data-confidence='{conf if conf is not None else -1:.6f}'>"
            f"<td class='id'>{_e(row.get('clip_id'))}{json_link}</td>"
            f"<td class='num conf'>{_e(_fmt(conf))}</td>"
            f"<td class='num'>{_e(_fmt(area))}{' (empty)' if row.get('empty_mask') else ''}</td>"
            f"<td>{_e(_fmt(label))}{mark}</td>"
            f"<td><div class='players'>{players}</div></td>"
            f"<td class='fig'>{fig_cell}</td></tr>"
        )
    head = (
        "<tr><th scope='col'>clip</th>"
        "<th scope='col' class='num' aria-sort='descending'>"
        "<button type='button' class='sort' id='sort-confidence' data-order='descending'>"
        "confidence ▼</button></th>"
        "<th scope='col' class='num'>mask area</th><th scope='col'>true label</th>"
        "<th scope='col'>audio</th><th scope='col'>explanation</th></tr>"
    )
    parts.append(f"<table id='clips'><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table>")
    return _page(f"{name} · listenable gallery", "\n".join(parts), script=_SORT_JS)


_AUDIO = ("original", "listenable", "residual")


def _player(out: Path, kind: str, rel) -> str:
    safe = _safe_rel(out, rel)
    if safe is None:
        return f"<div><span class='kind'>{kind}</span><span class='missing'>missing</span></div>"
    return (
        f"<div><span class='kind'>{kind}</span><audio controls preload='metadata' "
        f"aria-label='{kind}' src='{_href(safe)}'></audio></div>"
    )
