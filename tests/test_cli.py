import json

import numpy as np
import pytest
import soundfile as sf

from listenable.checkpoint import save_checkpoint
from listenable.cli import main


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    import torch

    from listenable.models import McDonnellGao

    torch.manual_seed(3)
    path = tmp_path_factory.mktemp("ckpt") / "m.safetensors"
    return save_checkpoint(
        McDonnellGao(n_classes=3).eval(), path, class_names=["airport", "bus", "park"]
    )


def test_explain_without_a_method_takes_and_names_the_models_default(tmp_path, rng, capsys):
    """No --method: the shipped small CNN (it names fine_layers) is explained by
    ``optimised``, the CLI says so and the record keeps it; naming another layer than the
    model's own gives that layer's map (LayerCAM), not a multi-scale map that would refuse
    it."""
    from tests.conftest import scene_like

    clip = tmp_path / "a.wav"
    sf.write(clip, scene_like(rng, seconds=1.0, sr=16_000, channels=1).T, 16_000)
    runs = {"default": [], "block2": ["--layer", "block2"]}
    for name, extra in runs.items():
        out = tmp_path / name
        code = main(["explain", str(clip), "--out", str(out), "--model", "small", *extra])
        printed = capsys.readouterr().out
        method = "optimised" if name == "default" else "layercam"
        assert code == 0 and f"with {method} to" in printed
        record = json.loads((out / "a.json").read_text())
        assert record["settings"]["method"] == method
    assert record["settings"]["layer"] == "block2"


def test_explain_end_to_end(tmp_path, ckpt, rng, capsys):
    from tests.conftest import scene_like

    clips = []
    for rate, seconds in ((48_000, 1.5), (44_100, 1.0), (96_000, 0.8)):
        x = scene_like(rng, seconds=seconds, sr=rate)
        path = tmp_path / f"clip{rate}.wav"
        sf.write(path, x.T, rate)
        clips.append((path, seconds))
    out = tmp_path / "out"
    code = main(
        [
            "explain",
            "--method",
            "layercam",
            *[str(p) for p, _ in clips],
            "--out",
            str(out),
            "--checkpoint",
            str(ckpt),
            "--target",
            "bus",
            "--mode",
            "hard",
            "--threshold-on",
            "stft",
        ]
    )
    assert code == 0
    for path, seconds in clips:
        for kind in ("listenable", "residual"):
            info = sf.info(out / f"{path.stem}.{kind}.wav")
            assert info.samplerate == 48_000 and info.channels == 2
            assert abs(info.frames - round(seconds * 48_000)) <= 1
        record = json.loads((out / f"{path.stem}.json").read_text())
        assert record["target"] == "bus"
        assert set(record["probabilities"]) == {"airport", "bus", "park"}
        assert record["settings"]["mode"] == "hard"
        assert record["settings"]["threshold_on"] == "stft"
        assert 0.2 < record["mask_area"] < 0.3  # θ over the bins: a quarter of the bins
        assert (out / f"{path.stem}.png").read_bytes()[:4] == b"\x89PNG"
    record = json.loads((out / "clip44100.json").read_text())
    assert any("44100" in note for note in record["notes"])
    listen, _ = sf.read(out / "clip48000.listenable.wav")
    resid, _ = sf.read(out / "clip48000.residual.wav")
    orig, _ = sf.read(clips[0][0])
    np.testing.assert_allclose(listen + resid, orig, atol=1e-4)


def test_bad_clip_reported_others_processed(tmp_path, ckpt, wav_file, capsys):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio at all")
    out = tmp_path / "out"
    code = main(
        [
            "explain",
            "--method",
            "layercam",
            str(bad),
            str(wav_file),
            "--out",
            str(out),
            "--checkpoint",
            str(ckpt),
        ]
    )
    captured = capsys.readouterr()
    assert code == 1
    assert "bad.wav" in captured.out + captured.err
    assert "Traceback" not in captured.out + captured.err
    assert (out / "clip.listenable.wav").exists()


def test_usage_errors_exit_2(tmp_path, ckpt, wav_file, capsys):
    with pytest.raises(SystemExit) as info:
        main(["explain", "--method", "layercam", str(wav_file)])  # --out missing
    assert info.value.code == 2
    code = main(
        [
            "explain",
            "--method",
            "layercam",
            str(wav_file),
            "--out",
            str(tmp_path / "o"),
            "--checkpoint",
            str(ckpt),
            "--method",
            "nope",
        ]
    )
    assert code == 2
    assert "unknown method" in capsys.readouterr().err


def test_unknown_target_and_missing_checkpoint(tmp_path, ckpt, wav_file, capsys):
    code = main(
        [
            "explain",
            "--method",
            "layercam",
            str(wav_file),
            "--out",
            str(tmp_path / "o"),
            "--checkpoint",
            str(ckpt),
            "--target",
            "zoo",
        ]
    )
    assert code == 2 and "zoo" in capsys.readouterr().err
    code = main(
        [
            "explain",
            "--method",
            "layercam",
            str(wav_file),
            "--out",
            str(tmp_path / "o"),
            "--checkpoint",
            str(tmp_path / "none.safetensors"),
        ]
    )
    assert code == 2 and "not found" in capsys.readouterr().err  # a bad --model: usage error
