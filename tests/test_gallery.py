"""The static gallery: built from a small analysis folder written by hand, checked as text
(escaping, URLs, order, resumed runs) and, with Chromium, as a page a person opens."""

import base64
import functools
import hashlib
import html
import http.server
import json
import os
import re
import threading
from html.parser import HTMLParser
from pathlib import Path
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
from listenable.report.gallery import build_gallery, page_slug, read_manifest_rows  # noqa: E402

EVIL = "<img src=x onerror=alert(1)>"
UNICODE = "Straße café 駅"
CLASSES = ["airport", UNICODE, EVIL]
FOLDERS = {"airport": "airport", UNICODE: "Stra_e_caf_-1a2b3c", EVIL: "_img_src_x-abcdef"}
# (clip id, class, confidence, subtype): ids with characters that must be URL-encoded
CLIPS = [
    ("airport-a-0", "airport", 0.97, "FLOAT"),
    ("airport b#1?x&y'z", "airport", 0.85, "PCM_16"),
    ("cafe-ü-1", UNICODE, 0.91, "PCM_16"),
    ("cafe-2", UNICODE, 0.99, "FLOAT"),
    ("evil-1", EVIL, 0.88, "PCM_16"),
    (f"evil {EVIL}", EVIL, 0.95, "FLOAT"),
]


def _tone(seed: int, seconds: float = 1.0, sr: int = 48_000) -> np.ndarray:
    """``(samples, 2)``: a tone plus a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    x = 0.3 * np.sin(2 * np.pi * (300 + 100 * seed) * t)
    return np.stack([x, 0.7 * x], axis=1) + 0.01 * rng.standard_normal((t.size, 2))


def _small_png(path: Path) -> None:
    fig, ax = plt.subplots(figsize=(1.5, 1))
    ax.plot([0, 1], [0, 1])
    fig.savefig(path, dpi=40)
    plt.close(fig)


def make_run(out: Path) -> Path:
    """A folder as ``listenable analyze`` writes it: manifest (with a failed clip, an
    unselected one, a resumed clip and a torn last line), summary, evaluation."""
    out.mkdir(parents=True, exist_ok=True)
    lines = []
    for k, (clip_id, cls, conf, subtype) in enumerate(CLIPS):
        folder = out / FOLDERS[cls]
        folder.mkdir(exist_ok=True)
        files = {}
        for kind in ("original", "listenable", "residual"):
            name = f"{clip_id}.{kind}.wav"
            scale = {"original": 1.0, "listenable": 0.6, "residual": 0.4}[kind]
            sf.write(folder / name, scale * _tone(k), 48_000, subtype=subtype)
            files[kind] = f"{FOLDERS[cls]}/{name}"
        _small_png(folder / f"{clip_id}.png")
        (folder / f"{clip_id}.json").write_text("{}", encoding="utf-8")
        files |= {
            "figure": f"{FOLDERS[cls]}/{clip_id}.png",
            "json": f"{FOLDERS[cls]}/{clip_id}.json",
        }
        others = [c for c in CLASSES if c != cls]
        probs = {cls: conf, others[0]: (1 - conf) / 2, others[1]: (1 - conf) / 2}
        label = cls if k != 4 else "airport"  # one wrong prediction
        lines.append(
            {
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
        )
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
    summary = {
        "class_names": CLASSES,
        "classes": {
            "airport": {"clips": 4, "selected": 3, "accuracy": 1.0},
            UNICODE: {"clips": 2, "selected": 2, "accuracy": 1.0},
            EVIL: {"clips": 1, "selected": 1, "accuracy": 1.0},
        },
        "totals": {"clips": 8, "selected": 6, "failed": 1, "accuracy": 6 / 7},
        "settings": {"min_confidence": 0.8, "method": "gradcam", "note": "<i>x</i>"},
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


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.urls: list[tuple[str, str, str]] = []  # (tag, attribute, value)
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        for key in ("src", "href"):
            if key in attrs:
                self.urls.append((tag, key, attrs[key]))


def _parse_text(text: str) -> _Links:
    parser = _Links()
    parser.feed(text)
    return parser


def _parse(path: Path) -> _Links:
    return _parse_text(path.read_text(encoding="utf-8"))


def test_files_exist(gallery):
    out, index = gallery
    assert index == out / "index.html" and index.is_file()
    assert len(list(out.glob("class-*.html"))) == len(CLASSES)  # one page each
    for name in ("confusion.png", "confidence.png"):
        assert (out / "figures" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for cls in CLASSES:
        assert (out / f"class-{page_slug(cls)}.html").is_file()
        assert (out / "figures" / f"sheet-{page_slug(cls)}.png").stat().st_size > 1000
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name]


def test_names_escaped_everywhere(gallery):
    out, _ = gallery
    for page in _pages(out):
        text = page.read_text(encoding="utf-8")
        assert "<img src=x onerror" not in text, page.name
        assert "<script>)" not in text and "<b>clip" not in text and "<i>x" not in text
        for tag, attrs in _parse(page).tags:
            assert not any(k.startswith("on") for k in attrs), (page.name, tag, attrs)
            assert tag in {
                "html", "head", "meta", "link", "title", "style", "body", "nav", "a", "h1", "h2",
                "p", "table", "thead", "tbody", "tr", "th", "td", "code", "figure",
                "figcaption", "img", "audio", "div", "span", "button", "script", "details",
                "summary", "em", "caption",
            }, tag  # fmt: skip
    index = (out / "index.html").read_text(encoding="utf-8")
    assert html.escape(EVIL) in index and html.escape(UNICODE) in index
    evil_page = (out / f"class-{page_slug(EVIL)}.html").read_text(encoding="utf-8")
    assert f"<h1>{html.escape(EVIL)}</h1>" in evil_page


def test_every_url_is_encoded_and_resolves(gallery):
    out, _ = gallery
    seen_audio = 0
    for page in _pages(out):
        for tag, _attr, url in _parse(page).urls:
            if (tag, url) == ("link", "data:,"):  # the empty favicon
                continue
            assert re.fullmatch(r"[A-Za-z0-9_.~/%-]+", url), (page.name, url)  # percent-encoded
            target = out / unquote(url)
            assert target.resolve().is_relative_to(out.resolve()), url
            assert target.is_file(), (page.name, tag, url)
            seen_audio += tag == "audio"
    assert seen_audio == 3 * len(CLIPS)
    airport = (out / "class-airport.html").read_text(encoding="utf-8")
    assert "airport%20b%231%3Fx%26y%27z.listenable.wav" in airport


def test_resumed_and_failed_clips(gallery):
    out, _ = gallery
    rows = read_manifest_rows(out / "manifest.jsonl")
    ids = [r["clip_id"] for r in rows]
    assert len(ids) == len(set(ids)) == len(CLIPS) + 2  # torn last line skipped
    assert next(r for r in rows if r["clip_id"] == "airport-a-0")["status"] == "ok"
    airport = (out / "class-airport.html").read_text(encoding="utf-8")
    assert airport.count("<tr data-confidence=") == 2  # the resumed clip, not the unselected
    assert "airport-low" not in airport
    index = (out / "index.html").read_text(encoding="utf-8")
    assert html.escape("broken <b>clip</b>") in index and "Failed clips (1)" in index


def test_clips_ordered_by_confidence_with_sort_script(gallery):
    out, _ = gallery
    for cls in CLASSES:
        text = (out / f"class-{page_slug(cls)}.html").read_text(encoding="utf-8")
        order = [float(x) for x in re.findall(r"<tr data-confidence='([0-9.]+)'>", text)]
        assert order == sorted(order, reverse=True) and len(order) == 2
        assert 'id="clips"' in text or "id='clips'" in text
        assert "sort-confidence" in text and "href='index.html'" in text
        script = re.search(r"<script>(.*?)</script>", text, re.S).group(1)
        digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
        csp = next(
            a["content"]
            for t, a in _parse_text(text).tags
            if t == "meta" and "content" in a and "http-equiv" in a
        )
        assert f"script-src 'sha256-{digest}';" in csp  # the CSP admits exactly this script
        assert "y - x" in script and "x - y" in script


def test_summary_and_evaluation_tables(gallery):
    out, _ = gallery
    index = (out / "index.html").read_text(encoding="utf-8")
    assert "id='summary'" in index and "0.857" in index  # total accuracy
    assert "id='evaluation-table'" in index and html.escape(f"rand {EVIL}") in index
    assert "deletion%20curve.png" in index and "results.md" in index
    assert "figures/confusion.png" in index and "figures/confidence.png" in index


def test_rebuild_is_idempotent(gallery):
    out, index = gallery
    before = {p.name: p.read_text(encoding="utf-8") for p in _pages(out)}
    build_gallery(out)
    assert {p.name: p.read_text(encoding="utf-8") for p in _pages(out)} == before


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
    assert not (out / "figures" / "confusion.png").exists()
    assert "class-park.html" in index.read_text(encoding="utf-8")


def test_large_classes_are_paginated(tmp_path):
    out = make_run(tmp_path / "run")
    build_gallery(out, page_clips=1, sheet_clips=1)
    first = (out / "class-airport.html").read_text(encoding="utf-8")
    second = (out / "class-airport-p2.html").read_text(encoding="utf-8")
    assert first.count("<tr data-confidence=") == second.count("<tr data-confidence=") == 1
    assert "0.970" in first and "0.850" in second  # most confident first
    assert "href='class-airport-p2.html'" in first and "href='class-airport.html'" in second
    assert not (out / "class-airport-p3.html").exists()
    with pytest.raises(ListenableError, match="page_clips and sheet_clips"):
        build_gallery(out, page_clips=0)


def test_broken_optional_evaluation_is_left_out(tmp_path, caplog):
    out = tmp_path / "run"
    (out / "evaluation").mkdir(parents=True)
    (out / "evaluation" / "results.json").write_text("{not json", encoding="utf-8")
    (out / "manifest.jsonl").write_text("", encoding="utf-8")
    index = build_gallery(out)
    assert "id='evaluation'" not in index.read_text(encoding="utf-8")
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
    assert page.count("class='missing'") == 3


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


# ----------------------------------------------------------------------------- browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]


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
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
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


def _check_page(page, problems):
    """Every audio element has metadata, every image decoded (scrolled into view: the clip
    figures load lazily), no console error so far."""
    page.wait_for_function(
        "() => Array.from(document.querySelectorAll('audio'))"
        ".every(a => a.readyState >= 1 && a.duration > 0)",
        timeout=20_000,
    )
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
    out, index = gallery
    base = index.parent.as_uri() + "/" if scheme == "file" else http_root
    context = browser.new_context()
    page = context.new_page()
    problems: list[str] = []
    page.on(
        "console",
        lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None,
    )
    page.on("pageerror", lambda e: problems.append(f"pageerror: {e}"))
    page.on("dialog", lambda d: (problems.append(f"dialog: {d.message}"), d.dismiss()))
    try:
        page.goto(base + "index.html")
        assert page.locator("h1").inner_text().startswith("listenable")
        _check_page(page, problems)
        links = page.locator("a.class-link")
        assert links.count() == len(CLASSES)
        names = [links.nth(i).inner_text() for i in range(links.count())]
        assert names == CLASSES  # the HTML-named class shows as literal text
        for i, name in enumerate(names):
            page.locator("a.class-link").nth(i).click()
            page.wait_for_load_state("load")
            assert page.url.endswith(f"class-{page_slug(name)}.html")
            assert page.locator("h1").inner_text() == name
            _check_page(page, problems)
            audio = page.locator("audio")
            assert audio.count() == 6
            order = "() => Array.from(document.querySelectorAll('#clips tbody tr'))" \
                ".map(r => parseFloat(r.dataset.confidence))"  # fmt: skip
            first = page.evaluate(order)
            assert first == sorted(first, reverse=True)
            page.locator("#sort-confidence").click()
            assert page.evaluate(order) == sorted(first)
            assert page.locator("th[aria-sort]").get_attribute("aria-sort") == "ascending"
            page.locator("#sort-confidence").click()
            assert page.evaluate(order) == first
            page.locator("#back").click()
            page.wait_for_load_state("load")
            assert page.url.endswith("index.html")
        assert not problems, problems
    finally:
        context.close()
