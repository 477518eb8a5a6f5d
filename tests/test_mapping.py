import numpy as np
import pytest
import torch

from listenable.features import LogMelDeltas
from listenable.mapping import SpectrogramMapping, cam_stride, frequency_matrix, time_matrix


@pytest.fixture(scope="module")
def feats():
    return LogMelDeltas()


def test_rows_are_convex_weights(feats):
    F = frequency_matrix(feats.filterbank, 48_000, 0.0, 24_000.0)
    assert F.shape == (1025, 128)
    assert (F >= 0).all()
    torch.testing.assert_close(F.sum(dim=1), torch.ones(1025, dtype=torch.float64))
    # uncovered bins: 0 Hz -> first band, Nyquist -> last band
    assert F[0, 0] == 1 and F[1024, 127] == 1


@pytest.mark.parametrize("band", [5, 40, 64, 100, 126])
def test_hot_mel_band_lands_in_its_frequency_support(feats, band):
    mapping = SpectrogramMapping(feats)
    heat = torch.zeros(1, 128, 29)
    heat[0, band] = 1.0
    grid = mapping(heat, 469)[0]  # (1025, 469)
    support = feats.filterbank[band] > 0
    hot_bins = grid[:, 200] > 0
    assert hot_bins.any()
    assert not (hot_bins & ~support).any(), "mask outside the band's triangle"
    # the bin where the band's triangle peaks is the hottest one
    assert grid[:, 200].argmax() == feats.filterbank[band].argmax()


def test_plain_image_resize_would_be_wrong(feats):
    """A linear resize of 128 rows to 1025 puts mel band 100 near 1025*100/128 ~ bin 800
    (18.7 kHz); its true support is far lower."""
    support = (feats.filterbank[100] > 0).nonzero().squeeze()
    assert support.max() < 800 * 0.8


@pytest.mark.parametrize("cam_frame", [0, 7, 28])
def test_hot_cam_frame_lands_on_matching_stft_frames(feats, cam_frame):
    mapping = SpectrogramMapping(feats)
    heat = torch.zeros(1, 128, 29)
    heat[0, :, cam_frame] = 1.0
    grid = mapping(heat, 469)[0]
    centre = 16 * cam_frame + 4  # stride 16, 4-frame delta trim
    assert grid[60, centre] == pytest.approx(1.0)
    hot = (grid[60] > 0).nonzero().squeeze(1)
    last = cam_frame == 28  # beyond the last centre the end value is held
    assert hot.min() >= max(centre - 15, 0)
    assert hot.max() <= (468 if last else centre + 15)
    if 0 < cam_frame < 28:
        assert grid[60, centre - 8] == pytest.approx(0.5)  # halfway to the next centre


def test_time_matrix_hand_computed():
    T = time_matrix(frames=8, cam_frames=2, stride=2, frame_offset=1).numpy()
    # centres at frames 1 and 3; frame 2 halfway; frames 0, 4+ clamped
    expected = np.array([[1, 0], [1, 0], [0.5, 0.5], [0, 1], [0, 1], [0, 1], [0, 1], [0, 1]])
    np.testing.assert_allclose(T, expected)


def test_cam_stride():
    assert cam_stride(461, 29) == 16
    assert cam_stride(461, 461) == 1
    assert cam_stride(461, 58) == 8
    with pytest.raises(ValueError):
        cam_stride(461, 30)


def test_band_range_of_a_path_layer(feats):
    mapping = SpectrogramMapping(feats)
    heat = torch.ones(1, 64, 29)
    low = mapping(heat, 469, (0, 64))[0]
    high = mapping(heat, 469, (64, 128))[0]
    edge = int(feats.filterbank[63].nonzero().max())
    assert low[edge + 1 :].abs().max() == 0  # nothing above the low path's bands
    assert high[: int(feats.filterbank[64].nonzero().min())].abs().max() == 0
    torch.testing.assert_close(low + high, torch.ones_like(low))


def test_mapping_keeps_frequency_order(feats):
    mapping = SpectrogramMapping(feats)
    heat = torch.arange(128, dtype=torch.float32)[None, :, None].expand(1, 128, 29)
    column = mapping(heat, 469)[0, :, 100]
    assert (torch.diff(column) >= -1e-5).all()
