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


def test_threshold_on_the_heatmaps_cells_hand_computed():
    """θ over the cells, not over the bins they are spread on: two cells, 0 and 1 (θ at the
    75th percentile of the cells is 0.75), mapped onto 9 bins of which only the last comes
    from the hot cell. Over the bins the 75th percentile is the interpolated 0.75 at bin 6,
    so bins 6-8 pass; over the cells only bins above 0.75 pass."""
    from listenable.masking import heatmap_to_mask

    cells = torch.tensor([[[2.0, 6.0]]], dtype=torch.float64)  # (1, 1 row, 2 cells)
    grid = 2.0 + 4.0 * torch.linspace(0, 1, 9, dtype=torch.float64).view(1, 9, 1)  # 2 .. 6
    on_cells, _ = heatmap_to_mask(grid, mode="hard", cells=cells)
    on_bins, _ = heatmap_to_mask(grid, mode="hard")
    assert on_cells.flatten().tolist() == [0, 0, 0, 0, 0, 0, 1, 1, 1]  # 0.75, .875, 1 >= .75
    # a grid whose hot part covers few bins: over the cells θ stays at 0.75 of the cells'
    # range, over the bins it drops to what the cold bins reach
    few = torch.cat([torch.full((1, 8, 1), 2.0, dtype=torch.float64), grid[:, -1:]], dim=1)
    kept_cells, _ = heatmap_to_mask(few, mode="hard", cells=cells)
    kept_bins, _ = heatmap_to_mask(few, mode="hard")
    assert kept_cells.flatten().tolist() == [0] * 8 + [1]
    assert kept_bins.flatten().tolist() == [0] * 8 + [1]  # floor bins never pass
    assert on_bins.flatten().tolist() == [0, 0, 0, 0, 0, 0, 1, 1, 1]


def test_threshold_on_cells_equals_thresholding_the_cells_where_the_grid_repeats_them(rng):
    """When every bin copies one cell (nearest-cell mapping), θ over the cells and the
    mask are those of the cells themselves, whatever share of the bins each cell covers;
    the sigmoid's values are numpy's on the cells (float64)."""
    from listenable.masking import heatmap_to_mask

    cells = torch.from_numpy(rng.random((2, 6, 5)))
    repeats = torch.tensor([1, 1, 2, 4, 8, 16])  # high rows cover many bins, as mel bands do
    grid = cells.repeat_interleave(repeats, dim=1)
    mask, empty = heatmap_to_mask(grid, mode="sigmoid", delta=2.0, cells=cells)
    c = cells.numpy().reshape(2, -1)
    norm = (c - c.min(1, keepdims=True)) / (c.max(1, keepdims=True) - c.min(1, keepdims=True))
    theta = np.percentile(norm, 75, axis=1)[:, None]
    expected = np.where(norm > 0, 1 / (1 + np.exp(-100 * (norm - theta))), 0.0).reshape(2, 6, 5)
    expected = np.repeat(expected, repeats.numpy(), axis=1)
    np.testing.assert_allclose(mask.numpy(), expected, rtol=0, atol=1e-12)
    assert not empty.any()


def test_flat_cells_are_an_empty_mask():
    from listenable.masking import heatmap_to_mask

    cells = torch.ones(1, 3, 4)
    mask, empty = heatmap_to_mask(torch.ones(1, 10, 8), cells=cells)
    assert empty.tolist() == [True] and mask.abs().max() == 0


@pytest.mark.parametrize("delta", [float("nan"), -100.0, 1e9, float("inf")])
def test_a_slope_that_means_nothing_is_refused(delta):
    """δ = -100 gives a flat 0.5 mask, 1e9 overflows 10^δ, NaN gives NaN: refused by name."""
    with pytest.raises(ValueError, match="delta must be in"):
        binarise(torch.rand(1, 4, 4), delta=delta)
