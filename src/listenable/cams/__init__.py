"""Class activation maps: one small class per method over :class:`~listenable.cams.base.CAM`."""

from listenable.cams.base import CAM, CAMResult, resolve_layer
from listenable.cams.gradcam import GradCAM

__all__ = ["CAM", "CAMResult", "GradCAM", "METHODS", "get_method", "resolve_layer"]

#: Method name → class. Other modules register theirs here.
METHODS: dict[str, type] = {"gradcam": GradCAM}


def get_method(name: str) -> type:
    """The class implementing the attribution method ``name``."""
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; choose from {sorted(METHODS)}") from None
