"""From a heatmap on the STFT grid to a mask, and from the mask to listenable audio.

Modes (``M`` = the heatmap normalised to [0, 1] per clip, ``θ`` = its ``percentile``-th
percentile):

* ``sigmoid`` — the paper's eq. (3): ``1 / (1 + exp(−10^δ (M − θ)))``. The default
  ``δ = 2`` (slope 100) makes the mask nearly binary — a bin 0.05 above θ passes at 99 %,
  one 0.05 below at 1 % — while keeping it smooth, so the inverted audio has no hard
  spectral edges (δ = 1 leaks a lot: at M = 0, θ = 0.3 it still passes 5 %).
* ``hard`` — ``M ≥ θ``.
* ``soft`` — ``M`` itself, no threshold.

Where θ is taken (``threshold_on``):

* ``"heatmap"`` — over the heatmap's own cells (the rows × time cells the layer produced:
  for the reference model 128 mel bands × 29 cells), before they are mapped: the 75th
  percentile keeps the top quarter *of the heatmap*, each cell counting once, as the paper
  means it. The normalisation's range is the cells' too; the mapped grid (a convex
  interpolation of the cells) is then thresholded with that θ. The kept share of the linear
  STFT bins is whatever the hot cells cover: hot low mel bands cover few linear bins.
* ``"stft"`` — over the bins of the linear STFT grid, after mapping (the first version's
  rule): every bin counts once, so at high frequencies, where one mel band spans many bins,
  the cold bins of a nearly flat map fill "the top quarter".

Shapes:
    heatmap, mask   (batch, freq_bins, frames)
    spectrum        (batch, channels, freq_bins, frames)
"""

from __future__ import annotations

import torch

__all__ = [
    "MODES",
    "THRESHOLD_ON",
    "DEFAULT_DELTA",
    "DEFAULT_PERCENTILE",
    "DEFAULT_THRESHOLD_ON",
    "normalise",
    "binarise",
    "heatmap_to_mask",
    "apply_mask",
    "percentile",
    "kth_smallest",
]

MODES = ("sigmoid", "hard", "soft")
DEFAULT_DELTA = 2.0
DEFAULT_PERCENTILE = 75.0
#: Beyond a slope of 10^30 the sigmoid is a step already (and 10.0**delta overflows at 309).
MAX_DELTA = 30.0
#: Where θ is taken: over the heatmap's own cells, or over the linear STFT bins.
THRESHOLD_ON = ("heatmap", "stft")
DEFAULT_THRESHOLD_ON = "heatmap"


def normalise(heatmap: torch.Tensor, eps: float = 1e-12) -> tuple[torch.Tensor, torch.Tensor]:
    """Min-max normalise each clip to [0, 1]. Returns ``(normalised, empty)`` where ``empty``
    ``(batch,)`` flags clips whose heatmap is flat (nothing to listen to); those get zeros."""
    out = heatmap.clone() if heatmap.is_floating_point() else heatmap.float()
    return _normalise_(out, eps)


def percentile(x: torch.Tensor, q: float) -> torch.Tensor:
    """Per-clip ``q``-th percentile ``(batch,)`` of ``(batch, ...)``, linear interpolation
    between order statistics (numpy's default).

    One selection (``kthvalue``) per clip; where ``q`` falls between two order statistics,
    the upper one is found by counting instead of a second selection: it equals the lower
    one when that value repeats, else it is the smallest value above it.
    """
    flat = x.flatten(1)
    n = flat.shape[1]
    pos = (n - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, n - 1)
    frac = pos - lo
    lo_val = kth_smallest(flat, lo)
    if frac == 0.0 or hi == lo:
        return lo_val
    at_most = (flat <= lo_val[:, None]).sum(dim=1)
    above = torch.where(flat > lo_val[:, None], flat, torch.full_like(flat, float("inf")))
    hi_val = torch.where(at_most > hi, lo_val, above.amin(dim=1))
    return lo_val + frac * (hi_val - lo_val)


def kth_smallest(flat: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k``-th smallest value (0-based) of each row of ``(batch, n)``, exactly.

    On the CPU the selection runs on a bracket instead of the whole row: a sorted strided
    sample of ~4k values gives two values that enclose rank ``k`` with near certainty; each
    row is counted against them and only the values between them are selected from (when
    rank ``k`` falls on the lower value, e.g. the zeros of a ReLU map, that value is the
    answer). A row whose bracket misses falls back to ``kthvalue``. On other devices,
    ``kthvalue``.
    """
    batch, n = flat.shape
    if flat.device.type != "cpu" or n < 65_536:
        return flat.kthvalue(k + 1, dim=1).values
    sample = flat[:, :: n // 4096].sort(dim=1).values  # (batch, m)
    m = sample.shape[1]
    centre, margin = k / n * m, 4.0 * m**0.5 + 2
    i_lo, i_hi = int(centre - margin), int(centre + margin) + 1
    out = torch.empty(batch, dtype=flat.dtype)
    for b in range(batch):
        row = flat[b]
        low = float(sample[b, i_lo]) if i_lo >= 0 else -float("inf")
        high = float(sample[b, i_hi]) if i_hi < m else float("inf")
        below, up_to_low = int(torch.count_nonzero(row < low)), int(torch.count_nonzero(row <= low))
        if below <= k < up_to_low:  # rank k is the bracket's low value (often a repeated one)
            out[b] = low
            continue
        if k >= up_to_low:
            values = row[(row > low).logical_and_(row <= high)]
            if k - up_to_low < values.numel():
                out[b] = values.kthvalue(k - up_to_low + 1).values
                continue
        out[b] = row.kthvalue(k + 1).values  # the sample misled us (or NaN): whole row
    return out


def binarise(
    normalised: torch.Tensor,
    *,
    mode: str = "sigmoid",
    percentile_: float = DEFAULT_PERCENTILE,
    delta: float = DEFAULT_DELTA,
    empty: torch.Tensor | None = None,
) -> torch.Tensor:
    """Normalised heatmap ``(batch, bins, frames)`` in [0, 1] → mask in [0, 1]."""
    _check(mode, percentile_, delta=delta)
    return _binarise_(normalised.clone(), mode, percentile_, delta, empty)


def heatmap_to_mask(
    grid: torch.Tensor,
    *,
    mode: str = "sigmoid",
    percentile_: float = DEFAULT_PERCENTILE,
    delta: float = DEFAULT_DELTA,
    empty: torch.Tensor | None = None,
    inplace: bool = False,
    cells: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`normalise` then :func:`binarise` in one go: heatmap on the STFT grid
    ``(batch, bins, frames)`` → ``(mask, empty)``, the same values as the two calls.

    ``cells`` ``(batch, ...)``: the heatmap on its own grid, before mapping
    (``threshold_on="heatmap"``). Then the normalisation's range and θ are taken over the
    cells, and ``grid`` (their mapping onto the STFT) is thresholded with them; a clip is
    empty when its cells are flat.

    ``empty`` ``(batch,)`` marks more clips to treat as empty (e.g. silent ones); the returned
    ``empty`` adds the flat heatmaps. With ``inplace`` the mask is computed in ``grid``'s
    memory (no full-size temporaries besides the percentile's selection).
    """
    _check(mode, percentile_, delta=delta)
    # every step is per clip or per element: work on the memory order (a frame-major grid,
    # as the mapping returns, is a transposed view) and hand the same view back
    transposed = grid.ndim == 3 and not grid.is_contiguous() and grid.mT.is_contiguous()
    work = grid.mT if transposed else grid
    theta = None
    if cells is None:
        out, flat = _normalise_(work if inplace else work.clone())
    else:
        if len(cells) != len(grid):
            raise ValueError(
                f"cells {tuple(cells.shape)} and grid {tuple(grid.shape)} differ in batch"
            )
        cells = cells.to(grid.dtype).flatten(1)[:, :, None]  # (batch, n, 1): _normalise_'s 3-D
        normed_cells, flat = _normalise_(cells.clone())
        low, high = cells[:, :, 0].amin(dim=1), cells[:, :, 0].amax(dim=1)
        out, _ = _normalise_(work if inplace else work.clone(), bounds=(low, high, flat))
        if mode != "soft":
            theta = percentile(normed_cells, percentile_)[:, None, None]
    empty = flat if empty is None else flat | empty
    mask = _binarise_(out, mode, percentile_, delta, empty, theta)
    return (mask.mT if transposed else mask), empty


def _check(
    mode: str, percentile_: float, threshold_on: str = DEFAULT_THRESHOLD_ON, delta: float = 2.0
) -> None:
    if not (isinstance(delta, (int, float)) and 0.0 <= delta <= MAX_DELTA):  # also NaN
        raise ValueError(
            f"delta must be in [0, {MAX_DELTA:g}] (the sigmoid's slope is 10^delta), got {delta}"
        )
    if mode not in MODES:
        raise ValueError(f"unknown mask mode {mode!r}; choose from {MODES}")
    if threshold_on not in THRESHOLD_ON:
        raise ValueError(f"unknown threshold_on {threshold_on!r}; choose from {THRESHOLD_ON}")
    if not 0.0 <= percentile_ <= 100.0:
        raise ValueError(f"percentile must be in [0, 100], got {percentile_}")


def _normalise_(
    heatmap: torch.Tensor, eps: float = 1e-12, bounds=None
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`normalise` in ``heatmap``'s memory; ``bounds = (low, high, empty)`` per clip
    taken elsewhere (the heatmap's cells) instead of ``heatmap``'s own range, then clamped
    to [0, 1] (values of the grid outside the cells' range: rows the layer does not see)."""
    if bounds is not None:
        low, high, empty = bounds
        span = high / 2 - low / 2
        scale = torch.where(empty, torch.ones_like(span), span)
        heatmap.mul_(0.5).sub_((low / 2)[:, None, None]).div_(scale[:, None, None])
        heatmap.clamp_(0.0, 1.0)
        _zero_empty_(heatmap, empty)
        return heatmap, empty
    flat = heatmap.flatten(1)
    low, high = flat.amin(dim=1), flat.amax(dim=1)  # two vectorised passes beat aminmax on CPU
    # half the range: finite for every finite float32 input (max − min of values beyond
    # ±1.7e38 overflows); halving a normal float is exact, so the result is unchanged
    span = high / 2 - low / 2
    empty = ~(span > (eps / 2) * torch.clamp(high.abs(), min=1.0))
    scale = torch.where(empty, torch.ones_like(span), span)
    heatmap.mul_(0.5).sub_((low / 2)[:, None, None]).div_(scale[:, None, None])
    # no clamp needed: rounding is monotone, so low ≤ x ≤ high gives 0 ≤ fl(fl(x − low) / span)
    # ≤ fl(span / span) = 1 (a clamp could only change NaN/Inf, which it leaves as they are)
    _zero_empty_(heatmap, empty)
    return heatmap, empty


def _zero_empty_(x: torch.Tensor, empty: torch.Tensor) -> None:
    """Zero the clips flagged in ``empty (batch,)``; no pass at all on CPU when none is."""
    if x.device.type != "cpu" or bool(empty.any()):
        x.masked_fill_(empty[:, None, None], 0.0)


def _binarise_(
    normalised: torch.Tensor, mode: str, percentile_: float, delta: float, empty, theta=None
) -> torch.Tensor:
    """:func:`binarise` in ``normalised``'s memory (``hard`` returns a new tensor); ``theta``
    ``(batch, 1, 1)`` taken elsewhere (the heatmap's cells) instead of ``normalised``'s own.

    Bins at the floor (normalised value 0: no evidence at all) are always masked out. Without
    this, a heatmap that is zero on more than ``100 − percentile`` % of the grid (common: the
    CAM's ReLU zeros a whole region) has θ = 0, and the sigmoid would pass every zero bin at
    0.5 (``hard`` would keep everything): the listenable output would be the whole clip.
    """
    if mode != "soft" and theta is None:
        theta = percentile(normalised, percentile_)[:, None, None]
    if mode == "hard":
        mask = ((normalised >= theta) & (normalised > 0)).to(normalised.dtype)
    elif mode == "sigmoid":
        floor = normalised <= 0
        slope = min(10.0**delta, 1e30)  # beyond, inf * 0 on a bin at θ would be NaN
        mask = normalised.sub_(theta).mul_(slope).sigmoid_()
        mask.masked_fill_(floor, 0.0)
    else:
        mask = normalised
    if empty is not None:
        _zero_empty_(mask, empty)
    return mask


def apply_mask(
    spectrum: torch.Tensor, mask: torch.Tensor, *, inplace: bool = False
) -> torch.Tensor:
    """Multiply every channel's complex STFT by the mask (phase kept).

    ``spectrum (batch, channels, bins, frames)`` complex, ``mask (batch, bins, frames)`` real.
    The product is taken on the real view (a real mask never becomes a complex tensor);
    ``inplace`` writes it into ``spectrum``.
    """
    if not spectrum.is_complex():
        mask = mask[:, None].to(spectrum.dtype)
        return spectrum.mul_(mask) if inplace else spectrum * mask
    pair = mask.to(spectrum.real.dtype)[:, None, ..., None]  # (batch, 1, bins, frames, 1)
    real = torch.view_as_real(spectrum)
    if inplace:
        real.mul_(pair)
        return spectrum
    return torch.view_as_complex(real * pair)
