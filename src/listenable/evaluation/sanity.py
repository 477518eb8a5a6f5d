"""Sanity check by cascading randomisation (Adebayo et al. 2018, "Sanity checks for saliency
maps"; Quantus ``MPRT``).

From the top of the model down, stage by stage, the weights of a deep copy are
re-initialised *cumulatively* (stage ``k`` randomised = stages ``1..k`` randomised), the
explanation is computed again for the same clips and the same target class, and compared
with the trained model's: Spearman rank correlation and SSIM. A map that depends on what
the model learned falls towards 0 as more of the model is randomised; one that stays near
1 shows the input (edges, loudness), not the model.

Re-initialisation is ``module.reset_parameters()`` of every module of the stage that has
it (Quantus' way): convolutions get PyTorch's default Kaiming-uniform draw, batch norms
their initial state (running mean 0, variance 1, affine 1 / 0). The draw is seeded
(``seed + stage index``) inside a forked RNG, so the global RNG is untouched.

Stages of the McDonnell–Gao model (``fusion`` has no parameters): ``head``; ``stage4`` (both
paths); ``stage3``; ``stage2``; ``stage1``; ``input`` (the first BN and convolution of each
path). Other models: their top-level children with parameters, last first.

Maps are compared as the method's own heatmap ``(n_mels_of_layer, cam_frames)``, each
min-max normalised to [0, 1] per clip (a flat map becomes zeros): Spearman with average
ranks for ties (:func:`scipy.stats.spearmanr`); SSIM with an 11×11 Gaussian window,
σ = 1.5, ``C1 = 0.01²``, ``C2 = 0.03²`` (Wang et al. 2004; the window shrinks to fit small
maps). Both are averaged over the clips; an undefined correlation (a flat map) is NaN.
"""

from __future__ import annotations

import copy
import logging
import math
import warnings
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["cascading_randomisation", "randomisation_stages", "ssim", "spearman"]

log = logging.getLogger(__name__)

_MCDONNELL_GAO_STAGES = (
    ("head", ("head",)),
    ("stage4", ("low.stage4", "high.stage4")),
    ("stage3", ("low.stage3", "high.stage3")),
    ("stage2", ("low.stage2", "high.stage2")),
    ("stage1", ("low.stage1", "high.stage1")),
    ("input", ("low.bn", "low.conv", "high.bn", "high.conv")),
)


def randomisation_stages(model) -> list[tuple[str, tuple[str, ...]]]:
    """``[(stage name, (module names...)), ...]`` from the top of ``model`` down (the
    reference model's stages by name; any other model's children in reverse order)."""
    model = getattr(model, "module", model)
    names = dict(model.named_modules())
    if all(m in names for _, mods in _MCDONNELL_GAO_STAGES for m in mods):
        return [(name, mods) for name, mods in _MCDONNELL_GAO_STAGES]
    children = [
        (name, (name,))
        for name, child in model.named_children()
        if any(True for _ in child.parameters()) or any(True for _ in child.buffers())
    ]
    return children[::-1]


def _reinitialise(module: nn.Module, seed: int) -> None:
    devices = [d.index for d in {p.device for p in module.parameters()} if d.type == "cuda"]
    with torch.random.fork_rng(devices=[d for d in devices if d is not None]):
        torch.manual_seed(seed)
        for sub in module.modules():
            reset = getattr(sub, "reset_parameters", None)
            if callable(reset):
                reset()


def _normalise(maps: torch.Tensor) -> torch.Tensor:
    flat = maps.detach().double().flatten(1)
    low, high = flat.amin(dim=1, keepdim=True), flat.amax(dim=1, keepdim=True)
    span = high - low
    out = torch.where(span > 1e-12, (flat - low) / span.clamp_min(1e-300), torch.zeros_like(flat))
    return out.view(maps.shape)


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation per clip of ``(batch, ...)`` maps → ``(batch,)`` float64
    (average ranks for ties; NaN where a map is flat)."""
    from scipy.stats import spearmanr

    x = a.detach().double().flatten(1).cpu().numpy()
    y = b.detach().double().flatten(1).cpu().numpy()
    out = []
    for xi, yi in zip(x, y):
        if np.ptp(xi) == 0 or np.ptp(yi) == 0:
            out.append(float("nan"))
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out.append(float(spearmanr(xi, yi).statistic))
    return torch.tensor(out, dtype=torch.float64)


def _gaussian_window(size: int, sigma: float, dtype, device) -> torch.Tensor:
    x = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def ssim(
    a: torch.Tensor,
    b: torch.Tensor,
    *,
    window: int = 11,
    sigma: float = 1.5,
    data_range: float = 1.0,
) -> torch.Tensor:
    """Mean SSIM per clip of 2-D maps ``(batch, H, W)`` (values in ``[0, data_range]``)
    → ``(batch,)`` float64. Gaussian window (``window``, ``sigma``), valid positions only;
    the window shrinks (to an odd size) when a map is smaller."""
    if a.shape != b.shape or a.ndim != 3:
        raise ValueError(f"expected two (batch, H, W) maps, got {tuple(a.shape)}, {tuple(b.shape)}")
    size = min(window, a.shape[-2], a.shape[-1])
    size = size if size % 2 else size - 1
    size = max(size, 1)
    sigma = sigma * size / window
    x, y = a.double()[:, None], b.double()[:, None]
    g = _gaussian_window(size, sigma, x.dtype, x.device)
    kernel_h, kernel_w = g.view(1, 1, size, 1), g.view(1, 1, 1, size)

    def blur(t):
        return F.conv2d(F.conv2d(t, kernel_h), kernel_w)

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / (
        (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    )
    return s.flatten(1).mean(dim=1)


def _maps(model, method, waveforms, target, explainer_options) -> tuple[torch.Tensor, torch.Tensor]:
    from listenable.explain import Explainer

    explainer = Explainer(model, method=method, **explainer_options)
    waveforms = waveforms.to(explainer.device)
    spectrum = explainer.listening(waveforms)
    result, _mask, _empty = explainer.masks(spectrum, target, waveforms=waveforms)
    return result.heatmap.detach(), result.target


def cascading_randomisation(
    model: nn.Module,
    waveforms: torch.Tensor,
    *,
    methods: Sequence[str] = ("gradcam",),
    target=None,
    seed: int = 0,
    stages: list[tuple[str, tuple[str, ...]]] | None = None,
    explainer_options: dict | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, list[dict]]:
    """Cascading randomisation of ``model``'s weights, from the top down.

    Args:
        model: the trained model (left untouched; a deep copy is randomised).
        waveforms: ``(batch, channels, samples)`` clips at the model's rate, explained
            together.
        methods: attribution methods (names of :data:`listenable.cams.METHODS`).
        target: class per clip (index, name or list); ``None`` = the trained model's
            prediction, kept fixed for every stage.
        explainer_options: more :class:`~listenable.explain.Explainer` arguments
            (``layer``, ``method_options``, ...).
        progress: ``progress(done, total)`` after each (stage, method).

    Returns:
        ``{method: [{"stage": name, "spearman": float, "ssim": float}, ...]}``, one entry per
        stage in the order randomised (cumulative), values averaged over the clips.
    """
    from listenable.models import as_explainable

    model = as_explainable(model)
    options = dict(explainer_options or {})
    stages = randomisation_stages(model) if stages is None else stages
    reference: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for method in methods:
        reference[method] = _maps(model, method, waveforms, target, options)
    total, done = len(stages) * len(methods), 0
    results: dict[str, list[dict]] = {m: [] for m in methods}
    randomised = copy.deepcopy(model).eval()  # with its layers' geometry: it does not change
    modules = dict(randomised.module.named_modules())
    for index, (stage, names) in enumerate(stages):
        for name in names:
            _reinitialise(modules[name], seed + index)
        for method in methods:
            original, target_idx = reference[method]
            heatmap, _ = _maps(randomised, method, waveforms, target_idx.tolist(), options)
            a, b = _normalise(original), _normalise(heatmap)
            rho = spearman(a, b)
            sim = ssim(a, b) if a.ndim == 3 else torch.full_like(rho, math.nan)
            results[method].append(
                {
                    "stage": stage,
                    "spearman": float(rho.nanmean()) if bool(rho.isfinite().any()) else math.nan,
                    "ssim": float(sim.nanmean()) if bool(sim.isfinite().any()) else math.nan,
                }
            )
            log.info("sanity %s, %s randomised: %s", method, stage, results[method][-1])
            done += 1
            if progress is not None:
                progress(done, total)
    return results
