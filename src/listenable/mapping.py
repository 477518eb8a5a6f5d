"""From the CAM grid back to the linear STFT grid, through the mel geometry.

The paper's "size information": the mel axis is a non-linear compression of the linear
frequency axis, so a plain image resize puts the evidence at the wrong frequencies. Here:

* **Frequency.** Each linear bin ``k`` takes the filterbank-weighted mean of the mel bands
  that cover it, ``Σ_m W[m, k] C[m] / Σ_m W[m, k]``; bins no band covers (0 Hz and the
  Nyquist bin) take the band whose centre is nearest.
* **Time.** CAM frame ``i`` is centred on feature frame ``stride·i`` (every stride-2,
  padding-1 convolution or pooling keeps the centres on even positions), i.e. on STFT frame
  ``stride·i + 4`` (the delta trim). Each STFT frame interpolates linearly between the two
  nearest CAM-frame centres and holds the end values beyond the first and last centre.

Both steps are linear, so the whole mapping is two small matrices,
``mask_grid = F @ heatmap @ Tᵀ``, cached per geometry.

Shapes:
    heatmap   (batch, n_mels_of_layer, cam_frames)
    result    (batch, freq_bins, frames)
"""

from __future__ import annotations

import torch

from listenable.features import LogMelDeltas, hz_to_mel, mel_to_hz

__all__ = ["SpectrogramMapping", "frequency_matrix", "time_matrix", "cam_stride"]


def frequency_matrix(
    filterbank: torch.Tensor, sample_rate: int, fmin: float, fmax: float
) -> torch.Tensor:
    """``(freq_bins, n_mels)`` matrix whose rows are convex weights over the mel bands."""
    fb = filterbank.double()  # (n_mels, bins)
    n_mels, bins = fb.shape
    cover = fb.sum(dim=0)  # (bins,)
    mat = (fb / cover.clamp_min(1e-30)).T.clone()  # (bins, n_mels)
    uncovered = cover <= 0
    if bool(uncovered.any()):
        mel_points = torch.linspace(
            float(hz_to_mel(fmin)), float(hz_to_mel(fmax)), n_mels + 2, dtype=torch.float64
        )
        centres = mel_to_hz(mel_points[1:-1])
        freqs = torch.linspace(0, sample_rate / 2, bins, dtype=torch.float64)
        nearest = (freqs[uncovered, None] - centres[None, :]).abs().argmin(dim=1)
        mat[uncovered] = 0.0
        mat[uncovered.nonzero().squeeze(1), nearest] = 1.0
    return mat


def cam_stride(feature_frames: int, cam_frames: int) -> int:
    """The time stride (a power of two) that turns ``feature_frames`` into ``cam_frames``
    by halving with ``ceil`` (stride-2 convolutions with padding 1)."""
    frames, stride = feature_frames, 1
    while frames > cam_frames:
        frames, stride = (frames + 1) // 2, stride * 2
    if frames != cam_frames:
        raise ValueError(
            f"cannot relate {cam_frames} CAM frames to {feature_frames} feature frames by "
            "stride-2 steps"
        )
    return stride


def time_matrix(frames: int, cam_frames: int, stride: int, frame_offset: int) -> torch.Tensor:
    """``(frames, cam_frames)`` linear interpolation from CAM-frame centres to STFT frames."""
    position = (torch.arange(frames, dtype=torch.float64) - frame_offset) / stride
    position = position.clamp(0, cam_frames - 1)
    left = position.floor().long().clamp(max=cam_frames - 1)
    right = (left + 1).clamp(max=cam_frames - 1)
    frac = position - left
    mat = torch.zeros(frames, cam_frames, dtype=torch.float64)
    rows = torch.arange(frames)
    mat[rows, left] += 1 - frac
    mat[rows, right] += frac
    return mat


class SpectrogramMapping:
    """Maps heatmaps of any layer onto the linear STFT grid of a :class:`LogMelDeltas`.

    The frequency matrix is cached per band range, device and dtype; the time matrix per
    clip length (the most recent :attr:`max_time_entries` lengths), so a run over clips of
    many lengths keeps one copy of the frequency matrix and a bounded cache.
    """

    #: Time matrices kept (one per clip length, device and dtype; least recently used
    #: dropped first).
    max_time_entries = 64

    def __init__(self, features: LogMelDeltas) -> None:
        self.features = features
        self._freq = frequency_matrix(
            features.filterbank, features.sample_rate, features.fmin, features.fmax
        )
        self._freq_cache: dict[tuple, torch.Tensor] = {}
        self._time_cache: dict[tuple, torch.Tensor] = {}

    def matrices(
        self,
        cam_shape: tuple[int, int],
        frames: int,
        mel_bands: tuple[int, int] | None = None,
        *,
        device=None,
        dtype=torch.float32,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(F, T)`` with ``F (freq_bins, cam_freq)`` and ``T (frames, cam_frames)``."""
        cam_freq, cam_frames = cam_shape
        start, stop = mel_bands or (0, self.features.n_mels)
        if stop - start != cam_freq:
            raise ValueError(
                f"a heatmap of {cam_freq} frequency rows cannot cover mel bands [{start}, {stop})"
            )
        where = (str(device), dtype)
        fkey = (start, stop, *where)
        freq = self._freq_cache.get(fkey)
        if freq is None:
            freq = self._freq_cache[fkey] = self._freq[:, start:stop].to(device, dtype)
        tkey = (frames, cam_frames, *where)
        tmat = self._time_cache.pop(tkey, None)
        if tmat is None:
            feature_frames = frames - 2 * self.features.frame_offset
            stride = cam_stride(feature_frames, cam_frames)
            tmat = time_matrix(frames, cam_frames, stride, self.features.frame_offset)
            tmat = tmat.to(device, dtype)
            while len(self._time_cache) >= self.max_time_entries:
                self._time_cache.pop(next(iter(self._time_cache)))
        self._time_cache[tkey] = tmat  # (re)inserted last: most recently used
        return freq, tmat

    def __call__(
        self, heatmap: torch.Tensor, frames: int, mel_bands: tuple[int, int] | None = None
    ) -> torch.Tensor:
        """``(batch, cam_freq, cam_frames)`` → ``(batch, freq_bins, frames)``.

        The result is laid out frame-major in memory (a transposed view, like the spectrum
        ``torch.stft`` returns), so that masking the spectrum runs over matching strides.
        """
        freq, tmat = self.matrices(
            tuple(heatmap.shape[-2:]), frames, mel_bands, device=heatmap.device, dtype=heatmap.dtype
        )
        return (tmat @ (freq @ heatmap).mT).mT
