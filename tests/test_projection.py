"""The projection from a layer's map to the listening STFT, and the layer geometry it is
derived from.

The oracle for the reference model is the mapping as it was before the redesign (its two
matrices, copied below verbatim): the projection through seconds and hertz must equal it.
Every other geometry is checked by where a hot cell lands, in seconds and hertz, against
the hand-derived centre of that cell.
"""

import numpy as np
import pytest
import torch
from torch import nn

from listenable.frontends import FrontEnd

# ---- the reference mapping before the redesign (src/listenable/mapping.py at bb3b1b4) ----
from listenable.frontends.filterbanks import hz_to_mel, mel_to_hz
from listenable.geometry import Axis, LayerGeometry
from listenable.models import Explainable, McDonnellGao, as_explainable
from listenable.projection import Projection, interpolation


def old_frequency_matrix(filterbank, sample_rate, fmin, fmax):
    fb = filterbank.double()
    n_mels, bins = fb.shape
    cover = fb.sum(dim=0)
    mat = (fb / cover.clamp_min(1e-30)).T.clone()
    uncovered = cover <= 0
    if bool(uncovered.any()):
        mel_points = torch.linspace(
            float(hz_to_mel(fmin)), float(hz_to_mel(fmax)), n_mels + 2, dtype=torch.float64
        )
        centres = mel_to_hz(mel_points[1:-1])
        freqs = torch.linspace(0, sample_rate / 2, bins, dtype=torch.float64)
        nearest = (freqs[uncovered, None] - centres[None, :]).abs().argmin(dim=1)
        mat[uncovered] = 0.0
        mat[uncovered.nonzero().squeeze(1), nearest] = 1.0
    return mat


def old_time_matrix(frames, cam_frames, stride, frame_offset):
    position = (torch.arange(frames, dtype=torch.float64) - frame_offset) / stride
    position = position.clamp(0, cam_frames - 1)
    left = position.floor().long().clamp(max=cam_frames - 1)
    right = (left + 1).clamp(max=cam_frames - 1)
    frac = position - left
    mat = torch.zeros(frames, cam_frames, dtype=torch.float64)
    rows = torch.arange(frames)
    mat[rows, left] += 1 - frac
    mat[rows, right] += frac
    return mat


# --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def reference():
    torch.manual_seed(0)
    return as_explainable(McDonnellGao(n_classes=10).eval())


@pytest.fixture(scope="module")
def fe():
    return FrontEnd.preset("mcdonnell_gao")


def test_reference_geometry_is_derived_as_by_hand(reference):
    """Four stride-2, padding-1 steps: fusion cell i is centred on feature frame 16 i (STFT
    frame 16 i + 4 after the delta trim); rows are the 128 mel bands; each band path's
    layers see their half."""
    fusion = reference.layer("fusion").geometry
    assert fusion == LayerGeometry(Axis(16.0, 0.0), Axis(1.0, 0.0), (0, 128))
    assert reference.layer("low.stage2").geometry == LayerGeometry(
        Axis(4.0, 0.0), Axis(1.0, 0.0), (0, 64)
    )
    assert reference.layer("high.stage3").geometry == LayerGeometry(
        Axis(8.0, 0.0), Axis(1.0, 64.0), (64, 128)
    )


def test_projection_of_the_reference_geometry_equals_the_old_matrices(reference, fe):
    proj = Projection(fe, fe.listening_stft())
    geometry = reference.layer("fusion").geometry
    freq, tmat = proj.matrices(geometry, (128, 29), 469, dtype=torch.float64)
    old_f = old_frequency_matrix(torch.from_numpy(fe._filterbank64.numpy()), 48_000, 0.0, 24_000.0)
    torch.testing.assert_close(freq, old_f, rtol=0, atol=1e-15)
    torch.testing.assert_close(tmat, old_time_matrix(469, 29, 16, 4), rtol=0, atol=1e-15)
    # a band path: the old mapping sliced the frequency matrix's columns
    low = reference.layer("low.stage3").geometry
    freq, tmat = proj.matrices(low, (64, 58), 469, dtype=torch.float64)
    torch.testing.assert_close(freq, old_f[:, :64], rtol=0, atol=1e-15)
    torch.testing.assert_close(tmat, old_time_matrix(469, 58, 8, 4), rtol=0, atol=1e-15)
    high = reference.layer("high.stage3").geometry
    freq, _ = proj.matrices(high, (64, 58), 469, dtype=torch.float64)
    torch.testing.assert_close(freq, old_f[:, 64:], rtol=0, atol=1e-15)


def test_interpolation_hand_computed():
    T = interpolation(torch.arange(8.0, dtype=torch.float64), torch.tensor([1.0, 3.0]).double())
    expected = np.array([[1, 0], [1, 0], [0.5, 0.5], [0, 1], [0, 1], [0, 1], [0, 1], [0, 1]])
    np.testing.assert_allclose(T.numpy(), expected)


@pytest.mark.parametrize("band", [5, 40, 64, 100, 126])
def test_hot_mel_band_lands_in_its_frequency_support(reference, fe, band):
    proj = Projection(fe, fe.listening_stft())
    heat = torch.zeros(1, 128, 29)
    heat[0, band] = 1.0
    grid = proj(heat, reference.layer("fusion").geometry, 469)[0]
    support = fe._filterbank64[band] > 0
    hot = grid[:, 200] > 0
    assert hot.any() and not (hot & ~support).any(), "mask outside the band's triangle"
    assert grid[:, 200].argmax() == fe._filterbank64[band].argmax()


def test_a_finer_listening_stft_keeps_seconds_and_hertz(reference, fe):
    """The same hot cell projected onto a listening STFT with 4x finer hop: it lands on the
    same time (seconds) and the same frequencies (hertz)."""
    from listenable.frontends import STFT

    fine = STFT(48_000, 4096, 256)
    heat = torch.zeros(1, 128, 29)
    heat[0, 50, 10] = 1.0
    geometry = reference.layer("fusion").geometry
    grid = Projection(fe, fine)(heat, geometry, 1 + 480_000 // 256)[0]
    t_peak = grid.amax(dim=0).argmax() * 256 / 48_000
    assert float(t_peak) == pytest.approx((16 * 10 + 4) * 1024 / 48_000, abs=256 / 48_000)
    f_peak = fine.frequencies()[grid.amax(dim=1).argmax()]
    centre = float(mel_to_hz(torch.linspace(0, float(hz_to_mel(24_000.0)), 130)[51]))
    assert float(f_peak) == pytest.approx(centre, abs=48_000 / 4096)


# ---- geometries of other families, derived from small models built for it -------------
class PoolingCNN(nn.Module):
    """A plain CNN over (batch, 1, mels, frames) that pools frequency and time."""

    def __init__(self, pool: nn.Module, n_classes: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.pool1 = pool
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.pool2 = type(pool)(2)
        self.fc = nn.Linear(8, n_classes)

    def forward(self, x):
        x = self.pool2(torch.relu(self.conv2(self.pool1(torch.relu(self.conv1(x))))))
        return self.fc(x.mean(dim=(2, 3)))


@pytest.fixture(scope="module")
def small_fe():
    return FrontEnd.preset("small")


@pytest.mark.parametrize("pool", [nn.MaxPool2d(2), nn.AvgPool2d(2)])
def test_frequency_and_time_pooled_geometry(small_fe, pool):
    """Two 2x2 pools (floor on odd sizes): cell i is centred on input position 4 i + 1.5
    along both axes (0.5 then 1.5 from the two half-cell phases)."""
    torch.manual_seed(0)
    model = Explainable(PoolingCNN(pool).eval(), small_fe, probe_seconds=2.0)
    assert model.default_layer == "pool2"
    g = model.layer().geometry
    assert g == LayerGeometry(Axis(4.0, 1.5), Axis(4.0, 1.5), (0, 64))


def test_frequency_pooled_hot_cell_lands_on_its_seconds_and_hertz(small_fe):
    torch.manual_seed(0)
    model = Explainable(PoolingCNN(nn.MaxPool2d(2)).eval(), small_fe, probe_seconds=2.0)
    g = model.layer().geometry
    proj = Projection(small_fe, small_fe.listening_stft())
    frames = 1 + 32_000 // 256  # 2 s
    cells = (frames) // 4
    heat = torch.zeros(1, 16, cells)
    heat[0, 6, 10] = 1.0
    grid = proj(heat, g, frames)[0]
    # time: cell 10 is centred on feature frame 41.5 = sample 41.5 * 256
    t = grid.amax(dim=0)
    assert float(t.max()) > 0 and set(t.nonzero().squeeze(1).tolist()) <= set(range(38, 46))
    assert t[41] == pytest.approx(t[42])  # symmetric about 41.5
    # frequency: row 6 is centred on mel band 25.5; the bins it reaches lie in bands 21..29
    from listenable.frontends.filterbanks import mel_centres

    edges = mel_centres(64, 0.0, 8_000.0, "slaney")
    f = small_fe.listening_stft().frequencies()
    hot = grid.amax(dim=1) > 0
    assert float(f[hot].min()) >= float(edges[21]) and float(f[hot].max()) <= float(edges[31])


class TimeOnly(nn.Module):
    """Frequency folded into channels: a (batch, channels, frames) layer."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(64, 16, 5, stride=2, padding=2)
        self.fc = nn.Linear(16, 2)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x[:, 0])).mean(dim=2))


def test_time_only_layer_covers_every_frequency(small_fe):
    torch.manual_seed(0)
    model = Explainable(TimeOnly().eval(), small_fe, probe_seconds=2.0)
    g = model.layer("conv").geometry
    assert g.time == Axis(2.0, 0.0) and g.rows == (0, 64)
    proj = Projection(small_fe, small_fe.listening_stft())
    heat = torch.zeros(1, 1, 63)
    heat[0, 0, 20] = 1.0
    grid = proj(heat, g, 126)[0]
    assert (grid[1:-1, 40] == 1.0).all()  # cell 20 = feature frame 40, every covered bin
    assert grid[:, 38].max() < 1 and grid[:, 43].max() == 0
