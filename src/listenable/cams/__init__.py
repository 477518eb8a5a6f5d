"""Class activation maps and attributions: one small class per method over
:class:`~listenable.cams.base.CAM`; every method is reachable as
``get_method(name)(model, layer, **options)`` (``model`` an
:class:`~listenable.models.Explainable`, ``layer`` ``None`` for its default) and returns a
:class:`~listenable.cams.base.CAMResult` whose heatmap is ``(batch, rows, cells)`` after
ReLU, with the geometry that places its cells on the model's features.
"""

from listenable.cams.base import CAM, CAMResult
from listenable.cams.baselines import RandomCAM
from listenable.cams.eigencam import EigenCAM
from listenable.cams.gradcam import GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM, XGradCAM
from listenable.cams.input_gradients import IntegratedGradients, Saliency, SmoothGrad
from listenable.cams.multiscale import MultiScaleCAM
from listenable.cams.optimised import OptimisedMask
from listenable.cams.scorecam import ScoreCAM

__all__ = [
    "CAM",
    "CAMResult",
    "DEFAULT_METHOD",
    "EigenCAM",
    "GradCAM",
    "GradCAMPlusPlus",
    "HiResCAM",
    "IntegratedGradients",
    "LayerCAM",
    "METHODS",
    "MultiScaleCAM",
    "OptimisedMask",
    "RandomCAM",
    "Saliency",
    "ScoreCAM",
    "SmoothGrad",
    "XGradCAM",
    "get_method",
]

#: Method name → class. Other modules register theirs here.
METHODS: dict[str, type] = {
    "gradcam": GradCAM,
    "gradcam++": GradCAMPlusPlus,
    "hirescam": HiResCAM,
    "xgradcam": XGradCAM,
    "layercam": LayerCAM,
    "scorecam": ScoreCAM,
    "eigencam": EigenCAM,
    "saliency": Saliency,
    "integrated_gradients": IntegratedGradients,
    "smoothgrad": SmoothGrad,
    "random": RandomCAM,
    "multiscale": MultiScaleCAM,
    "optimised": OptimisedMask,
}


#: The method every entry point uses unless told otherwise. LayerCAM: like Grad-CAM it reads
#: any layer of any model family in one backward pass; on real-recording scenes its output
#: was purer than Grad-CAM's on the reference network and kept the small model's decision
#: (Fid-In 0.62) where Grad-CAM's top quarter lost it (0.29). Measurements and what is not
#: met yet: ``docs/evaluation-results.md``, first section.
DEFAULT_METHOD = "layercam"


def get_method(name: str) -> type:
    """The class implementing the attribution method ``name``."""
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; choose from {sorted(METHODS)}") from None
