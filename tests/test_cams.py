import pytest
import torch
from captum.attr import LayerGradCam
from torch import nn

from listenable.cams import GradCAM
from listenable.frontends import FrontEnd
from listenable.geometry import Layer, feature_geometry
from listenable.models import Explainable


class TinyNet(nn.Module):
    """features (b, 1, 2, 2) -> layer = identity copy with 2 channels -> linear score."""

    def __init__(self):
        super().__init__()
        self.layer = nn.Conv2d(1, 2, kernel_size=1, bias=False)
        with torch.no_grad():
            self.layer.weight[:] = torch.tensor([1.0, -1.0]).view(2, 1, 1, 1)
        self.n_classes = 2

    def forward(self, x):
        a = self.layer(x)  # (b, 2, 2, 2): A0 = x, A1 = -x
        # class 0 score: sum(A0) + 3 * A1[0,0];  class 1: sum(A1)
        s0 = a[:, 0].sum(dim=(1, 2)) + 3 * a[:, 1, 0, 0]
        s1 = a[:, 1].sum(dim=(1, 2))
        return torch.stack([s0, s1], dim=1)


def tiny(net):
    """The tiny model as an Explainable whose layer's grid is declared (it has none to probe)."""
    layer = Layer("layer", net.layer, feature_geometry(2))
    return Explainable(net, FrontEnd.preset("small"), layers={"layer": layer})


def test_gradcam_hand_computed():
    net = tiny(TinyNet().eval())
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    # class 0: dS/dA0 = 1 everywhere -> alpha0 = 1; dS/dA1 = 3 at (0,0) -> alpha1 = 3/4
    # map = 1 * x + 0.75 * (-x) = 0.25 x
    result = GradCAM(net, "layer")(x, target=0)
    torch.testing.assert_close(result.heatmap, 0.25 * x[:, 0])
    # class 1: alpha0 = 0, alpha1 = 1 -> map = relu(-x) = 0
    result = GradCAM(net, "layer")(x, target=1)
    assert result.heatmap.abs().max() == 0
    # predicted class: s0 = 10 - 3 = 7, s1 = -10 -> class 0
    assert GradCAM(net, "layer")(x).target.tolist() == [0]


def test_gradcam_equals_captum_on_fusion(model10):
    x = torch.randn(2, 6, 128, 120)
    for target in (0, 7):
        ours = GradCAM(model10, "fusion")(x, target=target).heatmap
        ref = LayerGradCam(model10, model10.fusion).attribute(
            x, target=target, relu_attributions=True
        )
        torch.testing.assert_close(ours, ref[:, 0].detach(), rtol=1e-4, atol=1e-9)


def test_gradcam_inside_a_path_equals_captum(model10):
    x = torch.randn(1, 6, 128, 120)
    ours = GradCAM(model10, "low.stage3")(x, target=2).heatmap
    ref = LayerGradCam(model10, model10.low.stage3).attribute(x, target=2, relu_attributions=True)
    torch.testing.assert_close(ours, ref[:, 0].detach(), rtol=1e-4, atol=1e-9)
    assert ours.shape == (1, 64, 15)  # 120 frames, stride 8


def _hooks(model):
    return sum(len(m._forward_hooks) + len(m._backward_hooks) for m in model.modules())


def test_hooks_removed_after_success_and_error(model10):
    cam = GradCAM(model10, "fusion")
    cam(torch.randn(1, 6, 128, 40))
    assert _hooks(model10) == 0
    with pytest.raises(RuntimeError):
        cam(torch.randn(1, 5, 128, 40))  # wrong channel count: the model raises
    assert _hooks(model10) == 0
    assert all(p.requires_grad for p in model10.parameters())


def test_no_parameter_gradients(model10):
    GradCAM(model10, "fusion")(torch.randn(1, 6, 128, 40), target=1)
    assert all(p.grad is None for p in model10.parameters())


def test_batch_equals_items(model10):
    x = torch.randn(3, 6, 128, 60)
    batch = GradCAM(model10)(x, target=[1, 2, 3]).heatmap
    for i, t in enumerate([1, 2, 3]):
        one = GradCAM(model10)(x[i : i + 1], target=t).heatmap
        torch.testing.assert_close(batch[i : i + 1], one, rtol=1e-4, atol=1e-10)


def test_bad_layer_and_target(model10):
    with pytest.raises(ValueError, match="no layer"):
        GradCAM(model10, "nonexistent")
    with pytest.raises(ValueError, match="out of range"):
        GradCAM(model10)(torch.randn(1, 6, 128, 40), target=12)
