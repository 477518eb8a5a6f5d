"""Checkpoints: safetensors weights plus a JSON sidecar of metadata. Never unpickled.

``model.safetensors`` holds the tensors; ``model.json`` beside it holds the class names,
the architecture, the front end's settings (``front_end``, :class:`~listenable.frontends.
FrontEnd`) and the provenance (command, seed, data, time). Both are validated on load: the
class count must match the weights, the front end must be one listenable computes, and
every tensor must have the shape the architecture expects. Checkpoints of the first
format, whose sidecar holds the reference model's ``features`` instead, keep loading.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from listenable.atomic import atomic_path, write_json
from listenable.errors import CheckpointError
from listenable.frontends import FrontEnd
from listenable.models import Explainable, as_explainable, build_model

__all__ = [
    "save_checkpoint",
    "load_checkpoint",
    "load_explainable",
    "default_checkpoint",
    "front_end_for",
    "explainable_for",
    "SHIPPED",
    "FORMAT_VERSION",
]

FORMAT_VERSION = 1
_ASSETS = Path(__file__).resolve().parent / "assets"
#: The model that ships with the package (trained on synthetic scenes; see the README).
DEFAULT_CHECKPOINT = _ASSETS / "mcdonnell_gao_scenes.safetensors"
#: The shipped models by name (``--model default`` / ``--model small``).
SHIPPED = {"default": DEFAULT_CHECKPOINT, "small": _ASSETS / "small_scenes.safetensors"}
_PICKLE_MAGIC = (b"\x80", b"PK\x03\x04")  # pickle protocol 2+; torch.save's zip container


def default_checkpoint() -> Path:
    """Path of the shipped checkpoint; a :class:`CheckpointError` if it is not installed."""
    if not DEFAULT_CHECKPOINT.exists():
        raise CheckpointError(
            f"{DEFAULT_CHECKPOINT}: the shipped model is not installed; pass --checkpoint "
            "(train one with `listenable train`)"
        )
    return DEFAULT_CHECKPOINT


def _sidecar(path: Path) -> Path:
    return path.with_suffix(".json")


def save_checkpoint(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    class_names: list[str],
    front_end: FrontEnd | None = None,
    **metadata,
) -> Path:
    """Save ``model`` to ``path`` (``.safetensors``) and its metadata to ``path.json``.

    ``metadata`` may hold any JSON-serialisable provenance (command, seed, data, epochs...).
    Both files are written atomically.
    """
    path = Path(path)
    if path.suffix != ".safetensors":
        path = path.with_suffix(".safetensors")
    n_classes = getattr(model, "n_classes", None)
    if n_classes is not None and len(class_names) != n_classes:
        raise CheckpointError(
            f"{path}: {len(class_names)} class names for a {n_classes}-class model"
        )
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    front_end = front_end or as_explainable(model).front_end
    meta = {
        "format": "listenable-checkpoint",
        "format_version": FORMAT_VERSION,
        "architecture": model.architecture,
        "class_names": list(class_names),
        "front_end": front_end.settings,
        **metadata,
    }
    json.dumps(meta, allow_nan=False)  # fail before writing anything
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "listenable-checkpoint"})
    write_json(_sidecar(path), meta)
    return path


def load_checkpoint(
    path: str | os.PathLike | None = None, *, device: str | torch.device = "cpu"
) -> tuple[nn.Module, dict]:
    """Load ``(model, metadata)`` from a safetensors checkpoint and its JSON sidecar.

    With no ``path``, the shipped model. The model is returned in eval mode. A pickle or
    ``torch.save`` file is refused without being unpickled.
    """
    path = default_checkpoint() if path is None else Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: checkpoint not found")
    with open(path, "rb") as handle:
        head = handle.read(8)
    if head.startswith(_PICKLE_MAGIC):
        raise CheckpointError(
            f"{path}: looks like a pickle / torch.save file; listenable never unpickles files "
            "(they can run arbitrary code). Convert it to safetensors with the code that made it."
        )
    meta_path = _sidecar(path)
    if not meta_path.exists():
        raise CheckpointError(f"{path}: metadata {meta_path.name} is missing beside it")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{meta_path}: malformed JSON ({exc})") from None
    _validate_metadata(meta, meta_path)
    try:
        tensors = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: not a valid safetensors file ({exc})") from None
    try:
        model = build_model(meta["architecture"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{meta_path}: bad architecture ({exc})") from None
    if model.n_classes != len(meta["class_names"]):
        raise CheckpointError(
            f"{meta_path}: {len(meta['class_names'])} class names but the architecture has "
            f"{model.n_classes} classes"
        )
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: weights do not match the architecture "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    for name, tensor in tensors.items():
        if tensor.shape != expected[name].shape:
            raise CheckpointError(
                f"{path}: tensor {name} has shape {tuple(tensor.shape)}, expected "
                f"{tuple(expected[name].shape)} (class count or architecture mismatch)"
            )
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(f"{path}: tensor {name} holds NaN or Inf")
    model.load_state_dict(tensors)
    model.class_names = list(meta["class_names"])
    return model.to(device).eval(), meta


def load_explainable(
    path: str | os.PathLike | None = None, *, device: str | torch.device = "cpu"
) -> Explainable:
    """A checkpoint as an :class:`~listenable.models.Explainable` (its adapter, with the
    front end the checkpoint stores). ``path`` may name a shipped model (:data:`SHIPPED`)."""
    if isinstance(path, str) and path in SHIPPED:
        path = SHIPPED[path]
    model, meta = load_checkpoint(path, device=device)
    explainable = as_explainable(model, front_end_for(meta))
    explainable.checkpoint_meta = meta
    return explainable


def _validate_metadata(meta: object, where: Path) -> None:
    if not isinstance(meta, dict) or meta.get("format") != "listenable-checkpoint":
        raise CheckpointError(f"{where}: not listenable checkpoint metadata")
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{where}: unsupported format_version {meta.get('format_version')!r}")
    names = meta.get("class_names")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise CheckpointError(f"{where}: class_names must be a non-empty list of strings")
    if len(set(names)) != len(names):
        raise CheckpointError(f"{where}: class_names has duplicates")
    arch = meta.get("architecture")
    if not isinstance(arch, dict):
        raise CheckpointError(f"{where}: architecture missing")
    if arch.get("n_classes", len(names)) != len(names):
        raise CheckpointError(
            f"{where}: {len(names)} class names but the architecture has "
            f"{arch.get('n_classes')!r} classes"
        )
    if "front_end" in meta:
        try:
            FrontEnd.from_settings(meta["front_end"])
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"{where}: bad front_end settings ({exc})") from None
        return
    _validate_features(meta.get("features"), where)


#: Settings of the first checkpoint format's ``features`` (the reference front end).
_FEATURES_V1 = {
    "sample_rate": 48_000, "n_fft": 2048, "hop_length": 1024, "window": "hann",
    "center": True, "pad_mode": "reflect", "n_mels": 128, "fmin": 0.0, "fmax": 24_000.0,
    "mel_scale": "htk", "mel_norm": None, "log_offset": 1e-8, "delta_width": 5,
    "frame_offset": 4,
}  # fmt: skip


def _validate_features(feats, where: Path) -> None:
    known = _FEATURES_V1
    if not isinstance(feats, dict):
        raise CheckpointError(f"{where}: front-end settings missing")
    numeric = {
        "sample_rate": int,
        "n_fft": int,
        "hop_length": int,
        "n_mels": int,
        "fmax": (int, float),
    }
    for key, value in feats.items():
        if key not in known:
            raise CheckpointError(f"{where}: unknown feature setting {key!r}")
        if key in numeric and (
            isinstance(value, bool) or not isinstance(value, numeric[key]) or value <= 0
        ):
            raise CheckpointError(
                f"{where}: feature setting {key}={value!r} is not a positive number"
            )
        if key not in numeric and value != known[key]:
            raise CheckpointError(
                f"{where}: feature setting {key}={value!r} is not one listenable computes "
                f"({known[key]!r})"
            )
    try:
        front_end_for({"features": feats})
    except ValueError as exc:
        raise CheckpointError(f"{where}: bad feature settings ({exc})") from None


def explainable_for(model, meta: dict | None = None) -> Explainable:
    """``model`` as an :class:`~listenable.models.Explainable`, with the front end its
    checkpoint metadata ``meta`` stores (when it stores one)."""
    if isinstance(model, Explainable):
        return model
    stored = meta and ("front_end" in meta or "features" in meta)
    return as_explainable(model, front_end_for(meta) if stored else None)


def front_end_for(meta: dict) -> FrontEnd:
    """The front end a checkpoint was trained with (``front_end``, or the first format's
    reference ``features``)."""
    if "front_end" in meta:
        return FrontEnd.from_settings(meta["front_end"])
    feats = meta.get("features", {})
    return FrontEnd.preset(
        "mcdonnell_gao",
        sample_rate=feats.get("sample_rate", 48_000),
        n_fft=feats.get("n_fft", 2048),
        hop_length=feats.get("hop_length", 1024),
        n_mels=feats.get("n_mels", 128),
        f_min=float(feats.get("fmin", 0.0)),
        f_max=float(feats.get("fmax") or feats.get("sample_rate", 48_000) / 2),
    )
