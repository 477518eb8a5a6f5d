"""Scene classifiers that listenable explains."""

from listenable.models.mcdonnell_gao import McDonnellGao, count_parameters

__all__ = ["McDonnellGao", "count_parameters", "build_model"]

_ARCHITECTURES = {"McDonnellGao": McDonnellGao}


def build_model(architecture: dict) -> McDonnellGao:
    """Build a model from a checkpoint's ``architecture`` dict (``{"name": ..., **kwargs}``)."""
    kwargs = dict(architecture)
    name = kwargs.pop("name", None)
    if name not in _ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; known: {sorted(_ARCHITECTURES)}")
    return _ARCHITECTURES[name](**kwargs)
