import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf
import torch

from listenable.analyze import AnalyzeConfig, analyze, read_manifest
from listenable.checkpoint import save_checkpoint
from listenable.data import folder_dataset


@pytest.fixture
def tree(tmp_path, rng):
    """A class-folder data set: 3 classes x 2 clips of 1 s, plus one broken file."""
    from tests.conftest import scene_like

    root = tmp_path / "data"
    for name in ("airport", "bus", "park"):
        (root / name).mkdir(parents=True)
        for i in range(2):
            sf.write(root / name / f"{name}-{i}.wav", scene_like(rng, seconds=1.0).T, 48_000)
    (root / "bus" / "broken.wav").write_bytes(b"RIFF\x00\x00garbage")
    return root


@pytest.fixture
def checkpoint(tmp_path, model10):
    from listenable.models import McDonnellGao

    model = McDonnellGao(n_classes=3)
    model.load_state_dict(
        {k: v[:3] if v.shape[:1] == (10,) else v for k, v in model10.state_dict().items()}
    )
    return save_checkpoint(
        model.eval(), tmp_path / "m.safetensors", class_names=["airport", "bus", "park"]
    )


def _run(tree, out, checkpoint, **cfg):
    from listenable.checkpoint import load_checkpoint

    model, meta = load_checkpoint(checkpoint)
    config = AnalyzeConfig(split="all", batch_size=2, figures=False, **cfg, method="layercam")
    return analyze(folder_dataset(tree), out, model, meta, config)


def test_manifest_and_summary(tree, tmp_path, checkpoint):
    out = tmp_path / "out"
    summary = _run(tree, out, checkpoint, min_confidence=0.0)
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert len(rows) == 7 and len({r["clip_id"] for r in rows}) == 7
    bad = [r for r in rows if r["status"] != "ok"]
    assert len(bad) == 1 and "broken.wav" in bad[0]["error"]
    good = [r for r in rows if r["status"] == "ok"]
    for r in good:
        assert r["selected"] and r["label"] in ("airport", "bus", "park")
        assert sum(r["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
        assert r["confidence"] == max(r["probabilities"].values())
        assert r["correct"] == (r["predicted"] == r["label"])
        for rel in r["files"].values():
            assert (out / rel).stat().st_size > 0
        wave, sr = sf.read(out / r["files"]["listenable"])
        assert sr == 48_000 and wave.shape == (48_000, 2)
    assert summary["totals"] == {**summary["totals"], "clips": 7, "failed": 1, "selected": 6}
    assert summary["classes"]["bus"]["clips"] == 3
    correct = sum(r["correct"] for r in good)
    assert summary["totals"]["accuracy"] == pytest.approx(correct / 6)
    assert json.loads((out / "summary.json").read_text())["settings"]["min_confidence"] == 0.0


def test_threshold_selects(tree, tmp_path, checkpoint):
    out = tmp_path / "out"
    _run(tree, out, checkpoint, min_confidence=1.0)
    rows = read_manifest(out)
    assert not any(r["selected"] for r in rows.values())
    assert not any(p.suffix == ".wav" for p in out.rglob("*"))


def test_resume_after_interruption(tree, tmp_path, checkpoint):
    """Simulate a run killed mid-way: a partial manifest with a torn last line and a stale
    temporary file. The rerun finishes with one row per clip and removes the temporary;
    the clip that failed (broken.wav) is tried again on every run."""
    out = tmp_path / "out"
    _run(tree, out, checkpoint, min_confidence=0.0)
    full = (out / "manifest.jsonl").read_text().splitlines()
    (out / "manifest.jsonl").write_text("\n".join(full[:3]) + "\n" + full[3][:25])
    stale = out / "airport" / ".airport-0.tmp-abc.wav"
    stale.parent.mkdir(exist_ok=True)
    stale.write_bytes(b"half")
    summary = _run(tree, out, checkpoint, min_confidence=0.0)
    assert summary["processed_this_run"] == 5  # the failed row, the torn one, the 3 missing
    lines = (out / "manifest.jsonl").read_text().splitlines()
    ids = [json.loads(line)["clip_id"] for line in lines]
    assert len(ids) == 7 == len(set(ids))
    assert not stale.exists()
    # and a third run only tries the broken clip again
    assert _run(tree, out, checkpoint, min_confidence=0.0)["processed_this_run"] == 1


def test_input_never_overwritten_and_nothing_outside_out(tree, tmp_path, checkpoint):
    before = {p: p.read_bytes() for p in tree.rglob("*") if p.is_file()}
    out = tmp_path / "out"
    _run(tree, out, checkpoint, min_confidence=0.0)
    assert {p: p.read_bytes() for p in tree.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "m.json", "m.safetensors", "out"]


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume(tree, tmp_path, checkpoint):
    """Kill `listenable analyze` with SIGKILL several times, rerun, and check exactly one row
    per clip and that every output file is complete."""
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "listenable.cli",
        "analyze",
        "--method",
        "layercam",
        str(tree),
        "--out",
        str(out),
        "--checkpoint",
        str(checkpoint),
        "--split",
        "all",
        "--min-confidence",
        "0",
        "--batch-size",
        "1",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    rng = np.random.default_rng(7)
    for _ in range(3):
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(float(rng.uniform(2.0, 6.0)))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 1  # the broken file is reported
    assert "broken.wav" in result.stderr + result.stdout
    lines = (out / "manifest.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    assert len(rows) == 7 == len({r["clip_id"] for r in rows})
    for r in rows:
        for rel in r["files"].values():
            path = out / rel
            if path.suffix in (".wav", ".ogg", ".flac", ".mp3"):
                info = sf.info(path)  # whole files that decode: 1 s at 48 kHz, stereo
                assert info.samplerate == 48_000 and info.channels == 2
                assert abs(info.frames - 48_000) <= 48_000 // 100  # lossy codecs pad a little
            elif path.suffix == ".png":
                assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            elif path.suffix == ".webp":
                assert path.read_bytes()[8:12] == b"WEBP"
            else:
                json.loads(path.read_text())
    assert not list(out.rglob(".*.tmp-*"))
    torch.manual_seed(0)


def test_mask_profile_says_where_in_hertz_the_mask_keeps():
    """A mask that keeps only 1–2 kHz: the profile is 1 in the bands inside that range and
    0 in the bands outside it; a class's profile is the mean of its clips'."""
    from listenable.analyze import _profile_edges, class_profiles, mask_profile
    from listenable.frontends import STFT

    stft = STFT(16_000, 512, 256)
    freqs = stft.frequencies()
    mask = ((freqs >= 1000) & (freqs <= 2000)).float()[:, None].expand(-1, 10)
    profile = mask_profile(mask, stft)
    for (lo, hi), value in zip(_profile_edges(16_000), profile):
        if lo >= 1000 and hi <= 2000:
            assert value == 1.0
        elif hi < 1000 or lo > 2000:
            assert value == 0.0
    rows = [
        {"status": "ok", "predicted": "bus", "mask_profile": profile},
        {"status": "ok", "predicted": "bus", "mask_profile": [0.0] * len(profile)},
        {"status": "error", "predicted": None, "mask_profile": None},
    ]
    out = class_profiles(rows, ["bus"], 16_000)
    assert out["bus"]["clips"] == 2
    assert out["bus"]["mean_mask"] == [round(v / 2, 4) for v in profile]
    assert len(out["bus"]["frequencies_hz"]) == len(profile)


def test_compare_writes_each_methods_tracks_for_the_gallery(tmp_path, model10, rng):
    """``compare``: every selected clip also gets the other methods' listenable and
    residual tracks, explaining the same class; their sum is the original (each method's
    residual is input − its listenable), and the row says where they are."""
    import soundfile as sf

    from listenable.analyze import AnalyzeConfig, analyze
    from listenable.data import folder_dataset
    from tests.conftest import scene_like

    (tmp_path / "data" / "bus").mkdir(parents=True)
    sf.write(tmp_path / "data" / "bus" / "a.wav", scene_like(rng, 1.0).T, 48_000, subtype="FLOAT")
    cfg = AnalyzeConfig(
        split="all", min_confidence=0.0, figures=False, audio_format="flac", compare=["random"]
    )
    analyze(folder_dataset(tmp_path / "data"), tmp_path / "out", model10, {}, cfg)
    (row,) = [json.loads(line) for line in (tmp_path / "out" / "manifest.jsonl").open()]
    assert row["method"] == "optimised"  # model10's default, recorded
    assert set(row["methods"]) == {"random"}
    files = row["methods"]["random"]["files"]
    lis, _ = sf.read(tmp_path / "out" / files["listenable"], always_2d=True)
    res, _ = sf.read(tmp_path / "out" / files["residual"], always_2d=True)
    orig, _ = sf.read(tmp_path / "out" / row["files"]["original"], always_2d=True)
    own, _ = sf.read(tmp_path / "out" / row["files"]["listenable"], always_2d=True)
    # 16-bit FLAC: each track within one quantisation step (2^-15) of its float value
    np.testing.assert_allclose(lis + res, orig, atol=3 * 2.0**-15)
    assert np.abs(lis - own).max() > 1e-3  # another mask than gradcam's
    assert 0 < row["methods"]["random"]["mask_area"] < 1
