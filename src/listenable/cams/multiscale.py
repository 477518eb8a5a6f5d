"""A sharper mask: class evidence from the top map, located by layers with finer time steps.

The paper's own limit (its §4–5): Grad-CAM on the fused top map has 1/16 of the feature
time resolution (one CAM frame ≈ 0.34 s), so the mask smears in time, and sounds next to
the evidence leak into the listenable output. Shallower layers of the same network keep
4× or 2× more frames, and a weight per position (HiResCAM, LayerCAM) keeps their maps local
where Grad-CAM's per-channel mean gradient turns noisy in shallow layers (Jiang et al. 2021).

The layers come from the model's adapter (``Explainable.fine_layers``; the reference
model's are stage 3 and stage 2 of both band paths). Every map is put on one grid: the
front end's feature rows (through each layer's derived frequency geometry; a band path's
map lands on its own bands) and the finest layer's time cells.

Shapes (reference model):
    top map    (batch, 128, frames / 16)            fusion, Grad-CAM
    fine maps  (batch, 64, frames / 8), (batch, 64, frames / 4)   HiResCAM per band path
    heatmap    (batch, n_mels, finest cells)        the feature rows x the finest time grid
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from listenable.cams.base import CAM, capture_layers
from listenable.cams.gradcam import gradcam_map, hirescam_map, layercam_map
from listenable.geometry import Axis, LayerGeometry
from listenable.projection import to_grid

__all__ = ["MultiScaleCAM", "FINE_MAPS"]

#: How a fine layer's map is computed from its ``(activations, gradients)``.
FINE_MAPS = {"layercam": layercam_map, "gradcam": gradcam_map, "hirescam": hirescam_map}


class MultiScaleCAM(CAM):
    """Geometric mean of the top layer's Grad-CAM and fine layers' HiResCAMs.

    1. **Class evidence**: Grad-CAM on ``layer`` (the fused top map, stride 16), ReLU.
    2. **Location**: for each group of ``fine_layers`` (default: ``stage3`` of both band
       paths at stride 8, ``stage2`` at stride 4), the ``fine_method`` map of every layer,
       ReLU, placed on the layer's own mel bands; the two paths together cover all 128 rows.
       The default, HiResCAM ``Σ_k ∂y_c/∂A_k ⊙ A_k``, is each position's first-order
       contribution to the score. It suits a pre-activation ResNet, whose block outputs
       are signed: a negative activation with a negative gradient counts as evidence,
       where LayerCAM's ``ReLU(∂y_c/∂A_k) ⊙ A_k`` counts it against (``fine_method=
       "layercam"`` selects it, ``"gradcam"`` the per-channel weights).
    3. Every map is up-sampled in time to the finest grid with the layers' derived
       centre alignment (frame ``i`` of a stride-``s`` map sits on fine frame ``s·i / s_fine``),
       normalised per clip by its maximum, and the maps are combined by their element-wise
       geometric mean ``P = (M_top · M_8 · M_4)^(1/3)``.
    4. **Time gate** (``time_gate=True``): ``P(f, t) · π(t)`` with ``π`` the frequency mean
       of ``P`` over its maximum. Frames that hold much of the located evidence win over
       frames with one bright bin, so the percentile mask (a fixed area) fills the event's
       frames across frequency before it spills into other frames.
    5. **Fill** (``fill=ε > 0``, default 0): ``+ ε · M_top``. The product is zero wherever
       a fine map is, often on more than 75 % of the grid, and the floor bins never pass
       the mask: the listenable output then keeps less than the percentile's area (6–36 %
       of the bins against Grad-CAM's 14–38 % on the shipped model) and loses the class
       more often. The fill ranks the rest of the top map's support after the located
       evidence, so the mask has Grad-CAM's area with the sharp evidence first
       (:class:`~listenable.cams.optimised.OptimisedMask` starts from it).

    The product keeps only time-frequency regions that are class-relevant at the top *and*
    locally active at high resolution: the top map decides *what*, the fine maps cut *where*,
    so the 1/16 smear of the top map and the unrelated sounds beside the evidence fall out.

    What it was measured to do: ``docs/measurements.md``.

    A fine map that is all zero for a clip carries no location and is left out of that clip's
    product; if the fine maps are positive only where the top map is zero, the clip gets the
    top map alone (so the mask is never emptier than Grad-CAM's); an all-zero top map (no
    positive class evidence) gives an all-zero heatmap.

    One forward and one backward pass serve all layers (the backward stops at the lowest
    hooked layer). The heatmap is on the feature rows x the finest layer's time cells,
    ``(batch, 128, frames / 4)`` for the reference model.
    """

    def __init__(
        self,
        model: nn.Module,
        layer: str | None = None,
        *,
        fine_layers: Sequence[Sequence[str]] | None = None,
        fine_method: str = "hirescam",
        time_gate: bool = True,
        fill: float = 0.0,
    ) -> None:
        super().__init__(model, layer)
        if not fill >= 0.0:
            raise ValueError(f"fill must be >= 0, got {fill}")
        self.fill = float(fill)
        if fine_method not in FINE_MAPS:
            raise ValueError(f"fine_method must be one of {sorted(FINE_MAPS)}, got {fine_method!r}")
        self.fine_method = fine_method
        self.time_gate = time_gate
        fine_layers = fine_layers or self.model.fine_layers
        if not fine_layers:
            raise ValueError(
                f"the multi-scale method reads finer layers, and {self.model.name} names none: "
                "pass fine_layers=[[...], ...] (or use gradcam)"
            )
        self.groups = [tuple(group) for group in fine_layers]
        if not all(self.groups):
            raise ValueError("fine_layers must be a non-empty list of non-empty layer groups")
        names = [name for group in self.groups for name in group]
        self.layers = [self.spec, *(self.model.layer(name) for name in names)]
        self.modules = [lay.module for lay in self.layers]
        top = self.spec.geometry
        for group in self.groups:
            spans = sorted(self.model.layer(name).geometry.rows for name in group)
            edges = [top.rows[0]] + [e for _, e in spans]
            if [s for s, _ in spans] != edges[:-1] or edges[-1] != top.rows[1]:
                raise ValueError(
                    f"fine layers {group} must tile the rows {top.rows} of {self.layer_name!r}"
                )
        finest = min((lay.geometry for lay in self.layers), key=lambda g: g.time.stride)
        self.n_rows = self.model.front_end.n_mels
        self.geometry = LayerGeometry(finest.time, Axis(1.0, 0.0), top.rows)

    def forward_with_activations(self, features):
        logits, acts = capture_layers(self.model, self.modules, features, requires_grad=True)
        return logits, tuple(acts)

    def cam_image(self, activations, gradients, features, target) -> torch.Tensor:
        fine = FINE_MAPS[self.fine_method]
        finest = max(range(len(activations)), key=lambda i: activations[i].shape[-1])
        centres = self.geometry.time.centres(activations[finest].shape[-1])

        def placed(i: int, m: torch.Tensor) -> torch.Tensor:
            return to_grid(m, self.layers[i].geometry, self.n_rows, centres)

        maps = [placed(0, torch.relu(gradcam_map(activations[0], gradients[0])))]
        index = 1
        for group in self.groups:  # a group's layers see disjoint rows: their maps add up
            maps.append(
                sum(
                    placed(i, torch.relu(fine(activations[i], gradients[i])))
                    for i in range(index, index + len(group))
                )
            )
            index += len(group)
        normed = []
        for i, m in enumerate(maps):
            peak = m.flatten(1).amax(dim=1)[:, None, None]
            m = m / peak.clamp_min(torch.finfo(m.dtype).tiny)
            if i > 0:  # a fine map with no location leaves the product unchanged
                m = torch.where(peak > 0, m, 1.0)
            normed.append(m)
        product = torch.stack(normed).prod(dim=0).pow(1.0 / len(normed))
        # fine maps positive only where the top map is zero: keep the top map, not nothing
        disjoint = product.flatten(1).amax(dim=1) <= 0
        product = torch.where(disjoint[:, None, None], normed[0], product)
        if self.time_gate:
            profile = product.mean(dim=-2, keepdim=True)  # (batch, 1, frames)
            peak = profile.amax(dim=-1, keepdim=True)
            product = product * profile / peak.clamp_min(torch.finfo(profile.dtype).tiny)
        if self.fill > 0:  # rank the rest of the top map's support after the located evidence
            product = product + self.fill * normed[0]
        return product
