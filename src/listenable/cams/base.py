"""The base of every CAM method: hooks, forward, backward and targets live here only.

A method is one small subclass that overrides :meth:`CAM.weights` (one weight per channel
of the layer, as Grad-CAM) or :meth:`CAM.cam_image` (when the weights are not per channel).
A method reading several layers overrides :meth:`CAM.forward_with_activations` to return a
tuple of activations (:func:`capture_layers`: one forward, one backward for all of them).

The model is an :class:`~listenable.models.Explainable` (a bare reference model is wrapped);
the layer is one of its :class:`~listenable.geometry.Layer` objects, whose output is put in
the canonical layout ``(batch, channels, rows, cells)`` (activations and gradients alike)
before a method sees it, and whose geometry travels with the heatmap (:class:`CAMResult`) to
the projection. :func:`feature_floor` says what a masked feature is.

Shapes:
    inputs       what the module takes (features in its front end's layout, or a waveform)
    activations  (batch, channels, rows, cells)   the layer's output, canonical
    heatmap      (batch, rows, cells)             after ReLU, not normalised
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from listenable.geometry import LayerGeometry
from listenable.models import Explainable, as_explainable

__all__ = [
    "CAM",
    "CAMResult",
    "capture_layers",
    "frozen_parameters",
    "feature_floor",
    "select_target",
]


@dataclass
class CAMResult:
    heatmap: torch.Tensor  # (batch, rows, cells), ReLU applied
    logits: torch.Tensor  # (batch, n_classes), pre-activation
    target: torch.Tensor  # (batch,) long
    geometry: LayerGeometry | None = None  # where the heatmap's cells lie on the features


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
            rest = None
            if isinstance(output, tuple):  # (hidden states, attentions...): the first
                output, rest = output[0], output[1:]
            if requires_grad and output.requires_grad:
                store[index] = output
                return None
            leaf = output.detach()
            if requires_grad:
                leaf.requires_grad_(True)
            store[index] = leaf
            return leaf if rest is None else (leaf, *rest)

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


def feature_floor(features: torch.Tensor) -> torch.Tensor:
    """What "nothing here" means for a feature: each clip's per-channel minimum.

    ``features (batch, channels, ...)`` → ``(batch, channels, 1, ...)``. Masking a
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

    def __init__(self, model: Explainable | nn.Module, layer: str | None = None) -> None:
        self.model = as_explainable(model)
        #: the :class:`~listenable.geometry.Layer` read (``None``/"auto": the default)
        self.spec = self.model.layer(layer)
        self.layer_name = self.spec.name
        self.layer = self.spec.module
        #: every layer a pass reads (methods reading several extend it)
        self.layers = [self.spec]
        #: the heatmap's grid on the features
        self.geometry: LayerGeometry = self.spec.geometry

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
            if isinstance(acts, torch.Tensor):
                acts = self.spec.canonical(acts.detach())
                grads = None if grads is None else self.spec.canonical(grads)
            else:
                acts = tuple(lay.canonical(a.detach()) for lay, a in zip(self.layers, acts))
                if grads is not None:
                    grads = tuple(lay.canonical(g) for lay, g in zip(self.layers, grads))
            cam = self.cam_image(acts, grads, features, target)
            heatmap = torch.relu(cam.float())
        return CAMResult(
            heatmap=heatmap, logits=logits.detach().float(), target=target, geometry=self.geometry
        )
