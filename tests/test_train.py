import json

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F

from listenable.data import folder_dataset
from listenable.errors import CheckpointError, UsageError
from listenable.frontends import FrontEnd
from listenable.train import (
    TrainConfig,
    learning_rate,
    mixup,
    random_crop,
    swap_channels,
    train,
)


def test_learning_rate_cosine_warm_restarts():
    cfg = TrainConfig()
    spe = 10  # steps per epoch
    assert learning_rate(0, spe, cfg) == pytest.approx(0.1)
    assert learning_rate(10, spe, cfg) == pytest.approx(0.1 * 0.5 + 1e-5 * 0.5)  # mid-cycle 1
    assert learning_rate(19, spe, cfg) < 0.002  # end of the first 2-epoch cycle
    assert learning_rate(20, spe, cfg) == pytest.approx(0.1)  # restart
    assert learning_rate(40, spe, cfg) == pytest.approx(0.1 * 0.5 + 1e-5 * 0.5)  # cycle 2: 4 ep
    assert learning_rate(60, spe, cfg) == pytest.approx(0.1)  # cycle 3 starts at epoch 6
    assert learning_rate(139, spe, cfg) < 1e-4  # 2 + 4 + 8 = 14 epochs end near lr_min


def test_crop_swap_mixup_shapes_and_labels():
    g = torch.Generator().manual_seed(0)
    x = torch.arange(2 * 6 * 4 * 461, dtype=torch.float32).view(2, 6, 4, 461)
    crop = random_crop(x, 400, g)
    assert crop.shape == (2, 6, 4, 400)
    for b in range(2):  # each crop is a contiguous window of the original
        start = int(crop[b, 0, 0, 0] - x[b, 0, 0, 0])
        torch.testing.assert_close(crop[b], x[b, ..., start : start + 400])
    swapped = swap_channels(x, 1.0, g)
    torch.testing.assert_close(swapped[:, [0, 2, 4]], x[:, [1, 3, 5]])
    assert torch.equal(swap_channels(x, 0.0, g), x)
    y = F.one_hot(torch.tensor([0, 1]), 3).float()
    xm, ym = mixup(x, y, 0.4, g)
    assert xm.shape == x.shape and ym.shape == y.shape
    torch.testing.assert_close(ym.sum(dim=1), torch.ones(2))
    # labels are mixed with the same per-example lambda as the features: with one-hot labels
    # e0, e1 the mixed label's entries are exactly the weights of clip 0 and clip 1
    for b in range(2):
        torch.testing.assert_close(xm[b], ym[b, 0] * x[0] + ym[b, 1] * x[1])
    assert not torch.equal(xm, x) or torch.equal(ym, y)


def test_one_step_lowers_the_loss():
    from listenable.models import McDonnellGao
    from listenable.train import _param_groups

    torch.manual_seed(0)
    model = McDonnellGao(n_classes=3).train()
    x = torch.randn(4, 6, 128, 32)
    y = torch.tensor([0, 1, 2, 0])
    opt = torch.optim.SGD(_param_groups(model, 2e-3), lr=0.01, momentum=0.9)
    before = F.cross_entropy(model(x), y)
    opt.zero_grad()
    before.backward()
    opt.step()
    after = F.cross_entropy(model(x), y)
    assert after < before
    decayed = opt.param_groups[0]["params"]
    assert all(p.ndim == 4 for p in decayed)  # weight decay on conv kernels only
    assert all(p.ndim == 1 for p in opt.param_groups[1]["params"])


@pytest.fixture
def tiny_tree(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "data"
    for k, name in enumerate(("a", "b")):
        (root / name).mkdir(parents=True)
        for i in range(2):
            t = np.arange(24_000) / 48_000
            x = 0.1 * np.sin(2 * np.pi * (300 + 2000 * k) * t) + 0.01 * rng.standard_normal(24_000)
            sf.write(root / name / f"{i}.wav", np.stack([x, x], 1), 48_000)
    return root


def test_resume_continues_the_schedule(tiny_tree, tmp_path):
    """Training 2 epochs, stopping, and resuming to 3 equals training 3 epochs straight."""
    data = folder_dataset(tiny_tree)
    cfg = dict(batch_size=2, crop_frames=8, seed=1)
    lrs_straight, lrs_resumed = [], []
    train(
        data,
        tmp_path / "straight.safetensors",
        TrainConfig(epochs=3, **cfg),
        on_batch=lambda s: lrs_straight.append(s["lr"]),
    )
    train(
        data,
        tmp_path / "resumed.safetensors",
        TrainConfig(epochs=2, **cfg),
        on_batch=lambda s: lrs_resumed.append(s["lr"]),
    )
    train(
        data,
        tmp_path / "resumed.safetensors",
        TrainConfig(epochs=3, **cfg),
        resume=True,
        on_batch=lambda s: lrs_resumed.append(s["lr"]),
    )
    assert lrs_resumed == pytest.approx(lrs_straight)
    assert len(lrs_straight) == 6
    from listenable.checkpoint import load_checkpoint

    a, meta = load_checkpoint(tmp_path / "straight.safetensors")
    b, _ = load_checkpoint(tmp_path / "resumed.safetensors")
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5, msg=name)
    assert meta["class_names"] == ["a", "b"]
    assert meta["architecture"]["name"] == "McDonnellGao"
    assert FrontEnd.from_settings(meta["front_end"]).settings == (
        FrontEnd.preset("mcdonnell_gao").settings
    )
    assert meta["training"]["epochs_done"] == 3
    assert meta["training"]["crop_frames"] == 8
    history = json.loads((tmp_path / "straight.history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2, 3]


def test_architectures_resolve_their_front_end_and_crop():
    reference = TrainConfig().resolved()
    assert reference.architecture == "McDonnellGao"
    assert reference.crop_frames == 400  # of 461: the recipe as published
    assert reference.lr_max == 0.1
    assert TrainConfig().front_end().settings == FrontEnd.preset("mcdonnell_gao").settings
    for name in ("small", "SmallCNN"):
        small = TrainConfig(architecture=name).resolved()
        assert small.architecture == "SmallCNN"
        assert small.crop_frames == 544  # of 626: the reference's 87 %, a multiple of 16
        assert small.lr_max == 0.01
        assert small.front_end().settings == FrontEnd.preset("small").settings
    assert TrainConfig(architecture="reference", crop_frames=12).resolved().crop_frames == 12
    with pytest.raises(UsageError, match="unknown architecture"):
        TrainConfig(architecture="resnet").resolved()
    with pytest.raises(UsageError, match="crop_frames"):
        TrainConfig(crop_frames=0).resolved()
    with pytest.raises(UsageError, match="lr_max"):
        TrainConfig(lr_max=float("nan")).resolved()
    assert learning_rate(0, 10, TrainConfig(architecture="small")) == pytest.approx(0.01)
    with pytest.raises(ValueError, match="stereo"):
        swap_channels(torch.zeros(1, 3, 2, 2), 0.5, torch.Generator())


def test_small_cnn_trains_resumes_and_ships_its_front_end(tiny_tree, tmp_path):
    """A SmallCNN run: clips load at 16 kHz mono, the checkpoint's JSON has the
    architecture, the small front end and the history; resume follows the same lr curve."""
    from listenable.checkpoint import load_checkpoint, load_explainable
    from listenable.models import SmallCNN

    data = folder_dataset(tiny_tree)
    cfg = dict(
        architecture="small",
        batch_size=2,
        crop_frames=16,
        seed=3,
        precise_bn_batches=1,
        model_options={"widths": (4, 8, 8, 8)},
        extra={"provenance": {"command": "listenable train DATA --architecture small"}},
    )
    lrs_straight, lrs_resumed = [], []
    straight = train(
        data,
        tmp_path / "straight.safetensors",
        TrainConfig(epochs=2, **cfg),
        on_batch=lambda s: lrs_straight.append(s["lr"]),
    )
    assert data.front_end.settings == FrontEnd.preset("small").settings
    assert data[0][0].shape == (1, 8_000)  # 0.5 s at 16 kHz, mono
    train(
        data,
        tmp_path / "resumed.safetensors",
        TrainConfig(epochs=1, **cfg),
        on_batch=lambda s: lrs_resumed.append(s["lr"]),
    )
    resumed = train(
        data,
        tmp_path / "resumed.safetensors",
        TrainConfig(epochs=2, **cfg),
        resume=True,
        on_batch=lambda s: lrs_resumed.append(s["lr"]),
    )
    assert len(lrs_straight) == 4
    assert lrs_resumed == pytest.approx(lrs_straight)
    a, meta = load_checkpoint(straight)
    b, _ = load_checkpoint(resumed)
    assert isinstance(a, SmallCNN)
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5, msg=name)
    assert meta["architecture"] == {
        "name": "SmallCNN",
        "n_classes": 2,
        "n_mels": 64,
        "widths": [4, 8, 8, 8],
        "dropout": a.dropout,
    }
    assert FrontEnd.from_settings(meta["front_end"]).settings == FrontEnd.preset("small").settings
    training = meta["training"]
    assert training["architecture"] == "SmallCNN" and training["crop_frames"] == 16
    assert training["epochs_done"] == 2 and training["precise_bn"] is True
    assert [h["epoch"] for h in training["history"]] == [1, 2]
    assert meta["provenance"]["command"].endswith("--architecture small")
    explainable = load_explainable(straight)
    assert explainable.front_end.sample_rate == 16_000 and explainable.front_end.channels == 1
    # resuming as another architecture is refused, not silently mixed
    with pytest.raises(CheckpointError, match="cannot resume"):
        train(
            data,
            resumed,
            TrainConfig(epochs=3, **{**cfg, "model_options": {"widths": (4, 8, 8, 16)}}),
            resume=True,
        )
