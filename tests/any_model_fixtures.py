"""Importable ``module:function`` factories for ``tests/test_any_model.py``: what a user's
``--model tests.any_model_fixtures:NAME`` would name. Small and seeded, so a CLI run and
an in-process run build the same weights.

Shapes:
    features  (batch, 1, 64, frames)   ``FrontEnd.preset("small")``
    pool1     (batch, 8, 32, frames // 2)
    pool2     (batch, 16, 16, frames // 4)
    scores    (batch, 3)
"""

from __future__ import annotations

import torch
from torch import nn

from listenable.frontends import FrontEnd
from listenable.models import Explainable

CLASSES = ["cat", "dog", "bird"]


class PooledNet(nn.Module):
    """A user's own model over the small front end's features that pools frequency with
    ``MaxPool2d(2)`` twice (the kind the reference-only code refused: a heatmap of 16 or
    32 rows cannot be laid on 64 mel bands without the layer's geometry)."""

    def __init__(self, n_classes: int = 3, in_channels: int = 1) -> None:
        super().__init__()
        self.conv1, self.pool1 = nn.Conv2d(in_channels, 8, 3, padding=1), nn.MaxPool2d(2)
        self.conv2, self.pool2 = nn.Conv2d(8, 16, 3, padding=1), nn.MaxPool2d(2)
        self.fc = nn.Linear(16, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool2(torch.relu(self.conv2(self.pool1(torch.relu(self.conv1(x))))))
        return self.fc(x.mean(dim=(2, 3)))


def _seeded(n_classes: int = 3, in_channels: int = 1) -> PooledNet:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = PooledNet(n_classes, in_channels)
    with torch.no_grad():  # class 0 always leads by far: "not the top class" is known
        net.fc.bias.copy_(torch.tensor([20.0] + [0.0] * (n_classes - 1)))
    return net.eval()


def pooled_net() -> nn.Module:
    """An ``nn.Module`` (needs ``--front-end small``), with class names as an attribute."""
    net = _seeded()
    net.class_names = list(CLASSES)
    return net


def pooled_net_stereo() -> nn.Module:
    """The same over the reference front end's 6 channels (stereo log-mel + deltas, 48 kHz):
    ``--front-end mcdonnell_gao``."""
    net = _seeded(in_channels=6)
    net.class_names = list(CLASSES)
    return net


def pooled_explainable() -> Explainable:
    """The same model already wrapped, with its front end and class names."""
    return Explainable(_seeded(), FrontEnd.preset("small"), class_names=CLASSES, probe_seconds=2.0)


def tagger() -> Explainable:
    """A multi-label tagger (sigmoid) over the same features: five tags."""
    tags = [f"tag{i}" for i in range(5)]
    return Explainable(
        _seeded(len(tags)), FrontEnd.preset("small"), activation="sigmoid",
        class_names=tags, probe_seconds=2.0,
    )  # fmt: skip


def not_a_model() -> str:
    return "a string, not a model"
