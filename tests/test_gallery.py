"""The static gallery: built from small analysis folders written by hand, checked as text
(escaping, URLs, order, resumed runs, sizes, formats) and, with Chromium, as pages a person
opens: the player, the spectrogram, sort and filter, play in a row, a 1,000-clip page.

``LISTENABLE_SCREENSHOTS=docs pytest tests/test_gallery.py -k screenshots`` writes the
README's screenshots (docs/gallery-index.png, -class.png, -clip.png)."""

import functools
import html
import http.server
import json
import os
import re
import threading
import time
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import unquote

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import soundfile as sf  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from listenable.errors import ListenableError  # noqa: E402
from listenable.report import audio, pages, views  # noqa: E402
from listenable.report.gallery import build_gallery, page_slug, read_manifest_rows  # noqa: E402

EVIL = "<img src=x onerror=alert(1)>"
UNICODE = "Straße café 駅"
CLASSES = ["airport", UNICODE, EVIL, "park"]
FOLDERS = {
    "airport": "airport",
    UNICODE: "Stra_e_caf_-1a2b3c",
    EVIL: "_img_src_x-abcdef",
    "park": "park",
}
# (clip id, class, confidence, (format, subtype), rate, channels): ids with characters that
# must be URL-encoded; 48 kHz stereo WAV as analyze wrote them, 16 kHz mono Ogg and FLAC
CLIPS = [
    ("airport-a-0", "airport", 0.97, ("WAV", "FLOAT"), 48_000, 2),
    ("airport b#1?x&y'z", "airport", 0.85, ("WAV", "PCM_16"), 48_000, 2),
    ("cafe-ü-1", UNICODE, 0.91, ("WAV", "PCM_16"), 48_000, 2),
    ("cafe-2", UNICODE, 0.99, ("WAV", "FLOAT"), 48_000, 2),
    ("evil-1", EVIL, 0.88, ("WAV", "PCM_16"), 48_000, 2),
    (f"evil {EVIL}", EVIL, 0.95, ("WAV", "FLOAT"), 48_000, 2),
    ("park-16k-mono", "park", 0.93, ("OGG", "VORBIS"), 16_000, 1),
    ("park-flac", "park", 0.82, ("FLAC", "PCM_16"), 16_000, 1),
]
SECONDS = 2.0
SUFFIX = {"WAV": ".wav", "OGG": ".ogg", "FLAC": ".flac"}
BROWSER_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
]


def _tone(seed: int, seconds: float = SECONDS, sr: int = 48_000, channels: int = 2):
    """``(samples, channels)``: a tone plus a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    x = 0.3 * np.sin(2 * np.pi * (300 + 100 * seed) * t)
    wave = np.stack([x, 0.7 * x][:channels], axis=1)
    return wave + 0.01 * rng.standard_normal((t.size, channels))


def _small_png(path: Path) -> None:
    fig, ax = plt.subplots(figsize=(1.5, 1))
    ax.plot([0, 1], [0, 1])
    fig.savefig(path, dpi=40)
    plt.close(fig)


def _write(path: Path, wave: np.ndarray, rate: int, fmt: tuple[str, str]) -> None:
    sf.write(path, wave, rate, format=fmt[0], subtype=fmt[1])


def make_run(out: Path) -> Path:
    """A folder as ``listenable analyze`` writes it: manifest (with a failed clip, an
    unselected one, a resumed clip and a torn last line), summary, evaluation; the park
    clips at 16 kHz mono with a second method ("optimised") and a class profile."""
    out.mkdir(parents=True, exist_ok=True)
    lines = []
    for k, (clip_id, cls, conf, fmt, rate, channels) in enumerate(CLIPS):
        folder = out / FOLDERS[cls]
        folder.mkdir(exist_ok=True)
        files, suffix = {}, SUFFIX[fmt[0]]
        for kind, scale in (("original", 1.0), ("listenable", 0.6), ("residual", 0.4)):
            name = f"{clip_id}.{kind}{suffix}"
            _write(folder / name, scale * _tone(k, sr=rate, channels=channels), rate, fmt)
            files[kind] = f"{FOLDERS[cls]}/{name}"
        _small_png(folder / f"{clip_id}.png")
        (folder / f"{clip_id}.json").write_text("{}", encoding="utf-8")
        files |= {
            "figure": f"{FOLDERS[cls]}/{clip_id}.png",
            "json": f"{FOLDERS[cls]}/{clip_id}.json",
        }
        others = [c for c in CLASSES if c != cls]
        probs = {cls: conf} | {o: (1 - conf) / len(others) for o in others}
        label = cls if k not in (4, 7) else "airport"  # two wrong predictions
        row = {
            "clip_id": clip_id,
            "path": f"/data/{clip_id}.wav",
            "label": label,
            "predicted": cls,
            "confidence": conf,
            "probabilities": probs,
            "target": cls,
            "selected": True,
            "correct": label == cls,
            "mask_area": 0.25 + 0.01 * k,
            "empty_mask": False,
            "status": "ok",
            "error": None,
            "files": files,
        }
        if cls == "park":
            name = f"{clip_id}.optimised.listenable{suffix}"
            _write(folder / name, 0.3 * _tone(k, sr=rate, channels=channels), rate, fmt)
            row["scores"] = {"fid_in": 0.6, "AI": 30.0}
            row["methods"] = {
                "optimised": {
                    "files": {"listenable": f"park/{name}"},
                    "mask_area": 0.2,
                    "scores": {"fid_in": 0.85, "AI": 65.0, "bad <b>": "x"},
                }
            }
        lines.append(row)
    resumed = dict(lines[0], status="error", error="killed", selected=False, files={})
    failed = {
        "clip_id": "broken <b>clip</b>",
        "path": "/data/broken.wav",
        "label": "airport",
        "predicted": None,
        "confidence": None,
        "probabilities": None,
        "target": None,
        "selected": False,
        "correct": None,
        "mask_area": None,
        "empty_mask": None,
        "status": "error",
        "error": "/data/broken.wav: not a readable audio file (<script>)",
        "files": {},
    }
    unselected = dict(lines[1], clip_id="airport-low", confidence=0.4, selected=False, files={})
    rows = [resumed, *lines, failed, unselected]  # the clip of `resumed` comes again: it wins
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    (out / "manifest.jsonl").write_text(text + '{"clip_id": "torn', encoding="utf-8")
    freqs = np.geomspace(50, 8000, 40)
    summary = {
        "class_names": CLASSES,
        "classes": {
            "airport": {"clips": 4, "selected": 3, "accuracy": 1.0},
            UNICODE: {"clips": 2, "selected": 2, "accuracy": 1.0},
            EVIL: {"clips": 1, "selected": 1, "accuracy": 1.0},
            "park": {"clips": 1, "selected": 1, "accuracy": 1.0},
        },
        "totals": {"clips": 10, "selected": 8, "failed": 1, "accuracy": 6 / 7},
        "settings": {"min_confidence": 0.8, "method": "gradcam", "note": "<i>x</i>"},
        "class_profiles": {
            "park": {
                "frequencies_hz": freqs.tolist(),
                "mean_mask": np.exp(-(np.log(freqs / 2500) ** 2)).tolist(),
            }
        },
        "clips_per_s": 12.5,
        "checkpoint": "/models/<ckpt>.safetensors",
    }
    (out / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    evaluation = out / "evaluation"
    evaluation.mkdir()
    results = {
        "methods": {
            "gradcam": {"AD": 12.5, "AI": 40.0, "FF": 0.2},
            f"rand {EVIL}": {"AD": 50.0, "AI": 10.0, "FF": 0.01},
        },
        "sanity": {"spearman": [0.9, 0.5, 0.1]},
        "settings": {"clips": 6},
    }
    (evaluation / "results.json").write_text(json.dumps(results), encoding="utf-8")
    (evaluation / "results.md").write_text("# results\n", encoding="utf-8")
    _small_png(evaluation / "deletion curve.png")
    return out


@pytest.fixture(scope="module")
def gallery(tmp_path_factory):
    out = make_run(tmp_path_factory.mktemp("run") / "analysis out")
    index = build_gallery(out)
    return out, index


def _pages(out: Path) -> list[Path]:
    return [out / "index.html", *sorted(out.glob("class-*.html"))]


def _class_page(out: Path, name: str) -> str:
    return (out / f"class-{page_slug(name)}.html").read_text(encoding="utf-8")


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.urls: list[tuple[str, str, str]] = []  # (tag, attribute, value)
        self.tags: list[tuple[str, dict]] = []
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        self._in_script = tag == "script"
        for key in ("src", "href", "data-src"):
            if key in attrs:
                self.urls.append((tag, key, attrs[key]))

    def handle_data(self, data):
        if self._in_script and data.strip():
            self.scripts.append(data)

    def handle_endtag(self, tag):
        self._in_script = False


def _parse(path: Path) -> _Links:
    parser = _Links()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


def test_files_exist(gallery):
    out, index = gallery
    assert index == out / "index.html" and index.is_file()
    assert len(list(out.glob("class-*.html"))) == len(CLASSES)  # one page each
    for name in ("confusion.png", "confidence.png"):
        assert (out / "figures" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for cls in CLASSES:
        assert (out / f"class-{page_slug(cls)}.html").is_file()
        assert (out / "figures" / f"sheet-{page_slug(cls)}.png").stat().st_size > 1000
    assert (out / "figures" / "profile-park.png").stat().st_size > 1000
    assert (out / "static" / "player.js").read_text(encoding="utf-8").startswith("/*")
    assert (out / "static" / "gallery.css").is_file()
    axes = out / "figures" / "axes"
    assert {p.name for p in axes.iterdir()} == {
        "axes.css",
        "fa-48000.svg",
        "fa-16000.svg",
        "ta-2000.svg",
    }
    sheet = (axes / "axes.css").read_text(encoding="utf-8")
    assert '.fa-16000 { background-image: url("fa-16000.svg"); }' in sheet
    assert ">1k</text>" in (axes / "fa-16000.svg").read_text(encoding="utf-8")
    view_images = sorted((out / "figures" / "views").glob("*.webp"))
    assert len(view_images) == len(CLIPS)  # the run had none: drawn from the audio
    assert {views.panel_count(p) for p in view_images} == {3, 4}  # park: + optimised
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name]


def test_names_escaped_everywhere(gallery):
    out, _ = gallery
    allowed = {
        "html", "head", "meta", "link", "title", "body", "nav", "a", "h1", "h2", "p", "table",
        "thead", "tbody", "tr", "th", "td", "code", "figure", "figcaption", "img", "div",
        "span", "button", "script", "details", "summary", "em", "strong", "section", "label",
        "select", "option", "input", "output", "kbd", "ol", "ul", "li", "dl", "dt", "dd",
    }  # fmt: skip
    for page in _pages(out):
        text = page.read_text(encoding="utf-8")
        assert "<img src=x onerror" not in text, page.name
        assert "<script>)" not in text and "<b>clip" not in text and "<i>x" not in text
        assert "<b>" not in text
        parsed = _parse(page)
        for tag, attrs in parsed.tags:
            assert not any(k.startswith("on") for k in attrs), (page.name, tag, attrs)
            assert "style" not in attrs and tag in allowed, (page.name, tag)
        assert not parsed.scripts, page.name  # no inline script: the CSP admits none
    index = (out / "index.html").read_text(encoding="utf-8")
    assert html.escape(EVIL) in index and html.escape(UNICODE) in index
    evil_page = _class_page(out, EVIL)
    assert f"<h1>{html.escape(EVIL)}</h1>" in evil_page
    assert html.escape(f"evil {EVIL}") in evil_page


def test_every_url_is_encoded_and_resolves(gallery):
    out, _ = gallery
    tracks = 0
    for page in _pages(out):
        for tag, attr, url in _parse(page).urls:
            if (tag, url) == ("link", "data:,"):  # the empty favicon
                continue
            assert re.fullmatch(r"[A-Za-z0-9_.~/%#-]+", url), (page.name, url)  # encoded
            if url.startswith("#"):
                continue
            target = out / unquote(url)
            assert target.resolve().is_relative_to(out.resolve()), url
            assert target.is_file(), (page.name, tag, url)
            tracks += attr == "data-src"
    assert tracks == 3 * len(CLIPS) + 2  # + the park clips' optimised listenable tracks
    airport = _class_page(out, "airport")
    assert "airport%20b%231%3Fx%26y%27z.listenable.wav" in airport


def test_resumed_and_failed_clips(gallery):
    out, _ = gallery
    rows = read_manifest_rows(out / "manifest.jsonl")
    ids = [r["clip_id"] for r in rows]
    assert len(ids) == len(set(ids)) == len(CLIPS) + 2  # torn last line skipped
    assert next(r for r in rows if r["clip_id"] == "airport-a-0")["status"] == "ok"
    airport = _class_page(out, "airport")
    assert airport.count('<li class="clip"') == 2  # the resumed clip, not the unselected
    assert "airport-low" not in airport
    index = (out / "index.html").read_text(encoding="utf-8")
    assert html.escape("broken <b>clip</b>") in index and "Failed clips (1)" in index


def test_clips_ordered_by_confidence_and_page_policy(gallery):
    out, _ = gallery
    for cls in CLASSES:
        text = _class_page(out, cls)
        order = [float(x) for x in re.findall(r'data-confidence="([0-9.]+)"', text)]
        assert order == sorted(order, reverse=True) and len(order) == 2
        assert 'id="clips"' in text and 'id="sort"' in text and 'href="index.html"' in text
        tags = _parse(out / f"class-{page_slug(cls)}.html").tags
        csp = next(a["content"] for t, a in tags if t == "meta" and "http-equiv" in a)
        assert csp == pages.CSP and "script-src 'self';" in csp and "style-src 'self';" in csp
        assert [a.get("src") for t, a in tags if t == "script"] == ["static/player.js"]
        sheets = [a["href"] for t, a in tags if t == "link" and a.get("rel") == "stylesheet"]
        assert sheets == ["static/gallery.css", "figures/axes/axes.css"]


def test_player_markup_methods_and_profile(gallery):
    out, _ = gallery
    park = _class_page(out, "park")
    buttons = re.findall(r'<button class="track" data-kind="(\w+)"', park)
    assert buttons == ["original", "listenable", "residual", "listenable"] * 2
    assert park.count("listenable · optimised") == 2
    assert park.count('<li class="method">') == 4  # gradcam and optimised, side by side
    assert "fid_in" in park and "0.85" in park and "65" in park
    assert "bad &lt;b&gt;" not in park  # a score that is not a number is left out
    assert "16 kHz mono · 2.0 s" in park and 'data-duration="2.0000"' in park
    assert "figures/profile-park.png" in park and "No class profile" not in park
    airport = _class_page(out, "airport")
    assert "No class profile" in airport and "class_profiles" in airport
    assert "48 kHz stereo · 2.0 s" in airport
    assert '<li class="method">' not in airport  # one method: nothing to compare


def test_summary_and_evaluation_tables(gallery):
    out, _ = gallery
    index = (out / "index.html").read_text(encoding="utf-8")
    assert 'id="summary"' in index and "0.857" in index  # total accuracy
    assert 'id="evaluation-table"' in index and html.escape(f"rand {EVIL}") in index
    assert "deletion%20curve.png" in index and "results.md" in index
    assert "figures/confusion.png" in index and "figures/confidence.png" in index


def test_rebuild_is_idempotent(gallery):
    out, index = gallery
    before = {p.name: p.read_text(encoding="utf-8") for p in _pages(out)}
    drawn = {p: p.stat().st_mtime_ns for p in (out / "figures" / "views").iterdir()}
    build_gallery(out)
    assert {p.name: p.read_text(encoding="utf-8") for p in _pages(out)} == before
    assert {p: p.stat().st_mtime_ns for p in (out / "figures" / "views").iterdir()} == drawn


def test_minimal_run_without_summary_or_labels(tmp_path):
    """No summary.json, no labels, no evaluation: pages still build."""
    out = tmp_path / "run"
    out.mkdir()
    sf.write(out / "c.listenable.wav", _tone(0, 0.3), 48_000)
    row = {
        "clip_id": "c",
        "label": None,
        "predicted": "park",
        "confidence": 0.9,
        "target": "park",
        "selected": True,
        "status": "ok",
        "files": {"listenable": "c.listenable.wav", "original": "gone.wav"},
    }
    (out / "manifest.jsonl").write_text(json.dumps(row) + "\n", encoding="utf-8")
    index = build_gallery(out)
    page = (out / "class-park.html").read_text(encoding="utf-8")
    assert "missing" in page and "gone.wav" not in page
    assert "0.30 s" in page  # the duration of the track there is
    assert not (out / "figures" / "confusion.png").exists()
    assert "class-park.html" in index.read_text(encoding="utf-8")


def test_a_name_that_is_not_utf8(tmp_path):
    """A clip whose file names are not UTF-8 (a Latin-1 data set on Linux): its audio is
    linked by its bytes, its view drawn, its name shown with an escape."""
    out = tmp_path / "run"
    (out / "park").mkdir(parents=True)
    stem = os.fsdecode(b"caf\xe9")
    files = {}
    for kind in ("original", "listenable", "residual"):
        rel = f"park/{stem}.{kind}.wav"
        sf.write(os.fsencode(out / rel), _tone(1, 0.5, 16_000, 1), 16_000, format="WAV")
        files[kind] = rel
    row = {"clip_id": stem, "predicted": "park", "confidence": 0.9, "selected": True}
    row |= {"status": "ok", "files": files}
    (out / "manifest.jsonl").write_text(json.dumps(row) + "\n", encoding="utf-8")
    build_gallery(out)
    page = (out / "class-park.html").read_text(encoding="utf-8")
    assert "caf%E9.listenable.wav" in page and "caf\\udce9" in page
    assert len(list((out / "figures" / "views").glob("*.webp"))) == 1


def test_large_classes_are_paginated(tmp_path):
    out = make_run(tmp_path / "run")
    build_gallery(out, page_clips=1, sheet_clips=1)
    first = (out / "class-airport.html").read_text(encoding="utf-8")
    second = (out / "class-airport-p2.html").read_text(encoding="utf-8")
    assert first.count('<li class="clip"') == second.count('<li class="clip"') == 1
    assert "0.970" in first and "0.850" in second  # most confident first
    assert 'href="class-airport-p2.html"' in first and 'href="class-airport.html"' in second
    assert not (out / "class-airport-p3.html").exists()
    with pytest.raises(ListenableError, match="page_clips and sheet_clips"):
        build_gallery(out, page_clips=0)


def test_broken_optional_evaluation_is_left_out(tmp_path, caplog):
    out = tmp_path / "run"
    (out / "evaluation").mkdir(parents=True)
    (out / "evaluation" / "results.json").write_text("{not json", encoding="utf-8")
    (out / "manifest.jsonl").write_text("", encoding="utf-8")
    index = build_gallery(out)
    assert 'id="evaluation"' not in index.read_text(encoding="utf-8")
    assert "results.json: not valid JSON" in caplog.text


def test_missing_manifest_is_a_clear_error(tmp_path):
    with pytest.raises(ListenableError, match="manifest.jsonl: not found"):
        build_gallery(tmp_path)


def test_unsafe_file_paths_are_not_linked(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (tmp_path / "secret.wav").write_bytes(b"RIFF")
    files = {"original": "../secret.wav", "listenable": "/etc/passwd", "residual": "javascript:x"}
    row = {"clip_id": "c", "predicted": "a", "confidence": 0.9, "selected": True}
    row |= {"status": "ok", "files": files}
    (out / "manifest.jsonl").write_text(json.dumps(row) + "\n", encoding="utf-8")
    build_gallery(out)
    page = (out / "class-a.html").read_text(encoding="utf-8")
    assert "secret" not in page and "passwd" not in page and "javascript" not in page
    assert page.count('class="missing"') == 3


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=60), st.text(min_size=1, max_size=60))
def test_page_slug_safe_stable_unique(a, b):
    for name in (a, b):
        slug = page_slug(name)
        assert re.fullmatch(r"[a-z0-9_-]{1,64}", slug)
        assert slug == page_slug(name)
    if a != b:
        assert page_slug(a) != page_slug(b)
    assert page_slug("airport") == "airport" and page_slug("Bus") != page_slug("bus")


# ----------------------------------------------------------------------------- views, audio


@pytest.mark.parametrize(("rate", "expected"), [(48_000, 2048), (44_100, 2048), (16_000, 512)])
def test_stft_settings_follow_the_rate(rate, expected):
    assert views.stft_settings(rate) == (expected, expected // 2)
    assert views.stft_settings(rate, {"n_fft": 400, "hop_length": 160}) == (400, 160)
    assert views.stft_settings(rate, {"n_fft": "x", "hop_length": 160}) == (expected, expected // 2)


@pytest.mark.parametrize(("rate", "channels"), [(48_000, 2), (16_000, 1), (32_000, 1)])
def test_view_of_any_rate(rate, channels):
    """A low band kept, a high one removed: the masked panel is dark (on the original's
    scale) where the mask removed sound, the outline runs between, the axis is in Hz."""
    rng = np.random.default_rng(0)
    n = rate  # 1 s
    original = 0.1 * rng.standard_normal((channels, n)).astype(np.float32)
    spectrum = np.fft.rfft(original, axis=1)
    freqs = np.fft.rfftfreq(n, 1 / rate)
    listenable = np.fft.irfft(spectrum * (freqs < 1000), n, axis=1).astype(np.float32)
    rgb, outline = views.render_view([original, listenable, original - listenable], rate)
    assert rgb.shape == (3 * views.PANEL_H, views.PANEL_W, 3) and rgb.dtype == np.uint8
    h = views.PANEL_H
    row_of = lambda f: int((1 - views.freq_position(f, rate)) * h)  # noqa: E731
    low, high = row_of(300), row_of(min(5000, rate / 2.5))
    assert rgb[h + low].mean() > 2 * rgb[h + high].mean()  # listenable: low band kept
    assert abs(float(rgb[low].mean()) - float(rgb[h + low].mean())) < 25  # same scale
    assert rgb[2 * h + high].mean() > 2 * rgb[2 * h + low].mean()  # residual: the rest
    edge = row_of(1000)
    assert outline[edge - 3 : edge + 4].any() and not outline[low].any()
    labels = [label for _, label in views.freq_ticks(rate)]
    assert labels[:3] == ["50", "100", "200"] and "1k" in labels
    assert [label for _, label in views.time_ticks(2.0)][:2] == ["0 s", "0.2"]


@pytest.mark.parametrize("audio_format", sorted(audio.AUDIO_FORMATS))
@pytest.mark.parametrize(
    ("rate", "channels", "samples"), [(48_000, 2, 96_000), (16_000, 1, 12_345)]
)
def test_written_audio_decodes(tmp_path, audio_format, rate, channels, samples):
    wave = 0.2 * np.random.default_rng(1).standard_normal((channels, samples))
    path = tmp_path / f"clip{audio.audio_suffix(audio_format)}"
    audio.write_track(path, wave, rate, audio_format)
    info = sf.info(path)
    assert (info.samplerate, info.channels, info.frames) == (rate, channels, samples)
    data, file_rate = sf.read(path, dtype="float32", always_2d=True)
    assert file_rate == rate and data.shape == (samples, channels)
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]
    with pytest.raises(ValueError, match="audio_format must be one of"):
        audio.audio_suffix("aiff")


@pytest.mark.parametrize("audio_format", ["ogg", "flac"])
def test_analyze_writes_compressed_outputs_the_gallery_uses(tmp_path, monkeypatch, audio_format):
    """analyze's _write_outputs at 16 kHz mono: audio in the chosen format that decodes to
    the clip's rate and length, a 3-panel view the gallery takes as it is."""
    import torch

    from listenable.analyze import AnalyzeConfig, _write_outputs

    monkeypatch.setattr("listenable.writers.figure_for", lambda p, *a: _small_png(p))
    rate, n = 16_000, 40_000
    wave = torch.from_numpy(_tone(3, n / rate, rate, 1).T.astype(np.float32))
    expl = SimpleNamespace(sample_rate=rate, listenable=0.5 * wave, residual=0.5 * wave)
    cfg = AnalyzeConfig(audio_format=audio_format, method="layercam")
    out = tmp_path / "run"
    files = _write_outputs(out, "clip <1>", "park", expl, wave, None, cfg, {}, tmp_path / "x.wav")
    suffix = audio.audio_suffix(audio_format)
    assert files["listenable"] == f"park/clip <1>.listenable{suffix}"
    for kind in ("original", "listenable", "residual"):
        info = sf.info(out / files[kind])
        assert (info.samplerate, info.channels, info.frames) == (rate, 1, n)
    assert views.panel_count(out / files["view"]) == 3
    row = {"clip_id": "clip <1>", "predicted": "park", "confidence": 0.9, "selected": True}
    row |= {"status": "ok", "files": files}
    (out / "manifest.jsonl").write_text(json.dumps(row) + "\n", encoding="utf-8")
    build_gallery(out)
    page = (out / "class-park.html").read_text(encoding="utf-8")
    assert "park/clip%20%3C1%3E.view.webp" in page and "2.50 s" in page
    assert not list((out / "figures" / "views").glob("*.webp"))  # the run's view is used


def test_a_selected_clip_stays_small(tmp_path):
    """10 s of 48 kHz stereo scene-like audio: three Ogg tracks, view and outline together
    within the 300 kB a clip may take at the paper's scale (WAV: 5.8 MB)."""
    from tests.conftest import scene_like

    original = scene_like(np.random.default_rng(4), seconds=10.0)
    spectrum = np.fft.rfft(original, axis=1)
    freqs = np.fft.rfftfreq(original.shape[1], 1 / 48_000)
    listenable = np.fft.irfft(spectrum * ((freqs > 300) & (freqs < 4000)), original.shape[1])
    tracks = [original, listenable, original - listenable]
    for kind, wave in zip(("original", "listenable", "residual"), tracks):
        audio.write_track(tmp_path / f"{kind}.ogg", wave, 48_000)
    views.write_view(tmp_path / "view.webp", tmp_path / "outline.png", tracks, 48_000)
    sizes = {p.name: p.stat().st_size for p in tmp_path.iterdir()}
    assert sum(sizes.values()) <= 300_000, sizes
    assert sizes["view.webp"] <= 40_000 and sizes["outline.png"] <= 10_000, sizes


# ----------------------------------------------------------------------------- browser

CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def browser():
    # In CI (CI=true) a missing browser is a failure, never a silent skip.
    missing = pytest.fail if os.environ.get("CI") else pytest.skip
    if not CHROMIUM.exists():
        missing(f"{CHROMIUM} missing: run `bash .ci/install-browser`")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("playwright not importable: pip install -e '.[test]'")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=BROWSER_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def http_root(gallery):
    out, _ = gallery
    handler = functools.partial(_QuietHandler, directory=str(out))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class _Page:
    """A page with every console error, page error and dialog collected."""

    def __init__(self, browser, viewport=None):
        self.context = browser.new_context(viewport=viewport or {"width": 1200, "height": 900})
        self.page = self.context.new_page()
        self.problems: list[str] = []
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda e: self.problems.append(f"pageerror: {e}"))
        self.page.on(
            "dialog", lambda d: (self.problems.append(f"dialog: {d.message}"), d.dismiss())
        )

    def _console(self, message):
        if message.type == "error":
            self.problems.append(f"console {message.type}: {message.text}")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.context.close()

    def open(self, url: str):
        self.page.goto(url)
        if "class-" in url:  # the player script ran: from file:// too, under the CSP
            self.page.wait_for_function(
                "() => document.documentElement.dataset.player === 'ready'", timeout=10_000
            )
        return self.page


def _state(page, index: int = 0) -> dict:
    """The player of the ``index``-th visible clip: time, track, playing, playhead."""
    return page.evaluate(
        """(i) => { const li = Array.from(document.querySelectorAll('#clips > li'))
                      .filter(x => !x.hidden)[i];
                    const p = li.listenablePlayer;
                    return { time: p ? p.time() : 0, active: p ? p.active : 0,
                             playing: p ? p.isPlaying() : false, now: performance.now(),
                             duration: p ? p.duration : 0,
                             head: parseFloat(li.querySelector('.playhead').style.left || '0'),
                             view: li.querySelector('.view').className,
                             id: li.dataset.id }; }""",
        index,
    )


def _wait_playing(page, index: int = 0, past: float = 0.25) -> dict:
    page.wait_for_function(
        """([i, t]) => { const li = Array.from(document.querySelectorAll('#clips > li'))
                           .filter(x => !x.hidden)[i];
                         const p = li.listenablePlayer;
                         return p && p.isPlaying() && p.time() > t; }""",
        arg=[index, past],
        timeout=10_000,
    )
    return _state(page, index)


def _check_images(page, problems):
    for img in page.locator("img").all():
        img.scroll_into_view_if_needed()
    page.wait_for_function(
        "() => Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)",
        timeout=20_000,
    )
    assert not problems, problems


@pytest.mark.browser
@pytest.mark.parametrize("scheme", ["file", "http"])
def test_gallery_in_chromium(browser, gallery, http_root, scheme):
    """Every page loads with no console error, every image decodes, the script runs (from
    file:// as well), hostile names show as literal text."""
    out, index = gallery
    base = index.parent.as_uri() + "/" if scheme == "file" else http_root
    with _Page(browser) as tab:
        page = tab.open(base + "index.html")
        assert page.locator("h1").inner_text().startswith("listenable")
        _check_images(page, tab.problems)
        links = page.locator("a.class-link")
        names = [links.nth(i).inner_text() for i in range(links.count())]
        assert names == CLASSES  # the HTML-named class shows as literal text
        for i, name in enumerate(names):
            page.locator("a.class-link").nth(i).click()
            page.wait_for_function("() => document.documentElement.dataset.player === 'ready'")
            assert page.url.endswith(f"class-{page_slug(name)}.html")
            assert page.locator("h1").inner_text() == name
            assert page.locator("img[src='x']").count() == 0
            _check_images(page, tab.problems)
            page.locator("#back").click()
            page.wait_for_load_state("load")
            assert page.url.endswith("index.html")
        assert not tab.problems, tab.problems


_RECORD_SWITCHES = """() => {
    window.switches = [];  // the player's time just before and just after each input event
    const first = () => document.querySelector('#clips > li').listenablePlayer;
    const record = (phase) => (e) => { const p = first();
        if (p) window.switches.push({phase, type: e.type, time: p.time(), active: p.active}); };
    for (const type of ['keydown', 'click']) {
        window.addEventListener(type, record('before'), true);
        window.addEventListener(type, record('after'), false);
    }
}"""


def _last_switch(page, type_: str) -> tuple[dict, dict]:
    events = [e for e in page.evaluate("() => window.switches") if e["type"] == type_]
    return events[-2], events[-1]


@pytest.mark.browser
def test_switching_tracks_keeps_the_position(browser, gallery):
    """Real key presses and clicks while playing: the track changes, the time at the switch
    stays within 50 ms, and playback goes on from there (no jump back to 0 or ahead)."""
    out, index = gallery
    with _Page(browser) as tab:
        page = tab.open(index.parent.as_uri() + "/class-airport.html")
        clip = page.locator("#clips > li").first
        clip.locator("button.play").click()
        start = _wait_playing(page)
        page.evaluate(_RECORD_SWITCHES)
        switches = [
            ("keydown", lambda: page.keyboard.press("2"), 1),
            ("click", lambda: clip.locator("button.track").nth(2).click(), 2),
            ("keydown", lambda: page.keyboard.press("1"), 0),
        ]
        for type_, act, track in switches:
            act()
            before, after = _last_switch(page, type_)
            assert before["phase"] == "before" and after["phase"] == "after"
            assert (before["active"], after["active"]) != (track, track) and after[
                "active"
            ] == track
            assert abs(after["time"] - before["time"]) < 0.05, (before, after)
            state = _state(page)
            assert state["playing"] and f"k{track}" in state["view"]
            assert clip.locator("button.track").nth(track).get_attribute("aria-pressed") == "true"
        end = _state(page)
        elapsed = (end["now"] - start["now"]) / 1000
        assert -0.3 < end["time"] - start["time"] - elapsed < 0.05, (start, end)  # went on
        page.keyboard.press(" ")  # space pauses
        paused = _state(page)
        assert not paused["playing"]
        page.keyboard.press(" ")  # and plays on from there
        assert _wait_playing(page, past=paused["time"])["playing"]
        assert not tab.problems, tab.problems


@pytest.mark.browser
def test_the_spectrogram_seeks_and_shows_where_you_are(browser, gallery):
    out, index = gallery
    with _Page(browser) as tab:
        page = tab.open(index.parent.as_uri() + "/class-park.html")  # 16 kHz mono
        view = page.locator("#clips > li .view").first
        box = view.bounding_box()
        page.mouse.click(box["x"] + 0.4 * box["width"], box["y"] + box["height"] / 2)
        state = _state(page)
        assert state["time"] == pytest.approx(0.4 * SECONDS, abs=0.01 * SECONDS)
        assert state["head"] == pytest.approx(40, abs=1)
        page.locator("#clips > li button.play").first.click()
        first = _wait_playing(page, past=0.85)
        page.wait_for_timeout(300)
        second = _state(page)
        assert second["head"] > first["head"] + 3 and second["time"] > first["time"]
        page.keyboard.press("4")  # the second method's listenable track: its own panel
        assert "k3" in _state(page)["view"]
        y = box["y"] + box["height"] / 2  # drag from 20 % to 40 %: that part loops
        page.mouse.move(box["x"] + 0.2 * box["width"], y)
        page.mouse.down()
        page.mouse.move(box["x"] + 0.3 * box["width"], y, steps=3)
        page.mouse.move(box["x"] + 0.4 * box["width"], y, steps=3)
        page.mouse.up()
        assert page.locator("#clips > li input.loop").first.is_checked()
        assert page.locator("#clips > li .region").first.is_visible()
        times = []
        for _ in range(12):
            page.wait_for_timeout(100)
            times.append(_state(page)["time"])
        assert all(0.2 * SECONDS - 0.02 <= t <= 0.4 * SECONDS + 0.1 for t in times), times
        assert any(b < a for a, b in zip(times, times[1:])), times  # it wrapped around
        page.locator("#clips > li .outline-toggle").first.uncheck()
        assert page.locator("#clips > li .outline").first.is_hidden()
        assert not tab.problems, tab.problems


@pytest.mark.browser
def test_play_in_a_row_steps_through_the_class(browser, gallery):
    out, index = gallery
    with _Page(browser) as tab:
        page = tab.open(index.parent.as_uri() + "/class-airport.html")
        ids = page.evaluate(
            "() => Array.from(document.querySelectorAll('#clips > li'), li => li.dataset.id)"
        )
        page.locator("#row-play").click()
        first = _wait_playing(page, 0, past=0.05)
        assert first["active"] == 1  # the listenable track
        page.wait_for_function(  # at the end of the first clip the second one plays
            """() => { const li = document.querySelectorAll('#clips > li')[1];
                       return li.listenablePlayer && li.listenablePlayer.isPlaying(); }""",
            timeout=(SECONDS + 4) * 1000,
        )
        second = _state(page, 1)
        assert second["active"] == 1 and second["id"] == ids[1]
        assert not _state(page, 0)["playing"]
        assert page.locator("#row-play").get_attribute("aria-pressed") == "true"
        page.locator("#row-play").click()
        assert not _state(page, 1)["playing"]
        assert not tab.problems, tab.problems


@pytest.fixture(scope="module")
def big_run(tmp_path_factory):
    """One class with 1,000 clips (sharing their files: the page is what is measured)."""
    out = tmp_path_factory.mktemp("big")
    (out / "bus").mkdir()
    rng = np.random.default_rng(0)
    wave = _tone(0, 1.0, 16_000, 1)
    for kind, scale in (("original", 1.0), ("listenable", 0.5), ("residual", 0.5)):
        audio.write_track(out / f"bus/shared.{kind}.ogg", (scale * wave).T, 16_000)
    tracks = [wave.T, 0.5 * wave.T, 0.5 * wave.T]
    views.write_view(out / "bus/shared.view.webp", out / "bus/shared.outline.png", tracks, 16_000)
    files = {k: f"bus/shared.{k}.ogg" for k in ("original", "listenable", "residual")}
    files |= {"view": "bus/shared.view.webp", "outline": "bus/shared.outline.png"}
    rows = []
    for i in range(1000):
        label = "bus" if rng.random() < 0.8 else "tram"
        rows.append(
            {"clip_id": f"bus-{i:04d}", "label": label, "predicted": "bus", "target": "bus",
             "confidence": round(float(rng.uniform(0.3, 1.0)), 4), "selected": True,
             "correct": label == "bus", "mask_area": round(float(rng.uniform(0.1, 0.4)), 4),
             "status": "ok", "files": files}
        )  # fmt: skip
    (out / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    build_gallery(out)
    return out, rows


@pytest.mark.browser
def test_a_class_of_1000_clips_opens_fast(browser, big_run):
    """From file://: parsed, styled and the player script run (DOMContentLoaded: the script
    is the last thing in the body), then a re-sort of all 1,000 clips drawn, within 2 s."""
    out, rows = big_run
    with _Page(browser) as tab:
        start = time.perf_counter()
        page = tab.open((out / "class-bus.html").as_uri())
        ready = page.evaluate(
            "() => performance.getEntriesByType('navigation')[0].domContentLoadedEventEnd"
        )
        sort = page.evaluate(
            """() => new Promise(done => { const t = performance.now();
                 const sort = document.getElementById('sort');
                 sort.value = 'area-asc'; sort.dispatchEvent(new Event('change'));
                 document.body.offsetHeight;
                 requestAnimationFrame(() => done(performance.now() - t)); })"""
        )
        wall = time.perf_counter() - start
        print(
            f"\n1,000-clip class page: ready {ready:.0f} ms + re-sorted {sort:.0f} ms ({wall:.2f} s)"
        )
        assert ready + sort < 2000
        assert float(page.locator("#clips > li").first.get_attribute("data-area")) < 0.11
        assert page.locator("#count").inner_text() == "1000 of 1000 clips"
        assert not tab.problems, tab.problems


@pytest.mark.browser
def test_sort_and_filter(browser, big_run):
    out, rows = big_run
    with _Page(browser) as tab:
        page = tab.open((out / "class-bus.html").as_uri())
        shown = (
            "() => Array.from(document.querySelectorAll('#clips > li')).filter(li => !li.hidden)"
        )
        order = lambda key: page.evaluate(f"() => ({shown})().map(li => li.dataset.{key})")  # noqa: E731
        confidences = [float(x) for x in order("confidence")]
        assert confidences == sorted(confidences, reverse=True) and len(confidences) == 1000
        page.select_option("#sort", "area-asc")
        areas = [float(x) for x in order("area")]
        assert areas == sorted(areas) and len(areas) == 1000
        page.select_option("#sort", "confidence-asc")
        assert [float(x) for x in order("confidence")] == sorted(confidences)
        page.select_option("#filter-correct", "wrong")
        wrong = [r for r in rows if not r["correct"]]
        assert sorted(order("id")) == sorted(r["clip_id"] for r in wrong)
        assert page.locator("#count").inner_text() == f"{len(wrong)} of 1000 clips"
        page.fill("#min-confidence", "0.9")
        expected = {r["clip_id"] for r in wrong if r["confidence"] >= 0.9}
        assert set(order("id")) == expected and len(expected) > 5
        page.fill("#max-area", "0.2")
        expected = {r["clip_id"] for r in wrong if r["confidence"] >= 0.9 and r["mask_area"] <= 0.2}
        assert set(order("id")) == expected
        assert page.locator("#count").inner_text() == f"{len(expected)} of 1000 clips"
        page.select_option("#filter-correct", "all")
        page.fill("#min-confidence", "0")
        page.fill("#max-area", "1")
        assert page.locator("#count").inner_text() == "1000 of 1000 clips"
        assert not tab.problems, tab.problems


# ----------------------------------------------------------------------------- screenshots


def _scene_run(out: Path) -> Path:
    """Synthetic scenes with planted events; as "explanations", stand-ins made from the
    events' own spectra: a coarse mask of a quarter of the bins (gradcam's) and the sharp
    ideal binary mask (optimised's). The screenshots show the gallery, not a model."""
    from scipy.ndimage import uniform_filter
    from scipy.signal import istft, stft

    from listenable.data.scenes import CLASSES as SCENES
    from listenable.data.scenes import render_clip

    rows, rate = [], 32_000
    for class_index in (SCENES.index(c) for c in ("park", "street_traffic", "airport")):
        name = SCENES[class_index]
        (out / name).mkdir(parents=True, exist_ok=True)
        for k in range(2):
            clip = render_clip(2026, class_index, k, sample_rate=rate, duration=10.0)
            _, _, mix = stft(clip.mixture, rate, nperseg=1024)
            _, _, event = stft(clip.event_audio, rate, nperseg=1024)
            ratio = (np.abs(event) ** 2).sum(0) / np.maximum((np.abs(mix) ** 2).sum(0), 1e-12)
            smeared = uniform_filter(ratio, size=(61, 41))  # Grad-CAM-like: coarse, smeared
            smeared += 1e-9 * np.arange(smeared.shape[0], 0, -1)[:, None]  # ties: low first
            masks = {
                "gradcam": (smeared >= np.quantile(smeared, 0.75)) * 1.0,  # a quarter, as θ
                "optimised": (ratio > 0.5) * 1.0,
            }
            stem = f"{name}-{k}"
            files = {"original": f"{name}/{stem}.original.ogg"}
            audio.write_track(out / files["original"], clip.mixture, rate)
            methods, tracks = {}, [clip.mixture]
            for method, mask in masks.items():
                _, kept = istft(mix * mask, rate, nperseg=1024)
                kept = kept[:, : clip.mixture.shape[1]]
                recall = float((np.abs(event * mask) ** 2).sum() / (np.abs(event) ** 2).sum())
                entry = {"files": {"listenable": f"{name}/{stem}.{method}.ogg"}}
                entry |= {"mask_area": float(mask.mean()), "scores": {"event_recall": recall}}
                audio.write_track(out / entry["files"]["listenable"], kept, rate)
                methods[method] = entry
                tracks.append(kept)
                if method == "gradcam":
                    files["listenable"] = entry["files"]["listenable"]
                    files["residual"] = f"{name}/{stem}.residual.ogg"
                    audio.write_track(out / files["residual"], clip.mixture - kept, rate)
            confidence = round(0.95 - 0.12 * k - 0.05 * class_index / 10, 3)
            rows.append(
                {"clip_id": stem, "label": name, "predicted": name, "target": name,
                 "confidence": confidence, "selected": True, "correct": True,
                 "mask_area": methods["gradcam"]["mask_area"], "status": "ok", "files": files,
                 "method": "gradcam", "scores": methods["gradcam"]["scores"],
                 "methods": {"optimised": methods["optimised"]}}
            )  # fmt: skip
    (out / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    freqs = np.geomspace(40, rate / 2, 60)
    summary = {
        "settings": {"min_confidence": 0.3, "method": "gradcam"},
        "class_profiles": {
            "park": {"frequencies_hz": freqs.tolist(),
                     "mean_mask": (0.9 * np.exp(-(np.log(freqs / 3500) ** 2) / 0.3)).tolist()}
        },
    }  # fmt: skip
    (out / "summary.json").write_text(json.dumps(summary))
    return out


@pytest.mark.browser
def test_screenshots(browser, tmp_path):
    """The gallery as a person sees it; into $LISTENABLE_SCREENSHOTS (docs/) when set."""
    target = Path(os.environ.get("LISTENABLE_SCREENSHOTS") or tmp_path)
    target.mkdir(parents=True, exist_ok=True)
    out = _scene_run(tmp_path / "scenes")
    build_gallery(out)
    with _Page(browser, viewport={"width": 1100, "height": 900}) as tab:
        page = tab.open((out / "index.html").as_uri())
        _check_images(page, tab.problems)
        page.evaluate("() => window.scrollTo(0, 0)")
        page.screenshot(path=str(target / "gallery-index.png"))
        page = tab.open((out / "class-park.html").as_uri())
        _check_images(page, tab.problems)
        page.evaluate("() => window.scrollTo(0, 0)")
        page.locator("#clips > li button.play").first.click()
        _wait_playing(page, past=3.2)
        page.keyboard.press(" ")
        page.screenshot(path=str(target / "gallery-class.png"))
        page.keyboard.press("2")  # the clip on its listenable track
        page.locator("#clips > li").first.screenshot(path=str(target / "gallery-clip.png"))
        assert not tab.problems, tab.problems
    for name in ("index", "class", "clip"):
        assert (target / f"gallery-{name}.png").stat().st_size > 10_000
