"""The small shipped model: a plain CNN over 16 kHz mono log-mel in dB that pools frequency
and time — a family unlike the reference network (which keeps all 128 mel bands to the
top), so that the projection's frequency strides are exercised by a model people can run.

Input ``(batch, 1, 64, frames)`` from ``FrontEnd.preset("small")`` (64 Slaney mels in dB,
n_fft 512, hop 256). Four blocks of ``[Conv 3×3 → BN → ReLU] × 2`` with 24, 48, 96, 192
channels, each followed by a 2×2 average pool, except the last, which pools time only
(1×2): ``block4`` is ``(batch, 192, 8, frames / 16)``. Head: mean over frequency, mean +
max over time, dropout, linear. Convolutions He-initialised (``fan_out``, as torchvision),
so that the recipe's SGD does not blow up the small default weights. About 0.66 M
parameters.

Shapes:
    features  (batch, 1, 64, frames)
    block4    (batch, 192, 8, frames // 16)
    logits    (batch, n_classes)
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["SmallCNN", "explainable"]


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, pool: tuple[int, int]) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.pool = nn.AvgPool2d(pool)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.pool(x)


class SmallCNN(nn.Module):
    """See the module docstring. ``model(features)`` returns pre-softmax logits."""

    def __init__(
        self,
        n_classes: int = 10,
        n_mels: int = 64,
        widths: tuple[int, ...] = (24, 48, 96, 192),
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        if not 1 <= n_classes <= 10_000 or not 16 <= n_mels <= 512:
            raise ValueError("need 1 <= n_classes <= 10000 and 16 <= n_mels <= 512")
        self.n_classes = int(n_classes)
        self.n_mels = int(n_mels)
        self.widths = tuple(int(w) for w in widths)
        self.dropout = float(dropout)
        self.bn0 = nn.BatchNorm2d(1)
        blocks, cin = [], 1
        for i, width in enumerate(self.widths):
            pool = (1, 2) if i == len(self.widths) - 1 else (2, 2)
            blocks.append(Block(cin, width, pool))
            cin = width
        self.block1, self.block2, self.block3, self.block4 = blocks
        self.drop = nn.Dropout(self.dropout)
        self.fc = nn.Linear(cin, n_classes)
        for module in self.modules():  # He init (torchvision's): PyTorch's default is ~2.4x
            if isinstance(module, nn.Conv2d):  # smaller, and BN then amplifies each update
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    @property
    def architecture(self) -> dict:
        return {
            "name": "SmallCNN",
            "n_classes": self.n_classes,
            "n_mels": self.n_mels,
            "widths": list(self.widths),
            "dropout": self.dropout,
        }

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = self.bn0(features)
        x = self.block4(self.block3(self.block2(self.block1(x))))
        x = x.mean(dim=2)  # (batch, channels, frames)
        x = x.mean(dim=2) + x.amax(dim=2)
        return self.fc(self.drop(x))


def explainable(model: SmallCNN, front_end=None, **options):
    """The small model as an :class:`~listenable.models.Explainable` (softmax scores,
    ``block4`` by default, ``block3`` / ``block2`` for the multi-scale method)."""
    from listenable.frontends import FrontEnd
    from listenable.models.explainable import Explainable

    front_end = front_end or FrontEnd.preset("small", n_mels=model.n_mels)
    options = {
        "layer": "block4",
        "fine_layers": (("block3",), ("block2",)),
        "name": "small",
    } | options
    return Explainable(model, front_end, activation="softmax", **options)
