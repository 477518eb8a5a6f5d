"""Any classifier, not only the reference network: a user's own module over a front end's
features, an oracle of known evidence through the features path, audio at another rate
and channel count, every ``--model`` spec kind (and the bad ones), ``--layer`` /
``--target`` on the command line, and a multi-label (sigmoid) target.

Each test says in a comment which breakage it catches. Small models, 1–2 s clips, offline.
"""

from __future__ import annotations

import json
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from torch import nn

import listenable
from listenable.cli import main
from listenable.explain import Explainer
from listenable.frontends import FrontEnd
from listenable.geometry import Axis
from listenable.io import load_for
from listenable.models import Explainable
from tests.any_model_fixtures import CLASSES, pooled_explainable, pooled_net, tagger
from tests.conftest import scene_like

FIXTURES = "tests.any_model_fixtures"
EPS32 = torch.finfo(torch.float32).eps


# --- helpers ----------------------------------------------------------------------------------
def _tone(n: int, rate: int, freq: float, start: float, stop: float) -> np.ndarray:
    """A sine at ``freq`` from ``start`` to ``stop`` seconds, 10 ms raised-cosine ramps."""
    t = np.arange(n) / rate
    env = np.clip(np.minimum(t - start, stop - t) / 0.01, 0.0, 1.0)
    return (0.5 - 0.5 * np.cos(np.pi * env)) * np.sin(2 * np.pi * freq * t)


def _box_energy(stft, wave: torch.Tensor, band: tuple, span: tuple) -> tuple[float, float]:
    """``(energy inside band (Hz) × span (s), total energy)`` of ``wave`` on ``stft``'s grid."""
    power = stft(wave.reshape(1, -1, wave.shape[-1])).abs().square()[0].sum(dim=0)
    f = stft.frequencies()
    t = stft.frame_centres(power.shape[1]) / stft.sample_rate
    inside = ((f >= band[0]) & (f <= band[1]))[:, None] & ((t >= span[0]) & (t <= span[1]))
    return float(power[inside].sum()), float(power.sum())


def _cli(capsys, *argv: str) -> tuple[int, str]:
    """Run the command line in-process: ``(exit status, stdout + stderr)``."""
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def _one_error_line(text: str) -> str:
    """The single ``error:`` line of a refused run (no traceback, nothing else)."""
    lines = [line for line in text.splitlines() if line.strip()]
    assert "Traceback" not in text
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def _wav(path: Path, rate: int, seconds: float, channels: int, seed: int = 0) -> Path:
    x = scene_like(np.random.default_rng(seed), seconds=seconds, sr=rate, channels=channels)
    sf.write(path, x.T, rate, subtype="FLOAT")
    return path


@pytest.fixture(scope="module")
def wav16(tmp_path_factory) -> Path:
    return _wav(tmp_path_factory.mktemp("audio") / "clip.wav", 16_000, 1.2, 1)


# --- 1. your own model in ten lines -----------------------------------------------------------
def test_package_exports_the_wrapper_and_front_end():
    # catches: the README's `listenable.Explainable(module, listenable.FrontEnd(...))` (and
    # as_explainable's own error message) naming names the package does not export
    assert listenable.Explainable is Explainable
    assert listenable.FrontEnd is FrontEnd


def test_own_model_that_pools_frequency_is_explained():
    # catches: a model whose layer has fewer rows than mel bands refused or laid on the wrong
    # bands (geometry not derived per pool), "auto" left unresolved, a mask off the listening
    # grid or outside [0, 1], a residual that is not input − listenable
    fe = FrontEnd.preset("small")
    # the user's ~10 lines (PooledNet), seeded: random weights can leave a map all negative
    model = Explainable(pooled_net(), fe, probe_seconds=2.0)
    x = scene_like(np.random.default_rng(5), seconds=1.5, sr=16_000, channels=1)
    wave = torch.from_numpy(x)
    e = listenable.explain(wave, model)
    assert e.settings["method"] == "layercam"  # the default where no fine_layers are named

    stft = model.listening
    frames = stft.frames(wave.shape[-1])
    assert e.mask.shape == (stft.n_fft // 2 + 1, frames)
    assert float(e.mask.min()) >= 0.0 and float(e.mask.max()) <= 1.0
    assert not e.empty and 0.05 < float(e.mask_area) < 0.95  # not all, not none
    on_bins = listenable.explain(wave, model, threshold_on="stft")
    assert 0.2 < float(on_bins.mask_area) < 0.3  # θ over the bins: the top quarter of them
    # "auto": the last layer with a time axis before the global mean (pool2), by name
    assert e.layer == "pool2" == e.settings["layer"]
    # MaxPool2d(2) halves rows and cells; the centres of a 2-window sit between positions
    assert e.heatmap.shape == (fe.n_mels // 4, fe.frames(wave.shape[-1]) // 4)
    assert e.geometry.freq == Axis(4.0, 1.5) and e.geometry.time == Axis(4.0, 1.5)
    for name, (stride, offset) in {"conv1": (1, 0), "pool1": (2, 0.5), "pool2": (4, 1.5)}.items():
        g = model.layer(name).geometry
        assert (g.freq, g.time, g.rows) == (Axis(stride, offset), Axis(stride, offset), (0, 64))

    # residual = input − listenable in float32: adding back rounds twice at most
    peak = float(wave.abs().max() + e.listenable.abs().max())
    err = float((e.listenable + e.residual - wave).abs().max())
    assert err <= 2 * EPS32 * peak
    # and the residual is the inverse STFT of (1 − mask) ⊙ X: to the float32 round trip's
    # own error (measured with a mask of ones), plus rounding
    spectrum = stft(wave[None])
    ones = torch.ones_like(e.mask)[None]
    round_trip = float((stft.istft(spectrum, wave.shape[-1], mask=ones)[0] - wave).abs().max())
    complement = stft.istft(spectrum, wave.shape[-1], mask=1 - e.mask[None])[0]
    assert float((complement - e.residual).abs().max()) <= 2 * round_trip + 8 * EPS32 * peak
    assert float(e.listenable.square().sum()) > 0.01 * float(wave.square().sum())


# --- 2. an oracle of known evidence, through the features path --------------------------------
class Evidence(nn.Module):
    """``(batch, 1, 64, frames)`` dB → ``(batch, 2, 64, frames)``, stride 1 on both axes:
    channel 0 the level above ``FLOOR`` inside rows ``[r0, r1)`` × frames ``[f0, f1)`` and
    exactly zero outside; channel 1 the features themselves (only class 1 reads it)."""

    FLOOR = -20.0

    def __init__(self, rows: tuple[int, int], frames: tuple[int, int]) -> None:
        super().__init__()
        self.rows, self.frames = rows, frames

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        box = torch.zeros_like(x)
        box[..., self.rows[0] : self.rows[1], self.frames[0] : self.frames[1]] = 1.0
        return torch.cat([torch.relu(x - self.FLOOR) * box, x], dim=1)


class FeatureOracle(nn.Module):
    """Class 0's score is the mean of ``Evidence`` channel 0: it reads rows ``[r0, r1)`` and
    frames ``[f0, f1)`` of the front end's features and nothing else. ``pooled`` (4×4
    average pools of the evidence, stride 4 on both axes) is what the scores are read
    from, so either layer can be explained."""

    def __init__(self, rows, frames) -> None:
        super().__init__()
        self.evidence = Evidence(rows, frames)
        self.pooled = nn.AvgPool2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = self.pooled(self.evidence(x))
        return torch.stack([maps[:, 0].mean(dim=(1, 2)), maps[:, 1].mean(dim=(1, 2))], dim=1)


@pytest.mark.parametrize("layer, stride, offset", [("evidence", 1, 0.0), ("pooled", 4, 1.5)])
def test_oracle_through_the_features_path_listenable_lies_in_the_evidence(layer, stride, offset):
    """Tone A (1 kHz, 0.25–0.85 s) lies inside the evidence's rows and frames, tone B
    (5 kHz, 1.15–1.75 s) outside both; same level, so the clip has half its energy in each.

    Why > 80 % of the listenable energy lies in the evidence box: Grad-CAM's weight of
    channel 1 is exactly 0 (class 0 does not read it) and channel 0 is exactly 0 outside
    the box, so the map is 0 outside it (for ``pooled``: outside the 4×4 cells that touch
    the box). The listening STFT is the front end's own, so the projection puts the map's
    cells on STFT frames and its rows on the bins their filterbank triangles reach; with
    stride 1 exactly the box, with stride 4 spreading at most to the neighbouring cell's
    centre (linear interpolation): the box widened by ``2 (stride − 1)`` rows and frames
    each side holds it. The mask is exactly 0 wherever the projected map is 0 (the floor
    rule), so tone B is not merely N dB down in the mask: its mask is 0 (−∞ dB), asserted
    below. What the listenable output has outside the box is only the synthesis/analysis
    windows' spill, which the span's margin of one n_fft each side covers, and the Hann
    window's leakage (the tone is over 150 Hz, 5 bins, from either band edge). Inside the
    box the tone is ~65 dB above the noise. A mask on tone B, on both tones, or on the
    whole clip has ~50 % in the box; a projection that ignored the pooled layer's strides
    would put tone A's evidence at a quarter of its frequency and time.
    """
    # catches: a features-path model whose layer geometry is wrong (evidence mapped to the
    # wrong hertz or seconds, strides ignored), a mask that ignores the CAM, a residual that
    # loses tone B
    fe = FrontEnd.preset("small")
    sr, hop = fe.sample_rate, fe.hop_length
    centres = fe.row_centres()
    rows = tuple(int((centres - hz).abs().argmin()) for hz in (800.0, 1_250.0))  # [r0, r1)
    seconds = fe.frame_centres(fe.frames(2 * sr)) / sr
    frames = (int((seconds >= 0.2).nonzero()[0]), int((seconds > 0.9).nonzero()[0]))
    model = Explainable(
        FeatureOracle(rows, frames), fe, layer=layer, class_names=["evidence", "rest"],
        probe_seconds=2.0,
    )  # fmt: skip
    geometry = model.layer().geometry
    assert geometry.freq == Axis(stride, offset) == geometry.time and geometry.rows == (0, 64)

    n = 2 * sr
    noise = 1e-3 * np.random.default_rng(7).standard_normal(n)
    tones = 0.3 * (_tone(n, sr, 1_000.0, 0.25, 0.85) + _tone(n, sr, 5_000.0, 1.15, 1.75))
    wave = torch.from_numpy((tones + noise).astype(np.float32))[None]
    e = listenable.explain(wave, model, target=0, method="gradcam")
    assert e.class_name == "evidence" and e.layer == layer

    stft = model.listening
    f = stft.frequencies()
    widen = 2 * (stride - 1)  # rows and frames the projection may spread a pooled cell
    r0, r1 = max(rows[0] - widen, 0), min(rows[1] + widen, fe.n_mels)
    covered = fe.row_response(f)[r0:r1].sum(dim=0) > 0  # the triangles' reach
    band = (float(f[covered].min()), float(f[covered].max()))
    margin = stft.n_fft / sr  # synthesis + analysis window, half each
    span = ((frames[0] - widen) * hop / sr - margin, (frames[1] - 1 + widen) * hop / sr + margin)
    # tone A well inside (> 150 Hz from either edge), tone B far outside in both
    assert band[0] + 150 < 1_000.0 < band[1] - 150 and band[1] < 4_000.0 and span[1] < 1.15

    inside, total = _box_energy(stft, e.listenable, band, span)
    assert total > 0 and inside / total > 0.8
    clip_inside, clip_total = _box_energy(stft, wave, band, span)
    assert clip_inside / clip_total < 0.6  # the bar is not met by the clip itself
    assert inside / clip_inside > 0.8  # the listenable output holds tone A, not a trace of it

    t = stft.frame_centres(e.mask.shape[1]) / sr
    bin_a, bin_b = int((f - 1_000.0).abs().argmin()), int((f - 5_000.0).abs().argmin())
    during_a, during_b = (t > 0.3) & (t < 0.8), (t > 1.2) & (t < 1.7)
    assert float(e.mask[bin_a, during_a].min()) > 0.9
    assert float(e.mask[bin_b - 3 : bin_b + 4, during_b].max()) == 0.0  # −∞ dB, not N dB
    # the residual keeps tone B whole
    box_b = (4_700.0, 5_300.0), (1.15, 1.75)
    kept, _ = _box_energy(stft, e.residual, *box_b)
    had, _ = _box_energy(stft, wave, *box_b)
    assert abs(kept / had - 1) < 0.01


# --- 3. audio resampled and mixed down to the model's rate and channels -----------------------
def test_44k_stereo_file_is_explained_at_the_models_rate(tmp_path, capsys):
    # catches: outputs written at the file's rate or channel count (or the model's rate with
    # the file's sample count), notes that do not say what was done, a residual against the
    # un-resampled input; and the stereo front end mixing down what it should keep
    path = _wav(tmp_path / "stereo44k.wav", 44_100, 1.1, 2)
    seconds = sf.info(path).frames / 44_100
    runs = {
        "mono16k": ((16_000, 1), [f"{FIXTURES}:pooled_net", "--front-end", "small"]),
        "stereo48k": ((48_000, 2), [f"{FIXTURES}:pooled_net_stereo", "--front-end", "mcdonnell_gao"]),
    }  # fmt: skip
    for name, ((rate, channels), model) in runs.items():
        out = tmp_path / name
        code, text = _cli(
            capsys, "explain", "--method", "layercam", path, "--out", out, "--model", *model
        )
        assert code == 0, text
        for kind in ("listenable", "residual"):
            info = sf.info(out / f"stereo44k.{kind}.wav")
            assert (info.samplerate, info.channels) == (rate, channels)
            assert abs(info.frames - seconds * rate) <= 1
        record = json.loads((out / "stereo44k.json").read_text())
        notes = " | ".join(record["notes"])
        assert f"resampled from 44100 Hz to {rate} Hz" in notes
        assert ("mixed down" in notes) == (channels == 1)
        assert record["settings"]["sample_rate"] == rate
        listen, _ = sf.read(out / "stereo44k.listenable.wav", always_2d=True)
        resid, _ = sf.read(out / "stereo44k.residual.wav", always_2d=True)
        fe = FrontEnd.preset("small" if channels == 1 else "mcdonnell_gao")
        wave, _ = load_for(path, fe)  # what the model heard: resampled (and mixed down)
        np.testing.assert_allclose((listen + resid).T, wave.numpy(), atol=1e-5)


# --- 4. every --model spec kind -------------------------------------------------------------
USER_FILE = """
from torch import nn


def build():
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2),
    )
"""


@pytest.fixture
def user_file(tmp_path):
    """A ``path/to/file.py`` outside ``sys.path`` (its module name is left behind by the
    loader: removed after)."""
    path = tmp_path / "listenable_user_model_test.py"
    path.write_text(USER_FILE)
    yield path
    sys.modules.pop(path.stem, None)


@pytest.fixture(scope="module")
def small_ckpt(tmp_path_factory):
    from listenable.models import SmallCNN

    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("ckpt") / "small.safetensors"
    return listenable.save_checkpoint(
        SmallCNN(n_classes=3, widths=(8, 8, 16, 16)).eval(), path,
        class_names=["rain", "wind", "sea"], front_end=FrontEnd.preset("small"),
    )  # fmt: skip


@pytest.mark.parametrize("kind", ["module_module", "module_explainable", "file_py", "safetensors"])
def test_each_model_spec_kind_explains(kind, tmp_path, wav16, user_file, small_ckpt, capsys):
    # catches: a spec kind that fails to load, loads another model (e.g. falls back to the
    # default), loses its class names or front end, or is explained on the wrong layer
    specs = {
        "module_module": ([f"{FIXTURES}:pooled_net", "--front-end", "small"], "PooledNet",
                          CLASSES, "pool2"),
        "module_explainable": ([f"{FIXTURES}:pooled_explainable"], "PooledNet", CLASSES, "pool2"),
        "file_py": ([f"{user_file}:build", "--front-end", "small"], "Sequential", ["0", "1"], "2"),
        "safetensors": ([str(small_ckpt)], "small", ["rain", "wind", "sea"], "block4"),
    }  # fmt: skip
    model, family, classes, layer = specs[kind]
    out = tmp_path / "out"
    code, text = _cli(
        capsys, "explain", "--method", "layercam", wav16, "--out", out, "--model", *model
    )
    assert code == 0, text
    record = json.loads((out / "clip.json").read_text())
    assert record["settings"]["model"] == family
    assert list(record["probabilities"]) == classes
    assert record["layer"] == layer
    assert sf.info(out / "clip.listenable.wav").samplerate == 16_000
    assert record["notes"] == []  # already 16 kHz mono: nothing done to it


@pytest.mark.slow  # the reference model's layer geometry is probed on ~10 s of features
def test_default_spec_is_the_shipped_reference_model(tmp_path, capsys):
    # catches: `--model default` not naming the shipped 48 kHz stereo reference model (or
    # its fusion layer), and a 44.1 kHz stereo file not resampled to its rate
    path = _wav(tmp_path / "stereo44k.wav", 44_100, 1.0, 2)
    out = tmp_path / "out"
    code, text = _cli(
        capsys, "explain", "--method", "layercam", path, "--out", out, "--model", "default"
    )
    assert code == 0, text
    for kind in ("listenable", "residual"):
        info = sf.info(out / f"stereo44k.{kind}.wav")
        assert (info.samplerate, info.channels) == (48_000, 2)
        assert abs(info.frames - 48_000) <= 1
    record = json.loads((out / "stereo44k.json").read_text())
    assert record["settings"]["model"] == "mcdonnell_gao" and record["layer"] == "fusion"
    assert record["notes"] == ["resampled from 44100 Hz to 48000 Hz"]


class _Canary:
    """Unpickling it creates ``marker`` (a stand-in for code a pickle would run)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize(
    "case",
    ["pt", "pickle_as_safetensors", "no_module", "no_function", "returns_str", "hf_missing",
     "module_without_front_end"],
)  # fmt: skip
def test_bad_model_specs_are_one_line_usage_errors(case, tmp_path, wav16, capsys):
    # catches: a traceback or several lines instead of one message, a wrong exit status,
    # a pickle unpickled (the canary would run), a .pt refusal without the conversion
    # command, a module:function model that needs a front end failing without saying so
    live = tmp_path / "live.marker"
    pickle.loads(pickle.dumps(_Canary(live)))  # the payload is live: unpickling runs it
    assert live.exists()
    marker = tmp_path / "unpickled.marker"
    payload = pickle.dumps({"weight": _Canary(marker)}, protocol=4)
    (tmp_path / "weights.pt").write_bytes(payload)
    (tmp_path / "weights.safetensors").write_bytes(payload)
    cases = {
        "pt": ([tmp_path / "weights.pt"], ["safetensors only", "torch.load(", "st.save_file("]),
        "pickle_as_safetensors": ([tmp_path / "weights.safetensors"], ["weights.safetensors"]),
        "no_module": (["nosuchmodule_xyz:f"], ["cannot import nosuchmodule_xyz"]),
        "no_function": ([f"{FIXTURES}:missing_function"], ["no function 'missing_function'"]),
        "returns_str": ([f"{FIXTURES}:not_a_model"], ["returned a str", "nn.Module"]),
        "hf_missing": (["hf:/nonexistent"], ["/nonexistent"]),
        "module_without_front_end": ([f"{FIXTURES}:pooled_net"], ["--front-end"]),
    }
    model, expected = cases[case]
    out = tmp_path / "out"
    code, text = _cli(
        capsys, "explain", "--method", "layercam", wav16, "--out", out, "--model", *model
    )
    assert code == 2
    line = _one_error_line(text)
    for part in expected:
        assert part in line, line
    if case == "pt":  # the command converts this very file, next to it
        assert f"torch.load('{tmp_path / 'weights.pt'}'" in line
        assert f"'{tmp_path / 'weights'}.safetensors'" in line
    assert not marker.exists()  # nothing was unpickled
    assert not out.exists() or not any(out.iterdir())


# --- 5. --layer and --target on the command line --------------------------------------------
def test_layer_and_target_by_name(tmp_path, wav16, capsys):
    # catches: --layer ignored (JSON would say pool2, geometry stride 4), --target ignored
    # (the model's top class, "cat", by its bias, would be explained instead)
    out = tmp_path / "out"
    spec = f"{FIXTURES}:pooled_explainable"
    code, text = _cli(capsys, "explain", "--method", "layercam", wav16, "--out", out, "--model", spec,
                      "--layer", "pool1", "--target", "bird")  # fmt: skip
    assert code == 0, text
    record = json.loads((out / "clip.json").read_text())
    assert record["layer"] == record["settings"]["layer"] == "pool1"
    assert record["geometry"]["freq_stride"] == 2 and record["geometry"]["time_stride"] == 2
    assert record["predicted"] == "cat"
    assert record["target"] == "bird" and record["target_index"] == 2


def test_unknown_layer_lists_the_layers(tmp_path, wav16, capsys):
    # catches: an unknown --layer as a traceback, a silent fallback to the default layer,
    # or a message that does not say which layers there are
    out = tmp_path / "out"
    spec = f"{FIXTURES}:pooled_explainable"
    code, text = _cli(
        capsys,
        "explain",
        "--method",
        "layercam",
        wav16,
        "--out",
        out,
        "--model",
        spec,
        "--layer",
        "nope",
    )
    assert code == 2  # a usage error (the bad option), like an unknown --target
    line = _one_error_line(text)
    assert "'nope'" in line
    for name in ("conv1", "pool1", "conv2", "pool2", "fc"):
        assert name in line
    assert not out.exists() or not any(out.iterdir())


# --- 6. a multi-label target ------------------------------------------------------------------
def test_multilabel_target_that_is_not_the_top_tag(tmp_path, wav16, capsys):
    # catches: softmax applied to a sigmoid model's scores, a tag by name not honoured (the
    # top tag's map explained instead), a non-top tag with an empty map
    model = tagger()
    wave, _ = load_for(wav16, model.front_end)
    logits = Explainer(model, method="layercam").logits(wave[None])[0]
    order = logits.argsort(descending=True).tolist()
    top, second = order[0], order[1]
    name = model.class_names[second]
    e = listenable.explain(wav16, model, target=name, method="layercam")
    assert (e.class_name, int(e.target)) == (name, second) and second != top
    torch.testing.assert_close(e.probabilities, torch.sigmoid(logits), rtol=0, atol=1e-6)
    assert abs(float(e.probabilities.sum()) - 1) > 0.1  # independent tags, not a distribution
    assert e.settings["activation"] == "sigmoid"
    assert not e.empty and float(e.heatmap.max()) > 0
    assert not torch.allclose(
        e.heatmap, listenable.explain(wav16, model, method="layercam").heatmap
    )

    out = tmp_path / "out"  # the same through the command line
    code, text = _cli(capsys, "explain", "--method", "layercam", wav16, "--out", out, "--model", f"{FIXTURES}:tagger",
                      "--target", name)  # fmt: skip
    assert code == 0, text
    record = json.loads((out / "clip.json").read_text())
    assert record["target"] == name and record["predicted"] == model.class_names[top]
    assert record["settings"]["activation"] == "sigmoid"
    assert abs(sum(record["probabilities"].values()) - 1) > 0.1


def test_fixture_models_are_the_same_in_and_out_of_process():
    # catches: a factory that is not seeded (then the CLI tests' "predicted cat" and the
    # in-process target choice would not describe the model the command line builds)
    a, b = pooled_explainable(), pooled_explainable()
    x = torch.randn(1, 1, 64, 40)
    torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)
