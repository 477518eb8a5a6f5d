import torch

from listenable.models import McDonnellGao, count_parameters


def test_parameter_counts_match_keras():
    trainable, stats = count_parameters(McDonnellGao(n_classes=10))
    assert trainable == 3_247_416
    assert stats == 7_052
    assert trainable + stats == 3_254_468


def test_shapes_and_fusion_map(model10):
    seen = {}

    def hook(module, inputs, output):
        seen["f"] = output.shape

    handle = model10.fusion.register_forward_hook(hook)
    try:
        with torch.no_grad():
            logits = model10(torch.randn(2, 6, 128, 461))
    finally:
        handle.remove()
    assert logits.shape == (2, 10)
    assert seen["f"] == (2, 192, 128, 29)


def test_variable_length(model10):
    with torch.no_grad():
        for frames in (16, 100, 400, 1000):
            assert model10(torch.randn(1, 6, 128, frames)).shape == (1, 10)
    with torch.no_grad():  # ceil-halving four times: 461 -> 231 -> 116 -> 58 -> 29
        seen = {}
        h = model10.fusion.register_forward_hook(lambda m, i, o: seen.update(f=o.shape[-1]))
        model10(torch.randn(1, 6, 128, 461))
        h.remove()
    assert seen["f"] == 29


def test_only_first_bn_of_each_path_is_affine():
    model = McDonnellGao()
    affine = [
        n for n, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d) and m.affine
    ]
    assert affine == ["low.bn", "high.bn"]
    assert all(m.bias is None for m in model.modules() if isinstance(m, torch.nn.Conv2d))


def test_paths_see_their_bands(model10):
    """Changing the high bands must not change the low path's output."""
    x = torch.randn(1, 6, 128, 64)
    y = x.clone()
    y[:, :, 64:] += 1.0
    with torch.no_grad():
        assert torch.equal(model10.low(x[:, :, :64]), model10.low(y[:, :, :64]))
        assert not torch.equal(model10(x), model10(y))
