"""Where a layer's cells sit on the model's input, derived from the model itself.

A layer's map has frequency rows and time cells. Each cell ``i`` along an axis is centred
on input position ``offset + stride · i`` (input frames along time, feature rows along
frequency): a stride-2 convolution with padding 1 keeps centres on even positions
(offset 0), a 2×2 average or max pool puts them between two positions (offset 0.5), and
the composition of such steps is again ``offset + stride · i``. Together with the front
end's geometry (the sample each feature frame is centred on, each row's response in hertz)
this places every cell in seconds and hertz (:mod:`listenable.projection`).

**How it is derived** (:func:`probe`): the layer's output is the image of its receptive
fields. One forward pass of a batch of identical random inputs and one backward pass, in
which copy ``k`` of the batch takes the gradient of the sum of the layer's cell ``i_k``
(all channels, all positions of the other axis), give the support of ``i_k``'s receptive
field along the input axis: its centre is the middle of the support. Interior cells (whose
support touches neither end of the input nor of the rows the layer sees) fit ``stride`` and
``offset`` exactly, whatever the weights. Summing over channels makes max pooling harmless
(each channel's argmax lands somewhere in the window). Which axis of a 4-D output is time
is found by running two input lengths (the axis whose size changes). Token layers
(transformers) declare their grid: AST's adapter probes its patch embedding and says how
its tokens lie on that grid (:class:`Layer`'s ``canonical``).

Shapes:
    canonical activations  (batch, channels, rows, cells)   rows = 1 for a layer without a
                                                             frequency axis
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["Axis", "LayerGeometry", "Layer", "probe", "feature_geometry", "ProbeTooShort"]


class ProbeTooShort(ValueError):
    """Fewer than two cells have a whole receptive field inside the probe's input."""

    def __init__(self, message: str, time_dim: int) -> None:
        super().__init__(message)
        self.time_dim = time_dim


@dataclass(frozen=True)
class Axis:
    """Cell ``i`` is centred on input position ``offset + stride · i``."""

    stride: float
    offset: float

    def centres(self, cells: int) -> torch.Tensor:
        return self.offset + self.stride * torch.arange(cells, dtype=torch.float64)


@dataclass(frozen=True)
class LayerGeometry:
    """A layer's grid on the features: time over feature frames, frequency over feature
    rows (``None``: the layer has no frequency axis; each cell covers every frequency), and
    the feature rows ``[start, stop)`` the layer sees (a band path sees only its bands)."""

    time: Axis
    freq: Axis | None
    rows: tuple[int, int]

    def describe(self) -> dict:
        out = {"time_stride": self.time.stride, "time_offset": self.time.offset}
        if self.freq is not None:
            out |= {"freq_stride": self.freq.stride, "freq_offset": self.freq.offset}
        return out | {"rows": list(self.rows)}


def feature_geometry(n_rows: int) -> LayerGeometry:
    """The features' own grid (input-gradient methods): stride 1, offset 0."""
    return LayerGeometry(Axis(1.0, 0.0), Axis(1.0, 0.0), (0, n_rows))


class Layer:
    """A layer to explain: the module, how its output becomes ``(batch, channels, rows,
    cells)`` (``canonical``; applied to activations and to their gradients alike) and its
    geometry — given, or derived on first use by ``derive() → (geometry, canonical)`` (a
    CAM needs only the canonical layout; the projection needs the geometry)."""

    def __init__(
        self,
        name: str,
        module: nn.Module,
        geometry: LayerGeometry | None = None,
        canonical: Callable[[torch.Tensor], torch.Tensor] | None = None,
        *,
        derive: Callable[[], tuple[LayerGeometry, Callable]] | None = None,
    ) -> None:
        if geometry is None and derive is None:
            raise ValueError(f"layer {name!r} needs a geometry or a way to derive it")
        self.name = name
        self.module = module
        self._geometry = geometry
        self._canonical = canonical
        self._derive = derive

    def _resolve(self) -> None:
        geometry, canonical = self._derive()
        self._geometry = geometry
        if self._canonical is None:
            self._canonical = canonical

    @property
    def geometry(self) -> LayerGeometry:
        if self._geometry is None:
            self._resolve()
        return self._geometry

    def canonical(self, x: torch.Tensor) -> torch.Tensor:
        if self._canonical is None:
            if x.ndim == 3:
                return x[:, :, None, :]
            if self._derive is not None:
                self._resolve()
            else:
                self._canonical = lambda t: t
        return self._canonical(x)

    def __repr__(self) -> str:
        return f"Layer({self.name!r}, geometry={self._geometry})"


def _permute_for(ndim: int, time_dim: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """``canonical`` for a conv output with time at ``time_dim`` (channels at 1)."""
    if ndim == 3:  # (batch, channels, time): one row
        return lambda x: x[:, :, None, :]
    if time_dim == 3:
        return lambda x: x
    return lambda x: x.transpose(2, 3)


def _support_centres(grad: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per batch item: lowest and highest index along ``dim`` where ``grad`` is non-zero."""
    other = [d for d in range(1, grad.ndim) if d != dim]
    hit = grad.abs().sum(dim=other) > 0  # (batch, size)
    idx = torch.arange(hit.shape[1])
    lo = torch.where(hit, idx, hit.shape[1]).amin(dim=1)
    hi = torch.where(hit, idx, -1).amax(dim=1)
    return lo, hi


def _fit(cells: list[int], lo, hi, bounds: tuple[int, int], what: str) -> Axis | None:
    """``stride`` and ``offset`` from the supports ``[lo, hi]`` of ``cells``: only those that
    touch neither bound and have the full width (a receptive field clipped by padding or by
    the edge of a band path is narrower, and its middle is not its centre). ``None`` when
    fewer than two cells qualify."""
    first, last = bounds
    inside = [
        (c, a, b)
        for c, a, b in zip(cells, lo.tolist(), hi.tolist())
        if b >= a and a > first and b < last - 1
    ]
    if inside:
        width = max(b - a for _, a, b in inside)
        inside = [(c, a, b) for c, a, b in inside if b - a == width]
    if len(inside) < 2:
        return None
    pts = sorted({(c, (a + b) / 2) for c, a, b in inside})
    (c0, x0), (c1, x1) = pts[0], pts[-1]
    if c1 == c0:
        return None
    stride = (x1 - x0) / (c1 - c0)
    if stride <= 0:
        return None
    offsets = sorted(x - stride * c for c, x in pts)
    return Axis(round(stride * 2) / 2, round(offsets[len(offsets) // 2] * 2) / 2)


#: Cells probed per axis; the probe's batch holds ``PROBES + 1`` copies of one input.
PROBES = 5


def _probe_cells(size: int, k: int) -> list[int]:
    """Up to ``k`` cells spread over the middle 60 % of an axis of ``size`` cells."""
    if size <= 2:
        return list(range(size))
    picks = torch.linspace(size * 0.2, size * 0.8, k).round().long().tolist()
    return sorted(set(picks))


def probe(
    run: Callable[[torch.Tensor], object],
    make_input: Callable[[int], torch.Tensor],
    leaf: Callable[[Callable], object],
    layer: nn.Module,
    *,
    frames: int,
    input_axes: tuple[int, int | None],
    rows: int | None,
    time_dim: int | None = None,
) -> tuple[LayerGeometry, Callable]:
    """Derive ``layer``'s geometry (see the module docstring).

    Args:
        run: calls the model on an input.
        make_input: ``frames → input`` (its first item is used, one pass per probed cell)
            (features, or a waveform of that many frames).
        leaf: a context manager factory ``leaf(store)`` under which the tensor the support
            is measured on (the input itself, or an inner front end's output) is made a leaf
            and put in ``store["x"]``.
        layer: the module whose output is probed.
        frames: input length to probe at (long enough for interior cells).
        input_axes: ``(time_dim, freq_dim)`` of that tensor (``freq_dim`` None: no rows).
        rows: how many feature rows it has.
        time_dim: the layer output's time axis if known (else found from two lengths).

    Returns ``(geometry, canonical)``.
    """
    store: dict = {}

    def capture(_m, _i, out):
        store["out"] = out[0] if isinstance(out, tuple) else out

    handle = layer.register_forward_hook(capture)
    try:
        if time_dim is None:
            with torch.no_grad():
                sizes = []
                for n in (frames // 2, frames // 2 + frames // 4):
                    store.clear()
                    with leaf(store):
                        run(make_input(n)[:1])
                    sizes.append(_shape(store, layer))
            if len(sizes[0]) not in (3, 4):
                raise ValueError(
                    f"layer output of shape {sizes[0]} is not (batch, channels, [freq,] time)"
                )
            changed = [d for d in range(2, len(sizes[0])) if sizes[0][d] != sizes[1][d]]
            if not changed:  # too short for the layer to grow yet: probe longer
                raise ProbeTooShort(f"the layer's output {sizes[0]} does not grow in time", None)
            if len(changed) != 1:
                raise ValueError(
                    f"cannot tell the time axis of the layer's output {sizes[0]} → {sizes[1]} "
                    "when the input grows in time"
                )
            time_dim = changed[0]
        x_in = make_input(frames)[:1]

        def gradient_of(pick) -> tuple[torch.Tensor, torch.Tensor]:
            """One pass on one copy of the input: the layer's canonical output and the
            gradient of ``pick(acts)`` at the input (one copy at a time: the graph of a
            whole batch of long clips would cost gigabytes)."""
            with torch.enable_grad():
                store.clear()
                with leaf(store):
                    run(x_in.clone())
                out, x = store["out"], store["x"]
                if not isinstance(out, torch.Tensor):
                    raise ValueError("the layer's output is not a tensor")
                acts = canonical(out)  # (1, channels, rows, cells)
                (g,) = torch.autograd.grad(pick(acts), x)
            leaf_shape["shape"] = tuple(x.shape)
            return acts.detach(), g

        leaf_shape: dict = {}

        canonical = None
        with torch.no_grad():
            store.clear()
            with leaf(store):
                run(x_in.clone())
            out = store["out"]
            if not isinstance(out, torch.Tensor):
                raise ValueError("the layer's output is not a tensor")
            canonical = _permute_for(out.ndim, time_dim)
            shape = canonical(out).shape
        # the gradient of one position (all channels): its support is that cell's receptive
        # field along both axes; of every position: the rows the layer sees
        t_cells = _probe_cells(shape[3], PROBES)
        f_cells = _probe_cells(shape[2], PROBES) if shape[2] > 1 else []
        n = max(len(t_cells), len(f_cells))
        t_cells = [t_cells[k % len(t_cells)] for k in range(n)]
        f_cells = [f_cells[k % len(f_cells)] for k in range(n)] if f_cells else []
        pairs = list(zip(f_cells or [0] * n, t_cells))
        grads = [gradient_of(lambda a, f=f, t=t: a[0, :, f, t].sum())[1] for f, t in pairs]
        acts, g_all = gradient_of(lambda a: a.sum())
        grad = torch.cat(grads + [g_all] * (PROBES + 1 - len(grads)))
    finally:
        handle.remove()
    t_dim, f_dim = input_axes
    n_in = leaf_shape["shape"][t_dim]
    lo, hi = _support_centres(grad[: len(t_cells)], t_dim)
    time = _fit(t_cells, lo, hi, (0, n_in), "time")
    if time is None:
        raise ProbeTooShort(
            f"cannot derive the time geometry from {n_in} input frames: fewer than two cells "
            "have a whole receptive field inside (probe with a longer input)",
            time_dim,
        )
    span = (0, rows or 1)
    freq = None
    if f_dim is not None:
        lo_all, hi_all = _support_centres(grad[PROBES : PROBES + 1], f_dim)
        span = (int(lo_all[0]), int(hi_all[0]) + 1)
        if f_cells:
            lo, hi = _support_centres(grad[: len(f_cells)], f_dim)
            freq = _fit(f_cells, lo, hi, span, "frequency")
            if freq is None:  # receptive fields as wide as the rows seen: evenly spread cells
                stride = (span[1] - span[0]) / acts.shape[2]
                freq = Axis(stride, span[0] + (stride - 1) / 2)
        else:  # one row: it covers the rows it sees
            freq = Axis(1.0, (span[0] + span[1] - 1) / 2)
    return LayerGeometry(time, freq, span), canonical


def _shape(store: dict, layer: nn.Module) -> tuple[int, ...]:
    out = store.get("out")
    if not isinstance(out, torch.Tensor):
        raise ValueError(f"layer {type(layer).__name__} was not called or returned no tensor")
    return tuple(out.shape)
