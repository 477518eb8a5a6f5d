"""The pure-torch Kaldi front end reproduces transformers' ASTFeatureExtractor (numpy path)."""

import warnings

import numpy as np
import pytest
import torch

from listenable.frontends import kaldi as K

SR = 16000


def _extractor(**kwargs):
    from transformers import ASTFeatureExtractor

    with warnings.catch_warnings():
        # 128 mels on a 512-point FFT leave filter 3 empty; transformers warns about it.
        warnings.simplefilter("ignore", UserWarning)
        return ASTFeatureExtractor(**kwargs)


def _clip(seconds: float, seed: int = 1234) -> np.ndarray:
    """Pink-ish noise + a harmonic tone that comes and goes + a 100 Hz .. 4 kHz chirp."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    t = np.arange(n) / SR
    spec = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / SR)
    spec[0] = 0.0
    spec[1:] /= np.sqrt(freqs[1:])
    pink = np.fft.irfft(spec, n)
    pink *= 0.05 / pink.std()
    gate = (np.sin(2 * np.pi * 0.7 * t) > 0).astype(float)
    tone = gate * sum(0.1 / k * np.sin(2 * np.pi * 220 * k * t) for k in range(1, 6))
    chirp = 0.05 * np.sin(2 * np.pi * (100 * t + (4000 - 100) / (2 * seconds) * t**2))
    return (pink + tone + chirp).astype(np.float32)


@pytest.mark.parametrize(
    ("seconds", "max_length"),
    [
        (3.0, 1024),  # 298 frames, zero-padded to 1024
        (1.0, 200),  # 98 frames, padded
        ((400 + 199 * 160) / SR, 200),  # exactly 200 frames
        (3.0, 200),  # 298 frames, truncated to 200
    ],
)
def test_ast_features_match_extractor(seconds, max_length):
    wave = _clip(seconds)
    ref = _extractor(max_length=max_length)(wave, sampling_rate=SR, return_tensors="np")
    ref = ref["input_values"]
    ours = K.ast_features(torch.from_numpy(wave), max_length=max_length)
    assert ours.dtype == torch.float32
    assert ours.shape == ref.shape == (1, max_length, 128)
    # Relative to max|ref|: the log-mel values are O(10) (log of the floor is -15.9) and are
    # computed in float32 here, so their rounding error is absolute (~1e-6 per unit of log-mel),
    # not relative to each entry; entries near 0 after (x - mean) / (2 std) would make an
    # elementwise relative error meaningless.
    err = np.abs(ours.numpy() - ref).max() / np.abs(ref).max()
    assert err <= 1e-4, err
    # Padding happens before normalisation: padded frames are -mean / (2 std), not 0.
    frames = 1 + (len(wave) - 400) // 160
    if frames < max_length:
        pad = ours[0, frames:].numpy()
        np.testing.assert_allclose(pad, -K.AST_MEAN / (2 * K.AST_STD), rtol=1e-6)


def test_mel_banks_match_extractor():
    ref = _extractor().mel_filters  # (257, 128)
    ours = K.kaldi_mel_banks(128, 512, SR, 20.0, SR // 2)
    assert ours.dtype == torch.float64 and ours.shape == (128, 257)
    np.testing.assert_allclose(ours.numpy(), ref.T, rtol=0, atol=1e-12)
    # Kaldi's "f_max <= 0 is an offset from Nyquist" gives the same bank.
    torch.testing.assert_close(K.kaldi_mel_banks(128, 512, SR, 20.0, 0.0), ours)


def test_frames_and_centres_by_hand():
    wave = torch.arange(1000, dtype=torch.float32)
    frames = K.kaldi_frames(wave, 400, 160)
    assert frames.shape == (1, 4, 400)  # 1 + (1000 - 400) // 160
    assert frames[0, :, 0].tolist() == [0.0, 160.0, 320.0, 480.0]
    centres = K.frame_centres_s(4, sample_rate=SR, win_length=400, hop_length=160)
    assert centres.dtype == torch.float64
    torch.testing.assert_close(centres, torch.tensor([200.0, 360.0, 520.0, 680.0]).double() / SR)
    power = K.kaldi_power_spectrum(wave)
    assert power.shape == (1, 257, 4) and power.dtype == torch.float32


def test_windows():
    n = torch.arange(400, dtype=torch.float64)
    hann = 0.5 - 0.5 * torch.cos(2 * torch.pi * n / 399)
    torch.testing.assert_close(K.hann_window(400), hann)
    torch.testing.assert_close(K.povey_window(400), hann.pow(0.85))


def test_batch_matches_single_clips():
    a, b = _clip(1.5, seed=1), _clip(1.5, seed=2)
    both = K.ast_features(torch.from_numpy(np.stack([a, b])), max_length=200)
    for i, wave in enumerate((a, b)):
        alone = K.ast_features(torch.from_numpy(wave), max_length=200)
        torch.testing.assert_close(both[i : i + 1], alone, rtol=0, atol=1e-5)


def test_gradcheck_power_spectrum_and_log_mel():
    gen = torch.Generator().manual_seed(0)
    wave = torch.randn(2, 20, dtype=torch.float64, generator=gen, requires_grad=True)
    # 8-sample frames every 4 samples at 1 kHz: 4 frames, 8-point FFT.
    spec = dict(sample_rate=1000, frame_length_ms=8.0, frame_shift_ms=4.0)
    assert torch.autograd.gradcheck(lambda x: K.kaldi_power_spectrum(x, **spec), (wave,))
    banks = K.kaldi_mel_banks(3, 8, 1000, 20.0, 500.0)

    def log_mel(x):
        return K.kaldi_log(torch.einsum("mk,bkt->bmt", banks, K.kaldi_power_spectrum(x, **spec)))

    assert torch.autograd.gradcheck(log_mel, (wave,))
    # The full AST pipeline is differentiable too (3 frames of 16 kHz audio).
    wave16 = torch.randn(1, 720, dtype=torch.float64, generator=gen, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda x: K.ast_features(x, max_length=4), (wave16,), fast_mode=True
    )


def test_errors_are_value_errors():
    with pytest.raises(ValueError, match="fewer than"):
        K.kaldi_frames(torch.zeros(399), 400, 160)
    with pytest.raises(ValueError, match="window"):
        K.kaldi_power_spectrum(torch.zeros(1000), window="blackman")
    with pytest.raises(ValueError, match="f_min"):
        K.kaldi_mel_banks(128, 512, SR, 9000.0, 8000.0)
    with pytest.raises(ValueError, match="floating"):
        K.kaldi_power_spectrum(torch.zeros(1000, dtype=torch.int16))
