"""Deprecated: the mapping is :class:`listenable.projection.Projection` now (geometry in
samples and hertz). Kept only so that old imports keep working."""

from __future__ import annotations

from listenable.geometry import Axis, LayerGeometry
from listenable.projection import Projection

__all__ = ["SpectrogramMapping"]


class SpectrogramMapping(Projection):
    """The old call ``mapping(heatmap, frames, mel_bands)`` for power-of-two time strides
    of the reference model's layers."""

    def __init__(self, features) -> None:
        super().__init__(features, features.listening_stft())
        self.features = features

    def __call__(self, heatmap, frames, mel_bands=None):
        start, stop = mel_bands or (0, self.front_end.n_mels)
        cells = heatmap.shape[-1]
        feature_frames, stride = frames - 2 * self.front_end.frame_offset, 1
        while feature_frames > cells:
            feature_frames, stride = (feature_frames + 1) // 2, stride * 2
        geometry = LayerGeometry(Axis(float(stride), 0.0), Axis(1.0, float(start)), (start, stop))
        return super().__call__(heatmap, geometry, frames)
