"""The hot path's fast implementations equal their plain references (benchmarks/pipeline.py
measures the speed; these check the values)."""

import copy

import numpy as np
import pytest
import torch

from listenable.explain import Explainer
from listenable.frontends import FrontEnd
from listenable.geometry import Axis, LayerGeometry
from listenable.masking import binarise, heatmap_to_mask, kth_smallest, normalise, percentile
from listenable.projection import Projection

#: the reference model's ``fusion`` layer: cell i on feature frame 16 i, one row per mel band
FUSION = LayerGeometry(Axis(16.0, 0.0), Axis(1.0, 0.0), (0, 128))


def _projection():
    fe = FrontEnd.preset("mcdonnell_gao")
    return Projection(fe, fe.listening_stft())


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
    feats = FrontEnd.preset("mcdonnell_gao").listening_stft()
    wave = torch.from_numpy(rng.standard_normal((batch, 2, length))).float()
    spec = feats(wave) * torch.from_numpy(rng.random((batch, 1, 1025, 1))).float()
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
    heat = torch.relu(torch.from_numpy(rng.standard_normal((3, 128, 29))).float())
    heat[2] = 0.0  # a flat clip
    grid = _projection()(heat, FUSION, 469)  # frame-major, as the explainer gets it
    normed, empty = normalise(grid)
    expected = binarise(normed, mode=mode, empty=empty)
    for g in (grid, grid.contiguous()):
        mask, got_empty = heatmap_to_mask(g.clone(), mode=mode, inplace=True)
        # sub and div round correctly and amin, amax, kthvalue are exact, so M and θ are the
        # same bits in either memory order; only sigmoid's vectorised and scalar exp may
        # differ, by a few float32 ulps of a value ≤ 1 (≤ 4 · 2^-24 < 1e-6)
        torch.testing.assert_close(mask, expected, rtol=0, atol=1e-6)
        assert got_empty.tolist() == [False, False, True]
    silent = torch.tensor([True, False, False])
    mask, got_empty = heatmap_to_mask(grid, mode=mode, empty=silent)
    assert got_empty.tolist() == [True, False, True] and mask[0].abs().max() == 0


def test_time_matrices_cache_is_bounded():
    mapping = _projection()
    for frames in range(40, 40 + 2 * mapping.max_time_entries):
        cam_frames = -(-(frames - 8) // 16)
        mapping(torch.rand(1, 128, cam_frames), FUSION, frames)
    assert len(mapping._time_cache) == mapping.max_time_entries
    assert len(mapping._freq_cache) == 1


#: float32 unit roundoff
U32 = 2.0**-24
#: float32 reductions in another order (convolution kernels, batch sizes): ≲ √K·u ≈ 2.5e-6
#: of the terms per layer (K ≤ 3·3·192 = 1728), over the ~17 layers below ``fusion``
#: ≲ 1e-5; the CAM's channel sum may cancel 10× more: 1e-4 of the map's peak
HEAT32 = 1e-4
#: |M − θ| > this: the slope-100 sigmoid is < 1 % or > 99 %, far from a flip
MARGIN = 0.05


def _float64(model, features=None):
    """float64 copies of the model and the front end (the session's model10 stays float32):
    two orders of summation then agree to ~1e-15, far below one float32 rounding."""
    return copy.deepcopy(model).double(), (features or FrontEnd.preset("mcdonnell_gao")).double()


def _same_in_float64(got, ref, waves):
    """Two float64 explanations of ``waves`` agree to float32 rounding: the heatmap (float64
    values ~1e-15 apart, rounded to float32 once: equal or one ulp apart), the mask computed
    from it, and the listenable output, which is linear in the mask."""
    peak = float(ref.heatmap.abs().max())
    # one float32 rounding: ≤ 2^-23 relative; float64 cancellation near 0: ≪ 1e-9 of the peak
    torch.testing.assert_close(got.heatmap, ref.heatmap, rtol=2**-23, atol=1e-9 * peak)
    # a heatmap one ulp off moves M − θ by ≤ 8 ulps of 1 (mapping, min, span, θ); the
    # slope-100 sigmoid multiplies that by ≤ 100 / 4
    torch.testing.assert_close(got.mask, ref.mask, rtol=0, atol=25 * 8 * U32)
    # linear in the mask: a mask difference ε moves a sample by ≤ √n_fft · ε · max|x|
    # (Cauchy–Schwarz over a frame's bins), plus float64 rounding
    eps = float((got.mask - ref.mask).abs().max())
    scale = float(waves.abs().max())
    atol = 2048**0.5 * eps * scale + 1e-12 * scale
    torch.testing.assert_close(got.listenable, ref.listenable, rtol=0, atol=atol)
    torch.testing.assert_close(got.probabilities, ref.probabilities, rtol=0, atol=1e-12)
    assert got.target.tolist() == ref.target.tolist()


def _agree_in_float32(got, ref, soft_ref):
    """Two float32 explanations from other kernels: the continuous heatmaps agree to float32
    rounding; the masks on every bin ≥ ``MARGIN`` from θ (``soft_ref.mask`` is ``ref``'s
    normalised grid M): there both lie within σ(−100 · (MARGIN − 0.01)) = σ(−4) of the same
    end as long as M − θ moved by < 0.01, 100× the heatmap's tolerance."""
    for i in range(len(ref)):
        g, r, m = got.item(i), ref.item(i), soft_ref.item(i)
        torch.testing.assert_close(
            g.heatmap, r.heatmap, rtol=0, atol=HEAT32 * float(r.heatmap.max())
        )
        if r.settings["threshold_on"] == "heatmap":  # θ over the cells, M on their range
            cells = r.heatmap.double().flatten()
            cells = (cells - cells.min()) / (cells.max() - cells.min())
            theta = torch.quantile(cells, 0.75).float()
        else:
            theta = torch.quantile(m.mask.flatten().double(), 0.75).float()
        margin = (m.mask - theta).abs() > MARGIN
        # a case that says something (a map zero on > 75 % of the grid has θ = 0: its floor
        # bins sit on θ, where a ReLU'd cell that rounds to +1e-12 instead of 0 flips them)
        assert float(margin.float().mean()) > 0.1
        flip = float(torch.sigmoid(torch.tensor(-100 * (MARGIN - 0.01))))
        assert float((g.mask - r.mask)[margin].abs().max()) < flip
        # the logits are O(1) and agree to ≲ 1e-5 (as the activations); softmax is
        # 1/2-Lipschitz in the max norm
        torch.testing.assert_close(g.probabilities, r.probabilities, rtol=0, atol=1e-5)
        assert g.target == r.target


def test_explainer_options_keep_the_explanation(model10, clip):
    """``channels_last`` changes the convolution kernels only: in float64 the explanation is
    the same to float32 rounding; in float32 (as it runs) the heatmap agrees to float32
    rounding and the mask on every bin with a margin from θ. (A mask compared bin for bin
    in float32 would test rounding: a bin at θ flips with it.)"""
    wave = torch.from_numpy(clip)[None]
    model64, front64 = _float64(model10)
    base = Explainer(model64, channels_last=False, front_end=front64, method="layercam")(
        wave.double()
    )
    fast = Explainer(model64, front_end=front64, method="layercam")(wave.double())
    _same_in_float64(fast, base, wave)
    base = Explainer(model10, channels_last=False, method="layercam")(wave)
    soft = Explainer(model10, channels_last=False, mode="soft", method="layercam")(wave)
    _agree_in_float32(Explainer(model10, method="layercam")(wave), base, soft)
    logits = Explainer(model10, method="layercam").logits(
        wave
    )  # the forward alone, as the benchmark's limit
    torch.testing.assert_close(torch.softmax(logits, 1), base.probabilities, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="precision"):
        Explainer(model10, precision="fp16", method="layercam")


def test_cam_batch_passes_equal_one_pass(model10, rng):
    """Passes of ``cam_batch`` clips explain each clip as one pass over the whole batch does:
    exactly so in float64; in float32 the batch sizes' kernels differ, so as
    :func:`test_explainer_options_keep_the_explanation`."""
    from tests.conftest import scene_like

    waves = torch.from_numpy(np.stack([scene_like(rng, seconds=1.0) for _ in range(3)]))
    model64, front64 = _float64(model10)
    whole = Explainer(model64, front_end=front64, method="layercam")(
        waves.double(), target=[1, 2, 3]
    )
    split = Explainer(model64, front_end=front64, cam_batch=2, method="layercam")(
        waves.double(), target=[1, 2, 3]
    )
    assert split.target.tolist() == [1, 2, 3]
    _same_in_float64(split, whole, waves)
    whole = Explainer(model10, method="layercam")(waves, target=[1, 2, 3])
    soft = Explainer(model10, mode="soft", method="layercam")(waves, target=[1, 2, 3])
    split = Explainer(model10, cam_batch=2, method="layercam")(waves, target=[1, 2, 3])
    assert split.target.tolist() == [1, 2, 3]
    _agree_in_float32(split, whole, soft)
    with pytest.raises(ValueError, match="cam_batch"):
        Explainer(model10, cam_batch=0, method="layercam")
