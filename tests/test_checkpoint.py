import json
import pickle

import pytest
import torch

from listenable.checkpoint import front_end_for, load_checkpoint, load_explainable, save_checkpoint
from listenable.errors import CheckpointError
from listenable.frontends import FrontEnd
from listenable.models import McDonnellGao


def test_round_trip(tmp_path, model10):
    path = save_checkpoint(
        model10, tmp_path / "m.safetensors", class_names=model10.class_names, provenance={"seed": 3}
    )
    model, meta = load_checkpoint(path)
    assert meta["class_names"] == model10.class_names
    assert meta["provenance"] == {"seed": 3}
    assert meta["front_end"] == FrontEnd.preset("mcdonnell_gao").settings
    assert not model.training
    x = torch.randn(1, 6, 128, 40)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model10(x))
    assert model.class_names == model10.class_names


def test_pickle_is_refused_without_unpickling(tmp_path):
    class Boom:
        def __reduce__(self):
            return (exec, ("open({!r}, 'w').write('pwned')".format(str(tmp_path / "pwned")),))

    for name, writer in [
        ("p.safetensors", lambda f: pickle.dump(Boom(), f)),
        ("t.safetensors", lambda f: torch.save({"x": torch.zeros(1)}, f)),
    ]:
        path = tmp_path / name
        with open(path, "wb") as f:
            writer(f)
        with pytest.raises(CheckpointError, match="never unpickles"):
            load_checkpoint(path)
    assert not (tmp_path / "pwned").exists()


def test_class_count_must_match_weights(tmp_path, model10):
    path = save_checkpoint(model10, tmp_path / "m.safetensors", class_names=model10.class_names)
    meta_path = path.with_suffix(".json")
    meta = json.loads(meta_path.read_text())
    meta["class_names"] = meta["class_names"][:9]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="class"):
        load_checkpoint(path)


@pytest.mark.parametrize(
    "tamper", ["truncate", "json", "feature", "nan", "nyquist", "unknown", "missing_json"]
)
def test_tampered_checkpoints(tmp_path, tamper):
    model = McDonnellGao(n_classes=3)
    path = save_checkpoint(model, tmp_path / "m.safetensors", class_names=["a", "b", "c"])
    meta_path = path.with_suffix(".json")
    if tamper == "truncate":
        path.write_bytes(path.read_bytes()[:1000])
    elif tamper == "json":
        meta_path.write_text("{not json")
    elif tamper in ("feature", "nan", "nyquist", "unknown"):
        meta = json.loads(meta_path.read_text())
        key, value = {
            "feature": ("mel_scale", "bogus"),
            "nan": ("f_max", float("nan")),
            "nyquist": ("f_max", 30_000.0),
            "unknown": ("wobble", 1),
        }[tamper]
        meta["front_end"][key] = value
        meta_path.write_text(json.dumps(meta))
    elif tamper == "missing_json":
        meta_path.unlink()
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert "\n" not in str(info.value)


def test_save_refuses_wrong_class_count(tmp_path):
    with pytest.raises(CheckpointError):
        save_checkpoint(McDonnellGao(n_classes=3), tmp_path / "m", class_names=["a"])


def test_explain_and_analyze_use_the_checkpoints_front_end(tmp_path, model10, clip):
    """A model trained on mel bands up to 16 kHz is explained with those bands, not the
    default 24 kHz: the probabilities ``explain`` and ``analyze`` record are the model's on
    the checkpoint's features."""
    import soundfile as sf

    from listenable.analyze import AnalyzeConfig, analyze
    from listenable.data import folder_dataset
    from listenable.writers import ExplanationWriter

    narrow = FrontEnd.preset("mcdonnell_gao", f_max=16_000.0)
    path = save_checkpoint(
        model10, tmp_path / "m.safetensors", class_names=model10.class_names, front_end=narrow
    )
    model, meta = load_checkpoint(path)
    wav = tmp_path / "data" / "airport" / "a.wav"
    wav.parent.mkdir(parents=True)
    sf.write(wav, clip.T, 48_000, subtype="FLOAT")
    wave = torch.from_numpy(sf.read(wav, dtype="float32")[0].T.copy())
    with torch.no_grad():
        expected = torch.softmax(model(narrow(wave[None])), dim=1)[0]
        default = torch.softmax(model(FrontEnd.preset("mcdonnell_gao")(wave[None])), dim=1)[0]
    assert float((expected - default).abs().max()) > 5e-5  # the front end shows (random net)

    writer = ExplanationWriter(model, meta, tmp_path / "out", figures=False)
    stem = writer.explain_file(wav)
    record = json.loads((tmp_path / "out" / f"{stem}.json").read_text())
    got = torch.tensor([record["probabilities"][c] for c in model.class_names])
    torch.testing.assert_close(got, expected, atol=2e-6, rtol=0)

    cfg = AnalyzeConfig(
        split="all", batch_size=1, figures=False, min_confidence=0.0, method="layercam"
    )
    analyze(folder_dataset(tmp_path / "data"), tmp_path / "batch", model, meta, cfg)
    row = json.loads((tmp_path / "batch" / "manifest.jsonl").read_text().splitlines()[0])
    got = torch.tensor([row["probabilities"][c] for c in model.class_names])
    torch.testing.assert_close(got, expected, atol=2e-6, rtol=0)


def test_first_format_checkpoints_keep_loading(tmp_path, model10):
    """A sidecar of the first format (the reference ``features`` instead of ``front_end``),
    as the shipped checkpoint has, loads with the reference front end it describes."""
    path = save_checkpoint(model10, tmp_path / "m.safetensors", class_names=model10.class_names)
    meta_path = path.with_suffix(".json")
    meta = json.loads(meta_path.read_text())
    del meta["front_end"]
    meta["features"] = {
        "sample_rate": 48000, "n_fft": 2048, "hop_length": 1024, "window": "hann",
        "center": True, "pad_mode": "reflect", "n_mels": 128, "fmin": 0.0, "fmax": 16000.0,
        "mel_scale": "htk", "mel_norm": None, "log_offset": 1e-08, "delta_width": 5,
        "frame_offset": 4,
    }  # fmt: skip
    meta_path.write_text(json.dumps(meta))
    explainable = load_explainable(path)
    assert (
        explainable.front_end.settings == FrontEnd.preset("mcdonnell_gao", f_max=16_000.0).settings
    )
    meta["features"]["mel_scale"] = "slaney"
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="mel_scale"):
        load_checkpoint(path)


def test_the_shipped_checkpoint_has_the_reference_front_end():
    _, meta = load_checkpoint()
    assert front_end_for(meta).settings == FrontEnd.preset("mcdonnell_gao").settings
