"""``FrontEnd``: each preset equals its model family's reference implementation, its settings
round-trip through JSON and are validated, ``from_power`` is differentiable, the layouts
are transpositions of one canonical tensor, and the geometry is right on cases small
enough to compute by hand.

Tolerance of the preset comparisons, relative to max |reference| (a log-mel value's rounding
error is absolute, a multiple of float32 eps times the size of the values it is computed
from, not relative to each entry; and entries pass through zero, e.g. AST's normalised
features, where an elementwise relative error means nothing):

* the preset run in float64 against the reference (float64 where it can be): <= 1e-6. This
  is the "same settings, same algorithm" check; what is left is the reference's own
  float32 steps (librosa's float32 mel bank in torchlibrosa, the extractor's complex64
  spectrum), ~1e-7;
* the preset as models run it, in float32: <= 1e-4. Measured 2e-7 to 3e-7 for the STFT
  presets; 5e-5 for AST on this clip, in its weakest band (~35 Hz, after pre-emphasis)
  on the frame where that band nearly cancels: there float32 FFT rounding, relative to the
  frame's energy, is ~1e-3 of the band's. A wrong setting (mel scale, norm, window, hop,
  log floor, normalisation) moves the features by 1e-2 or more (checked below).
"""

import json
import math
import warnings

import librosa
import numpy as np
import pytest
import torch

from listenable.frontends import LAYOUTS, PRESETS, FrontEnd
from tests.conftest import scene_like
from tests.test_features import librosa_features

TOLERANCE = 1e-4  # float32, as models run the presets
EXACT = 1e-6  # float64: the same computation as the reference


def _rel_err(ours, ref) -> float:
    ours = np.asarray(ours, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    return float(np.abs(ours - ref).max() / np.abs(ref).max())


def _check(name: str, clip: np.ndarray, ref: np.ndarray) -> None:
    """The preset on ``clip`` equals ``ref``: in float64 to :data:`EXACT`, in float32 (as
    models run it) to :data:`TOLERANCE`."""
    wave = torch.from_numpy(np.ascontiguousarray(clip, dtype=np.float64))
    wave = wave[None] if wave.ndim == 2 else wave[None, None]
    with torch.no_grad():
        f64 = FrontEnd.preset(name).double()(wave)[0]
        f32 = FrontEnd.preset(name)(wave.float())[0]
    assert f64.dtype == torch.float64 and f32.dtype == torch.float32
    assert _rel_err(f64.numpy(), ref) <= EXACT
    assert _rel_err(f32.numpy(), ref) <= TOLERANCE


# --- each preset against its reference implementation ----------------------------------
def test_mcdonnell_gao_equals_librosa(rng):
    clip = scene_like(rng, seconds=2.0, sr=48_000, channels=2)  # (2, samples)
    ref = librosa_features(clip)  # the oracle of tests/test_features.py
    assert ref.shape == (6, 128, 1 + clip.shape[1] // 1024 - 8)
    _check("mcdonnell_gao", clip, ref)


def _cnn14_torchlibrosa():
    """torchlibrosa's modules constructed exactly as PANNs' Cnn14.__init__ does."""
    from torchlibrosa.stft import LogmelFilterBank, Spectrogram

    spec = Spectrogram(n_fft=1024, hop_length=320, win_length=1024, window="hann",
                       center=True, pad_mode="reflect", freeze_parameters=True)  # fmt: skip
    logmel = LogmelFilterBank(sr=32_000, n_fft=1024, n_mels=64, fmin=50, fmax=14_000,
                              ref=1.0, amin=1e-10, top_db=None, freeze_parameters=True)  # fmt: skip
    return spec, logmel


def test_panns_equals_torchlibrosa_as_cnn14_builds_it(rng):
    clip = scene_like(rng, seconds=2.0, sr=32_000, channels=1)[0]
    spec, logmel = _cnn14_torchlibrosa()
    with torch.no_grad():  # the reference in float64 (its DFT is a float32 Conv1d otherwise)
        ref = logmel.double()(spec.double()(torch.from_numpy(clip).double()[None]))[0]
    assert ref.shape == (1, 1 + len(clip) // 320, 64)  # layout bctf, as ours
    _check("panns", clip, ref.numpy())
    # the filterbank is librosa's Slaney bank with Slaney norm (torchlibrosa's melW)
    np.testing.assert_allclose(
        FrontEnd.preset("panns")._filterbank64.T.numpy(), logmel.melW.numpy(), rtol=0, atol=1e-7
    )


def test_ast_equals_the_feature_extractor(rng):
    from transformers import ASTFeatureExtractor

    clip = scene_like(rng, seconds=3.0, sr=16_000, channels=1)[0]
    with warnings.catch_warnings():  # 128 bands on a 512-point FFT leave one empty
        warnings.simplefilter("ignore", UserWarning)
        extractor = ASTFeatureExtractor()
    ref = extractor(clip, sampling_rate=16_000, return_tensors="np")["input_values"][0]
    assert ref.shape == (1024, 128)  # layout btf, padded to max_length
    _check("ast", clip, ref)
    fe = FrontEnd.preset("ast")
    with torch.no_grad():
        ours = fe(torch.from_numpy(clip)[None, None])[0].numpy()
    frames = 1 + (len(clip) - 400) // 160
    np.testing.assert_allclose(ours[frames:], -fe.shift / fe.scale, rtol=1e-6)  # pad, then norm


def test_log1p_equals_librosa(rng):
    clip = scene_like(rng, seconds=2.0, sr=16_000, channels=1)[0]
    magnitude = np.abs(
        librosa.stft(clip.astype(np.float64), n_fft=1024, win_length=400, hop_length=160,
                     window="hann", center=True, pad_mode="reflect")
    )  # fmt: skip
    bank = librosa.filters.mel(sr=16_000, n_fft=1024, n_mels=80, fmin=0.0, fmax=8_000.0,
                               htk=True, norm=None, dtype=np.float64)  # fmt: skip
    ref = np.log1p(bank @ magnitude).T  # (frames, 80)
    assert ref.shape == (1 + len(clip) // 160, 80)  # layout btf
    _check("log1p", clip, ref)


def test_a_wrong_setting_is_caught_by_the_tolerance(rng):
    """The comparisons can fail: HTK instead of Slaney mels moves the PANNs features by far
    more than the tolerance."""
    clip = scene_like(rng, seconds=1.0, sr=32_000, channels=1)
    wave = torch.from_numpy(clip)[None]
    with torch.no_grad():
        right = FrontEnd.preset("panns")(wave)
        wrong = FrontEnd.preset("panns", mel_scale="htk", norm=None)(wave)
    assert _rel_err(wrong.numpy(), right.numpy()) > 100 * TOLERANCE


# --- settings ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_settings_round_trip_through_json(name, rng):
    fe = FrontEnd.preset(name)
    settings = json.loads(json.dumps(fe.settings))
    again = FrontEnd.from_settings(settings)
    assert again.settings == fe.settings
    assert torch.equal(again.filterbank, fe.filterbank)
    clip = scene_like(rng, seconds=1.0, sr=fe.sample_rate, channels=fe.channels)
    wave = torch.from_numpy(clip)[None]
    with torch.no_grad():
        assert torch.equal(again(wave), fe(wave))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"f_max": math.nan}, "f_max=nan must be a finite number"),
        ({"f_max": 30_000.0}, "f_max <= sample_rate / 2"),
        ({"n_fft": 2**40}, r"n_fft=1099511627776 must be an integer in \[16, 65536\]"),
        ({"bogus": 1}, r"unknown front-end setting\(s\) \['bogus'\]"),
        ({"layout": "tfbc"}, "unknown layout 'tfbc'"),
        ({"hop_length": 0}, "hop_length=0 must be an integer"),
    ],
)
def test_bad_settings_are_refused_with_a_clear_message(change, message):
    settings = {**FrontEnd.preset("panns").settings, **change}
    with pytest.raises(ValueError, match=message) as info:
        FrontEnd.from_settings(settings)
    assert "\n" not in str(info.value)


def test_settings_must_be_an_object():
    with pytest.raises(ValueError, match="JSON object"):
        FrontEnd.from_settings([("n_fft", 512)])


# --- differentiability ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "options",
    [
        dict(compression="ln", deltas=2, delta_width=3),
        dict(compression="ln", eps_mode="clamp", eps=1e-12, max_frames=9, shift=-1.0, scale=3.0),
        dict(compression="db"),
        dict(compression="log1p", channels=2, deltas=1, delta_width=3, layout="bctf"),
        dict(kind="kaldi", win_length=12, compression="ln", layout="btf"),
    ],
)
def test_from_power_is_differentiable(options):
    """gradcheck on a tiny float64 case: 16-point FFT at 1 kHz, 4 bands, 7 frames."""
    fe = FrontEnd(sample_rate=1_000, n_fft=16, hop_length=4, n_mels=4, f_min=50.0,
                  **options).double()  # fmt: skip
    g = torch.Generator().manual_seed(0)
    power = torch.rand(2, fe.channels, 9, 7, generator=g, dtype=torch.float64) + 0.1
    power.requires_grad_(True)
    assert torch.autograd.gradcheck(fe.from_power, (power,))


# --- layouts -----------------------------------------------------------------------------
@pytest.mark.parametrize("layout", LAYOUTS)
def test_layouts_are_transpositions_of_the_canonical_tensor(layout, rng):
    stereo = layout in ("bcft", "bctf")
    opts = dict(channels=2, deltas=1) if stereo else {}
    fe = FrontEnd.preset("small", layout=layout, **opts)
    canonical_fe = FrontEnd.preset("small", layout="bcft", **opts)
    wave = torch.from_numpy(scene_like(rng, 1.0, 16_000, 2 if stereo else 1))[None]
    with torch.no_grad():
        features, canonical = fe(wave), canonical_fe(wave)
    channels, mels, frames = canonical.shape[1:]
    assert channels == fe.feature_channels == (4 if stereo else 1)
    assert torch.equal(fe.to_layout(canonical), features)
    assert torch.equal(fe.to_canonical(features), canonical)
    assert torch.equal(fe.to_canonical(fe.to_layout(canonical)), canonical)
    freq_dim, time_dim = fe.axes()
    assert features.shape[freq_dim] == mels == 64 and features.shape[time_dim] == frames
    expected = {"bcft": (1, 4, 64, frames), "bctf": (1, 4, frames, 64),
                "bft": (1, 64, frames), "btf": (1, frames, 64)}[layout]  # fmt: skip
    assert tuple(features.shape) == expected


def test_one_channel_layouts_refuse_several_channels():
    with pytest.raises(ValueError, match="one feature channel"):
        FrontEnd.preset("ast", deltas=1)


# --- geometry by hand ------------------------------------------------------------------------
def test_frame_centres_and_frames_by_hand():
    # a centred STFT, hop 4, two delta passes of width 3 trim 2 frames each side
    fe = FrontEnd(sample_rate=1_000, n_fft=16, hop_length=4, n_mels=2, deltas=2, delta_width=3)
    assert fe.frame_offset == 2
    assert fe.frame_centres(3).tolist() == [8.0, 12.0, 16.0]
    assert fe.frames(40) == 1 + 40 // 4 - 4
    wave = torch.randn(1, 1, 40)
    assert fe(wave).shape[-1] == fe.frames(40)
    # Kaldi's snip-edges frames: frame j covers samples [160 j, 160 j + 400)
    kaldi = FrontEnd.preset("ast")
    assert kaldi.frame_centres(3).tolist() == [199.5, 359.5, 519.5]
    assert kaldi.frames(16_000) == 1 + (16_000 - 400) // 160 == 98
    assert kaldi.min_samples() == 400


def test_row_response_of_one_htk_triangle_by_hand():
    """One HTK band from 0 to 500 Hz at 1 kHz, n_fft 16 (bins every 62.5 Hz): a triangle,
    linear in hertz, peaking at the hertz of the middle mel ``c``; ``row_response`` is
    exact on the bins and linear between two bins on the same side of the peak."""
    fe = FrontEnd(sample_rate=1_000, n_fft=16, n_mels=1, f_min=0.0, f_max=500.0,
                  mel_scale="htk", norm=None)  # fmt: skip
    top = 2595 * math.log10(1 + 500 / 700)
    c = 700 * (10 ** (top / 2 / 2595) - 1)  # ~216.5 Hz
    assert fe.row_centres().item() == pytest.approx(c, rel=1e-12)

    def triangle(f):
        return max(0.0, min(f / c, (500 - f) / (500 - c)))

    freqs = [0.0, 62.5, 93.75, 125.0, 187.5, 250.0, 312.5, 400.0, 437.5, 500.0, 600.0]
    got = fe.row_response(torch.tensor(freqs, dtype=torch.float64))[0]
    expected = [triangle(min(f, 500.0)) for f in freqs]  # above Nyquist: held at Nyquist
    np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-12)
    # across the peak it interpolates the two bins (187.5 and 250 Hz), below the triangle
    mid = fe.row_response(torch.tensor([218.75], dtype=torch.float64))[0, 0].item()
    assert mid == pytest.approx((triangle(187.5) + triangle(250.0)) / 2, abs=1e-12)
    assert mid < triangle(218.75)


def test_slaney_norm_divides_by_the_width_in_hertz():
    plain = FrontEnd(sample_rate=1_000, n_fft=16, n_mels=1, f_max=500.0, mel_scale="slaney")
    normed = FrontEnd(sample_rate=1_000, n_fft=16, n_mels=1, f_max=500.0,
                      mel_scale="slaney", norm="slaney")  # fmt: skip
    f = torch.linspace(0, 500, 9, dtype=torch.float64)
    np.testing.assert_allclose(
        normed.row_response(f).numpy(), plain.row_response(f).numpy() * 2 / 500, atol=1e-15
    )
