"""The PANNs CNN14 and AST adapters end to end, on short clips, offline, random weights.

For each family: the geometry derived from the model equals the one derived by hand; a
batch explains as its items; listenable + residual = input, at the model's own rate; a
multi-label target that is not the top tag can be explained by name or by index; and a
hand-built "oracle" model of the family's shape (a waveform model with its mel front end
inside, like CNN14; a token model on AST's patch grid) whose evidence is known by
construction gets a listenable output whose energy lies in that evidence, in hertz and
seconds.

Tolerances: a batch runs other kernels than one clip (other summation orders), so float32
values differ at rounding level: ~1e-7 relative per operation, a few 1e-6 after the ~15
layers a CAM passes through (forward and backward). Heatmaps are compared to 1e-4 of
their maximum (20x that). Masks pass through a percentile and a slope-100 sigmoid, which
amplify those differences, so binarised masks are compared only on the bins whose
normalised heatmap is more than ``MARGIN`` from the threshold θ and from the floor (0):
a heatmap within 1e-4 of its maximum moves the normalised map and θ by at most ~2e-4
each, so 0.02 is 50x the largest change rounding can make there.
"""

from __future__ import annotations

import json
import math
import sys
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from listenable.errors import CheckpointError
from listenable.explain import Explainer
from listenable.frontends import FrontEnd
from listenable.geometry import Axis, LayerGeometry
from listenable.masking import normalise, percentile
from listenable.models.explainable import Explainable
from tests.conftest import scene_like

MARGIN = 0.02


# --- helpers --------------------------------------------------------------------------------
def _normalised_grid(explainer: Explainer, heatmap: torch.Tensor, frames: int):
    """The explainer's normalised heatmap on the STFT grid and its threshold θ per clip."""
    grid = explainer.projection(heatmap.float(), explainer.cam.geometry, frames)
    m, _ = normalise(grid)
    return m, percentile(m, explainer.percentile)


def _assert_batch_equals_items(explainer: Explainer, waves: torch.Tensor, target) -> None:
    batch = explainer(waves, target)
    frames = batch.mask.shape[-1]
    m, theta = _normalised_grid(explainer, batch.heatmap, frames)
    for i in range(len(waves)):
        t = target[i] if isinstance(target, list) else target
        one = explainer(waves[i : i + 1], None if t is None else [t])
        assert int(one.target[0]) == int(batch.target[i])
        scale = float(batch.heatmap[i].abs().max())
        assert scale > 0, "a flat heatmap tests nothing"
        assert float((batch.heatmap[i] - one.heatmap[0]).abs().max()) <= 1e-4 * scale
        torch.testing.assert_close(one.probabilities[0], batch.probabilities[i], rtol=0, atol=1e-5)
        sure = ((m[i] - theta[i]).abs() > MARGIN) & (m[i] > MARGIN)
        assert float(sure.float().mean()) > 0.5, "too few bins with a margin to compare"
        assert torch.equal((batch.mask[i] > 0.5)[sure], (one.mask[0] > 0.5)[sure])


def _assert_listenable_is_sound(explanation, waves: torch.Tensor, rate: int) -> None:
    assert explanation.sample_rate == rate
    assert explanation.listenable.shape == explanation.residual.shape == waves.shape
    assert float(explanation.mask.min()) >= 0.0 and float(explanation.mask.max()) <= 1.0
    assert not bool(explanation.empty.any())
    # residual = input − listenable in float32: the sum is the input up to one rounding
    torch.testing.assert_close(
        explanation.listenable + explanation.residual, waves, rtol=0, atol=1e-6
    )
    # the mask kept something and removed something
    for i in range(len(waves)):
        kept = float(explanation.listenable[i].square().sum() / waves[i].square().sum())
        assert 0.0 < kept < 1.0


def _not_top_targets(explainer: Explainer, waves: torch.Tensor) -> tuple[list, list[int]]:
    """For each clip a tag that is not its top one (the second most probable: the least
    probable tends to have only negative evidence, an empty map): the first clip's by
    name, the others' by index."""
    probs = torch.sigmoid(explainer.logits(waves))
    top, second = probs.topk(2, dim=1).indices.T.tolist()
    assert all(i != j for i, j in zip(top, second))
    names = explainer.class_names
    return [names[second[0]], *second[1:]], second


def _tone(n: int, rate: int, freq: float, start: float, stop: float) -> np.ndarray:
    """A sine at ``freq`` from ``start`` to ``stop`` seconds, 10 ms raised-cosine ramps."""
    t = np.arange(n) / rate
    ramp = 0.01
    env = np.clip(np.minimum(t - start, stop - t) / ramp, 0.0, 1.0)
    env = 0.5 - 0.5 * np.cos(np.pi * env)
    return env * np.sin(2 * np.pi * freq * t)


def _two_tones(rate: int, seconds: float, a: tuple, b: tuple) -> torch.Tensor:
    """Tone ``a = (hertz, start, stop)`` and tone ``b`` (same level) over faint white noise."""
    n = int(seconds * rate)
    rng = np.random.default_rng(1234)
    x = 0.3 * _tone(n, rate, *a) + 0.3 * _tone(n, rate, *b) + 1e-3 * rng.standard_normal(n)
    return torch.from_numpy(x.astype(np.float32))[None, None]


def _box_share(stft, wave: torch.Tensor, band: tuple, span: tuple) -> float:
    """Share of ``wave``'s energy in ``band`` (hertz) × ``span`` (seconds), measured on
    ``stft``'s grid."""
    power = stft(wave).abs().square()[0].sum(dim=0)  # (bins, frames)
    f = stft.frequencies()
    t = stft.frame_centres(power.shape[1]) / stft.sample_rate
    inside = ((f >= band[0]) & (f <= band[1]))[:, None] & ((t >= span[0]) & (t <= span[1]))
    return float(power[inside].sum() / power.sum())


# --- PANNs CNN14 ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cnn14():
    from listenable.models import cnn14 as adapter

    model = adapter.build_cnn14(classes_num=527, seed=0)
    names = [f"tag{i}" for i in range(527)]
    return adapter.explainable(model, class_names=names)


@pytest.fixture(scope="module")
def cnn14_explainer(cnn14):
    return Explainer(cnn14, method="layercam")


@pytest.fixture(scope="module")
def cnn14_clips():
    rng = np.random.default_rng(1234)
    clips = [scene_like(rng, seconds=2.0, sr=32_000, channels=1) for _ in range(2)]
    return torch.from_numpy(np.stack(clips))  # (2, 1, 64000)


def test_cnn14_loads_without_running_panns_inference_init(cnn14):
    # panns_inference/__init__ imports config, which runs wget for the AudioSet labels
    assert "panns_inference.config" not in sys.modules
    assert type(cnn14.module).__name__ == "Cnn14"


def test_cnn14_reads_its_own_scores_and_features(cnn14, cnn14_clips):
    model = cnn14.module
    assert cnn14.input == "waveform" and cnn14.activation == "sigmoid"
    assert cnn14.default_layer == "conv_block6" and cnn14.fine_layers == [
        ("conv_block4",),
        ("conv_block3",),
    ]
    waves = cnn14_clips[:, 0]
    with torch.no_grad():
        out = model(waves)
        scores = cnn14(cnn14.inputs(cnn14_clips))
        # its features: logmel_extractor's output equals the "panns" front end's
        own = model.logmel_extractor(model.spectrogram_extractor(waves))
        ours = cnn14.front_end(cnn14_clips)
    assert scores.shape == (2, 527)
    # the scores are fc_audioset's output: the sigmoid CNN14 applies gives its output
    torch.testing.assert_close(torch.sigmoid(scores), out["clipwise_output"], rtol=0, atol=1e-6)
    assert ours.shape == own.shape == (2, 1, 201, 64)
    assert float((ours - own).abs().max() / own.abs().max()) <= 1e-4


def test_cnn14_front_end_must_match_the_model(cnn14):
    from listenable.models import cnn14 as adapter

    with pytest.raises(ValueError, match="filterbank"):
        adapter.front_end_of(cnn14.module, FrontEnd.preset("panns", f_max=8_000.0))
    with pytest.raises(ValueError, match="hop_length"):
        adapter.front_end_of(cnn14.module, FrontEnd.preset("panns", hop_length=160))
    with pytest.raises(TypeError, match="not a PANNs Cnn14"):
        adapter.explainable(nn.Linear(2, 2))


def test_cnn14_geometry_is_derived_as_by_hand(cnn14):
    """conv_block6: five 2×2 average pools (floor), each putting cell i on input position
    2 i + 0.5 of its own input; the 3×3 convolutions (padding 1) keep positions. So cell i
    is centred on feature frame 32 i + 0.5 (1 + 2 + 4 + 8 + 16) = 32 i + 15.5, and row j on
    mel band 32 j + 15.5: two rows, each covering 32 of the 64 bands."""
    g = cnn14.layer("conv_block6").geometry
    assert g == LayerGeometry(Axis(32.0, 15.5), Axis(32.0, 15.5), (0, 64))
    # in seconds: cell 3 is centred on sample 320 · (32 · 3 + 15.5) of the clip
    fe = cnn14.front_end
    centre = fe.frame_centres(1)[0] + g.time.centres(4)[3] * fe.hop_length
    assert float(centre) / fe.sample_rate == pytest.approx(320 * 111.5 / 32_000)


def test_cnn14_batch_equals_items_and_listenable_is_sound(cnn14_explainer, cnn14_clips):
    explainer = cnn14_explainer
    _assert_batch_equals_items(explainer, cnn14_clips, None)
    result = explainer(cnn14_clips)
    _assert_listenable_is_sound(result, cnn14_clips, 32_000)
    assert result.heatmap.shape == (2, 2, 201 // 32)
    assert result.mask.shape == (2, 513, 201)


def test_cnn14_explains_a_tag_that_is_not_the_top_one(cnn14_explainer, cnn14_clips):
    explainer = cnn14_explainer
    targets, indices = _not_top_targets(explainer, cnn14_clips)
    result = explainer(cnn14_clips, targets)
    assert result.target.tolist() == indices
    assert result.class_name == [f"tag{i}" for i in indices]
    assert float(result.heatmap.abs().max()) > 0 and not bool(result.empty.any())
    # sigmoid probabilities: independent tags, not a distribution
    torch.testing.assert_close(
        result.probabilities, torch.sigmoid(explainer.logits(cnn14_clips)), rtol=0, atol=1e-6
    )
    assert not torch.allclose(result.probabilities.sum(dim=1), torch.ones(2))


# --- the CNN14-family oracle: a waveform model with a mel front end inside ----------------------
class Evidence(nn.Module):
    """``(batch, 1, frames, 64)`` dB → ``(batch, 3, frames // 4, 16)`` (time before
    frequency, as CNN14's blocks): 4×4 average pools of the level; channel ``c < 2`` is the
    level above ``FLOOR`` inside region ``c`` and zero outside it; channel 2 the pooled
    level everywhere (no score reads it)."""

    FLOOR = -20.0

    def __init__(self, regions) -> None:
        super().__init__()
        self.regions = regions  # [((first, last) time cells in seconds, (first, last) rows)]

    def masks(self, cells: int, rows: int) -> torch.Tensor:
        seconds = 320 * (4 * torch.arange(cells, dtype=torch.float64) + 1.5) / 32_000
        out = torch.zeros(len(self.regions), cells, rows)
        for c, ((t0, t1), (r0, r1)) in enumerate(self.regions):
            in_time = (seconds >= t0) & (seconds <= t1)
            out[c, in_time, r0 : r1 + 1] = 1.0
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = nn.functional.avg_pool2d(x, 4)  # (batch, 1, cells, rows)
        masks = self.masks(*pooled.shape[2:]).to(pooled)
        level = torch.relu(pooled - self.FLOOR)
        return torch.cat([level * masks[None, 0], level * masks[None, 1], pooled], dim=1)


class WaveOracle(nn.Module):
    """Class ``c``'s score is the mean level of region ``c``: it reads that band range and
    time span only."""

    def __init__(self, regions) -> None:
        super().__init__()
        self.logmel_extractor = FrontEnd.preset("panns")
        self.evidence = Evidence(regions)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        maps = self.evidence(self.logmel_extractor(wave[:, None]))
        masks = self.evidence.masks(*maps.shape[2:]).to(maps)
        return maps[:, :2].sum(dim=(2, 3)) / masks.sum(dim=(1, 2))


def _rows_around(fe: FrontEnd, hertz: float, pool: int) -> tuple[int, int]:
    """The pooled rows around the band whose centre is nearest ``hertz`` (one each side)."""
    band = int((fe.row_centres() - hertz).abs().argmin())
    row = band // pool
    return max(row - 1, 0), min(row + 1, fe.n_mels // pool - 1)


def _band_box(fe: FrontEnd, first_band: int, last_band: int) -> tuple[float, float]:
    """Hertz covered by feature bands ``first..last``: a triangle reaches from the previous
    band's centre to the next one's (the range's ends: f_min, f_max)."""
    centres = fe.row_centres().tolist()
    lo = centres[first_band - 1] if first_band > 0 else fe.f_min
    hi = centres[last_band + 1] if last_band + 1 < fe.n_mels else fe.f_max
    return lo, hi


def test_cnn14_family_oracle_listenable_lies_in_the_evidence():
    """Two tones, at different times and frequencies; class "low" reads only the band and
    span of the first, "high" only those of the second.

    Why > 80 % of the listenable energy lies in the evidence's box: the layer's channel
    ``c`` is zero outside region ``c`` and no score reads channel 2, so Grad-CAM for class
    ``c`` is zero outside region ``c``; the projection spreads a region at most one cell
    beyond it (linear interpolation between cell centres, in time; between row centres,
    in frequency) and the mask is zero wherever the projected map is (its floor rule); the
    box is the region widened by one cell and one pooled row each side and by the STFT's
    window, so the mask is zero outside it. Inside it the tone is 50 dB above the noise,
    so nearly all of the listenable energy is the tone's; the 20 % left covers the
    window's spectral leakage at the tone's ramps. The clip itself has only half its energy
    there (the other tone has the other half): a mask on the wrong tone, on both, or on the
    whole clip fails the bar.
    """
    fe = FrontEnd.preset("panns")
    tones = {"low": (600.0, 0.3, 1.0), "high": (4_000.0, 1.5, 2.2)}
    regions = [((a[1], a[2]), _rows_around(fe, a[0], 4)) for a in tones.values()]
    oracle = WaveOracle(regions).eval()
    model = Explainable(
        oracle, fe, input="waveform", features_at="logmel_extractor", layer="evidence",
        activation="sigmoid", class_names=list(tones), probe_seconds=2.0,
    )  # fmt: skip
    # the derived geometry: 4×4 average pools put cell i on frame (and band) 4 i + 1.5
    assert model.layer().geometry == LayerGeometry(Axis(4.0, 1.5), Axis(4.0, 1.5), (0, 64))
    explainer = Explainer(model, method="layercam")
    wave = _two_tones(32_000, 2.5, tones["low"], tones["high"])
    result = explainer(wave.expand(2, 1, -1), ["low", 1])  # one clip, both classes
    assert result.class_name == ["low", "high"]
    stft = explainer.listening
    window = stft.n_fft / 2 / stft.sample_rate
    for i, ((t0, t1), (r0, r1)) in enumerate(regions):
        band = _band_box(fe, max(4 * (r0 - 1), 0), min(4 * (r1 + 1) + 3, 63))
        cell = 4 * 320 / 32_000  # one cell in seconds
        span = (t0 - cell - window, t1 + cell + window)
        listenable = result.listenable[i : i + 1]
        assert float(listenable.square().sum()) > 0
        assert _box_share(stft, listenable, band, span) > 0.8
        assert _box_share(stft, wave, band, span) < 0.6


# --- AST ----------------------------------------------------------------------------------
def _ast_config(**options):
    from transformers import ASTConfig

    labels = options.pop("id2label", {i: f"label{i}" for i in range(6)})
    settings = dict(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        id2label=labels, label2id={v: k for k, v in labels.items()},
        problem_type="multi_label_classification",
    )  # fmt: skip
    return ASTConfig(**(settings | options))


def _ast_model(**options):
    from transformers import ASTForAudioClassification

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return ASTForAudioClassification(_ast_config(**options)).eval()


@pytest.fixture(scope="module")
def ast_model():
    return _ast_model()


@pytest.fixture(scope="module")
def ast(ast_model):
    from listenable.models import ast as adapter

    return adapter.explainable(ast_model)


@pytest.fixture(scope="module")
def ast_clips():
    rng = np.random.default_rng(1234)
    clips = [scene_like(rng, seconds=2.0, sr=16_000, channels=1) for _ in range(2)]
    return torch.from_numpy(np.stack(clips))  # (2, 1, 32000)


def test_ast_reads_its_config(ast):
    assert ast.input == "features" and ast.activation == "sigmoid"
    assert ast.class_names == [f"label{i}" for i in range(6)]
    fe = ast.front_end
    assert fe.settings == FrontEnd.preset("ast").settings  # max_length 1024, 128 bands
    # the default layer is the input of the last transformer layer
    assert ast.default_layer == "audio_spectrogram_transformer.layers.0"
    assert set(ast._declared) == {
        "audio_spectrogram_transformer.embeddings",
        "audio_spectrogram_transformer.layers.0",
        "audio_spectrogram_transformer.layers.1",
    }


def test_ast_geometry_is_derived_as_by_hand(ast):
    """Patch (f, t) covers mel bands 10 f .. 10 f + 15 and frames 10 t .. 10 t + 15
    (kernel 16, strides 10): centred on 10 i + 7.5 along both axes; a grid of
    (128 − 16) // 10 + 1 = 12 rows × (1024 − 16) // 10 + 1 = 101 columns, and the patches
    see bands 0 .. 11 · 10 + 15 = 125."""
    from listenable.models import ast as adapter

    projection = ast.module.audio_spectrogram_transformer.embeddings.patch_embeddings.projection
    assert adapter.patch_grid(projection, 128, 1024) == (12, 101)
    for name in ast._declared:
        g = ast.layer(name).geometry
        assert g == LayerGeometry(Axis(10.0, 7.5), Axis(10.0, 7.5), (0, 126))
    # in seconds: a snip-edges frame j is centred on sample 160 j + 199.5
    fe = ast.front_end
    assert float(fe.frame_centres(1)[0]) == 199.5


def test_ast_tokens_become_the_patch_grid(ast, ast_model):
    """The canonical form of the embeddings' output is the projection's (freq, time) map:
    the special tokens dropped, the patches frequency-major (position embeddings are zero
    at initialisation and dropout is off in eval mode)."""
    g = torch.Generator().manual_seed(0)
    features = torch.randn(1, 1024, 128, generator=g)
    embeddings = ast_model.audio_spectrogram_transformer.embeddings
    with torch.no_grad():
        tokens = embeddings(features)
        conv = embeddings.patch_embeddings.projection(features[:, None].transpose(2, 3))
    assert tokens.shape == (1, 2 + 12 * 101, 32) and conv.shape == (1, 32, 12, 101)
    grid = ast.layer("audio_spectrogram_transformer.embeddings").canonical(tokens)
    assert torch.equal(grid, conv)
    # a tuple output (transformers 4's layers) is read at its first element
    assert torch.equal(ast.layer().canonical((tokens, None)), conv)


def test_ast_last_layer_gets_no_gradient_but_the_default_does(ast, ast_clips):
    """The classifier reads only the CLS and distillation tokens of the last layer's
    output: Grad-CAM there is empty, which is why the default is that layer's input."""
    last = Explainer(ast, layer="audio_spectrogram_transformer.layers.1")(ast_clips)
    assert float(last.heatmap.abs().max()) == 0.0 and bool(last.empty.all())
    default = Explainer(ast)(ast_clips)
    assert float(default.heatmap.abs().max()) > 0 and not bool(default.empty.any())


def test_ast_batch_equals_items_and_listenable_is_sound(ast, ast_clips):
    # Grad-CAM: on a random-weight AST its map is dense; LayerCAM's (the default) is zero on
    # most tokens, which leaves too few bins with a margin for the batch/item comparison
    explainer = Explainer(ast, method="gradcam")
    _assert_batch_equals_items(explainer, ast_clips, None)
    result = explainer(ast_clips)
    _assert_listenable_is_sound(result, ast_clips, 16_000)
    assert result.heatmap.shape == (2, 12, 101)
    assert result.mask.shape == (2, 257, 201)


def test_ast_explains_a_label_that_is_not_the_top_one(ast, ast_clips):
    explainer = Explainer(ast)  # no fine_layers: the default is LayerCAM
    assert explainer.method == "layercam"
    targets, indices = _not_top_targets(explainer, ast_clips)
    result = explainer(ast_clips, targets)
    assert result.target.tolist() == indices
    assert result.class_name == [f"label{i}" for i in indices]
    assert float(result.heatmap.abs().max()) > 0 and not bool(result.empty.any())


def test_ast_activation_follows_the_problem_type():
    from listenable.models.ast import activation_for

    assert activation_for(_ast_config()) == "sigmoid"
    assert activation_for(_ast_config(problem_type="single_label_classification")) == "softmax"
    audioset = {i: str(i) for i in range(527)}
    assert activation_for(_ast_config(problem_type=None, id2label=audioset)) == "sigmoid"
    assert activation_for(_ast_config(problem_type=None)) == "softmax"


def test_ast_front_end_follows_the_extractor():
    from transformers import ASTFeatureExtractor

    from listenable.models.ast import front_end_for

    config = _ast_config(max_length=300)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        extractor = ASTFeatureExtractor(max_length=300, mean=-6.0, std=5.0)
        wave = np.asarray(scene_like(np.random.default_rng(1234), 2.0, 16_000, 1)[0])
        ref = extractor(wave, sampling_rate=16_000, return_tensors="np")["input_values"]
        fe = front_end_for(config, extractor)
        assert (fe.max_frames, fe.shift, fe.scale) == (300, -6.0, 10.0)
        with torch.no_grad():
            ours = fe(torch.from_numpy(wave)[None, None]).numpy()
        assert float(np.abs(ours - ref).max() / np.abs(ref).max()) <= 1e-4
        with pytest.raises(ValueError, match="max_length"):
            front_end_for(config, ASTFeatureExtractor(max_length=1024))


def test_ast_from_a_local_folder(tmp_path, ast_clips):
    from transformers import ASTFeatureExtractor

    from listenable.models.spec import load_model

    model = _ast_model(max_length=300)  # a grid of 12 × 29 patches
    model.save_pretrained(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        ASTFeatureExtractor(max_length=300).save_pretrained(tmp_path)
    assert not list(tmp_path.glob("*.bin"))
    loaded = load_model(f"hf:{tmp_path}")
    assert isinstance(loaded, Explainable) and loaded.activation == "sigmoid"
    assert loaded.class_names == [f"label{i}" for i in range(6)]
    assert loaded.front_end.max_frames == 300
    assert loaded.default_layer == "audio_spectrogram_transformer.layers.0"
    features = loaded.inputs(ast_clips)
    assert features.shape == (2, 300, 128)
    with torch.no_grad():
        assert torch.equal(loaded(features), model(features).logits)
    assert loaded.layer().canonical(torch.zeros(2, 2 + 12 * 29, 32)).shape == (2, 32, 12, 29)
    result = Explainer(loaded)(ast_clips)
    assert result.heatmap.shape == (2, 12, 29) and not bool(result.empty.any())


def test_ast_folder_errors_are_one_line(tmp_path):
    from transformers import BertConfig

    from listenable.models.spec import load_model

    def refused(path, match):
        with pytest.raises(CheckpointError, match=match) as info:
            load_model(f"hf:{path}")
        assert "\n" not in str(info.value)

    refused(tmp_path / "missing", "no such folder")
    refused(tmp_path, "no config.json")
    pickled = tmp_path / "pickled"
    _ast_config().save_pretrained(pickled)
    (pickled / "pytorch_model.bin").write_bytes(b"not read")
    refused(pickled, r"no \.safetensors weights \(found \['pytorch_model.bin'\]: pickled")
    bert = tmp_path / "bert"
    BertConfig().save_pretrained(bert)
    refused(bert, "a 'bert' model")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    refused(broken, "unreadable config.json")
    wrong = tmp_path / "wrong"
    _ast_config().save_pretrained(wrong)
    (wrong / "model.safetensors").write_bytes(b"garbage")
    refused(wrong, "cannot load the model")
    assert json.loads((wrong / "config.json").read_text())["model_type"] == (
        "audio-spectrogram-transformer"
    )


# --- the AST-family oracle: a token model on AST's patch grid ----------------------------------
class PatchEmbed(nn.Module):
    """AST's patch embedding with one channel: each token is its 16×16 patch's mean."""

    def __init__(self) -> None:
        super().__init__()
        self.projection = nn.Conv2d(1, 1, 16, stride=10)
        with torch.no_grad():
            self.projection.weight.fill_(1 / 256)
            self.projection.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (batch, frames, mels)
        return self.projection(x[:, None].transpose(2, 3)).flatten(2).transpose(1, 2)


class Tokens(nn.Module):
    """Patches ``(batch, f · t, 1)`` → tokens ``(batch, 2 + f · t, 3)``: two zero special
    tokens, then per patch: its level above ``FLOOR`` inside region 0, inside region 1,
    and its level (no score reads it)."""

    FLOOR = -1.0

    def __init__(self, masks: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("masks", masks)  # (2, f · t)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        level = torch.relu(patches[..., 0] - self.FLOOR)
        body = torch.stack([level * self.masks[0], level * self.masks[1], patches[..., 0]], -1)
        return torch.cat([body.new_zeros(len(body), 2, 3), body], dim=1)


class TokenOracle(nn.Module):
    def __init__(self, masks: torch.Tensor) -> None:
        super().__init__()
        self.patch_embeddings = PatchEmbed()
        self.tokens = Tokens(masks)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        tokens = self.tokens(self.patch_embeddings(features))[:, 2:]
        return tokens[..., :2].sum(dim=1) / self.tokens.masks.sum(dim=1)


def test_ast_family_oracle_listenable_lies_in_the_evidence():
    """As the CNN14-family oracle (same argument for the 80 % bar), on AST's front end and
    patch grid: class ``c`` reads the patches of region ``c`` only, and the adapter's token
    layer (geometry probed on the oracle's own projection) places them."""
    from listenable.models.ast import token_layer

    fe = FrontEnd.preset("ast")
    f_dim, t_dim = 12, 101
    tones = {"low": (500.0, 0.3, 1.0), "high": (3_000.0, 1.4, 2.1)}
    regions, masks = [], torch.zeros(2, f_dim * t_dim)
    centres = fe.row_centres()
    for c, (hertz, t0, t1) in enumerate(tones.values()):
        band = int((centres - hertz).abs().argmin())
        rows = [f for f in range(f_dim) if 10 * f <= band <= 10 * f + 15]
        seconds = (160 * (10 * np.arange(t_dim) + 7.5) + 199.5) / 16_000
        cols = [t for t in range(t_dim) if t0 <= seconds[t] <= t1]
        for f in rows:
            masks[c, f * t_dim + cols[0] : f * t_dim + cols[-1] + 1] = 1.0
        regions.append(((rows[0], rows[-1]), (cols[0], cols[-1])))
    oracle = TokenOracle(masks).eval()
    layer = token_layer("tokens", oracle.tokens, oracle.patch_embeddings,
                        oracle.patch_embeddings.projection, n_mels=128, frames=1024)  # fmt: skip
    model = Explainable(oracle, fe, layers={"tokens": layer}, layer="tokens",
                        activation="sigmoid", class_names=list(tones))  # fmt: skip
    assert model.layer().geometry == LayerGeometry(Axis(10.0, 7.5), Axis(10.0, 7.5), (0, 126))
    explainer = Explainer(model)
    wave = _two_tones(16_000, 2.5, tones["low"], tones["high"])
    result = explainer(wave.expand(2, 1, -1), [0, "high"])
    assert result.class_name == ["low", "high"]
    stft = explainer.listening
    window = stft.n_fft / 2 / stft.sample_rate
    for i, ((r0, r1), (c0, c1)) in enumerate(regions):
        # the region's patches widened by one patch row / column, in bands and frames
        band = _band_box(fe, max(10 * (r0 - 1), 0), min(10 * (r1 + 1) + 15, 127))
        first, last = 10 * (c0 - 1), 10 * (c1 + 1) + 15  # feature frames
        span = ((160 * first) / 16_000 - window, (160 * last + 400) / 16_000 + window)
        listenable = result.listenable[i : i + 1]
        assert float(listenable.square().sum()) > 0
        assert _box_share(stft, listenable, band, span) > 0.8
        assert _box_share(stft, wave, band, span) < 0.6
    assert math.isfinite(float(result.heatmap.sum()))
