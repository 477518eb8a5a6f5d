"""The base of every CAM method: hooks, forward, backward and targets live here only.

A method is one small subclass that overrides :meth:`CAM.weights` (one weight per channel
of the layer, as Grad-CAM) or :meth:`CAM.cam_image` (when the weights are not per channel).
A method reading several layers overrides :meth:`CAM.forward_with_activations` to return a
tuple of activations (:func:`capture_layers`: one forward, one backward for all of them).

The helpers place a layer's map on a finer grid with the geometry of
:mod:`listenable.mapping` (:func:`upsample_time`, :func:`place_bands`) and say what a masked
feature is (:func:`feature_floor`).

Shapes:
    features     (batch, 6, n_mels, frames)
    activations  (batch, channels, freq, cam_frames)   the layer's output
    heatmap      (batch, freq, cam_frames)             after ReLU, not normalised
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from listenable.mapping import cam_stride, time_matrix

__all__ = [
    "CAM",
    "CAMResult",
    "capture_layers",
    "frozen_parameters",
    "feature_floor",
    "layer_bands",
    "place_bands",
    "resolve_layer",
    "select_target",
    "upsample_time",
]


@dataclass
class CAMResult:
    heatmap: torch.Tensor  # (batch, freq, cam_frames), ReLU applied
    logits: torch.Tensor  # (batch, n_classes), pre-softmax
    target: torch.Tensor  # (batch,) long


def resolve_layer(model: nn.Module, layer: str) -> nn.Module:
    """The submodule called ``layer`` (a dotted name such as ``low.stage3``)."""
    modules = dict(model.named_modules())
    if layer not in modules or layer == "":
        names = [n for n in modules if n and n.count(".") <= 1]
        raise ValueError(f"model has no layer {layer!r}; try one of {names}")
    return modules[layer]


@contextlib.contextmanager
def frozen_parameters(model: nn.Module) -> Iterator[None]:
    """Turn off ``requires_grad`` on every parameter for the duration (restored after).

    With the parameters frozen and the hooked layer's output made a fresh leaf, a backward
    pass only runs through the layers above the hooked one and computes no parameter
    gradients: at the top layer, Grad-CAM costs about one forward pass.
    """
    saved = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in saved:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in saved:
            p.requires_grad_(flag)


def layer_bands(model: nn.Module, layer: str) -> tuple[int, int] | None:
    """``[start, stop)`` of the mel bands ``layer`` covers, or ``None`` when the model does not
    say (then a layer's rows are taken to cover all the input's rows)."""
    bands = getattr(model, "mel_bands", None)
    return tuple(bands(layer)) if bands else None


def capture_layers(
    model: nn.Module, modules: Sequence[nn.Module], features: torch.Tensor, *, requires_grad: bool
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Run ``model(features)`` once and return ``(logits, [output of each module])``.

    The forward hooks exist only for this call (removed in a ``finally``). With
    ``requires_grad``, an output that does not yet depend on anything requiring grad (the
    lowest hooked layer of each path, when the parameters are frozen) becomes a fresh leaf
    that requires grad; outputs above it stay in its graph. So one ``torch.autograd.grad``
    over all the outputs gives the gradient at every hooked layer, and the backward pass
    stops at the lowest one. A module called several times keeps its last output.
    """
    store: dict[int, torch.Tensor] = {}

    def make_hook(index: int):
        def hook(_module, _inputs, output):
            if requires_grad and output.requires_grad:
                store[index] = output
                return None
            leaf = output.detach()
            if requires_grad:
                leaf.requires_grad_(True)
            store[index] = leaf
            return leaf

        return hook

    handles = []
    try:
        for i, module in enumerate(modules):
            handles.append(module.register_forward_hook(make_hook(i)))
        logits = model(features)
    finally:
        for handle in handles:
            handle.remove()
    missing = [i for i in range(len(modules)) if i not in store]
    if missing:
        raise RuntimeError(f"hooked layers {missing} were not called in the forward pass")
    return logits, [store[i] for i in range(len(modules))]


def upsample_time(maps: torch.Tensor, frames: int) -> torch.Tensor:
    """``(..., cam_frames)`` → ``(..., frames)`` with :mod:`listenable.mapping`'s alignment.

    Frame ``i`` of a map ``stride`` times coarser (stride derived from the frame counts by
    :func:`~listenable.mapping.cam_stride`) is centred on fine frame ``stride·i``; fine frames
    interpolate linearly between the two nearest centres and hold the end values.
    """
    cam_frames = maps.shape[-1]
    if cam_frames == frames:
        return maps
    tmat = time_matrix(frames, cam_frames, cam_stride(frames, cam_frames), 0)
    return maps @ tmat.to(maps.device, maps.dtype).T


def place_bands(maps: torch.Tensor, bands: tuple[int, int] | None, rows: int) -> torch.Tensor:
    """Put ``(..., band_rows, frames)`` onto rows ``[start, stop)`` of a ``(..., rows, frames)``
    grid; the other rows are zero. ``bands=None`` means the map already covers every row."""
    start, stop = bands or (0, rows)
    if maps.shape[-2] != stop - start or not 0 <= start < stop <= rows:
        raise ValueError(
            f"a map of {maps.shape[-2]} rows cannot cover bands [{start}, {stop}) of {rows}"
        )
    if (start, stop) == (0, rows):
        return maps
    pad = [0, 0, start, rows - stop]
    return torch.nn.functional.pad(maps, pad)


def feature_floor(features: torch.Tensor) -> torch.Tensor:
    """What "nothing here" means for a feature: each clip's per-channel minimum.

    ``features (batch, channels, n_mels, frames)`` → ``(batch, channels, 1, 1)``. Masking a
    log-mel feature by ``m ∈ [0, 1]`` interpolates toward it, ``floor + m (x − floor)``: at
    ``m = 0`` the log-mel channels sit at the clip's quietest level (silence-like, without
    the out-of-distribution ``log 1e-8`` of true silence) and each delta channel at its own
    minimum, one value per clip and channel, so the masked input stays a valid point of
    the feature space the model saw. Used by Score-CAM's masks and as the baseline of
    Integrated Gradients.
    """
    return features.amin(dim=tuple(range(2, features.ndim)), keepdim=True)


def select_target(logits: torch.Tensor, target) -> torch.Tensor:
    """``target`` as a ``(batch,)`` long tensor; ``None`` = the predicted class."""
    if target is None:
        return logits.argmax(dim=1)
    target = torch.as_tensor(target, dtype=torch.long, device=logits.device)
    if target.ndim == 0:
        target = target.expand(logits.shape[0])
    if target.shape != (logits.shape[0],):
        raise ValueError(f"target must be an int or one per clip, got shape {tuple(target.shape)}")
    if bool(((target < 0) | (target >= logits.shape[1])).any()):
        raise ValueError(f"target out of range for {logits.shape[1]} classes: {target.tolist()}")
    return target


class CAM:
    """Class activation map of ``layer`` for a target class.

    ``cam(features, target=None)`` returns a :class:`CAMResult`. The forward hook exists only
    during the call and is removed in a ``finally`` (also when the model raises).
    """

    #: Methods that need no backward pass (Eigen-CAM, Score-CAM) set this to False.
    uses_gradients = True
    #: Methods that re-run the model on masked audio set this to True; they are then called
    #: as ``cam(features, target, spectrum=spectrum)`` and built by the
    #: :class:`~listenable.explain.Explainer` with its ``features``, ``percentile``,
    #: ``delta`` and ``mode`` (:class:`~listenable.cams.optimised.OptimisedMask`).
    uses_spectrum = False

    def __init__(self, model: nn.Module, layer: str = "fusion") -> None:
        self.model = model
        self.layer_name = layer
        self.layer = resolve_layer(model, layer)
        bands = getattr(model, "mel_bands", None)
        #: ``[start, stop)`` of the mel bands the heatmap's rows cover (a layer inside one
        #: band path covers only its half).
        self.mel_bands: tuple[int, int] | None = bands(layer) if bands else None

    # --- the hooks a method overrides -------------------------------------------------
    def weights(self, activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
        """Per-channel weights ``(batch, channels)``."""
        raise NotImplementedError

    def cam_image(
        self,
        activations: torch.Tensor,
        gradients: torch.Tensor | None,
        features: torch.Tensor,
        target: torch.Tensor,
    ) -> torch.Tensor:
        """The map before ReLU, ``(batch, freq, cam_frames)``. Default: ``Σ_k w_k A_k``."""
        w = self.weights(activations, gradients)
        return torch.einsum("bk,bk...->b...", w, activations)

    # --- the machinery -----------------------------------------------------------------
    def forward_with_activations(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the model, returning ``(logits, activations)``; the activations are a leaf
        that requires grad when the method uses gradients.

        A method reading several layers returns a tuple of activations instead; it then gets
        a tuple of gradients in :meth:`cam_image` (one backward pass for all of them).
        """
        logits, (acts,) = capture_layers(
            self.model, [self.layer], features, requires_grad=self.uses_gradients
        )
        return logits, acts

    def __call__(self, features: torch.Tensor, target=None) -> CAMResult:
        if self.model.training:
            raise ValueError("put the model in eval mode (model.eval()) before explaining it")
        with (
            frozen_parameters(self.model),
            torch.enable_grad() if self.uses_gradients else torch.no_grad(),
        ):
            logits, acts = self.forward_with_activations(features)
            target = select_target(logits, target)
            grads = None
            if self.uses_gradients:
                score = logits.gather(1, target[:, None]).sum()
                grads = torch.autograd.grad(score, acts)
                grads = grads[0] if isinstance(acts, torch.Tensor) else grads
        with torch.no_grad():
            acts = (
                acts.detach() if isinstance(acts, torch.Tensor) else tuple(a.detach() for a in acts)
            )
            cam = self.cam_image(acts, grads, features, target)
            heatmap = torch.relu(cam.float())
        return CAMResult(heatmap=heatmap, logits=logits.detach().float(), target=target)
