"""The base of every CAM method: hooks, forward, backward and targets live here only.

A method is one small subclass that overrides :meth:`CAM.weights` (one weight per channel
of the layer, as Grad-CAM) or :meth:`CAM.cam_image` (when the weights are not per channel).

Shapes:
    features     (batch, 6, n_mels, frames)
    activations  (batch, channels, freq, cam_frames)   the layer's output
    heatmap      (batch, freq, cam_frames)             after ReLU, not normalised
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["CAM", "CAMResult", "resolve_layer", "frozen_parameters"]


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
        that requires grad when the method uses gradients."""
        store: dict[str, torch.Tensor] = {}

        def hook(_module, _inputs, output):
            leaf = output.detach()
            if self.uses_gradients:
                leaf.requires_grad_(True)
            store["activations"] = leaf
            return leaf

        handle = self.layer.register_forward_hook(hook)
        try:
            logits = self.model(features)
        finally:
            handle.remove()
        return logits, store["activations"]

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
                (grads,) = torch.autograd.grad(score, acts)
        with torch.no_grad():
            cam = self.cam_image(acts.detach(), grads, features, target)
            heatmap = torch.relu(cam.float())
        return CAMResult(heatmap=heatmap, logits=logits.detach().float(), target=target)
