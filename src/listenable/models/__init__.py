"""Models listenable explains: the wrapper that says how to read any classifier
(:class:`Explainable`) and the adapters (the reference model, PANNs CNN14, AST, the small
shipped CNN)."""

from torch import nn

from listenable.models import mcdonnell_gao, small
from listenable.models.explainable import Explainable
from listenable.models.mcdonnell_gao import McDonnellGao, count_parameters
from listenable.models.small import SmallCNN

__all__ = [
    "Explainable",
    "McDonnellGao",
    "SmallCNN",
    "as_explainable",
    "build_model",
    "count_parameters",
]

_ARCHITECTURES = {"McDonnellGao": McDonnellGao, "SmallCNN": SmallCNN}


def build_model(architecture: dict) -> nn.Module:
    """Build a model from a checkpoint's ``architecture`` dict (``{"name": ..., **kwargs}``)."""
    kwargs = dict(architecture)
    name = kwargs.pop("name", None)
    if name not in _ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; known: {sorted(_ARCHITECTURES)}")
    return _ARCHITECTURES[name](**kwargs)


def as_explainable(model, front_end=None) -> Explainable:
    """``model`` as an :class:`Explainable`: as it is, the adapter of a known architecture
    (the reference model, the small CNN, PANNs' ``Cnn14``, transformers'
    ``ASTForAudioClassification``), or any module over ``front_end``'s features."""
    if isinstance(model, Explainable):
        return model
    adapters = {McDonnellGao: mcdonnell_gao.explainable, SmallCNN: small.explainable}
    adapter = adapters.get(type(model))
    if adapter is not None:
        # one wrapper per module and front end: its layers' geometry is derived once
        key = None if front_end is None else repr(sorted(front_end.settings.items()))
        cache = model.__dict__.setdefault("_listenable_explainables", {})
        cached = cache.get(key)
        param = next(model.parameters())
        fb = None if cached is None else cached.front_end.filterbank
        if (
            cached is None
            or cached.module is not model
            or (fb.dtype, fb.device)
            != (
                param.dtype,
                param.device,
            )
        ):  # a copy, or the module moved to another dtype or device since
            cache[key] = adapter(model, front_end)
        return cache[key]
    family = {"Cnn14": "cnn14", "ASTForAudioClassification": "ast"}.get(type(model).__name__)
    if family is not None and front_end is None:  # third-party classes, known by name
        import importlib

        return importlib.import_module(f"listenable.models.{family}").explainable(model)
    if front_end is None:
        raise TypeError(
            f"listenable does not know how to read a {type(model).__name__}: wrap it as "
            "listenable.Explainable(module, FrontEnd.preset(...) or FrontEnd(...), ...)"
        )
    return Explainable(model, front_end)
