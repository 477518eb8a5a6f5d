"""The model that ships with the package."""

import torch

from listenable import load_checkpoint
from listenable.data.scenes import CLASSES, render_clip
from listenable.frontends import FrontEnd
from listenable.models import count_parameters


def test_shipped_checkpoint_loads_and_names_its_classes():
    model, meta = load_checkpoint()
    assert meta["class_names"] == list(CLASSES)
    assert model.class_names == list(CLASSES)
    assert sum(count_parameters(model)) == 3_254_468  # the full network, never a smaller one
    prov = meta["provenance"]
    assert prov["command"].startswith("listenable train") and "--seed 0" in prov["command"]
    assert prov["data_command"].startswith("listenable scenes")
    assert meta["training"]["precise_bn"] is True


def test_shipped_model_classifies_unseen_scenes():
    """One fresh clip per class from a seed used neither in training nor in the README's
    accuracy measurement; the README reports the full number."""
    model, _ = load_checkpoint()
    waves = torch.stack([torch.from_numpy(render_clip(4242, c, 0).mixture) for c in range(10)])
    with torch.no_grad():
        predicted = model(FrontEnd.preset("mcdonnell_gao")(waves)).argmax(dim=1)
    assert int((predicted == torch.arange(10)).sum()) >= 8


def test_the_small_shipped_model_is_another_family_at_16_khz():
    """The second shipped model: a SmallCNN (< 1 M parameters) over 16 kHz mono dB mels,
    with its command, seed, history and unseen-seed accuracy in its JSON; it classifies
    fresh scenes resampled and mixed down as a user's file would be."""
    import numpy as np
    import soxr

    from listenable import load_explainable

    model = load_explainable("small")
    meta = model.checkpoint_meta
    assert meta["architecture"]["name"] == "SmallCNN"
    assert sum(p.numel() for p in model.parameters()) <= 1_000_000
    assert model.front_end.settings == FrontEnd.preset("small").settings
    prov = meta["provenance"]
    assert "--architecture small" in prov["command"] and "--seed 0" in prov["command"]
    assert prov["unseen_seed_score"]["accuracy"] >= 0.9 and meta["training"]["history"]
    clips = [render_clip(4242, c, 0).mixture for c in range(10)]  # 48 kHz stereo
    mono = [soxr.resample(x.mean(axis=0), 48_000, 16_000) for x in clips]
    waves = torch.from_numpy(np.stack(mono)[:, None].astype(np.float32))
    with torch.no_grad():
        predicted = model(model.inputs(waves)).argmax(dim=1)
    assert int((predicted == torch.arange(10)).sum()) >= 8
    assert model.default_layer == "block4"
