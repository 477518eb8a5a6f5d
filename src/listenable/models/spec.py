"""``--model SPEC``: which model a command explains.

* ``default`` (or nothing): the shipped reference model; ``small``: the shipped small CNN;
* ``path.safetensors``: a listenable checkpoint (safetensors + JSON sidecar that stores the
  front end and the architecture; the first format's sidecars load too);
* ``module:function``: a function returning an ``nn.Module`` (then ``--front-end PRESET``
  says which features it takes) or an :class:`~listenable.models.Explainable` — the
  entry-point convention of torch hub and ASGI servers; ``module`` is a dotted module
  name or a ``.py`` file;
* ``hf:DIR``: a local transformers audio-classification directory (``save_pretrained``;
  read offline, weights as safetensors).

Weights a user hands over are read as safetensors only: a ``.pt`` / ``.pth`` file is
refused with the command that converts it (listenable never unpickles a file).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path

from torch import nn

from listenable.errors import CheckpointError, ListenableError
from listenable.models.explainable import Explainable

__all__ = ["load_model", "CONVERT_HINT"]

CONVERT_HINT = (
    'python -c "import torch, safetensors.torch as st; '
    'st.save_file(torch.load({path!r}, weights_only=True), {target!r})" '
    "(run it only on a file you trust; listenable never unpickles)"
)


def load_model(
    spec: str | None = None, *, device="cpu", front_end: str | None = None
) -> Explainable:
    """The :class:`~listenable.models.Explainable` that ``spec`` names (see the module
    docstring). Errors are one-line :class:`~listenable.errors.ListenableError`\\ s."""
    from listenable.checkpoint import SHIPPED, load_explainable

    spec = "default" if spec in (None, "") else str(spec)
    if spec in SHIPPED:
        return load_explainable(SHIPPED[spec], device=device)
    if spec.startswith("hf:"):
        from listenable.models.ast import from_pretrained

        return from_pretrained(spec[3:], device=device)
    suffix = Path(spec).suffix.lower()
    if suffix in (".pt", ".pth", ".bin", ".ckpt", ".pkl"):
        stem = str(Path(spec).with_suffix(""))
        raise CheckpointError(
            f"{spec}: a pickled weights file; listenable reads safetensors only. Convert it: "
            + CONVERT_HINT.format(path=spec, target=stem + ".safetensors")
        )
    if suffix == ".safetensors" or (suffix == "" and Path(spec + ".safetensors").exists()):
        return load_explainable(spec if suffix else spec + ".safetensors", device=device)
    if ":" in spec and not os.path.exists(spec):
        return _from_function(spec, device, front_end)
    raise ListenableError(
        f"--model {spec}: not a shipped model (default, small), a .safetensors checkpoint, "
        "module:function or hf:DIR"
    )


def _from_function(spec: str, device, front_end: str | None) -> Explainable:
    module_name, _, function = spec.rpartition(":")
    try:
        if module_name.endswith(".py"):
            path = Path(module_name)
            if not path.is_file():
                raise ListenableError(f"--model {spec}: {module_name} not found")
            # a private name: never shadows (or is shadowed by) an imported module
            name = f"listenable_user_{abs(hash(str(path.resolve())))}_{path.stem}"
            loader = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(loader)
            sys.modules[name] = module
            loader.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except ListenableError:
        raise
    except Exception as exc:
        raise ListenableError(f"--model {spec}: cannot import {module_name} ({exc})") from None
    factory = getattr(module, function, None)
    if not callable(factory):
        raise ListenableError(f"--model {spec}: {module_name} has no function {function!r}")
    try:
        made = factory()
    except ListenableError:
        raise
    except Exception as exc:  # the user's code: one line, not its traceback
        reason = (str(exc).splitlines() or [""])[0]
        raise ListenableError(
            f"--model {spec}: {function}() failed ({type(exc).__name__}: {reason})"
        ) from None
    if isinstance(made, Explainable):
        made.module.to(device)
        made.front_end.to(device)
        made.listening.to(device)
        return made
    if not isinstance(made, nn.Module):
        raise ListenableError(
            f"--model {spec}: {function}() returned a {type(made).__name__}, not an nn.Module "
            "or a listenable Explainable"
        )
    from listenable.models import as_explainable

    fe = None
    if front_end:
        from listenable.frontends import FrontEnd

        fe = FrontEnd.preset(front_end)
    try:
        return as_explainable(made.to(device).eval(), fe)
    except TypeError as exc:
        raise ListenableError(f"--model {spec}: {exc} (or pass --front-end PRESET)") from None
