"""What several commands share: the device, progress bars, the model options (``--model``,
``--layer``, ``--target``) and the mask options (``--method``, ``--percentile``, ``--delta``,
``--mode``)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from listenable.errors import ListenableError, UsageError

__all__ = ["device", "progress", "add_device", "add_model_options", "add_mask_options",
           "load_model", "mask_settings", "check_out", "check_max_duration",
           "add_max_duration"]  # fmt: skip


def device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available")
    return name


def add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))


def progress(total: int, desc: str, unit: str = "clip", *, disable: bool | None = None):
    from tqdm import tqdm

    return tqdm(
        total=total, desc=desc, unit=unit, dynamic_ncols=True, file=sys.stderr, disable=disable
    )


def add_model_options(p: argparse.ArgumentParser, *, layer: bool = True) -> None:
    p.add_argument(
        "--model",
        help="default (the shipped reference model), small (the shipped small CNN), "
        "PATH.safetensors, module:function or hf:DIR",
    )
    p.add_argument("--checkpoint", help="a .safetensors checkpoint (the same as --model PATH)")
    p.add_argument(
        "--front-end",
        help="preset of the features a module:function model takes (mcdonnell_gao, panns, "
        "ast, log1p, small)",
    )
    if layer:
        p.add_argument("--layer", default="auto", help="layer the CAM reads (default: the model's)")
        p.add_argument("--target", help="class or tag to explain (default: the predicted one)")


def add_mask_options(p: argparse.ArgumentParser) -> None:
    from listenable.cams import DEFAULT_METHOD, FALLBACK_METHOD
    from listenable.masking import DEFAULT_DELTA, DEFAULT_PERCENTILE, DEFAULT_THRESHOLD_ON

    p.add_argument(
        "--method",
        default=None,
        help=f"attribution method (default {DEFAULT_METHOD} where the model's adapter names "
        f"fine_layers: the reference network, the small CNN, CNN14; else, or with another "
        f"--layer than the model's, {FALLBACK_METHOD})",
    )
    p.add_argument(
        "--percentile",
        type=float,
        default=DEFAULT_PERCENTILE,
        help="θ = this percentile of the normalised heatmap (default 75)",
    )
    p.add_argument(
        "--delta", type=float, default=DEFAULT_DELTA, help="sigmoid slope 10^δ (default 2)"
    )
    p.add_argument("--mode", choices=("sigmoid", "hard", "soft"), default="sigmoid")
    p.add_argument(
        "--threshold-on",
        choices=("heatmap", "stft"),
        default=DEFAULT_THRESHOLD_ON,
        help="take θ over the heatmap's own cells (default) or over the linear STFT bins",
    )


def mask_settings(args) -> dict:
    """The Explainer settings of the mask and method options."""
    return {
        "method": args.method,
        "layer": None if getattr(args, "layer", "auto") in (None, "auto") else args.layer,
        "percentile": args.percentile,
        "delta": args.delta,
        "mode": args.mode,
        "threshold_on": args.threshold_on,
    }


def load_model(args, device_name: str):
    """The :class:`~listenable.models.Explainable` the options name; a bad spec is a usage
    error (exit 2)."""
    from listenable.models.spec import load_model as load

    if args.model and args.checkpoint:
        raise UsageError("give --model or --checkpoint, not both")
    spec = args.model or args.checkpoint
    try:
        return load(spec, device=device_name, front_end=getattr(args, "front_end", None))
    except ListenableError as exc:
        raise UsageError(str(exc)) from None
    except ValueError as exc:
        raise UsageError(f"--model {spec}: {exc}") from None


def check_out(out: str | os.PathLike) -> None:
    """``--out`` must be a folder or a path a folder can be made at: refused up front (a
    usage error) when it, or the nearest part of it that exists, is not a folder."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise UsageError(f"--out {out}: exists and is not a folder")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if parent.exists() and not parent.is_dir():
        raise UsageError(f"--out {out}: {parent} is a file, so no folder can be made below it")


def check_max_duration(seconds: float | None) -> None:
    if seconds is not None and not seconds > 0:  # also NaN
        raise UsageError(f"--max-duration {seconds:g}: must be a positive number of seconds")


def add_max_duration(p: argparse.ArgumentParser) -> None:
    from listenable.io import MAX_DURATION

    p.add_argument(
        "--max-duration",
        type=float,
        default=None,
        metavar="SECONDS",
        help=f"refuse clips longer than this (default {MAX_DURATION:g} s: explaining a "
        f"{MAX_DURATION:g} s clip peaks at about 1.7 GB, and memory grows with the clip)",
    )
