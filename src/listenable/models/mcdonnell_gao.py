"""The McDonnell & Gao (ICASSP 2020) ResNet for acoustic scene classification.

DCASE 2019 Task 1A open-source award. Two parallel pre-activation ResNet paths for the low
(mel 0–63) and high (mel 64–127) bands, time-only down-sampling, late fusion by
concatenation along frequency, 1×1 convolutions and global average pooling.

Shapes:
    features  (batch, 6, 128, frames)
    fusion    (batch, 192, 128, frames')     frames' = ceil(frames / 16); 29 for 461
    logits    (batch, n_classes)

3,247,416 trainable parameters + 7,052 BN running statistics = 3,254,468 for 10 classes,
as their Keras model counts.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["McDonnellGao", "explainable", "FINE_LAYERS"]

BN_EPS = 1e-3
BN_MOMENTUM = 0.01  # PyTorch convention (Keras momentum 0.99)
#: The multi-scale method's layer groups: stage 3 (time stride 8) and stage 2 (stride 4) of
#: both band paths; each group tiles the 128 mel bands.
FINE_LAYERS = (("low.stage3", "high.stage3"), ("low.stage2", "high.stage2"))


def _bn(channels: int, affine: bool = False) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM, affine=affine)


def _conv3x3(cin: int, cout: int, stride: tuple[int, int] = (1, 1)) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


class ResidualBlock(nn.Module):
    """``[BN → ReLU → Conv3×3] × 2`` plus a shortcut.

    A block that halves time (stride (1, 2)) and widens the channels has the shortcut
    ``AvgPool 3×3, stride (1, 2), padding 1 (count_include_pad=False)`` followed by
    zero-padding of the new channels.
    """

    def __init__(self, cin: int, cout: int, downsample: bool) -> None:
        super().__init__()
        stride = (1, 2) if downsample else (1, 1)
        self.bn1 = _bn(cin)
        self.conv1 = _conv3x3(cin, cout, stride)
        self.bn2 = _bn(cout)
        self.conv2 = _conv3x3(cout, cout)
        self.downsample = downsample
        self.extra_channels = cout - cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv1(F.relu(self.bn1(x)))
        y = self.conv2(F.relu(self.bn2(y)))
        shortcut = x
        if self.downsample:
            shortcut = F.avg_pool2d(x, 3, stride=(1, 2), padding=1, count_include_pad=False)
        if self.extra_channels:
            shortcut = F.pad(shortcut, (0, 0, 0, 0, 0, self.extra_channels))
        return y + shortcut


class Path(nn.Module):
    """One band path: BN(affine) → Conv 6→24 stride (1, 2) → 4 stages of 2 blocks."""

    def __init__(self, in_channels: int = 6, widths: tuple[int, ...] = (24, 48, 96, 192)) -> None:
        super().__init__()
        self.bn = _bn(in_channels, affine=True)
        self.conv = _conv3x3(in_channels, widths[0], stride=(1, 2))
        stages = []
        cin = widths[0]
        for i, width in enumerate(widths):
            down = i > 0
            stages.append(
                nn.Sequential(ResidualBlock(cin, width, down), ResidualBlock(width, width, False))
            )
            cin = width
        self.stage1, self.stage2, self.stage3, self.stage4 = stages

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(self.bn(x))
        return self.stage4(self.stage3(self.stage2(self.stage1(x))))


class Fusion(nn.Module):
    """Concatenate the two paths along frequency: low bands first, then high."""

    def forward(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        return torch.cat([low, high], dim=2)


class McDonnellGao(nn.Module):
    """The reference scene classifier. ``model(features)`` returns pre-softmax logits.

    Submodules by name (usable as CAM layers): ``low``/``high`` (the band paths, each with
    ``stage1``–``stage4``), ``fusion`` (the fused top map, the default CAM layer) and
    ``head``.
    """

    def __init__(self, n_classes: int = 10, n_mels: int = 128, in_channels: int = 6) -> None:
        super().__init__()
        if n_mels % 2:
            raise ValueError(f"n_mels must be even (two band paths), got {n_mels}")
        self.n_classes = n_classes
        self.n_mels = n_mels
        self.split = n_mels // 2
        self.low = Path(in_channels)
        self.high = Path(in_channels)
        self.fusion = Fusion()
        self.head = nn.Sequential(
            _bn(192),
            nn.ReLU(),
            nn.Conv2d(192, 768, kernel_size=1, bias=False),
            _bn(768),
            nn.Conv2d(768, n_classes, kernel_size=1, bias=False),
            _bn(n_classes),
        )

    @property
    def architecture(self) -> dict:
        return {"name": "McDonnellGao", "n_classes": self.n_classes, "n_mels": self.n_mels}

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        fused = self.fusion(
            self.low(features[:, :, : self.split]), self.high(features[:, :, self.split :])
        )
        return self.head(fused).mean(dim=(2, 3))


def explainable(model: McDonnellGao, front_end=None, **options):
    """The reference model as an :class:`~listenable.models.Explainable`: its features
    (:meth:`FrontEnd.preset("mcdonnell_gao") <listenable.frontends.FrontEnd.preset>` unless
    a checkpoint says otherwise), softmax scores, the ``fusion`` layer by default and the
    band-path layers the multi-scale method reads. The geometry of every layer (the band
    paths' halves of the mel axis, the time strides) is derived from the network."""
    from listenable.frontends import FrontEnd
    from listenable.models.explainable import Explainable

    front_end = front_end or FrontEnd.preset("mcdonnell_gao", n_mels=model.n_mels)
    options = {"layer": "fusion", "fine_layers": FINE_LAYERS, "name": "mcdonnell_gao"} | options
    return Explainable(model, front_end, activation="softmax", **options)


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """``(trainable parameters, BN running statistics)``, as Keras counts them."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    stats = sum(
        b.numel()
        for name, b in model.named_buffers()
        if name.endswith(("running_mean", "running_var"))
    )
    return trainable, stats
