import numpy as np
import pytest
import torch

from listenable.frontends import FrontEnd
from listenable.masking import apply_mask, binarise, normalise, percentile


def test_percentile_equals_numpy(rng):
    x = torch.from_numpy(rng.random((3, 50, 7)))
    for q in (0, 25, 75, 90.5, 100):
        np.testing.assert_allclose(
            percentile(x, q).numpy(), np.percentile(x.numpy().reshape(3, -1), q, axis=1)
        )


def test_normalise_and_flat():
    x = torch.tensor([[[2.0, 4.0], [6.0, 10.0]], [[3.0, 3.0], [3.0, 3.0]]])
    out, empty = normalise(x)
    torch.testing.assert_close(out[0], torch.tensor([[0.0, 0.25], [0.5, 1.0]]))
    assert empty.tolist() == [False, True]
    assert out[1].abs().max() == 0


def test_modes_hand_computed():
    m = torch.linspace(0, 1, 5).view(1, 1, 5)  # 0, .25, .5, .75, 1 ; 75th percentile = 0.75
    hard = binarise(m, mode="hard")
    assert hard.flatten().tolist() == [0, 0, 0, 1, 1]
    sig = binarise(m, mode="sigmoid", delta=1.0)
    expected = 1 / (1 + np.exp(-10 * (np.linspace(0, 1, 5) - 0.75)))
    expected[0] = 0.0  # the floor (no evidence) is always masked out
    np.testing.assert_allclose(sig.flatten().numpy(), expected, rtol=1e-6)
    torch.testing.assert_close(binarise(m, mode="soft"), m)
    with pytest.raises(ValueError):
        binarise(m, mode="fuzzy")


def test_mask_of_ones_reproduces_input(clip):
    feats = FrontEnd.preset("mcdonnell_gao").listening_stft()
    wave = torch.from_numpy(clip)[None]
    spec = feats.stft(wave)
    back = feats.istft(apply_mask(spec, torch.ones(1, *spec.shape[-2:])), wave.shape[-1])
    snr = 10 * torch.log10(wave.square().sum() / (back - wave).square().sum())
    assert snr >= 60


def test_zero_evidence_is_masked_out_when_theta_is_at_the_floor():
    """A heatmap zero on 85 % of the bins has θ = 0; its zero bins must not pass at 0.5."""
    m = torch.zeros(1, 20, 10)
    m[0, :3] = torch.linspace(0.1, 1.0, 30).view(3, 10)  # 15 % non-zero
    for mode in ("sigmoid", "hard"):
        mask = binarise(m, mode=mode)
        assert mask[0, 3:].abs().max() == 0, mode
        assert mask[0, :3].min() > 0.5, mode
