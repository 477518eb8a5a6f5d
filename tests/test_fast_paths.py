"""The hot path's fast implementations equal their plain references (benchmarks/pipeline.py
measures the speed; these check the values)."""

import numpy as np
import pytest
import torch

from listenable.explain import Explainer
from listenable.features import LogMelDeltas
from listenable.mapping import SpectrogramMapping
from listenable.masking import binarise, heatmap_to_mask, kth_smallest, normalise, percentile


def _rows(rng, kind: str, n: int = 120_000) -> torch.Tensor:
    x = torch.from_numpy(rng.random((3, n))).float()
    if kind == "ties":
        return torch.floor(x * 40)
    if kind == "relu":  # a CAM after ReLU: most of the grid exactly zero
        return torch.where(x < 0.8, 0.0, x)
    if kind == "near":  # rank 75 % just above a block of zeros
        return torch.where(x < 0.749, 0.0, x)
    if kind == "sorted":
        return torch.sort(x, dim=1).values
    return x


@pytest.mark.parametrize("kind", ["uniform", "ties", "relu", "near", "sorted"])
def test_kth_smallest_is_exact(rng, kind):
    x = _rows(rng, kind)
    n = x.shape[1]
    for k in (0, 1, n // 3, int((n - 1) * 0.75), n - 2, n - 1):
        assert torch.equal(kth_smallest(x, k), x.kthvalue(k + 1, dim=1).values), k
    for q in (0, 12.5, 75, 99.9, 100):
        np.testing.assert_allclose(
            percentile(x, q).numpy(), np.percentile(x.numpy(), q, axis=1), rtol=1e-6
        )


@pytest.mark.parametrize("length", [480_000, 48_000, 30_001, 24_000])
@pytest.mark.parametrize("batch", [1, 3])
def test_istft_equals_torch_istft(rng, length, batch):
    feats = LogMelDeltas()
    wave = torch.from_numpy(rng.standard_normal((batch, 2, length))).float()
    spec = feats.stft(wave) * torch.from_numpy(rng.random((batch, 1, 1025, 1))).float()
    ref = torch.istft(
        spec.reshape(2 * batch, 1025, -1),
        n_fft=2048,
        hop_length=1024,
        window=feats.window,
        center=True,
        length=length,
    ).reshape(batch, 2, length)
    torch.testing.assert_close(feats.istft(spec, length), ref, rtol=0, atol=1e-7)
    torch.testing.assert_close(feats.istft(spec.contiguous(), length), ref, rtol=0, atol=1e-7)


@pytest.mark.parametrize("mode", ["sigmoid", "hard", "soft"])
def test_heatmap_to_mask_equals_normalise_then_binarise(rng, mode):
    mapping = SpectrogramMapping(LogMelDeltas())
    heat = torch.relu(torch.from_numpy(rng.standard_normal((3, 128, 29))).float())
    heat[2] = 0.0  # a flat clip
    grid = mapping(heat, 469)  # frame-major, as the explainer gets it
    normed, empty = normalise(grid)
    expected = binarise(normed, mode=mode, empty=empty)
    for g in (grid, grid.contiguous()):
        mask, got_empty = heatmap_to_mask(g.clone(), mode=mode, inplace=True)
        torch.testing.assert_close(mask, expected, rtol=0, atol=1e-6)
        assert got_empty.tolist() == [False, False, True]
    silent = torch.tensor([True, False, False])
    mask, got_empty = heatmap_to_mask(grid, mode=mode, empty=silent)
    assert got_empty.tolist() == [True, False, True] and mask[0].abs().max() == 0


def test_time_matrices_cache_is_bounded():
    mapping = SpectrogramMapping(LogMelDeltas())
    for frames in range(40, 40 + 2 * mapping.max_time_entries):
        cam_frames = -(-(frames - 8) // 16)
        mapping(torch.rand(1, 128, cam_frames), frames)
    assert len(mapping._time_cache) == mapping.max_time_entries
    assert len(mapping._freq_cache) == 1


def test_explainer_options_keep_the_explanation(model10, clip):
    wave = torch.from_numpy(clip)[None]
    base = Explainer(model10, channels_last=False)(wave)
    fast = Explainer(model10)(wave)
    torch.testing.assert_close(fast.mask, base.mask, rtol=0, atol=1e-3)
    torch.testing.assert_close(fast.listenable, base.listenable, rtol=0, atol=1e-5)
    logits = Explainer(model10).logits(wave)  # the forward alone, as the benchmark's limit
    torch.testing.assert_close(torch.softmax(logits, 1), base.probabilities, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="precision"):
        Explainer(model10, precision="fp16")


def test_cam_batch_passes_equal_one_pass(model10, rng):
    from tests.conftest import scene_like

    waves = torch.from_numpy(np.stack([scene_like(rng, seconds=1.0) for _ in range(3)]))
    whole = Explainer(model10)(waves, target=[1, 2, 3])
    split = Explainer(model10, cam_batch=2)(waves, target=[1, 2, 3])
    assert split.target.tolist() == [1, 2, 3]
    torch.testing.assert_close(split.heatmap, whole.heatmap, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(split.mask, whole.mask, rtol=0, atol=1e-3)
    with pytest.raises(ValueError, match="cam_batch"):
        Explainer(model10, cam_batch=0)
