"""Hardening of audio input: the header is read first, so a clip that is too long or
declares an implausible rate is refused before anything is decoded; decoding and
resampling go a block at a time; FIFOs, folders and devices are named for what they are."""

from __future__ import annotations

import contextlib
import io
import math
import os
import resource
import struct
import time

import numpy as np
import pytest
import soundfile as sf
import soxr
import torch

from listenable.checkpoint import save_checkpoint
from listenable.cli import main
from listenable.errors import AudioError
from listenable.io import MAX_DURATION, duration_limit, file_problem, load_audio
from listenable.models import McDonnellGao

SR = 48_000


def _refused(path, **kw) -> str:
    with pytest.raises(AudioError) as info:
        load_audio(path, **kw)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    return message


def _silent_flac(path, seconds, rate=SR):
    """A FLAC of silence written a block at a time: 10 minutes is ~100 kB on disk."""
    block = np.zeros((rate * 10, 2), np.int16)
    with sf.SoundFile(path, "w", rate, 2, format="FLAC") as handle:
        for _ in range(int(seconds // 10)):
            handle.write(block)


def _wav_declaring(path, rate: int, frames: int = 1200):
    """A 16-bit stereo WAV whose header says ``rate`` Hz (the samples are silence)."""
    sf.write(path, np.zeros((frames, 2), np.int16), 8_000)
    data = bytearray(path.read_bytes())
    data[24:28] = struct.pack("<I", rate)  # fmt chunk: sample rate, then byte rate
    data[28:32] = struct.pack("<I", rate * 4)
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def ten_minutes(tmp_path_factory):
    path = tmp_path_factory.mktemp("long") / "ten minutes.flac"
    _silent_flac(path, 600)
    return path


def test_fifo_folder_and_device_say_what_they_are(tmp_path):
    os.mkfifo(tmp_path / "pipe.wav")
    (tmp_path / "folder.wav").mkdir()
    (tmp_path / "zero.wav").symlink_to("/dev/zero")
    assert _refused(tmp_path / "pipe.wav").endswith("pipe.wav: not a regular file (a FIFO)")
    assert _refused(tmp_path / "folder.wav").endswith(": not a regular file (a folder)")
    assert _refused(tmp_path / "zero.wav").endswith(": not a regular file (a character device)")
    assert _refused(tmp_path / "gone.wav").endswith("gone.wav: file not found")
    assert file_problem(tmp_path / "pipe.wav") == "not a regular file (a FIFO)"


@pytest.mark.parametrize("rate", [1, 999, 768_001, 4_000_000])
def test_implausible_header_rate(tmp_path, rate):
    path = tmp_path / f"rate{rate}.wav"
    _wav_declaring(path, rate)  # 2.4 kB of samples: 1200 frames = 20 minutes at 1 Hz
    assert os.path.getsize(path) < 5_000
    message = _refused(path)
    assert f"its header declares {rate} Hz, not a plausible sample rate" in message
    assert "1000-768000 Hz" in message


def test_rates_at_the_limits_are_read(tmp_path):
    for rate in (1_000, 768_000):
        path = tmp_path / f"ok{rate}.wav"
        t = np.arange(rate) / rate
        sf.write(path, 0.5 * np.stack([np.sin(2 * np.pi * 100 * t)] * 2, 1), rate, subtype="FLOAT")
        wave, notes = load_audio(path)
        assert abs(wave.shape[1] - SR) <= 1 and notes == [f"resampled from {rate} Hz to {SR} Hz"]


def test_too_long_is_refused_from_the_header(ten_minutes, monkeypatch):
    monkeypatch.setattr(sf.SoundFile, "read", lambda *a, **k: pytest.fail("decoded"))
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    message = _refused(ten_minutes)
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - grown) / 1024
    assert message == (
        f"{ten_minutes}: 600.0 s long, over the {MAX_DURATION:g} s limit on clip length "
        "(raise it with --max-duration SECONDS, or max_duration= in Python)"
    )
    assert grown < 50


def test_the_limit_can_be_moved(tmp_path):
    path = tmp_path / "two.wav"
    sf.write(path, np.zeros((2 * SR, 2), np.float32), SR)
    assert "2.0 s long, over the 1.5 s limit" in _refused(path, max_duration=1.5)
    with duration_limit(1.5):
        assert "over the 1.5 s limit" in _refused(path)
        assert load_audio(path, max_duration=3)[0].shape == (2, 2 * SR)  # explicit wins
    assert load_audio(path)[0].shape == (2, 2 * SR)  # the block ended
    with duration_limit(math.inf):
        assert load_audio(path)[0].shape == (2, 2 * SR)
    for bad in (0, -1, float("nan"), True):
        with pytest.raises(ValueError, match="max_duration must be a positive number"):
            load_audio(path, max_duration=bad)


@pytest.mark.parametrize("rate", [8_000, 44_100, 96_000])
def test_block_resampling_equals_one_shot(tmp_path, rate):
    """Decoded and resampled in blocks (65,536 frames); the output is soxr's one-shot
    resampling of the whole clip, to the last bit, across block edges."""
    n = 65_536 * 2 + 777
    x = (np.random.default_rng(rate).standard_normal((n, 2)) * 0.1).astype(np.float32)
    path = tmp_path / "x.wav"
    sf.write(path, x, rate, subtype="FLOAT")
    wave, _ = load_audio(path)
    np.testing.assert_array_equal(wave.numpy(), soxr.resample(x, rate, SR, quality="HQ").T)
    mono, _ = load_audio(path, channels=1, sample_rate=16_000, min_samples=1)
    ref = soxr.resample(x.mean(axis=1, keepdims=True), rate, 16_000, quality="HQ").T
    np.testing.assert_allclose(mono.numpy(), ref, atol=1e-7)


def test_nan_in_a_late_block_is_found(tmp_path):
    x = np.zeros((200_000, 2), np.float32)
    x[199_999, 1] = np.inf
    path = tmp_path / "late.wav"
    sf.write(path, x, SR, subtype="FLOAT")
    assert "contains NaN or Inf samples" in _refused(path)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("model")
    return save_checkpoint(
        McDonnellGao(n_classes=3), folder / "m.safetensors", class_names=["a", "b", "c"]
    )


def _cli(*argv) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main([str(a) for a in argv])
    text = out.getvalue() + err.getvalue()
    assert "Traceback" not in text, text
    return status, text


def test_explain_refuses_a_ten_minute_clip_in_seconds(ten_minutes, checkpoint, tmp_path):
    """The bar of the hardening issue: a 10-minute clip is refused in under 10 s (it was
    decoded, then explained with a 5.5 GB peak)."""
    started = time.perf_counter()
    status, text = _cli(
        "explain",
        "--method",
        "layercam",
        ten_minutes,
        "--out",
        tmp_path / "out",
        "--checkpoint",
        checkpoint,
    )
    assert time.perf_counter() - started < 10
    assert status == 1
    (line,) = [x for x in text.splitlines() if x.startswith("error:")]
    assert f"{ten_minutes}: 600.0 s long, over the {MAX_DURATION:g} s limit" in line
    assert "--max-duration SECONDS" in line


def test_explain_max_duration_option(tmp_path, checkpoint, monkeypatch):
    monkeypatch.setattr("listenable.writers.figure_for", lambda p, *a: p.write_bytes(b"png"))
    clip = tmp_path / "one.wav"
    sf.write(clip, np.zeros((SR, 2), np.float32), SR)
    status, text = _cli(
        "explain",
        "--method",
        "layercam",
        clip,
        "--out",
        tmp_path / "a",
        "--checkpoint",
        checkpoint,
        "--max-duration",
        0.75,
    )
    assert status == 1 and "1.0 s long, over the 0.75 s limit" in text
    status, text = _cli(
        "explain",
        "--method",
        "layercam",
        clip,
        "--out",
        tmp_path / "b",
        "--checkpoint",
        checkpoint,
        "--max-duration",
        2,
    )
    assert status == 0, text
    assert (tmp_path / "b" / "one.listenable.wav").exists()
    for bad in ("0", "-3", "nan"):
        status, text = _cli(
            "explain", "--method", "layercam", clip, "--out", tmp_path / "c", "--checkpoint", checkpoint,
            "--max-duration", bad,
        )  # fmt: skip
        assert status == 2 and "--max-duration" in text and "positive number" in text
        assert not (tmp_path / "c").exists()


def test_explain_of_special_files_via_cli(tmp_path, checkpoint):
    os.mkfifo(tmp_path / "pipe.wav")
    (tmp_path / "folder.wav").mkdir()
    (tmp_path / "zero.wav").symlink_to("/dev/zero")
    rate1 = tmp_path / "one hertz.wav"
    _wav_declaring(rate1, 1)
    clips = ["pipe.wav", "folder.wav", "zero.wav", "one hertz.wav"]
    status, text = _cli(
        "explain", "--method", "layercam", *(tmp_path / c for c in clips), "--out", tmp_path / "out", "--checkpoint",
        checkpoint,
    )  # fmt: skip
    assert status == 1
    errors = [x for x in text.splitlines() if x.startswith("error:")]
    assert len(errors) == 4
    for line, reason in zip(
        errors,
        ["(a FIFO)", "(a folder)", "(a character device)", "declares 1 Hz"],
    ):
        assert reason in line, line
