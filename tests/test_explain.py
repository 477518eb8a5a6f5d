import pytest
import soundfile as sf
import torch

from listenable import explain
from listenable.errors import AudioError
from listenable.frontends import FrontEnd


def test_explanation_fields(model10, clip):
    e = explain(torch.from_numpy(clip), model10, method="layercam")
    assert e.heatmap.shape == (128, 6)  # 2 s: 94 STFT frames, 86 feature frames, 6 CAM frames
    assert e.mask.shape == (1025, 94)
    assert e.listenable.shape == e.residual.shape == clip.shape
    assert 0 <= float(e.mask.min()) and float(e.mask.max()) <= 1
    assert e.probabilities.shape == (10,)
    assert torch.isclose(e.probabilities.sum(), torch.tensor(1.0))
    assert e.class_name == model10.class_names[e.target]
    assert e.target == int(e.probabilities.argmax())
    assert e.sample_rate == 48_000
    assert (e.heatmap >= 0).all()


def test_listenable_plus_residual_is_input(model10, clip):
    e = explain(torch.from_numpy(clip), model10, method="layercam")
    torch.testing.assert_close(e.listenable + e.residual, torch.from_numpy(clip), atol=1e-6, rtol=0)


def test_listenable_is_the_masked_stft(model10, clip):
    """The listenable audio's STFT equals mask ⊙ STFT(x) (up to the ISTFT consistency)."""
    e = explain(torch.from_numpy(clip), model10, mode="hard", method="layercam")
    feats = FrontEnd.preset("mcdonnell_gao").listening_stft()
    spec = feats.stft(torch.from_numpy(clip)[None])[0]
    kept = e.mask > 0.5
    out = feats.stft(e.listenable[None])[0]
    # energy of the listenable output lies mostly inside the mask
    inside = out.abs().square()[:, kept].sum()
    assert inside / out.abs().square().sum() > 0.9
    assert out.abs().square().sum() < spec.abs().square().sum()


def test_batch_equals_items(model10, rng):
    from tests.conftest import scene_like

    batch = torch.stack([torch.from_numpy(scene_like(rng)) for _ in range(3)])
    e = explain(batch, model10, target=[1, 4, 4], method="layercam")
    assert e.mask.shape == (3, 1025, 94)
    for i, t in enumerate([1, 4, 4]):
        one = explain(batch[i], model10, target=t, method="layercam")
        torch.testing.assert_close(e.item(i).mask, one.mask, atol=1e-4, rtol=0)
        torch.testing.assert_close(e.item(i).listenable, one.listenable, atol=1e-5, rtol=0)
        assert e.item(i).class_name == one.class_name


def test_target_by_name(model10, clip):
    e = explain(torch.from_numpy(clip), model10, target="class3", method="layercam")
    assert e.target == 3 and e.class_name == "class3"
    with pytest.raises(ValueError, match="unknown target"):
        explain(torch.from_numpy(clip), model10, target="nope", method="layercam")


def test_silent_clip_gives_empty_mask(model10):
    e = explain(torch.zeros(2, 48_000), model10, method="layercam")
    assert e.empty
    assert e.mask.abs().max() == 0
    assert torch.isfinite(e.listenable).all() and e.listenable.abs().max() == 0


def test_path_input_and_notes(model10, tmp_path, clip):
    path = tmp_path / "mono 44k.wav"
    import soxr

    sf.write(path, soxr.resample(clip[0], 48_000, 44_100), 44_100, subtype="PCM_16")
    with pytest.warns(UserWarning, match="mono"):
        e = explain(path, model10, method="layercam")
    assert e.listenable.shape[0] == 2
    assert any("resampled from 44100" in n for n in e.notes)


@pytest.mark.parametrize("mode", ["sigmoid", "hard", "soft"])
def test_modes(model10, clip, mode):
    e = explain(torch.from_numpy(clip), model10, mode=mode, method="layercam")
    assert torch.isfinite(e.mask).all()
    if mode == "hard":
        assert set(torch.unique(e.mask).tolist()) <= {0.0, 1.0}
        # θ over the heatmap's cells: the top quarter of the cells is kept
        cells = e.heatmap.double()
        norm = (cells - cells.min()) / (cells.max() - cells.min())
        theta = torch.quantile(norm.flatten(), 0.75)
        assert float((norm >= theta).double().mean()) == pytest.approx(0.25, abs=0.02)
        # θ over the bins (the first version's rule): the top quarter of the bins
        on_bins = explain(
            torch.from_numpy(clip), model10, mode=mode, threshold_on="stft", method="layercam"
        )
        assert float(on_bins.mask_area) == pytest.approx(0.25, abs=0.02)


def test_too_short_waveform(model10):
    with pytest.raises(AudioError, match="too short"):
        explain(torch.zeros(2, 1000), model10, method="layercam")


def test_nan_waveform(model10):
    x = torch.zeros(2, 48_000)
    x[0, 5] = float("nan")
    with pytest.raises(AudioError, match="NaN"):
        explain(x, model10, method="layercam")
    assert torch.isnan(x[0, 5])  # input untouched
