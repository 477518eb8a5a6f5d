"""Properties (hypothesis): masks stay in [0, 1]; listenable + residual = input; the mapping
keeps frequency and time order and is convex; no NaN for any finite input.

Sizes are tiny and examples few (the explain properties run the real McDonnell-Gao model on
0.5-1 s clips); ``deadline=None`` because a forward's time depends on the machine's load.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from listenable.errors import AudioError
from listenable.explain import explain
from listenable.frontends import FrontEnd
from listenable.geometry import Axis, LayerGeometry
from listenable.io import MAX_PEAK, MIN_SAMPLES, SAMPLE_RATE
from listenable.masking import MODES, binarise, normalise
from listenable.projection import Projection

FEW = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FEWER = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
#: float32 values whose pairwise differences stay finite (|a - b| < 3.4e38)
BOUND = float(np.float32(1e37))


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Many small forwards: a second intra-op thread only adds waiting on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --------------------------------------------------------------------------- masks

heatmaps = arrays(
    np.float32,
    st.tuples(st.integers(1, 3), st.integers(1, 6), st.integers(1, 6)),
    elements=st.floats(-BOUND, BOUND, width=32),
)


@FEW
@given(
    x=heatmaps,
    mode=st.sampled_from(MODES),
    q=st.floats(0.0, 100.0),
    delta=st.floats(0.0, 30.0),
)
def test_masks_stay_in_unit_interval(x, mode, q, delta):
    normed, empty = normalise(torch.from_numpy(x))
    assert torch.isfinite(normed).all() and normed.min() >= 0 and normed.max() <= 1
    mask = binarise(normed, mode=mode, percentile_=q, delta=delta, empty=empty)
    assert mask.shape == x.shape
    assert torch.isfinite(mask).all() and mask.min() >= 0 and mask.max() <= 1
    assert not mask[empty].any()  # a flat heatmap keeps nothing


def test_huge_delta_gives_a_mask_or_a_refusal():
    normed = torch.tensor([[[0.0, 0.5, 1.0]]])  # theta = 0.5: one bin sits exactly on it
    mask = binarise(normed, mode="sigmoid", percentile_=50.0, delta=30.0)  # the largest
    assert torch.isfinite(mask).all() and mask.flatten().tolist() == [0.0, 0.5, 1.0]
    with pytest.raises(ValueError, match="delta must be in"):
        binarise(normed, mode="sigmoid", percentile_=50.0, delta=39.0)


def test_normalise_full_float32_range():
    """max − min of float32 values beyond ±1.7e38 would overflow to inf (inf / inf = NaN):
    normalise works on half the range."""
    normed, _ = normalise(torch.tensor([[[-3e38, 0.0, 3e38]]]))
    assert torch.isfinite(normed).all()
    torch.testing.assert_close(normed, torch.tensor([[[0.0, 0.5, 1.0]]]), rtol=0, atol=2**-23)


# --------------------------------------------------------------------------- explain


def _waveform(kind: str, seconds: float, exponent: int, seed: int) -> torch.Tensor:
    """``(2, samples)`` float32 of peak ``10**exponent`` (``exponent=None``: all zero)."""
    n = max(MIN_SAMPLES, int(seconds * SAMPLE_RATE))
    rng = np.random.default_rng(seed)
    t = np.arange(n) / SAMPLE_RATE
    if kind == "noise":
        x = rng.standard_normal((2, n))
    elif kind == "sine":
        x = np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 3000 * t)])
    elif kind == "impulse":
        x = np.zeros((2, n))
        x[:, rng.integers(n)] = 1.0
    elif kind == "dc":  # the worst case for the power spectrum: all energy in one bin
        x = np.ones((2, n))
    else:  # a full-scale square wave
        x = np.sign(np.sin(2 * np.pi * 100 * t) + 1e-9)[None].repeat(2, 0)
    x = x / np.abs(x).max()
    scale = 0.0 if exponent is None else 10.0**exponent
    return torch.from_numpy((x * scale).astype(np.float32))


clips = st.builds(
    _waveform,
    kind=st.sampled_from(["noise", "sine", "impulse", "dc", "square"]),
    seconds=st.sampled_from([0.5, 0.75, 1.0]),
    exponent=st.one_of(st.none(), st.integers(-30, 3)),
    seed=st.integers(0, 2**16),
)


def _finite(expl) -> bool:
    tensors = (expl.heatmap, expl.mask, expl.listenable, expl.residual, expl.probabilities)
    return all(bool(torch.isfinite(t).all()) for t in tensors)


@FEWER
@given(wave=clips, mode=st.sampled_from(MODES))
def test_listenable_plus_residual_is_the_input(model10, wave, mode):
    expl = explain(wave, model10, mode=mode, method="layercam")
    assert _finite(expl)
    assert expl.listenable.shape == expl.residual.shape == wave.shape
    scale = float(wave.abs().max())
    torch.testing.assert_close(
        expl.listenable + expl.residual, wave, rtol=1e-5, atol=1e-6 * scale + 1e-37
    )
    assert expl.mask.min() >= 0 and expl.mask.max() <= 1
    assert float(expl.probabilities.sum()) == pytest.approx(1.0, abs=1e-5)
    if scale == 0.0:  # nothing to listen to
        assert expl.empty and not expl.listenable.any()


@FEWER
@given(
    kind=st.sampled_from(["noise", "dc", "square"]),
    exponent=st.integers(4, 38),
    seed=st.integers(0, 2**16),
    method=st.sampled_from(["layercam", "optimised"]),  # the two defaults
)
def test_any_finite_amplitude_is_explained_or_refused(model10, kind, exponent, seed, method):
    """Above 1e3 samples are no longer audio in [-1, 1]; up to ``MAX_PEAK`` the outputs stay
    finite (also through the optimised edit's passes), beyond it (where the float32 power
    spectrum overflows) the clip is refused."""
    wave = _waveform(kind, 0.5, exponent, seed)
    assert torch.isfinite(wave).all()
    if float(wave.abs().max()) > MAX_PEAK:
        with pytest.raises(AudioError, match="not audio scaled"):
            explain(wave, model10, method=method)
    else:
        assert _finite(explain(wave, model10, method=method))


# --------------------------------------------------------------------------- mapping

FEATURES = FrontEnd.preset("mcdonnell_gao")
PROJECTION = Projection(FEATURES, FEATURES.listening_stft())


def MAPPING(heatmap, frames, bands=(0, 128), halvings=4):  # noqa: N802
    """The reference model's geometry for a layer of ``halvings`` stride-2 steps on
    ``bands`` (a band path's layer: 64 rows from its first band)."""
    geometry = LayerGeometry(Axis(2.0**halvings, 0.0), Axis(1.0, float(bands[0])), bands)
    return PROJECTION(heatmap, geometry, frames)


def _cam_frames(frames: int, halvings: int = 4) -> int:
    n = frames - 2 * FEATURES.frame_offset
    for _ in range(halvings):
        n = (n + 1) // 2
    return n


def _cells(seed: int, shape: tuple[int, int], kind: str, scale: float) -> np.ndarray:
    """Heatmap cells ``(bands, cam_frames)``: drawn by numpy from a hypothesis seed (a
    128 x 120 array element by element would be slow and poorly shrunk)."""
    rng = np.random.default_rng(seed)
    if kind == "uniform":
        x = rng.uniform(-1.0, 1.0, shape)
    elif kind == "sparse":  # mostly zero, a few spikes: steps in a cumulative sum
        x = np.where(rng.random(shape) < 0.05, rng.uniform(-1.0, 1.0, shape), 0.0)
    elif kind == "zeros":
        x = np.zeros(shape)
    else:  # "heavy": magnitudes over many decades
        x = rng.standard_normal(shape) * 10.0 ** rng.uniform(-6, 0, shape)
    return x * scale


cells = st.tuples(
    st.integers(0, 2**32 - 1),
    st.sampled_from(["uniform", "sparse", "zeros", "heavy"]),
    st.sampled_from([1e-30, 1e-3, 1.0, 1e3]),
)
#: STFT frames of a 0.5-2.8 s clip and the CAM's time halvings (4 = the fused top map)
geometry = st.tuples(st.integers(24, 130), st.integers(0, 4))


@FEW
@given(geometry=geometry, cells=cells)
def test_mapping_keeps_frequency_order(geometry, cells):
    frames, halvings = geometry
    seed, kind, scale = cells
    steps = np.abs(_cells(seed, (128, _cam_frames(frames, halvings)), kind, scale))
    heatmap = torch.from_numpy(np.cumsum(steps, axis=0))[None]  # non-decreasing along mel
    grid = MAPPING(heatmap, frames, halvings=halvings)[0]
    assert grid.shape == (FEATURES.n_fft // 2 + 1, frames)
    tol = 1e-12 * float(heatmap.abs().max())
    assert (grid.diff(dim=0) >= -tol).all()


@FEW
@given(geometry=geometry, cells=cells)
def test_mapping_keeps_time_order(geometry, cells):
    frames, halvings = geometry
    seed, kind, scale = cells
    steps = np.abs(_cells(seed, (128, _cam_frames(frames, halvings)), kind, scale))
    heatmap = torch.from_numpy(np.cumsum(steps, axis=1))[None]  # non-decreasing in time
    grid = MAPPING(heatmap, frames, halvings=halvings)[0]
    tol = 1e-12 * float(heatmap.abs().max())
    assert (grid.diff(dim=1) >= -tol).all()


@FEW
@given(geometry=geometry, cells=cells, bands=st.sampled_from([(0, 128), (0, 64), (64, 128)]))
def test_mapping_is_convex(geometry, cells, bands):
    """Every STFT bin is a convex combination of heatmap cells over the full band range;
    a band path's layer (64 bands) fades to zero outside its bands: weights sum to <= 1."""
    frames, halvings = geometry
    seed, kind, scale = cells
    heatmap = _cells(seed, (bands[1] - bands[0], _cam_frames(frames, halvings)), kind, scale)
    grid = MAPPING(torch.from_numpy(heatmap)[None], frames, bands, halvings)
    low, high = heatmap.min(), heatmap.max()
    if bands != (0, 128):
        low, high = min(low, 0.0), max(high, 0.0)
    tol = 1e-12 * max(abs(low), abs(high))
    assert float(grid.min()) >= low - tol and float(grid.max()) <= high + tol
    assert torch.isfinite(grid).all()
