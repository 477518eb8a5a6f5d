"""Hardening of the ``score``, ``train`` and ``explain`` command lines: usage errors exit 2
before any work, one unreadable clip does not stop ``score``, clips of different lengths
are scored in separate sub-batches."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
import soundfile as sf
import torch

from listenable.checkpoint import save_checkpoint
from listenable.cli import main
from listenable.data import folder_dataset
from listenable.models import McDonnellGao
from listenable.scoring import predict
from tests.conftest import scene_like

SR = 48_000
CLASSES = ["airport", "bus", "park"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("model")
    return save_checkpoint(
        McDonnellGao(n_classes=3).eval(), folder / "m.safetensors", class_names=CLASSES
    )


def _cli(*argv) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main([str(a) for a in argv])
    text = out.getvalue() + err.getvalue()
    assert "Traceback" not in text, text
    return status, text


def _errors(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("error:")]


@pytest.fixture
def scenes(tmp_path):
    """Class folders with clips of 0.5, 1 and 0.75 s, and one clip that is not audio."""
    root = tmp_path / "scenes"
    rng = np.random.default_rng(0)
    lengths = {"airport": [0.5, 1.0], "bus": [0.75, 0.5], "park": [1.0]}
    for label, seconds in lengths.items():
        (root / label).mkdir(parents=True)
        for i, s in enumerate(seconds):
            sf.write(root / label / f"{i}.wav", scene_like(rng, seconds=s).T, SR)
    (root / "park" / "broken.wav").write_bytes(b"RIFF not really a wave file")
    return root


def test_score_goes_on_past_an_unreadable_clip_and_mixed_lengths(scenes, checkpoint, tmp_path):
    out = tmp_path / "out"
    status, text = _cli(
        "score", scenes, "--out", out, "--checkpoint", checkpoint, "--batch-size", 4
    )
    assert status == 1  # a clip failed; the others were scored
    (line,) = _errors(text)
    assert str(scenes / "park" / "broken.wav") in line and "not a readable audio file" in line
    result = json.loads((out / "score.json").read_text())
    assert result["clips"] == 5 and np.sum(result["confusion"]) == 5
    ((failed),) = result["failed"]
    assert failed["path"] == str(scenes / "park" / "broken.wav")
    assert "1 clip(s) could not be scored" in text
    assert (out / "confusion.png").exists()


def test_scores_by_length_equal_clip_by_clip(scenes, checkpoint):
    """Sub-batches by length give each clip the probabilities it gets alone."""
    (scenes / "park" / "broken.wav").unlink()
    from listenable.checkpoint import load_explainable

    model = load_explainable(checkpoint)
    data = folder_dataset(scenes)
    batched, labels, paths = predict(model, None, data, batch_size=5)
    assert paths == [str(p) for p in data.paths]  # in data-set order
    assert labels.tolist() == data.labels
    for i, path in enumerate(paths):
        one = folder_dataset(scenes)
        one.items = [item for item in one.items if str(item[0]) == path]
        alone, _, _ = predict(model, None, one, batch_size=1)
        np.testing.assert_allclose(batched[i], alone[0], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("command", ["score", "train"])
def test_split_of_a_folder_set_is_refused(scenes, checkpoint, tmp_path, command):
    out = tmp_path / ("out" if command == "score" else "m.safetensors")
    extra = ["--checkpoint", checkpoint] if command == "score" else ["--epochs", "1"]
    status, text = _cli(command, scenes, "--out", out, "--split", "bogus", *extra)
    assert status == 1
    (line,) = _errors(text)
    assert "has no splits, so split 'bogus' cannot be read" in line and str(scenes) in line
    assert not out.exists()


def test_score_of_a_tau_tree_with_a_bogus_split_names_the_splits(tmp_path, checkpoint):
    root = tmp_path / "tau"
    (root / "audio").mkdir(parents=True)
    sf.write(root / "audio" / "a.wav", np.zeros((SR, 2), np.float32), SR)
    (root / "meta.csv").write_text("filename\tscene_label\naudio/a.wav\tbus\n")
    status, text = _cli(
        "score", root, "--out", tmp_path / "out", "--checkpoint", checkpoint, "--split", "bogus"
    )
    assert status == 1
    (line,) = _errors(text)
    assert "split must be one of ('train', 'evaluate', 'test', 'all'), got 'bogus'" in line


def test_train_epochs_zero_is_a_usage_error(scenes, tmp_path):
    out = tmp_path / "m.safetensors"
    for bad in (["--epochs", "0"], ["--epochs", "-1"], ["--batch-size", "0"]):
        status, text = _cli("train", scenes, "--out", out, *bad)
        assert status == 2, text
        (line,) = _errors(text)
        assert bad[0] in line
        assert "checkpoint:" not in text and not out.exists()


@pytest.mark.parametrize("command", ["explain", "score", "train"])
def test_device_cuda_without_cuda_exits_2(command, scenes, checkpoint, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    clip = scenes / "bus" / "0.wav"
    args = {
        "explain": [
            "explain",
            "--method",
            "layercam",
            clip,
            "--out",
            tmp_path / "out",
            "--checkpoint",
            checkpoint,
        ],
        "score": ["score", scenes, "--out", tmp_path / "out", "--checkpoint", checkpoint],
        "train": ["train", scenes, "--out", tmp_path / "out" / "m.safetensors"],
    }[command]
    status, text = _cli(*args, "--device", "cuda")
    assert status == 2
    (line,) = _errors(text)
    assert "--device cuda: no CUDA device is available" in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["explain", "score"])
def test_out_below_a_file_is_refused_before_any_clip(
    command, scenes, checkpoint, tmp_path, monkeypatch
):
    blocker = tmp_path / "a-file"
    blocker.write_text("keep me")
    out = blocker / "sub" / "out"

    def never(*_a, **_k):
        raise AssertionError("computed a clip before refusing --out")

    monkeypatch.setattr("listenable.writers.ExplanationWriter.explain_file", never)
    monkeypatch.setattr("listenable.scoring.predict", never)
    data = (
        [scenes / "bus" / "0.wav", scenes / "bus" / "1.wav"] if command == "explain" else [scenes]
    )
    status, text = _cli(command, *data, "--out", out, "--checkpoint", checkpoint)
    assert status == 2
    (line,) = _errors(text)
    assert f"--out {out}: {blocker} is a file" in line
    assert blocker.read_text() == "keep me"


def test_score_max_duration(scenes, checkpoint, tmp_path):
    status, text = _cli(
        "score", scenes, "--out", tmp_path / "out", "--checkpoint", checkpoint,
        "--max-duration", "0.8",
    )  # fmt: skip
    assert status == 1
    errors = _errors(text)
    assert len(errors) == 3  # the two 1 s clips and the broken one
    assert sum("over the 0.8 s limit" in e for e in errors) == 2
    status, text = _cli(
        "score", scenes, "--out", tmp_path / "x", "--checkpoint", checkpoint, "--max-duration", "0"
    )
    assert status == 2 and "--max-duration" in _errors(text)[0]


def test_model_function_that_raises_is_one_line_exit_2(scenes, tmp_path):
    factory = tmp_path / "factory.py"
    factory.write_text("def boom():\n    raise RuntimeError('no weights here\\nsecond line')\n")
    clip = scenes / "bus" / "0.wav"
    status, text = _cli(
        "explain",
        "--method",
        "layercam",
        clip,
        "--out",
        tmp_path / "out",
        "--model",
        f"{factory}:boom",
    )
    assert status == 2
    (line,) = _errors(text)
    assert line.endswith("boom() failed (RuntimeError: no weights here)")
    assert not (tmp_path / "out").exists()
