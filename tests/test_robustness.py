"""Robustness: a bad-input matrix, crash-safe runs, safe loading, staying inside ``--out``,
escaped output. ``docs/robustness.md`` is the table of what each bad input gets; the
``CASES`` table below is that table, and this file asserts it.

Every command-line run here is ``listenable.cli.main([...])`` in-process: the exit status
is 0 only when every clip was explained, 1 when any clip failed; a refused clip costs
exactly one ``error:`` line that names the file; no traceback ever reaches the user.
"""

from __future__ import annotations

import contextlib
import hashlib
import html
import io
import json
import math
import os
import pickle
import signal
import struct
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from listenable.analyze import AnalyzeConfig, analyze, read_manifest
from listenable.checkpoint import load_checkpoint, save_checkpoint
from listenable.cli import main
from listenable.data import folder_dataset
from listenable.errors import CheckpointError
from listenable.io import SAMPLE_RATE, load_audio
from listenable.models import McDonnellGao
from tests.conftest import scene_like

CLASSES = ["airport", "bus", "park"]
EVIL = "<img src=x onerror=alert(1)>"
BOLD = "<b>bold</b>"


# --------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Many small forwards: on a busy machine, a second intra-op thread (conftest sets two)
    makes them 10-40x slower waiting for each other, so this module runs on one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _checkpoint(folder: Path, class_names=CLASSES) -> Path:
    torch.manual_seed(0)
    model = McDonnellGao(n_classes=len(class_names)).eval()
    return save_checkpoint(model, folder / "model.safetensors", class_names=list(class_names))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return _checkpoint(tmp_path_factory.mktemp("checkpoint"))


def _cli(*argv) -> tuple[int, str]:
    """Run the command line in-process; ``(exit status, stdout + stderr)``."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main([str(a) for a in argv])
    text = out.getvalue() + err.getvalue()
    assert "Traceback" not in text, text
    return status, text


def _shown(path: Path) -> str:
    """How a message names ``path``: as is, or ``ascii()``-escaped when it is not printable
    (control characters, bytes that are not UTF-8), so that the message stays one line."""
    text = str(path)
    return text if text.isprintable() else ascii(text)


def _errors(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("error:")]


def _tree(root: Path) -> dict[str, tuple[str, int]]:
    """``relative path -> (sha1, mtime_ns)`` of every file below ``root``."""
    return {
        os.fsdecode(p.relative_to(root)): (
            hashlib.sha1(p.read_bytes()).hexdigest(),
            p.stat().st_mtime_ns,
        )
        for p in root.rglob("*")
        if p.is_file()
    }


# --------------------------------------------------------------------------- 1. the matrix


@dataclass(frozen=True)
class Case:
    """One bad (or merely unusual) input and what it must get.

    ``refused`` is a fragment of the one-line error; ``None`` means explained, with
    ``seconds`` of output (at 48 kHz, two channels) and ``note`` in the JSON notes.
    """

    name: str  # file name (str, or bytes for names that are not UTF-8)
    make: object  # make(path, rng)
    refused: str | None = None
    seconds: float = 1.0
    note: str | None = None
    analyze: bool = True  # also in the one `analyze` run (the 120 s clip is CLI only)
    figure: bool = False  # draw the real figure (1-2 s of matplotlib per clip; 13 s at 120 s)


def _wav(x, rate=SAMPLE_RATE, **kw):
    """A writer of ``x (channels, samples)``; ``kw`` go to :func:`soundfile.write`."""
    return lambda path, _rng: sf.write(os.fsencode(path), np.ascontiguousarray(x.T), rate, **kw)


def _scene(seconds=1.0, rate=SAMPLE_RATE, channels=2, **kw):
    def make(path, rng):
        x = scene_like(rng, seconds=min(seconds, 1.0), sr=rate, channels=min(channels, 2))
        if seconds > 1.0:  # a long clip: the 1 s scene over and over (cheap to make)
            x = np.tile(x, int(seconds))
        if channels > 2:
            x = np.concatenate([x, x, x])[:channels]
        sf.write(os.fsencode(path), np.ascontiguousarray(x.T), rate, **kw)

    return make


def _with(value, at=(1, 1000)):
    """A float WAV of a scene with one sample set to ``value`` (NaN, Inf)."""

    def make(path, rng):
        x = scene_like(rng, seconds=1.0)
        x[at] = value
        sf.write(os.fsencode(path), x.T, SAMPLE_RATE, subtype="FLOAT")

    return make


def _truncated(path, rng):
    buffer = io.BytesIO()
    sf.write(buffer, scene_like(rng, seconds=1.0).T, SAMPLE_RATE, format="WAV")
    path.write_bytes(buffer.getvalue()[:30])  # mid-header: no data chunk


def _clipped(path, rng):
    x = np.clip(scene_like(rng, seconds=1.0) * 8.0, -1.5, 1.5)  # flat tops at ±1.5
    sf.write(os.fsencode(path), x.T, SAMPLE_RATE, subtype="FLOAT")


def _huge(path, rng):
    sf.write(
        os.fsencode(path), (scene_like(rng, seconds=1.0) * 1e20).T, SAMPLE_RATE, subtype="FLOAT"
    )


def _declaring(rate: int):
    """A 2.4 kB 16-bit WAV of silence whose header says ``rate`` Hz (1 Hz: 20 minutes)."""

    def make(path, _rng):
        sf.write(os.fsencode(path), np.zeros((600, 2), np.int16), 8_000)
        data = bytearray(path.read_bytes())
        data[24:32] = struct.pack("<II", rate, rate * 4)  # fmt chunk: rate, byte rate
        path.write_bytes(bytes(data))

    return make


def _silent_flac(seconds: int):
    """A FLAC of silence, written 10 s at a time (10 minutes: ~110 kB on disk)."""

    def make(path, _rng):
        block = np.zeros((SAMPLE_RATE * 10, 2), np.int16)
        with sf.SoundFile(os.fsencode(path), "w", SAMPLE_RATE, 2, format="FLAC") as handle:
            for _ in range(seconds // 10):
                handle.write(block)

    return make


CASES = {
    "empty": Case("empty.wav", lambda p, r: p.write_bytes(b""), refused="empty file"),
    "truncated_header": Case("truncated.wav", _truncated, refused="not a readable audio file"),
    "random_bytes": Case(
        "random.wav", lambda p, r: p.write_bytes(r.bytes(4096)), refused="not a readable"
    ),
    "nan": Case("nan.wav", _with(np.nan), refused="NaN or Inf"),
    "inf": Case("inf.wav", _with(-np.inf), refused="NaN or Inf"),
    "huge_amplitude": Case("huge.wav", _huge, refused="not audio scaled to [-1, 1]"),
    "silence": Case("silence.wav", _wav(np.zeros((2, SAMPLE_RATE), np.float32)), figure=True),
    "dc_offset": Case("dc.wav", _wav(np.full((2, SAMPLE_RATE), 0.5, np.float32)), figure=True),
    "hard_clipping": Case("clipped.wav", _clipped, note="clipping", figure=True),
    "mono": Case("mono.wav", _scene(channels=1), note="mono duplicated"),
    "six_channels": Case("six.wav", _scene(channels=6), refused="6 channels"),
    "8_kHz": Case("sr8000.wav", _scene(rate=8_000), note="resampled from 8000 Hz"),
    "22.05_kHz": Case("sr22050.wav", _scene(rate=22_050), note="resampled from 22050 Hz"),
    "44.1_kHz": Case("sr44100.wav", _scene(rate=44_100), note="resampled from 44100 Hz"),
    "96_kHz": Case("sr96000.wav", _scene(rate=96_000), note="resampled from 96000 Hz"),
    "0.2_s": Case("short.wav", _scene(seconds=0.2), refused="too short"),
    "120_s": Case("long.wav", _scene(seconds=120.0), seconds=120.0, analyze=False),
    "int16": Case("int16.wav", _scene(subtype="PCM_16")),
    "int24": Case("int24.wav", _scene(subtype="PCM_24")),
    "float32": Case("float32.wav", _scene(subtype="FLOAT")),
    "flac": Case("flac.flac", _scene()),
    "ogg": Case("ogg.ogg", _scene()),
    "spaces": Case("a clip with spaces.wav", _scene()),
    "non_ascii": Case("café ü 東京.wav", _scene()),
    "html": Case(f"{EVIL}.wav", _scene()),
    "not_utf8_name": Case(b"caf\xe9 latin-1.wav", _scene()),
    "control_chars_name": Case("tab\tnew\nline.wav", lambda p, r: p.write_bytes(b""), "empty"),
    "header_says_1_Hz": Case("one hertz.wav", _declaring(1), refused="its header declares 1 Hz"),
    "10_min_silent_flac": Case(
        "ten minutes.flac", _silent_flac(600), refused="600.0 s long, over the 240 s limit"
    ),
    # not regular files: a folder set refuses them as bad rows, so they are CLI only
    "fifo": Case(
        "pipe.wav", lambda p, r: os.mkfifo(p), refused="not a regular file (a FIFO)", analyze=False
    ),
    "folder_named_wav": Case(
        "folder.wav", lambda p, r: p.mkdir(), refused="not a regular file (a folder)", analyze=False
    ),
    "dev_zero": Case(
        "zero.wav",
        lambda p, r: p.symlink_to("/dev/zero"),
        refused="not a regular file (a character device)",
        analyze=False,
    ),
}


def _case_path(folder: Path, case: Case) -> Path:
    if isinstance(case.name, bytes):
        return Path(os.fsdecode(os.fsencode(folder) + b"/" + case.name))
    return folder / case.name


@pytest.fixture(scope="module")
def matrix_files(tmp_path_factory) -> dict[str, Path]:
    """Every case as a file, in a class-folder data set (classes round-robin)."""
    root = tmp_path_factory.mktemp("matrix") / "data"
    rng = np.random.default_rng(2026)
    paths = {}
    for k, (key, case) in enumerate(CASES.items()):
        folder = root / CLASSES[k % 3] if case.analyze else root.parent / "cli-only"
        folder.mkdir(parents=True, exist_ok=True)
        paths[key] = _case_path(folder, case)
        case.make(paths[key], rng)
    return paths


@pytest.fixture(scope="module")
def analyzed(matrix_files, checkpoint):
    """ONE `analyze` run over the folder mixing every case: ``(out, rows, summary)``."""
    root = matrix_files["empty"].parents[1]
    out = root.parent / "analysis"
    model, meta = load_checkpoint(checkpoint)
    cfg = AnalyzeConfig(
        split="all", min_confidence=0.0, figures=False, batch_size=4, method="layercam"
    )
    with pytest.warns(UserWarning, match="mono"):
        summary = analyze(folder_dataset(root), out, model, meta, cfg)
    return out, read_manifest(out), summary


def test_analyze_run_completes(analyzed):
    _out, rows, summary = analyzed
    in_run = [c for c in CASES.values() if c.analyze]
    assert len(rows) == len(in_run)
    assert summary["totals"]["failed"] == sum(c.refused is not None for c in in_run)
    assert summary["processed_this_run"] == len(in_run)


def _load_quiet(path: Path) -> np.ndarray:
    """The clip as listenable reads it, ``(samples, 2)``, without the mono warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_audio(path)[0].numpy().T


def _no_figures(monkeypatch) -> None:
    """Skip matplotlib (most of a 1 s explain's time) where the audio is the point; the
    figure is still drawn for silence, DC and clipping, the inputs that could upset it."""
    monkeypatch.setattr("listenable.writers.figure_for", lambda p, *a: p.write_bytes(b"png"))


@pytest.mark.parametrize("key", list(CASES))
def test_bad_input_matrix(key, matrix_files, analyzed, checkpoint, tmp_path, monkeypatch):
    case = CASES[key]
    path = matrix_files[key]
    out = tmp_path / "out"
    if not case.figure:
        _no_figures(monkeypatch)
    status, text = _cli(
        "explain", "--method", "layercam", path, "--out", out, "--checkpoint", checkpoint
    )
    stem = path.stem
    if case.refused:
        # CLI: exit 1, exactly one error line, naming the file and the reason; no outputs
        assert status == 1, text
        (line,) = _errors(text)
        assert _shown(path) in line and case.refused in line, line
        assert not out.exists() or not any(out.iterdir())
    else:
        assert status == 0 and not _errors(text), text
        original = _load_quiet(path)
        n = len(original)
        assert abs(n - round(case.seconds * SAMPLE_RATE)) <= (2048 if key == "ogg" else 1)
        waves = {}
        for kind in ("listenable", "residual"):
            wave, rate = sf.read(os.fsencode(out / f"{stem}.{kind}.wav"), dtype="float32")
            assert rate == SAMPLE_RATE and wave.shape == (n, 2) and np.isfinite(wave).all()
            waves[kind] = wave
        np.testing.assert_allclose(waves["listenable"] + waves["residual"], original, atol=1e-5)
        record = json.loads((out / f"{stem}.json").read_text())
        assert record["duration_s"] == pytest.approx(n / SAMPLE_RATE)
        assert all(math.isfinite(p) for p in record["probabilities"].values())
        if case.note:
            assert any(case.note in note for note in record["notes"]), record["notes"]
        if key == "silence":
            assert record["empty_mask"] and record["mask_area"] == 0.0
            assert not waves["listenable"].any()
        assert (out / f"{stem}.png").exists()
    if not case.analyze:
        return
    # analyze: one row per clip; good clips explained with their outputs, bad ones reported
    an_out, rows, _summary = analyzed
    row = rows[stem]
    assert row["path"] == str(path)
    if case.refused:
        assert row["status"] == "error" and not row["files"]
        assert "\n" not in row["error"] and case.refused in row["error"]
        assert _shown(path) in row["error"]
    else:
        assert row["status"] == "ok" and row["error"] is None, row
        assert math.isfinite(row["confidence"]) and math.isfinite(row["mask_area"])
        info = sf.info(os.fsencode(an_out / row["files"]["listenable"]))
        assert (info.samplerate, info.channels, info.frames) == (SAMPLE_RATE, 2, n)


def test_one_run_reports_every_bad_clip_and_explains_the_rest(
    matrix_files, checkpoint, tmp_path, monkeypatch
):
    """Every bad clip and a few good ones in ONE `listenable explain` call: the good ones
    are written, each bad one costs one error line, and the exit status is 1."""
    _no_figures(monkeypatch)
    good = ["int16", "html", "not_utf8_name"]
    keys = [k for k, c in CASES.items() if c.analyze and (c.refused or k in good)]
    clips = [matrix_files[k] for k in keys]
    status, text = _cli(
        "explain", "--method", "layercam", *clips, "--out", tmp_path, "--checkpoint", checkpoint
    )
    assert status == 1
    refused = [k for k in keys if CASES[k].refused]
    assert len(_errors(text)) == len(refused)
    assert f"; {len(refused)} clip(s) failed" in text
    written = {p.name for p in tmp_path.glob("*.listenable.wav")}
    assert written == {f"{matrix_files[k].stem}.listenable.wav" for k in keys if k not in refused}


def _json_fails_for(monkeypatch, module: str, stem: str) -> None:
    """Make writing ``<stem>.json`` fail as a NaN record would (``allow_nan=False``)."""
    import listenable.atomic

    def write_json(path, obj):
        if Path(path).stem == stem:
            raise ValueError("Out of range float values are not JSON compliant")
        listenable.atomic.write_json(path, obj)

    monkeypatch.setattr(f"{module}.write_json", write_json)


def test_unexpected_failure_of_one_clip_does_not_stop_explain(tmp_path, checkpoint, monkeypatch):
    _no_figures(monkeypatch)
    _json_fails_for(monkeypatch, "listenable.writers", "b")
    rng = np.random.default_rng(8)
    clips = [tmp_path / f"{s}.wav" for s in "abc"]
    for clip in clips:
        sf.write(clip, scene_like(rng, seconds=0.5).T, SAMPLE_RATE)
    status, text = _cli(
        "explain",
        "--method",
        "layercam",
        *clips,
        "--out",
        tmp_path / "out",
        "--checkpoint",
        checkpoint,
    )
    assert status == 1
    (line,) = _errors(text)
    assert str(clips[1]) in line and "ValueError" in line
    assert (tmp_path / "out" / "c.json").exists()


def test_unexpected_failure_of_one_clip_does_not_stop_analyze(tmp_path, checkpoint, monkeypatch):
    _json_fails_for(monkeypatch, "listenable.writers", "b")  # analyze writes through it
    rng = np.random.default_rng(9)
    for k, stem in enumerate("abc"):
        (tmp_path / "data" / CLASSES[k]).mkdir(parents=True)
        sf.write(
            tmp_path / "data" / CLASSES[k] / f"{stem}.wav", scene_like(rng, 0.5).T, SAMPLE_RATE
        )
    model, meta = load_checkpoint(checkpoint)
    cfg = AnalyzeConfig(
        split="all", min_confidence=0.0, figures=False, batch_size=3, method="layercam"
    )
    summary = analyze(folder_dataset(tmp_path / "data"), tmp_path / "out", model, meta, cfg)
    rows = read_manifest(tmp_path / "out")
    assert [rows[s]["status"] for s in "abc"] == ["ok", "error", "ok"]
    assert "cannot write outputs" in rows["b"]["error"] and "b.wav" in rows["b"]["error"]
    assert summary["totals"]["failed"] == 1


# --------------------------------------------------------------------------- 2. crash safety


@pytest.mark.slow
def test_sigkill_while_writing_then_resume(tmp_path, checkpoint):
    """Stronger than test_analyze's timed kills: each kill lands while `analyze` is at work
    (after it has started writing), and after every kill the manifest's whole lines name
    complete files only; the rerun ends with exactly one row per clip."""
    rng = np.random.default_rng(11)
    data = tmp_path / "data"
    for k in range(8):
        folder = data / CLASSES[k % 3]
        folder.mkdir(parents=True, exist_ok=True)
        sf.write(folder / f"c{k}.wav", scene_like(rng, seconds=0.5).T, SAMPLE_RATE)
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "listenable.cli",
        "analyze",
        "--method",
        "layercam",
        str(data),
        "--out",
        str(out),
    ]
    cmd += ["--checkpoint", str(checkpoint), "--split", "all", "--min-confidence", "0"]
    cmd += ["--batch-size", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    kills = 0
    for _ in range(3):
        before = len(read_manifest(out))
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # wait until this run is writing (a temporary appears or the manifest grows) ...
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            if list(out.rglob(".*.tmp-*")) or len(read_manifest(out)) > before:
                break
            time.sleep(0.005)
        # ... then kill it at a random moment of the next ~half second
        time.sleep(float(rng.uniform(0.0, 0.6)))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
        for row in read_manifest(out).values():  # whole lines name complete files only
            for rel in row["files"].values():
                _assert_complete(out / rel)
        for wav in out.rglob("*.wav"):
            if not wav.name.startswith("."):
                _assert_complete(wav)
    assert kills >= 2  # the kills really landed mid-run
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    lines = (out / "manifest.jsonl").read_text().splitlines()
    ids = [json.loads(line)["clip_id"] for line in lines]
    assert sorted(ids) == [f"c{k}" for k in range(8)]
    for row in read_manifest(out).values():
        assert row["status"] == "ok"
        for rel in row["files"].values():
            _assert_complete(out / rel)
    assert not list(out.rglob(".*.tmp-*"))


def _assert_complete(path: Path) -> None:
    if path.suffix == ".wav":
        info = sf.info(path)
        assert (info.frames, info.channels) == (SAMPLE_RATE // 2, 2), path
    elif path.suffix == ".png":
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and data.endswith(b"IEND\xaeB`\x82"), path
    elif path.suffix == ".json":
        json.loads(path.read_text())


# --------------------------------------------------------------------------- 3. safe loading


class _Boom:
    """Unpickling this writes a file: the side effect that must never happen."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


@pytest.fixture
def one_clip(tmp_path) -> Path:
    path = tmp_path / "clip.wav"
    sf.write(os.fsencode(path), scene_like(np.random.default_rng(0), seconds=0.5).T, SAMPLE_RATE)
    return path


@pytest.mark.parametrize("kind", ["torch_save", "pickle_protocol_2", "pickle_protocol_0"])
def test_pickle_checkpoint_refused_by_the_cli(tmp_path, one_clip, kind):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    if kind == "torch_save":
        torch.save({"state_dict": _Boom(marker)}, evil)
    else:
        evil.write_bytes(pickle.dumps(_Boom(marker), protocol=int(kind[-1])))
    status, text = _cli(
        "explain", "--method", "layercam", one_clip, "--out", tmp_path / "out", "--checkpoint", evil
    )
    assert status == 2  # a model spec that cannot be loaded is a usage error
    (line,) = _errors(text)
    assert str(evil) in line
    if kind != "pickle_protocol_0":  # protocol 0 has no magic bytes: refused as "not ours"
        assert "never unpickles" in line
    assert not marker.exists()
    assert not (tmp_path / "out").exists()


def _tamper(path: Path, **changes) -> None:
    meta_path = path.with_suffix(".json")
    meta = json.loads(meta_path.read_text())
    for key, value in changes.items():
        if isinstance(value, dict):
            meta[key] = {**meta[key], **value}
        else:
            meta[key] = value
    meta_path.write_text(json.dumps(meta))


@pytest.mark.parametrize(
    "changes, message",
    [
        # JSON and architecture both say 10 classes, the weights hold 3
        (
            {"class_names": [f"c{i}" for i in range(10)], "architecture": {"n_classes": 10}},
            "has shape",
        ),
        ({"class_names": [f"c{i}" for i in range(10)]}, "10 class names"),
        ({"architecture": {"name": "EvilNet"}}, "unknown architecture 'EvilNet'"),
        ({"architecture": {"exec": "import os"}}, "bad architecture"),
        ({"front_end": {"sample_rate": "48k", "mystery": 1}}, "front-end setting"),
        ({"class_names": "airport"}, "class_names"),
        ({"format_version": 99}, "format_version"),
    ],
    ids=[
        "10_names_3_weights",
        "10_names_3_arch",
        "unknown_arch",
        "bad_kwarg",
        "feature",
        "names_not_list",
        "version",
    ],
)
def test_tampered_checkpoint_via_cli(tmp_path, one_clip, changes, message):
    path = _checkpoint(tmp_path)
    _tamper(path, **changes)
    status, text = _cli(
        "explain", "--method", "layercam", one_clip, "--out", tmp_path / "out", "--checkpoint", path
    )
    assert status == 2  # a model spec that cannot be loaded is a usage error
    (line,) = _errors(text)
    assert message in line and path.stem in line, line


def test_checkpoint_that_is_a_folder(tmp_path, one_clip):
    status, text = _cli(
        "explain",
        "--method",
        "layercam",
        one_clip,
        "--out",
        tmp_path / "out",
        "--checkpoint",
        tmp_path,
    )
    assert status in (1, 2)
    (line,) = _errors(text)
    assert str(tmp_path) in line


def test_absurd_class_count_is_refused_before_building(tmp_path, one_clip):
    path = _checkpoint(tmp_path)
    _tamper(path, architecture={"n_classes": 10**12})  # 3 PB of weights: fails at once
    status, text = _cli(
        "explain", "--method", "layercam", one_clip, "--out", tmp_path / "out", "--checkpoint", path
    )
    assert status == 2 and len(_errors(text)) == 1


def test_tampered_feature_value_is_refused_at_load(tmp_path):
    path = _checkpoint(tmp_path)
    _tamper(path, front_end={"sample_rate": "48k"})
    with pytest.raises(CheckpointError, match="sample_rate"):
        load_checkpoint(path)


# --------------------------------------------------------------------------- 4. inside --out


@pytest.fixture(scope="module")
def gallery_run(tmp_path_factory):
    """A CSV data set with a clip named like an XSS payload in a class named ``<b>bold</b>``;
    snapshot of the whole tree, then a CLI explain and a CLI analyze (+ gallery) run from a
    working folder inside the tree; snapshot again."""
    root = tmp_path_factory.mktemp("inside")
    names = ["airport", BOLD, "park"]
    checkpoint = _checkpoint(root / "model", names)
    data = root / "data"
    data.mkdir()
    rng = np.random.default_rng(5)
    rows = [(f"{EVIL}.wav", BOLD), ("plain.wav", "park")]
    for name, _label in rows:
        sf.write(data / name, scene_like(rng, seconds=1.0).T, SAMPLE_RATE)
    (data / "broken.wav").write_bytes(b"RIFF....WAVEfmt ")
    rows.append(("broken.wav", "airport"))
    (data / "list.csv").write_text(
        "path,label\n" + "".join(f"{p},{label}\n" for p, label in rows), encoding="utf-8"
    )
    (root / "cwd").mkdir()
    before = _tree(root)
    results = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root / "cwd")
        results["explain"] = _cli(
            "explain",
            "--method",
            "layercam",
            data / f"{EVIL}.wav",
            "--out",
            root / "explained",
            "--checkpoint",
            checkpoint,
        )
        results["analyze"] = _cli(
            "analyze",
            "--method",
            "layercam",
            data / "list.csv",
            "--out",
            root / "analysis",
            "--checkpoint",
            checkpoint,
            "--split",
            "all",
            "--min-confidence",
            "0",
            "--batch-size",
            "2",
        )
    return root, before, _tree(root), results


def test_nothing_written_outside_out(gallery_run):
    root, before, after, results = gallery_run
    assert results["explain"][0] == 0
    assert results["analyze"][0] == 1  # broken.wav is reported
    (line,) = _errors(results["analyze"][1].replace("failed: ", "error: "))
    assert "broken.wav" in line
    changed = {p for p in after if before.get(p) != after[p]}
    assert {p for p in before if p not in after} == set()  # nothing deleted
    outside = {p for p in changed if not p.startswith(("explained/", "analysis/"))}
    assert outside == set()
    assert any(p.startswith("explained/") for p in changed)
    assert "analysis/index.html" in changed


def test_gallery_shows_names_as_text(gallery_run):
    root, *_ = gallery_run
    pages = {p.name: p.read_text(encoding="utf-8") for p in (root / "analysis").rglob("*.html")}
    assert pages
    for name, text in pages.items():
        assert "<img src=x" not in text and BOLD not in text, name
    everything = "".join(pages.values())
    assert html.escape(EVIL) in everything and "&lt;img" in everything
    assert html.escape(BOLD) in everything


def test_gallery_of_a_name_that_is_not_utf8(tmp_path, checkpoint):
    from listenable.report.gallery import build_gallery

    folder = tmp_path / "data" / "park"
    folder.mkdir(parents=True)
    case = CASES["not_utf8_name"]
    case.make(_case_path(folder, case), np.random.default_rng(6))
    model, meta = load_checkpoint(checkpoint)
    cfg = AnalyzeConfig(split="all", min_confidence=0.0, figures=False, method="layercam")
    analyze(folder_dataset(tmp_path / "data"), tmp_path / "out", model, meta, cfg)
    assert build_gallery(tmp_path / "out").is_file()


@pytest.mark.parametrize("layout", ["own_name", "sibling_input", "named_like_an_output"])
def test_inputs_never_overwritten(tmp_path, checkpoint, layout, monkeypatch):
    """`listenable explain X --out <X's own folder>`, with names chosen so that an output
    would land on an input: the input bytes never change; a clash is refused."""
    _no_figures(monkeypatch)
    rng = np.random.default_rng(3)
    folder = tmp_path / "clips"
    folder.mkdir()
    names = {
        "own_name": ["a.listenable.wav"],  # its outputs are a.listenable.listenable.wav ...
        "sibling_input": ["a.wav", "a.listenable.wav"],  # a.wav's output IS the second input
        "named_like_an_output": ["b.json"],  # a WAV named .json: its own JSON would replace it
    }[layout]
    for name in names:
        sf.write(folder / name, scene_like(rng, seconds=0.5).T, SAMPLE_RATE, format="WAV")
    before = _tree(folder)
    status, text = _cli(
        "explain",
        "--method",
        "layercam",
        *(folder / n for n in names),
        "--out",
        folder,
        "--checkpoint",
        checkpoint,
    )
    after = _tree(folder)
    for name in names:
        assert after[name] == before[name], name
    if layout == "own_name":
        assert status == 0 and (folder / "a.listenable.listenable.wav").exists()
    else:
        assert status == 1
        (line,) = _errors(text)
        assert "would overwrite" in line


def test_analyze_never_overwrites_its_data(tmp_path, checkpoint):
    """`analyze` with ``--out`` the data root itself: a clip whose output name is another
    clip of the data set is reported, and no input changes."""
    rng = np.random.default_rng(4)
    data = tmp_path / "data"
    for name in CLASSES:
        (data / name).mkdir(parents=True)
        sf.write(data / name / "x.original.wav", scene_like(rng, seconds=0.5).T, SAMPLE_RATE)
    sf.write(data / "bus" / "x.wav", scene_like(rng, seconds=0.5).T, SAMPLE_RATE)
    before = _tree(data)
    model, meta = load_checkpoint(checkpoint)
    cfg = AnalyzeConfig(
        split="all",
        min_confidence=0.0,
        figures=False,
        batch_size=4,
        audio_format="wav",
        method="layercam",
    )  # WAV outputs: x.wav's x.original.wav is another clip of the data set
    summary = analyze(folder_dataset(data), data, model, meta, cfg)
    after = _tree(data)
    assert {p: after[p] for p in before} == before
    rows = read_manifest(data)
    assert rows["x"]["status"] == "error" and "would overwrite" in rows["x"]["error"]
    assert summary["totals"]["failed"] == 1


def test_tau_row_leaving_the_data_root(tmp_path, checkpoint):
    root = tmp_path / "tau"
    (root / "audio").mkdir(parents=True)
    (root / "evaluation_setup").mkdir()
    sf.write(root / "audio" / "a.wav", scene_like(np.random.default_rng(0), 0.5).T, SAMPLE_RATE)
    (root / "meta.csv").write_text(
        "filename\tscene_label\naudio/a.wav\tairport\naudio/../../etc/passwd\tbus\n"
    )
    (root / "evaluation_setup" / "fold1_train.csv").write_text(
        "filename\tscene_label\naudio/a.wav\tairport\naudio/../../etc/passwd\tbus\n"
    )
    out = tmp_path / "out"
    status, text = _cli(
        "analyze", "--method", "layercam", root, "--out", out, "--checkpoint", checkpoint
    )
    assert status == 1
    (line,) = _errors(text)
    assert "fold1_train.csv, line 3" in line and "leaves the data root" in line
    assert "audio/../../etc/passwd" in line
    assert not out.exists()


def test_out_that_is_a_file(tmp_path, one_clip, checkpoint):
    target = tmp_path / "not-a-folder"
    target.write_text("keep me")
    status, text = _cli(
        "explain", "--method", "layercam", one_clip, "--out", target, "--checkpoint", checkpoint
    )
    assert status == 2  # a usage error
    (line,) = _errors(text)
    assert str(target) in line
    assert target.read_text() == "keep me"
