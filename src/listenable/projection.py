"""From a layer's map to the listening STFT, through seconds and hertz.

The paper's "size information", for any front end and any layer: every cell of the layer
has a time centre and a frequency response (:mod:`listenable.geometry` places it on the
front end's frames and rows; the front end says where those are in samples and hertz),
and every bin of the listening STFT has a frequency and every frame a time. Both steps are
linear, so the projection is two matrices, ``grid = F @ heatmap @ Tᵀ``, cached per geometry:

* **Time** ``T (frames, cells)``: listening frame ``k`` (centred on sample ``hop_l · k``)
  interpolates linearly between the two cells whose centres (in samples) surround it and
  holds the end values beyond the first and last centre. For the reference model's
  ``fusion`` layer, cell ``i`` sits on STFT frame ``16 i + 4``.
* **Frequency** ``F (bins, rows)``: each listening bin takes the response-weighted mean of
  the feature rows covering it, ``Σ_m W[m, k] C[m] / Σ_m W[m, k]`` with ``W`` the front
  end's filterbank evaluated at the bin's frequency (bins no row covers take the row whose
  centre is nearest); the feature rows ``C`` are interpolated from the layer's rows (their
  centres, held at the ends), and are zero outside the rows the layer sees. A layer without
  a frequency axis covers every frequency its rows see. A plain image resize would put mel
  band 100 of 128 at ~18.7 kHz instead of its true 9–11 kHz.

Shapes:
    heatmap  (batch, rows, cells)
    grid     (batch, bins, frames)    on the listening STFT
"""

from __future__ import annotations

import torch

from listenable.frontends import STFT, FrontEnd
from listenable.geometry import Axis, LayerGeometry

__all__ = ["Projection", "interpolation", "frequency_weights", "row_matrix", "to_grid"]


def interpolation(targets: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """``(len(targets), len(centres))`` linear interpolation from values at increasing
    ``centres`` onto ``targets`` (same units), holding the end values."""
    n = len(centres)
    mat = torch.zeros(len(targets), n, dtype=torch.float64)
    rows = torch.arange(len(targets))
    if n == 1:
        mat[:, 0] = 1.0
        return mat
    position = torch.searchsorted(centres, targets, right=True) - 1  # left neighbour
    left = position.clamp(0, n - 2)
    span = centres[left + 1] - centres[left]
    frac = ((targets - centres[left]) / span).clamp(0.0, 1.0)
    mat[rows, left] += 1 - frac
    mat[rows, left + 1] += frac
    return mat


def frequency_weights(front_end: FrontEnd, frequencies: torch.Tensor) -> torch.Tensor:
    """``(bins, n_rows)``: each bin's convex weights over the front end's feature rows."""
    response = front_end.row_response(frequencies)  # (rows, bins)
    cover = response.sum(dim=0)
    mat = (response / cover.clamp_min(1e-30)).T.clone()
    uncovered = cover <= 0
    if bool(uncovered.any()):
        centres = front_end.row_centres()
        nearest = (frequencies[uncovered, None] - centres[None, :]).abs().argmin(dim=1)
        mat[uncovered] = 0.0
        mat[uncovered.nonzero().squeeze(1), nearest] = 1.0
    return mat


def row_matrix(geometry: LayerGeometry, rows: int, n_rows: int) -> torch.Tensor:
    """``(n_rows, rows)``: a layer's rows → the front end's ``n_rows`` feature rows,
    interpolated between the rows' centres and zero outside the rows the layer sees."""
    start, stop = geometry.rows
    if geometry.freq is None or rows == 1:
        mat = torch.zeros(n_rows, rows, dtype=torch.float64)
        mat[start:stop] = 1.0 / rows
        return mat
    mat = interpolation(torch.arange(n_rows, dtype=torch.float64), geometry.freq.centres(rows))
    mat[:start] = 0.0
    mat[stop:] = 0.0
    return mat


def to_grid(
    heatmap: torch.Tensor, geometry: LayerGeometry, n_rows: int, centres: torch.Tensor
) -> torch.Tensor:
    """``(batch, rows, cells)`` → ``(batch, n_rows, len(centres))``: onto the feature rows and
    the feature-frame positions ``centres`` (to mask features, or to put the maps of several
    layers on one grid)."""
    rows, cells = heatmap.shape[-2:]
    rmat = row_matrix(geometry, rows, n_rows).to(heatmap.device, heatmap.dtype)
    if cells == len(centres) and torch.equal(geometry.time.centres(cells), centres):
        return rmat @ heatmap
    tmat = interpolation(centres, geometry.time.centres(cells)).to(heatmap.device, heatmap.dtype)
    return rmat @ heatmap @ tmat.T


class Projection:
    """Maps layer maps onto ``listening``'s grid, through ``front_end``'s geometry.

    The frequency matrix is cached per geometry, rows, device and dtype; the time matrix per
    geometry and clip length (the most recent :attr:`max_time_entries`).
    """

    max_time_entries = 64

    def __init__(self, front_end: FrontEnd, listening: STFT) -> None:
        if listening.sample_rate != front_end.sample_rate:
            raise ValueError("the listening STFT and the front end run at different rates")
        self.front_end = front_end
        self.listening = listening
        self._weights = frequency_weights(front_end, listening.frequencies())  # (bins, rows)
        self._freq_cache: dict[tuple, torch.Tensor] = {}
        self._time_cache: dict[tuple, torch.Tensor] = {}

    def time_matrix(self, axis: Axis, cells: int, frames: int) -> torch.Tensor:
        """``(frames, cells)``: layer cells → listening frames, through samples."""
        centres_frames = axis.centres(cells)  # in feature frames
        fe = self.front_end
        start = fe.frame_centres(1)[0]  # sample of feature frame 0
        centres = start + centres_frames * fe.hop_length
        return interpolation(self.listening.frame_centres(frames), centres)

    def matrices(
        self, geometry: LayerGeometry, shape: tuple[int, int], frames: int, *, device=None,
        dtype=torch.float32,
    ) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        """``(F, T)``: ``F (bins, rows)`` and ``T (frames, cells)``."""
        rows, cells = shape
        where = (str(device), dtype)
        fkey = (geometry.freq, geometry.rows, rows, *where)
        freq = self._freq_cache.get(fkey)
        if freq is None:
            freq = self._weights @ row_matrix(geometry, rows, self.front_end.n_mels)
            freq = self._freq_cache[fkey] = freq.to(device, dtype)
        tkey = (geometry.time, cells, frames, *where)
        tmat = self._time_cache.pop(tkey, None)
        if tmat is None:
            tmat = self.time_matrix(geometry.time, cells, frames).to(device, dtype)
            while len(self._time_cache) >= self.max_time_entries:
                self._time_cache.pop(next(iter(self._time_cache)))
        self._time_cache[tkey] = tmat
        return freq, tmat

    def __call__(self, heatmap: torch.Tensor, geometry: LayerGeometry, frames: int) -> torch.Tensor:
        """``(batch, rows, cells)`` → ``(batch, bins, frames)``, laid out frame-major in
        memory (a transposed view, like the spectrum ``torch.stft`` returns), so that masking
        the spectrum runs over matching strides."""
        freq, tmat = self.matrices(
            geometry, tuple(heatmap.shape[-2:]), frames, device=heatmap.device,
            dtype=heatmap.dtype,
        )  # fmt: skip
        return (tmat @ (freq @ heatmap).mT).mT
