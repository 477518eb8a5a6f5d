"""Checkpoints: safetensors weights plus a JSON sidecar of metadata. Never unpickled.

``model.safetensors`` holds the tensors; ``model.json`` beside it holds the class names,
the architecture, the front end's settings (``front_end``, :class:`~listenable.frontends.
FrontEnd`) and the provenance (command, seed, data, time). Both are validated on load: the
class count must match the weights, the front end must be one listenable computes, and
every tensor must have the shape the architecture expects. Checkpoints of the first
format, whose sidecar holds the reference model's ``features`` instead, keep loading.

Loading checks before it builds or allocates anything: both files are regular files (a
FIFO would block), the sidecar is at most :data:`MAX_SIDECAR_BYTES`, its architecture holds
only the keys its network takes, in range and consistent with the front end, there are at
most :data:`MAX_CLASSES` class names, each non-empty and printable (no escape sequences
reach a terminal), and the safetensors header (read without loading a tensor) names
exactly the tensors, shapes and dtypes of the network built on the ``meta`` device.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from listenable.atomic import atomic_path, write_json
from listenable.errors import CheckpointError
from listenable.frontends import FrontEnd
from listenable.io import file_problem
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
    "MAX_CLASSES",
    "MAX_SIDECAR_BYTES",
]

FORMAT_VERSION = 1
_ASSETS = Path(__file__).resolve().parent / "assets"
#: The model that ships with the package (trained on synthetic scenes; see the README).
DEFAULT_CHECKPOINT = _ASSETS / "mcdonnell_gao_scenes.safetensors"
#: The shipped models by name (``--model default`` / ``--model small``).
SHIPPED = {"default": DEFAULT_CHECKPOINT, "small": _ASSETS / "small_scenes.safetensors"}
_PICKLE_MAGIC = (b"\x80", b"PK\x03\x04")  # pickle protocol 2+; torch.save's zip container
#: The largest JSON sidecar read: 10,000 class names of 200 characters (even written as
#: ``\\uXXXX`` escapes) and a 510-epoch training history fit in it.
MAX_SIDECAR_BYTES = 16 * 1024 * 1024
#: The most class names a checkpoint may have (the networks' own limit).
MAX_CLASSES = 10_000
_MAX_NAME = 200  # characters in one class name
#: The keyword arguments each network's ``architecture`` may hold, beyond ``name``.
_ARCH_KEYS = {
    "McDonnellGao": ("n_classes", "n_mels", "in_channels"),
    "SmallCNN": ("n_classes", "n_mels", "widths", "dropout"),
}
#: safetensors dtype names -> torch dtypes (the ones listenable's networks hold)
_DTYPES = {"F32": torch.float32, "F64": torch.float64, "F16": torch.float16,
           "BF16": torch.bfloat16, "I64": torch.int64, "I32": torch.int32, "I8": torch.int8,
           "U8": torch.uint8, "BOOL": torch.bool}  # fmt: skip


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
    ``torch.save`` file is refused without being unpickled; everything is checked against
    the sidecar and the safetensors header before the network is built (module doc).
    """
    path = default_checkpoint() if path is None else Path(path)
    problem = file_problem(path)
    if problem == "file not found":
        raise CheckpointError(f"{path}: checkpoint not found")
    if problem is not None:
        raise CheckpointError(f"{path}: {problem}; expected a .safetensors checkpoint")
    with open(path, "rb") as handle:
        head = handle.read(8)
    if head.startswith(_PICKLE_MAGIC):
        raise CheckpointError(
            f"{path}: looks like a pickle / torch.save file; listenable never unpickles files "
            "(they can run arbitrary code). Convert it to safetensors with the code that made it."
        )
    meta_path = _sidecar(path)
    meta = _read_sidecar(path, meta_path)
    _validate_metadata(meta, meta_path)
    header = _read_header(path)
    try:
        with torch.device("meta"):  # shapes and dtypes only: nothing is allocated
            expected = build_model(meta["architecture"]).state_dict()
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{meta_path}: bad architecture ({exc})") from None
    _match_header(header, expected, path)
    try:
        tensors = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: not a valid safetensors file ({exc})") from None
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(f"{path}: tensor {name} holds NaN or Inf")
    model = build_model(meta["architecture"])
    model.load_state_dict(tensors)
    model.class_names = list(meta["class_names"])
    return model.to(device).eval(), meta


def _read_sidecar(path: Path, meta_path: Path) -> dict:
    problem = file_problem(meta_path)
    if problem == "file not found":
        raise CheckpointError(f"{path}: metadata {meta_path.name} is missing beside it")
    if problem is not None:
        raise CheckpointError(f"{meta_path}: {problem}; expected the checkpoint's JSON")
    size = meta_path.stat().st_size
    if size > MAX_SIDECAR_BYTES:
        raise CheckpointError(
            f"{meta_path}: {size:,} bytes, larger than a checkpoint's metadata can be "
            f"({MAX_SIDECAR_BYTES:,} bytes at most)"
        )
    try:
        with open(meta_path, "rb") as handle:  # at most the limit, even if the file grows
            return json.loads(handle.read(MAX_SIDECAR_BYTES + 1).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{meta_path}: malformed JSON ({exc})") from None
    except RecursionError:
        raise CheckpointError(f"{meta_path}: malformed JSON (nested too deeply)") from None


def _read_header(path: Path) -> dict[str, tuple[tuple[int, ...], str]]:
    """``name -> (shape, dtype name)`` of the tensors in a safetensors file, from its
    header alone."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            return {
                key: (tuple(handle.get_slice(key).get_shape()), handle.get_slice(key).get_dtype())
                for key in handle.keys()  # noqa: SIM118 (a safe_open handle, not a dict)
            }
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: not a valid safetensors file ({exc})") from None


def _match_header(header: dict, expected: dict, path: Path) -> None:
    missing = sorted(set(expected) - set(header))
    unexpected = sorted(set(header) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: weights do not match the architecture "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    for name, (shape, dtype) in header.items():
        want = expected[name]
        if shape != tuple(want.shape):
            raise CheckpointError(
                f"{path}: tensor {name} has shape {shape}, expected {tuple(want.shape)} "
                "(class count or architecture mismatch)"
            )
        if _DTYPES.get(dtype) != want.dtype:
            raise CheckpointError(
                f"{path}: tensor {name} is {dtype}, expected {str(want.dtype).replace('torch.', '')}"
                " (listenable does not cast weights)"
            )


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
    _validate_class_names(names, where)
    if "front_end" in meta:
        try:
            front_end = FrontEnd.from_settings(meta["front_end"])
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"{where}: bad front_end settings ({exc})") from None
    else:
        front_end = _validate_features(meta.get("features"), where)
    _validate_architecture(meta.get("architecture"), len(names), front_end, where)


def _validate_class_names(names: list[str], where: Path) -> None:
    if len(names) > MAX_CLASSES:
        raise CheckpointError(f"{where}: {len(names):,} class names; at most {MAX_CLASSES:,}")
    for i, name in enumerate(names):
        if not name.strip():
            raise CheckpointError(f"{where}: class name {i} is empty")
        if len(name) > _MAX_NAME:
            raise CheckpointError(
                f"{where}: class name {i} has {len(name)} characters; at most {_MAX_NAME}"
            )
        if not name.isprintable():  # ANSI escapes, newlines, bidi overrides, ...
            raise CheckpointError(f"{where}: class name {i} {ascii(name)} holds control characters")
    if len(set(names)) != len(names):
        raise CheckpointError(f"{where}: class_names has duplicates")


def _validate_architecture(arch: object, n_names: int, front_end: FrontEnd, where: Path) -> None:
    """Known network, known keys, values in range and matching the front end: checked on
    the JSON, before anything is built."""
    if not isinstance(arch, dict):
        raise CheckpointError(f"{where}: architecture missing")
    name = arch.get("name")
    if name not in _ARCH_KEYS:
        raise CheckpointError(
            f"{where}: bad architecture (unknown architecture {name!r}; known: "
            f"{sorted(_ARCH_KEYS)})"
        )
    unknown = sorted(set(arch) - {"name", *_ARCH_KEYS[name]})
    if unknown:
        raise CheckpointError(
            f"{where}: bad architecture ({name} got an unexpected keyword argument "
            f"{unknown[0]!r}; it takes {', '.join(_ARCH_KEYS[name])})"
        )

    def integer(key, default, lo, hi):
        value = arch.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise CheckpointError(
                f"{where}: bad architecture ({key}={value!r} must be an integer in [{lo}, {hi}])"
            )
        return value

    n_classes = arch.get("n_classes", 10)
    if n_classes != n_names or isinstance(n_classes, bool):
        raise CheckpointError(
            f"{where}: {n_names} class names but the architecture has {n_classes!r} classes"
        )
    integer("n_classes", 10, 1, MAX_CLASSES)
    if name == "McDonnellGao":
        n_mels = integer("n_mels", 128, 2, 1_024)
        channels = integer("in_channels", 6, 1, 64)
        if n_mels % 2:
            raise CheckpointError(
                f"{where}: bad architecture (n_mels={n_mels} must be even: two band paths)"
            )
    else:
        n_mels = integer("n_mels", 64, 16, 512)
        channels = 1
        widths = arch.get("widths", [24, 48, 96, 192])
        if (
            not isinstance(widths, list)
            or len(widths) != 4
            or any(isinstance(w, bool) or not isinstance(w, int) or not 1 <= w <= 1_024
                   for w in widths)
        ):  # fmt: skip
            raise CheckpointError(
                f"{where}: bad architecture (widths={widths!r} must be 4 integers in [1, 1024])"
            )
        dropout = arch.get("dropout", 0.2)
        if (
            isinstance(dropout, bool)
            or not isinstance(dropout, (int, float))
            or not 0 <= dropout < 1
        ):
            raise CheckpointError(
                f"{where}: bad architecture (dropout={dropout!r} must be a number in [0, 1))"
            )
    if n_mels != front_end.n_mels:
        raise CheckpointError(
            f"{where}: the architecture takes n_mels={n_mels} but the front end computes "
            f"{front_end.n_mels} mel bands"
        )
    if channels != front_end.feature_channels:
        raise CheckpointError(
            f"{where}: the architecture takes {channels} feature channels but the front end "
            f"computes {front_end.feature_channels}"
        )


#: Settings of the first checkpoint format's ``features`` (the reference front end).
_FEATURES_V1 = {
    "sample_rate": 48_000, "n_fft": 2048, "hop_length": 1024, "window": "hann",
    "center": True, "pad_mode": "reflect", "n_mels": 128, "fmin": 0.0, "fmax": 24_000.0,
    "mel_scale": "htk", "mel_norm": None, "log_offset": 1e-8, "delta_width": 5,
    "frame_offset": 4,
}  # fmt: skip


def _validate_features(feats, where: Path) -> FrontEnd:
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
        return front_end_for({"features": feats})
    except (TypeError, ValueError) as exc:
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
