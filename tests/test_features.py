import librosa
import numpy as np
import pytest
import torch

from listenable.frontends import FrontEnd, delta, mel_filterbank


def LogMelDeltas():  # noqa: N802 - the reference front end, as these tests knew it
    return FrontEnd.preset("mcdonnell_gao")


def librosa_features(x: np.ndarray) -> np.ndarray:
    """The McDonnell-Gao features computed with librosa, mismatched defaults set explicitly."""
    chans = []
    for ch in x.astype(np.float64):
        S = (
            np.abs(
                librosa.stft(
                    ch, n_fft=2048, hop_length=1024, window="hann", center=True, pad_mode="reflect"
                )
            )
            ** 2
        )
        mel = librosa.feature.melspectrogram(
            S=S, sr=48_000, n_mels=128, fmin=0, fmax=24_000, htk=True, norm=None
        )
        chans.append(np.log(mel + 1e-8))
    logmel = np.stack(chans)  # (2, 128, T)
    d1 = librosa.feature.delta(logmel, width=5, axis=-1, mode="interp")[..., 2:-2]
    d2 = librosa.feature.delta(d1, width=5, axis=-1, mode="interp")[..., 2:-2]
    return np.concatenate([logmel[..., 4:-4], d1[..., 2:-2], d2], axis=0)


def test_filterbank_matches_librosa():
    ours = mel_filterbank(48_000, 2048, 128).numpy()
    ref = librosa.filters.mel(
        sr=48_000,
        n_fft=2048,
        n_mels=128,
        fmin=0,
        fmax=24_000,
        htk=True,
        norm=None,
        dtype=np.float64,
    )
    np.testing.assert_allclose(ours, ref, atol=1e-10)


def test_features_match_librosa(clip):
    ours = LogMelDeltas()(torch.from_numpy(clip)[None].double().float())[0].double().numpy()
    ref = librosa_features(clip)
    assert ours.shape == ref.shape == (6, 128, 1 + clip.shape[1] // 1024 - 8)
    # log-mel: float32 STFT vs float64 librosa; compare where the band has energy
    np.testing.assert_allclose(ours[:2], ref[:2], atol=2e-3)
    np.testing.assert_allclose(ours[2:], ref[2:], atol=2e-3)


def test_ten_seconds_gives_461_frames():
    wave = torch.zeros(1, 2, 480_000)
    feats = LogMelDeltas()(wave)
    assert feats.shape == (1, 6, 128, 461)
    assert torch.isfinite(feats).all()
    # silence: log(1e-8) everywhere, zero deltas
    assert torch.allclose(feats[:, :2], torch.full_like(feats[:, :2], np.log(1e-8)))
    assert feats[:, 2:].abs().max() == 0


def test_channel_order_left_right():
    wave = torch.zeros(1, 2, 48_000)
    wave[0, 0] = torch.sin(torch.arange(48_000) * 0.3)  # left only
    feats = LogMelDeltas()(wave)
    assert feats[0, 0].mean() > feats[0, 1].mean() + 3
    assert torch.allclose(feats[0, 1], torch.full_like(feats[0, 1], np.log(1e-8)))


def test_delta_hand_computed():
    x = torch.tensor([0.0, 1, 4, 9, 16, 25, 36])  # t^2
    # d[t] = (1*(x[t+1]-x[t-1]) + 2*(x[t+2]-x[t-2]))/10 = (4t + 16t)/10 = 2t
    np.testing.assert_allclose(delta(x).numpy(), [4.0, 6.0, 8.0])


def test_delta_needs_width_frames():
    with pytest.raises(ValueError):
        delta(torch.zeros(4))


def test_stft_istft_round_trip(clip):
    feats = LogMelDeltas().listening_stft()
    wave = torch.from_numpy(clip)[None]
    back = feats.istft(feats(wave), wave.shape[-1])
    assert torch.allclose(back, wave, atol=1e-5)
