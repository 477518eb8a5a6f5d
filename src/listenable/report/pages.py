"""The gallery's pages, from the Jinja2 templates in ``report/templates`` (autoescape on:
everything from the data is escaped by construction, every URL percent-encoded by the
``url`` filter), and the files every page shares: ``static/gallery.css`` and
``static/player.js`` (copied from ``report/static``) and the axis labels of the views
(``figures/axes/*.svg``).

The Content-Security-Policy of every page (:data:`CSP`) admits only the gallery's own
files: no inline script or style, nothing from another origin. It holds from ``file://``
as well as from any static host.
"""

from __future__ import annotations

import functools
import json
import math
import os
from pathlib import Path
from urllib.parse import quote

import jinja2
from markupsafe import Markup

from listenable.atomic import write_text
from listenable.report import views

__all__ = ["CSP", "STATIC", "render", "write_axes", "write_static"]

HERE = Path(__file__).parent
STATIC = "static"
AXES = "figures/axes"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "media-src 'self'; base-uri 'none'; form-action 'none'"
)


def _clean(value):
    """Text that is not valid UTF-8 (lone surrogates from undecodable file names) shows as
    ``\\udcXX`` escapes instead of failing when the page is written."""
    if isinstance(value, str) and not isinstance(value, Markup):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value


def url(rel: str) -> str:
    """A relative URL: percent-encoded from the file name's bytes (names that are not UTF-8
    too); the template's autoescape then makes it safe in an attribute."""
    return quote(os.fsencode(rel), safe="/")


def fmt(value, digits: int = 3) -> str:
    """A cell's text: – for nothing, yes / no, floats to ``digits`` decimals."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if math.isfinite(value) else str(value)
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def metric(value) -> str:
    if isinstance(value, float) and math.isfinite(value):
        return f"{value:.4g}"
    return short(fmt(value), 120)


def short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def sortkey(value) -> str:
    """A ``data-`` attribute for sorting: the number, or -1 where there is none."""
    return f"{value:.6f}" if isinstance(value, float) and math.isfinite(value) else "-1"


@functools.cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        finalize=_clean,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(url=url, fmt=fmt, metric=metric, short=short, sortkey=sortkey)
    env.globals.update(csp=CSP, axes_css=None)
    return env


def render(template: str, **context) -> str:
    return environment().get_template(template).render(**context)


def write_static(out: Path) -> None:
    """Copy ``report/static/*`` to ``out/static/`` (rewritten only when it changed)."""
    for source in sorted((HERE / "static").iterdir()):
        if source.is_file() and not source.name.startswith("."):
            _write_if_changed(out / STATIC / source.name, source.read_text(encoding="utf-8"))


def write_axes(out: Path, clips: list[dict]) -> str | None:
    """Write the frequency axis of every sample rate and the time axis of every duration
    among ``clips`` (``figures/axes/*.svg``) and ``figures/axes/axes.css``, which hangs
    them on the classes ``fa-<rate>`` and ``ta-<milliseconds>``; set each clip's ``faxis``,
    ``taxis`` (those classes), ``audio_text`` and ``correct_key``. Returns the style
    sheet's path, None when no clip has a view."""
    axes: dict[str, tuple[list, bool]] = {}
    for clip in clips:
        rate, duration = clip["rate"], clip["duration"]
        clip["faxis"], clip["taxis"] = f"fa-{rate}", f"ta-{round(duration * 1000)}"
        clip["audio_text"] = _audio_text(rate, clip["channels"], duration)
        clip["correct_key"] = {True: "correct", False: "wrong"}.get(clip["correct"], "unlabelled")
        if clip["view"] is not None:
            axes.setdefault(clip["faxis"], (views.freq_ticks(rate), True))
            axes.setdefault(clip["taxis"], (views.time_ticks(duration), False))
    if not axes:
        return None
    for name, (ticks, vertical) in sorted(axes.items()):
        _write_if_changed(
            out / AXES / f"{name}.svg", render("axis.svg", ticks=ticks, vertical=vertical)
        )
    sheet = render("axes.css", names=sorted(axes))
    _write_if_changed(out / AXES / "axes.css", sheet)
    return f"{AXES}/axes.css"


def _write_if_changed(path: Path, text: str) -> None:
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        write_text(path, text)


def _audio_text(rate: int, channels: int, duration: float) -> str:
    if not rate:
        return "no audio"
    layout = {1: "mono", 2: "stereo"}.get(channels, f"{channels} channels")
    return f"{rate / 1000:g} kHz {layout} · {duration:.1f} s"
