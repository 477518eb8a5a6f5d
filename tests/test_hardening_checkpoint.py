"""Hardening of checkpoint loading: a stranger's sidecar cannot exhaust memory, crash the
loader or reach the terminal. Everything is checked against the JSON and the safetensors
header before the network is built; each refusal is one ``CheckpointError`` line, and on
the command line one ``error:`` line with exit status 2."""

from __future__ import annotations

import contextlib
import io
import json
import os
import resource
import signal

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import save_file

import listenable.checkpoint as checkpoint_module
from listenable.checkpoint import MAX_SIDECAR_BYTES, load_checkpoint, save_checkpoint
from listenable.cli import main
from listenable.errors import CheckpointError
from listenable.models import McDonnellGao, SmallCNN

CLASSES = ["airport", "bus", "park"]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """``(safetensors bytes, sidecar dict)`` of a 3-class reference model."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("ckpt")
    path = save_checkpoint(McDonnellGao(n_classes=3), folder / "m.safetensors", class_names=CLASSES)
    return path.read_bytes(), json.loads(path.with_suffix(".json").read_text())


def _write(tmp_path, saved, meta=None, *, text=None):
    weights, base = saved
    path = tmp_path / "m.safetensors"
    path.write_bytes(weights)
    sidecar = text if text is not None else json.dumps(base if meta is None else meta)
    path.with_suffix(".json").write_text(sidecar)
    return path


def _refused(path) -> str:
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert "\n" not in message and "\x1b" not in message
    return message


@pytest.fixture
def never_built(monkeypatch):
    """Fail the test if a network is built on a real device (the meta-device build that
    gives the expected shapes is allowed)."""
    real = checkpoint_module.build_model

    def build(architecture):
        if torch.empty(0).device.type != "meta":
            raise AssertionError(f"built {architecture} before refusing it")
        return real(architecture)

    monkeypatch.setattr(checkpoint_module, "build_model", build)


def _peak_growth_mb(fn) -> float:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    fn()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024


def _arch(saved, **changes):
    meta = json.loads(json.dumps(saved[1]))
    meta["architecture"].update(changes)
    return meta


def test_huge_in_channels_is_refused_before_building(tmp_path, saved, never_built):
    path = _write(tmp_path, saved, _arch(saved, in_channels=10**9))  # a 3 kB sidecar
    assert os.path.getsize(path.with_suffix(".json")) < 4_000
    grown = _peak_growth_mb(lambda: _refused(path))
    message = _refused(path)
    assert "in_channels=1000000000 must be an integer in [1, 64]" in message
    assert grown < 100


def test_million_class_names_refused_before_allocating(tmp_path, saved, never_built):
    meta = {**saved[1], "class_names": [f"c{i}" for i in range(10**6)]}
    meta["architecture"] = {**meta["architecture"], "n_classes": 10**6}
    path = _write(tmp_path, saved, meta)
    grown = _peak_growth_mb(lambda: _refused(path))
    assert "1,000,000 class names; at most 10,000" in _refused(path)
    assert grown < 500


def test_oversized_sidecar_is_not_parsed(tmp_path, saved, monkeypatch):
    path = _write(tmp_path, saved, text=" " * (MAX_SIDECAR_BYTES + 1) + "{}")
    monkeypatch.setattr(json, "loads", lambda *a, **k: pytest.fail("parsed"))
    message = _refused(path)
    assert f"{MAX_SIDECAR_BYTES + 3:,} bytes, larger than" in message and "m.json" in message


def test_deeply_nested_sidecar(tmp_path, saved):
    path = _write(tmp_path, saved, text="[" * 200_000 + "]" * 200_000)
    assert "malformed JSON (nested too deeply)" in _refused(path)


@pytest.mark.parametrize(
    "key, value, reason",
    [
        ("n_fft", 2**40, "n_fft=1099511627776 must be an integer in [16, 65536]"),
        ("hop_length", 10**7, "hop_length=10000000 must be an integer in [1, n_fft]"),
        ("hop_length", 1e7, "hop_length=10000000.0 must be an integer"),
        ("f_max", float("nan"), "f_max=nan must be a finite number"),
        ("f_max", float("inf"), "f_max=inf must be a finite number"),
        ("f_max", 30_000.0, "f_max <= sample_rate / 2"),
        ("amin", 0.0, "amin > 0"),
        ("delta_width", 5.0, "delta_width=5.0 must be an integer"),
        ("center", "yes", "center='yes' must be true or false"),
        ("norm", "l2", "norm='l2' must be None or 'slaney'"),
    ],
)
def test_front_end_settings_refused_at_load(tmp_path, saved, never_built, key, value, reason):
    meta = json.loads(json.dumps(saved[1]))
    meta["front_end"][key] = value
    path = _write(tmp_path, saved, meta)  # json writes NaN / Infinity literals
    message = _refused(path)
    assert "bad front_end settings" in message and reason in message, message


@pytest.mark.parametrize("fmax", ["NaN", "Infinity", "-Infinity"])
def test_first_format_fmax_not_finite(tmp_path, saved, never_built, fmax):
    meta = {k: v for k, v in saved[1].items() if k != "front_end"}
    meta["features"] = {"sample_rate": 48_000, "n_fft": 2048, "hop_length": 1024, "n_mels": 128}
    text = json.dumps(meta).replace('"n_mels": 128}', f'"n_mels": 128, "fmax": {fmax}}}')
    path = _write(tmp_path, saved, text=text)
    message = _refused(path)
    assert "f_max" in message or "fmax" in message, message


@pytest.mark.parametrize(
    "changes, reason",
    [
        ({"n_mels": -4}, "n_mels=-4 must be an integer in [2, 1024]"),
        ({"n_mels": 64}, "the architecture takes n_mels=64 but the front end computes 128"),
        ({"n_mels": 127}, "n_mels=127 must be even"),
        ({"in_channels": 2}, "takes 2 feature channels but the front end computes 6"),
        ({"n_classes": True}, "3 class names but the architecture has True classes"),
        ({"n_classes": 10**12}, "3 class names but the architecture has 1000000000000"),
        ({"exec": "import os"}, "unexpected keyword argument 'exec'"),
    ],
)
def test_architecture_checked_on_the_json(tmp_path, saved, never_built, changes, reason):
    message = _refused(_write(tmp_path, saved, _arch(saved, **changes)))
    assert reason in message, message


def test_small_cnn_architecture_ranges(tmp_path, never_built):
    torch.manual_seed(0)
    path = save_checkpoint(SmallCNN(n_classes=3), tmp_path / "s.safetensors", class_names=CLASSES)
    meta = json.loads(path.with_suffix(".json").read_text())
    for changes, reason in [
        ({"widths": [24, 48, 96, 10**9]}, "widths=[24, 48, 96, 1000000000] must be 4 integers"),
        ({"widths": [24, 48]}, "must be 4 integers"),
        ({"dropout": float("nan")}, "dropout=nan must be a number in [0, 1)"),
    ]:
        path.with_suffix(".json").write_text(
            json.dumps({**meta, "architecture": {**meta["architecture"], **changes}})
        )
        assert reason in _refused(path)


@pytest.mark.parametrize(
    "name, reason",
    [
        ("", "class name 1 is empty"),
        ("   ", "class name 1 is empty"),
        ("\x1b[31mred\x1b[0m", "class name 1 '\\x1b[31mred\\x1b[0m' holds control characters"),
        ("new\nline", "holds control characters"),
        ("\u202eevil", "holds control characters"),  # a bidi override
        ("x" * 201, "class name 1 has 201 characters; at most 200"),
    ],
    ids=["empty", "spaces", "ansi", "newline", "bidi", "long"],
)
def test_class_names_that_would_reach_a_terminal(tmp_path, saved, never_built, name, reason):
    meta = {**saved[1], "class_names": ["airport", name, "park"]}
    assert reason in _refused(_write(tmp_path, saved, meta))


@pytest.mark.parametrize("dtype", [torch.float64, torch.int8, torch.float16])
def test_weights_of_another_dtype_are_not_cast(tmp_path, saved, dtype):
    path = _write(tmp_path, saved)
    model = McDonnellGao(n_classes=3)
    tensors = {
        k: v.to(dtype) if v.is_floating_point() else v for k, v in model.state_dict().items()
    }
    save_file(tensors, str(path))
    message = _refused(path)
    assert "is F64" in message or "is I8" in message or "is F16" in message
    assert "expected float32 (listenable does not cast weights)" in message


def test_shapes_checked_from_the_header_before_loading(tmp_path, saved, monkeypatch):
    meta = {**saved[1], "class_names": [f"c{i}" for i in range(10)]}
    meta["architecture"] = {**meta["architecture"], "n_classes": 10}
    path = _write(tmp_path, saved, meta)
    monkeypatch.setattr(checkpoint_module, "load_file", lambda *a, **k: pytest.fail("loaded"))
    assert "tensor head.4.weight has shape (3, 768, 1, 1), expected (10, 768, 1, 1)" in (
        _refused(path)
    )


@contextlib.contextmanager
def _deadline(seconds: int):
    def fail(*_):
        raise AssertionError("the loader blocked")

    old = signal.signal(signal.SIGALRM, fail)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def test_fifo_checkpoint_and_sidecar_do_not_hang(tmp_path, saved):
    fifo = tmp_path / "pipe.safetensors"
    os.mkfifo(fifo)
    with _deadline(20):
        assert "not a regular file (a FIFO)" in _refused(fifo)
    path = _write(tmp_path, saved)
    path.with_suffix(".json").unlink()
    os.mkfifo(path.with_suffix(".json"))
    with _deadline(20):
        message = _refused(path)
    assert "m.json: not a regular file (a FIFO)" in message


def test_shipped_models_still_load():
    for name in ("default", "small"):
        model, meta = load_checkpoint(checkpoint_module.SHIPPED[name])
        assert model.class_names == meta["class_names"]


@pytest.mark.parametrize(
    "make",
    ["in_channels", "nested", "ansi", "fifo"],
)
def test_cli_refuses_in_one_line_with_exit_2(tmp_path, saved, make):
    clip = tmp_path / "clip.wav"
    sf.write(clip, np.zeros((24_000, 2), np.float32), 48_000)
    if make == "fifo":
        path = tmp_path / "pipe.safetensors"
        os.mkfifo(path)
    elif make == "nested":
        path = _write(tmp_path, saved, text="[" * 200_000 + "]" * 200_000)
    elif make == "ansi":
        path = _write(tmp_path, saved, {**saved[1], "class_names": ["a", "\x1b[2Jb", "c"]})
    else:
        path = _write(tmp_path, saved, _arch(saved, in_channels=10**9))
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), _deadline(60):
        status = main(
            [
                "explain",
                "--method",
                "layercam",
                str(clip),
                "--out",
                str(tmp_path / "out"),
                "--checkpoint",
                str(path),
            ]
        )
    text = out.getvalue() + err.getvalue()
    assert status == 2 and "Traceback" not in text and "\x1b" not in text
    (line,) = [x for x in text.splitlines() if x.startswith("error:")]
    assert path.name in line or path.stem in line
    assert not (tmp_path / "out").exists()
