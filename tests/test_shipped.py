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
