"""The attribution method family: hand-computed cases on tiny fixed-weight models, Captum as
an oracle where it has the method, and every method end to end through ``explain``."""

import copy

import numpy as np
import pytest
import torch
from captum.attr import IntegratedGradients as CaptumIG
from captum.attr import LayerGradientXActivation
from captum.attr import Saliency as CaptumSaliency
from torch import nn

from listenable import explain
from listenable.cams import (
    METHODS,
    EigenCAM,
    GradCAM,
    GradCAMPlusPlus,
    HiResCAM,
    IntegratedGradients,
    LayerCAM,
    MultiScaleCAM,
    RandomCAM,
    Saliency,
    ScoreCAM,
    SmoothGrad,
    XGradCAM,
    get_method,
)
from listenable.cams.base import capture_layers, feature_floor, frozen_parameters
from listenable.cams.eigencam import principal_projection
from listenable.cams.scorecam import channel_masks
from listenable.geometry import Axis, Layer, LayerGeometry, feature_geometry
from listenable.projection import Projection
from tests.conftest import explainable, scene_like

X = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])  # (1, 1, 2, 2)


class TinyNet(nn.Module):
    """features (b, 1, 2, 2) → layer: A0 = x, A1 = −x → class 0: Σ A0 + 3 A1[0, 0];
    class 1: Σ A1."""

    def __init__(self):
        super().__init__()
        self.layer = nn.Conv2d(1, 2, kernel_size=1, bias=False)
        with torch.no_grad():
            self.layer.weight[:] = torch.tensor([1.0, -1.0]).view(2, 1, 1, 1)

    def forward(self, x):
        a = self.layer(x)
        s0 = a[:, 0].sum(dim=(1, 2)) + 3 * a[:, 1, 0, 0]
        s1 = a[:, 1].sum(dim=(1, 2))
        return torch.stack([s0, s1], dim=1)


def tiny():
    """TinyNet as an Explainable: its 2 x 2 layer grid is declared (nothing to probe)."""
    net = TinyNet()
    return explainable(
        net, n_mels=2, layers={"layer": Layer("layer", net.layer, feature_geometry(2))}
    )


class LinearNet(nn.Module):
    """logit_c = Σ_{ch, f, t} w[c, ch] x[ch, f, t]: input gradients are the constants w."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor([[2.0, -1.0], [0.5, 3.0]]))

    def forward(self, x):
        return torch.einsum("bcft,kc->bk", x, self.w)


class TwoScaleNet(nn.Module):
    """One event, two time scales. ``fine`` keeps every 2nd frame (stride 2, centres on even
    frames); ``top`` averages it down three more times (stride 16); logits = ± mean(top)."""

    def __init__(self):
        super().__init__()
        self.fine = nn.Conv2d(1, 1, (1, 3), stride=(1, 2), padding=(0, 1), bias=False)
        with torch.no_grad():
            self.fine.weight[:] = torch.tensor([0.0, 1.0, 0.0]).view(1, 1, 1, 3)
        pool = dict(kernel_size=(1, 3), stride=(1, 2), padding=(0, 1), count_include_pad=False)
        self.top = nn.Sequential(*(nn.AvgPool2d(**pool) for _ in range(3)))

    def forward(self, x):
        score = self.top(self.fine(x)).mean(dim=(1, 2, 3))
        return torch.stack([score, -score], dim=1)


def _hooks(model):
    return sum(len(m._forward_hooks) + len(m._backward_hooks) for m in model.modules())


FAST = {"integrated_gradients": {"n_steps": 4}, "smoothgrad": {"n_samples": 2}}


def _fast(name, model):
    """A method instance that keeps the tests fast: Score-CAM reads a 24-channel layer, the
    path methods take few steps."""
    layer = "low.stage1" if name == "scorecam" else "fusion"
    method = get_method(name)(model, layer, **FAST.get(name, {}))
    if not method.uses_spectrum:
        return method
    return lambda x, target=None: method(x, target, spectrum=_spectrum_for(x))


def _spectrum_for(features, seed=0):
    """A complex spectrum ``(batch, 2, 1025, frames + 8)`` for a method that re-runs the
    model on masked audio (its values need not match ``features`` for these tests)."""
    batch, frames = features.shape[0], features.shape[-1] + 8
    g = torch.Generator().manual_seed(seed)
    return torch.complex(*torch.randn(2, batch, 2, 1025, frames, generator=g))


# --- the gradient-weighted CAMs -------------------------------------------------------------


def test_gradcam_plus_plus_hand_computed():
    acts = torch.ones(1, 3, 2, 2) * 0.5  # Σ A_k = 2 for every channel
    grads = torch.stack([torch.full((2, 2), g) for g in (1.0, -1.0, 0.5)])[None]
    # w = Σ_ij g · g²/(2g² + S g³) = N g / (2 + S g): 4/4 = 1; 0 (ReLU); 2/3
    w = GradCAMPlusPlus.weights(None, acts, grads)
    torch.testing.assert_close(w, torch.tensor([[1.0, 0.0, 2 / 3]]))
    # TinyNet class 0: channel 0 has g = 1, S = 10 → w = 4/12; channel 1 has g = 3 at one
    # position and S = −10: 2·9 − 10·27 < 0 → a = 0, w = 0. Map = x / 3.
    result = GradCAMPlusPlus(tiny(), "layer")(X, target=0)
    torch.testing.assert_close(result.heatmap, X[:, 0] / 3)


def test_hirescam_and_layercam_hand_computed():
    acts = torch.tensor([[[[1.0, 2.0]], [[3.0, -1.0]]]])  # (1, 2, 1, 2)
    grads = torch.tensor([[[[1.0, -1.0]], [[-2.0, 2.0]]]])
    # HiResCAM: [1·1 + (−2)·3, (−1)·2 + 2·(−1)] = [−5, −4]
    torch.testing.assert_close(
        HiResCAM.cam_image(None, acts, grads, None, None), torch.tensor([[[-5.0, -4.0]]])
    )
    # LayerCAM: [1·1 + 0·3, 0·2 + 2·(−1)] = [1, −2]
    torch.testing.assert_close(
        LayerCAM.cam_image(None, acts, grads, None, None), torch.tensor([[[1.0, -2.0]]])
    )
    # TinyNet class 0: dS/dA0 = 1, dS/dA1 = 3 at (0, 0) → x − 3x δ00 = [[−2, 2], [3, 4]]
    for cls in (HiResCAM, LayerCAM):
        result = cls(tiny(), "layer")(X, target=0)
        torch.testing.assert_close(result.heatmap, torch.tensor([[[0.0, 2.0], [3.0, 4.0]]]))


def test_xgradcam_hand_computed():
    acts = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    grads = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])
    torch.testing.assert_close(XGradCAM.weights(None, acts, grads), torch.tensor([[0.5]]))
    # TinyNet class 0: w0 = Σ x / Σ x = 1, w1 = 3·(−1) / (−10) = 0.3 → map = 0.7 x
    result = XGradCAM(tiny(), "layer")(X, target=0)
    torch.testing.assert_close(result.heatmap, 0.7 * X[:, 0])


def test_hirescam_equals_captum_gradient_x_activation(model10):
    x = torch.randn(2, 6, 128, 40)
    ours = HiResCAM(model10, "fusion")(x, target=3).heatmap
    ref = LayerGradientXActivation(model10, model10.fusion).attribute(x, target=3)
    torch.testing.assert_close(ours, torch.relu(ref.sum(dim=1)).detach(), rtol=1e-4, atol=1e-8)


def test_capture_layers_one_backward_equals_separate(model10):
    """Hooking several layers at once gives each the gradient a single-layer hook gives."""
    x = torch.randn(1, 6, 128, 24)
    layers = ["fusion", "low.stage3", "high.stage2"]
    modules = [dict(model10.named_modules())[n] for n in layers]
    with frozen_parameters(model10):
        logits, acts = capture_layers(model10, modules, x, requires_grad=True)
        together = torch.autograd.grad(logits[0, 4], acts)
        for module, grad in zip(modules, together):
            logits, (act,) = capture_layers(model10, [module], x, requires_grad=True)
            (alone,) = torch.autograd.grad(logits[0, 4], act)
            torch.testing.assert_close(grad, alone)
    assert _hooks(model10) == 0


# --- Score-CAM ------------------------------------------------------------------------------


def test_scorecam_masks_use_the_mapping_geometry():
    maps = torch.tensor([[[0.0, 2.0, 4.0], [1.0, 1.0, 1.0]]])  # (1 channel, 2 rows, 3 frames)
    # stride 2 (3 frames ← 6): centres on frames 0, 2, 4; frame 5 holds the last value;
    # normalised by the channel's range 0..4; rows placed on bands [1, 3) of 4
    geometry = LayerGeometry(Axis(2.0, 0.0), Axis(1.0, 1.0), (1, 3))
    masks = channel_masks(maps, geometry, n_mels=4, frames=6)
    expected = torch.tensor(
        [
            [0.0] * 6,
            [0.0, 0.25, 0.5, 0.75, 1.0, 1.0],
            [0.25] * 6,
            [0.0] * 6,
        ]
    )
    torch.testing.assert_close(masks, expected[None])
    flat = channel_masks(
        torch.ones(1, 2, 3), LayerGeometry(Axis(2.0, 0.0), Axis(1.0, 0.0), (0, 2)), 2, 6
    )
    assert flat.abs().max() == 0  # flat → empty


def test_scorecam_hand_computed():
    net = tiny()
    # floor = min x = 1. A0 = x → mask (x − 1)/3 → x0 = [[1, 4/3], [7/3, 4]];
    # A1 = −x → mask (4 − x)/3 → x1 = [[1, 5/3], [5/3, 1]]; x_b = ones.
    # logits (s0 = Σ x − 3 x00, s1 = −Σ x): x0 → (17/3, −26/3), x1 → (7/3, −16/3), x_b → (1, −4)
    logits = torch.tensor([[17 / 3, -26 / 3], [7 / 3, -16 / 3], [1.0, -4.0]])
    p = torch.softmax(logits, dim=1)[:, 0]
    w = p[:2] - p[2]
    result = ScoreCAM(net, "layer")(X, target=0)
    torch.testing.assert_close(result.heatmap, torch.relu((w[0] - w[1]) * X[:, 0]))
    w = torch.softmax(logits[:2, 0], dim=0)
    result = ScoreCAM(net, "layer", weighting="softmax", batch_size=1)(X, target=0)
    torch.testing.assert_close(result.heatmap, torch.relu((w[0] - w[1]) * X[:, 0]))


def test_scorecam_batching_and_bands(model10):
    x = torch.randn(2, 6, 128, 12)
    a = ScoreCAM(model10, "high.stage1", batch_size=32)(x, target=[1, 5])
    b = ScoreCAM(model10, "high.stage1", batch_size=7)(x, target=[1, 5])
    torch.testing.assert_close(a.heatmap, b.heatmap, rtol=1e-4, atol=1e-7)
    assert a.heatmap.shape == (2, 64, 6)
    top = ScoreCAM(model10, "fusion")(torch.randn(1, 6, 128, 8))
    assert top.heatmap.shape == (1, 128, 1) and torch.isfinite(top.heatmap).all()
    with pytest.raises(ValueError, match="weighting"):
        ScoreCAM(model10, weighting="bogus")


# --- Eigen-CAM ------------------------------------------------------------------------------


def test_eigencam_rank_one_hand_computed():
    u = torch.tensor([[1.0, 2.0, 6.0], [0.0, 3.0, 0.0]])  # positions, mean 2
    v = torch.tensor([1.0, 2.0, 2.0])  # channels, |v| = 3
    acts = (v[:, None, None] * u)[None]  # (1, 3, 2, 3)
    # centred rows (u − ū) vᵀ: first right singular vector ±v/3 → map ±3 (u − ū); the sign
    # makes the map correlate with the channel mean (mean v) u
    torch.testing.assert_close(principal_projection(acts)[0], 3 * (u - 2), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(principal_projection(-acts)[0], -3 * (u - 2), rtol=1e-5, atol=1e-5)


def test_eigencam_matches_a_numpy_reference(model10):
    x = torch.randn(2, 6, 128, 24)
    result = EigenCAM(model10, "low.stage4")(x)
    _, (acts,) = capture_layers(model10, [model10.low.stage4], x, requires_grad=False)
    for b in range(2):
        a = acts[b].numpy().reshape(acts.shape[1], -1).T.astype(np.float64)
        a = a - a.mean(axis=0)
        _, _, vt = np.linalg.svd(a, full_matrices=False)
        ref = torch.from_numpy(np.abs(a @ vt[0])).float().view(acts.shape[2:])
        ours = principal_projection(acts[b : b + 1])[0].abs()
        torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-5)
    assert result.heatmap.shape == (2, 64, 2)


# --- input gradients ------------------------------------------------------------------------


def test_input_gradients_on_a_linear_model():
    net = explainable(LinearNet(), n_mels=3, channels=2)
    x = torch.rand(1, 2, 3, 4) * 5
    floor = x.amin(dim=(2, 3), keepdim=True)
    w = net.module.w.detach()[1]  # target 1: gradient w[1, ch] everywhere
    torch.testing.assert_close(
        Saliency(net)(x, target=1).heatmap, w.abs().sum().expand(1, 3, 4).clone()
    )
    # IG of a linear model is exact: w ⊙ (x − floor)
    expected = (w.view(1, 2, 1, 1) * (x - floor)).abs().sum(dim=1)
    torch.testing.assert_close(IntegratedGradients(net, n_steps=3)(x, target=1).heatmap, expected)
    # SmoothGrad of a linear model: the gradient does not depend on the noise
    torch.testing.assert_close(
        SmoothGrad(net, n_samples=4)(x, target=1).heatmap, Saliency(net)(x, target=1).heatmap
    )
    assert net.module.w.grad is None and net.module.w.requires_grad


def test_saliency_and_integrated_gradients_equal_captum(model10):
    x = torch.randn(1, 6, 128, 24)
    ours = Saliency(model10)(x, target=2).heatmap
    ref = CaptumSaliency(model10).attribute(x.clone().requires_grad_(), target=2).sum(dim=1)
    torch.testing.assert_close(ours, ref.detach(), rtol=1e-4, atol=1e-8)
    ours = IntegratedGradients(model10, n_steps=8, internal_batch_size=3)(x, target=2).heatmap
    ref = CaptumIG(model10).attribute(
        x, baselines=feature_floor(x), target=2, n_steps=8, method="gausslegendre"
    )
    torch.testing.assert_close(ours, ref.abs().sum(dim=1).detach(), rtol=1e-3, atol=1e-6)
    assert ours.shape == (1, 128, 24)
    assert all(p.grad is None for p in model10.parameters())


def test_smoothgrad_seeded_and_zero_noise_is_saliency(model10):
    x = torch.randn(1, 6, 128, 16)
    a = SmoothGrad(model10, seed=3)(x, target=1).heatmap
    torch.testing.assert_close(a, SmoothGrad(model10, seed=3)(x, target=1).heatmap)
    assert not torch.allclose(a, SmoothGrad(model10, seed=4)(x, target=1).heatmap)
    torch.testing.assert_close(
        SmoothGrad(model10, noise_level=0.0, n_samples=2)(x, target=1).heatmap,
        Saliency(model10)(x, target=1).heatmap,
    )


# --- random ---------------------------------------------------------------------------------


def test_random_is_seeded_and_has_the_top_grid(model10, rng):
    x = torch.randn(2, 6, 128, 40)
    a = RandomCAM(model10)(x).heatmap
    assert a.shape == (2, 128, 3)
    torch.testing.assert_close(a, RandomCAM(model10, seed=0)(x).heatmap)
    assert not torch.allclose(a, RandomCAM(model10, seed=1)(x).heatmap)
    clip = torch.from_numpy(scene_like(rng, seconds=1.0))
    e = explain(clip, model10, method="random", mode="hard", threshold_on="stft")
    assert abs(float(e.mask_area) - 0.25) < 0.02


# --- multiscale -----------------------------------------------------------------------------


def _time_profile(heatmap, geometry, mapping):
    """Projected heatmap → its time profile on the STFT frames, peak 1."""
    grid = mapping(heatmap, geometry, 86)[0].mean(dim=0)  # no deltas: frame j = STFT frame j
    return grid / grid.max()


def test_multiscale_is_sharper_in_time_on_a_planted_event():
    net = explainable(TwoScaleNet(), n_mels=128)
    x = torch.full((1, 1, 128, 86), 0.1)
    x[..., 40:44] = 1.0  # the event: feature frames 40–43 (= STFT frames: no deltas)
    event = torch.zeros(86, dtype=torch.bool)
    event[40:44] = True
    mapping = Projection(net.front_end, net.listening)
    coarse = GradCAM(net, "top")(x, target=0)
    sharp = MultiScaleCAM(net, "top", fine_layers=[["fine"]])(x, target=0)
    assert coarse.heatmap.shape == (1, 128, 6) and sharp.heatmap.shape == (1, 128, 43)
    assert coarse.geometry.time == Axis(16.0, 0.0) and sharp.geometry.time == Axis(2.0, 0.0)
    coarse = _time_profile(coarse.heatmap, coarse.geometry, mapping)
    sharp = _time_profile(sharp.heatmap, sharp.geometry, mapping)
    assert bool(event[sharp.argmax()])
    # frames above half the peak: within a frame of the event for multiscale; Grad-CAM's
    # 1/16 grid smears them over more than 8 frames beyond it
    above = (sharp > 0.5).nonzero().squeeze(1)
    assert 39 <= int(above.min()) and int(above.max()) <= 44
    above = (coarse > 0.5).nonzero().squeeze(1)
    assert int(above.min()) < 40 - 8 and int(above.max()) > 43 + 8


def test_multiscale_hand_computed():
    """TwoScaleNet's derived geometry: ``top`` cells on feature frames 0, 16, ``fine`` cells on
    0, 2, 4, ...; the top map is interpolated onto the fine centres (1/8 of a top cell each)."""
    net = explainable(TwoScaleNet(), n_mels=1)
    cam = MultiScaleCAM(net, "top", fine_layers=[["fine"]], time_gate=False)
    ones = torch.ones(1, 1, 1, 2)
    top = torch.tensor([[[[2.0, 1.0]]]])  # Grad-CAM, weight 1: [2, 1] → at 0, 2, 4: [2, 15/8, 7/4]
    fine = torch.tensor([[[[1.0, 4.0, 0.0]]]])  # HiResCAM, gradient 1: [1, 4, 0]
    # normalised [1, 15/16, 7/8] and [1/4, 1, 0] → geometric mean [√(1/4), √(15/16), 0]
    out = cam.cam_image((top, fine), (ones, torch.ones(1, 1, 1, 3)), None, None)
    torch.testing.assert_close(out, torch.tensor([[[0.5, (15 / 16) ** 0.5, 0.0]]]))
    # fine evidence only where the top map is zero: the top map alone, not an empty map
    top = torch.tensor([[[[2.0, -1.0]]]])  # ReLU → [2, 0] → at 0, 2, ..., 16: 2 (1 − j/8)
    fine = torch.zeros(1, 1, 1, 9)
    fine[..., 8] = 3.0  # only at frame 16, where the top map is 0
    out = cam.cam_image((top, fine), (ones, torch.ones(1, 1, 1, 9)), None, None)
    torch.testing.assert_close(out, (1 - torch.arange(9.0) / 8)[None, None])
    # the time gate: P × (frequency mean of P / its peak), on two rows
    cam = MultiScaleCAM(explainable(TwoScaleNet(), n_mels=2), "top", fine_layers=[["fine"]])
    top = torch.tensor([[[[2.0, 1.0], [0.0, 1.0]]]])
    fine = torch.ones(1, 1, 2, 3)
    ones = torch.ones(1, 1, 2, 2)
    out = cam.cam_image((top, fine), (ones, torch.ones(1, 1, 2, 3)), None, None)
    # top at 0, 2, 4, over its peak 2: [[1, 15/16, 7/8], [0, 1/16, 1/8]]; P = √(top_n · 1)
    p = torch.tensor([[1.0, 15 / 16, 7 / 8], [0.0, 1 / 16, 1 / 8]]).sqrt()
    profile = p.mean(dim=0)
    torch.testing.assert_close(out[0], p * profile / profile.max())


def test_multiscale_resolution_and_layers(model10):
    x = torch.randn(1, 6, 128, 86)
    cam = MultiScaleCAM(model10)
    result = cam(x, target=4)
    assert cam.geometry.rows == (0, 128) and cam.geometry.time == Axis(4.0, 0.0)
    assert result.heatmap.shape == (1, 128, 22)  # stride 4, vs gradcam's stride 16
    assert GradCAM(model10)(x, target=4).heatmap.shape == (1, 128, 6)
    assert torch.isfinite(result.heatmap).all() and (result.heatmap >= 0).all()
    coarse_only = MultiScaleCAM(model10, fine_layers=[["low.stage3", "high.stage3"]])(x, target=4)
    assert coarse_only.heatmap.shape == (1, 128, 11)
    with pytest.raises(ValueError, match="tile"):
        MultiScaleCAM(model10, fine_layers=[["low.stage2"]])
    with pytest.raises(ValueError, match="fine_method"):
        MultiScaleCAM(model10, fine_method="nope")


# --- every method ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_through_explain(model10, rng, name):
    clip = torch.from_numpy(scene_like(rng, seconds=1.0))  # 47 STFT frames, 39 feature frames
    layer = "low.stage1" if name == "scorecam" else "fusion"
    e = explain(clip, model10, method=name, layer=layer)
    assert e.mask.shape == (1025, 47)
    assert torch.isfinite(e.mask).all() and 0 <= float(e.mask.min()) <= float(e.mask.max()) <= 1
    frames = {"saliency": 39, "integrated_gradients": 39, "smoothgrad": 39}
    frames |= {"multiscale": 10, "optimised": 10}
    rows = 64 if name == "scorecam" else 128
    assert e.heatmap.shape == (rows, frames.get(name, 20 if name == "scorecam" else 3))
    assert torch.isfinite(e.heatmap).all() and (e.heatmap >= 0).all()
    assert e.target == int(e.probabilities.argmax())
    assert _hooks(model10) == 0


@pytest.mark.parametrize("name", sorted(METHODS))
def test_hooks_removed_and_no_parameter_gradients(model10, name):
    method = _fast(name, model10)
    method(torch.randn(1, 6, 128, 16), target=1)
    assert _hooks(model10) == 0
    with pytest.raises(RuntimeError):
        method(torch.randn(1, 5, 128, 16))  # wrong channel count: the model raises
    assert _hooks(model10) == 0
    assert all(p.grad is None and p.requires_grad for p in model10.parameters())


@pytest.fixture(scope="module")
def model64(model10):
    """A float64 copy of the session's model: the batch and its items then agree to ~1e-15
    whatever kernels each batch size gets, far below the float32 the maps are returned in."""
    return copy.deepcopy(model10).double()


@pytest.mark.parametrize(
    "name",
    ["gradcam++", "scorecam", "eigencam", "integrated_gradients", "smoothgrad", "multiscale"],
)
def test_batch_equals_items(model64, name):
    """Each clip of a batch gets the map it gets alone. In float64: a batch of one runs other
    kernels, and float32 rounding would pass through ReLU gates and multiscale's square root
    (≈ √ of the error near zero); clips coupled by the batch would differ everywhere."""
    x = torch.randn(2, 6, 128, 16, generator=torch.Generator().manual_seed(0)).double()
    method = _fast(name, model64)
    batch = method(x, target=[3, 6])
    for i, t in enumerate([3, 6]):
        one = method(x[i : i + 1], target=t)
        peak = float(one.heatmap.abs().max())
        # float64 results ~1e-13 of the peak apart, rounded to float32 once: equal or one ulp
        # apart (2^-23 relative); multiscale's √ turns 1e-13 near zero into ≤ 3e-7 of the peak
        torch.testing.assert_close(
            batch.heatmap[i : i + 1], one.heatmap, rtol=2**-23, atol=1e-6 * peak
        )
        # O(1) logits, float64 rounding then one float32 rounding
        torch.testing.assert_close(batch.logits[i : i + 1], one.logits, rtol=2**-23, atol=1e-12)


def test_unknown_method():
    with pytest.raises(ValueError, match="unknown method"):
        get_method("gradcam+++")
