"""``listenable analyze DATA --out DIR``: the paper's experiment (explain a split, keep the
confident clips, write a listenable gallery; resumable; sharded under torchrun) and
``listenable demo`` (synthetic scenes → a shipped model → analyze → gallery).

Refused before any work, exit status 2: bad options (``--min-confidence nan``...), an
``--out`` that is a file or lies inside a folder data set (its outputs would be read as
clips next time), and an ``--out`` another ``analyze`` is writing into (``another analyze
is running on OUT (pid N)``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from listenable.cli import common
from listenable.errors import UsageError


def add_parser(sub) -> None:
    p = sub.add_parser(
        "analyze",
        help="the paper's experiment: explain a whole split, keep the "
        "confident clips, write a listenable gallery (resumable)",
    )
    p.add_argument("data", help="TAU tree, class folders or a path,label CSV")
    p.add_argument("--out", required=True)
    common.add_model_options(p)
    p.add_argument("--split", default="train", help="train, evaluate, test or all")
    p.add_argument("--min-confidence", type=float, default=0.8)
    p.add_argument("--correct-only", action="store_true")
    common.add_mask_options(p)
    p.add_argument(
        "--compare",
        default="",
        metavar="METHODS",
        help="comma-separated methods also computed for every selected clip, side by side "
        "with --method in the gallery (e.g. layercam,gradcam)",
    )
    add_audio_format(p)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--workers", type=int, default=0, help="decoding worker processes")
    common.add_max_duration(p)
    common.add_device(p)
    p.set_defaults(func=run)

    p = sub.add_parser("demo", help="synthetic scenes + shipped model + analyze + gallery")
    p.add_argument("--out", default="listenable-demo")
    p.add_argument(
        "--model", default=None, help="default (the reference model) or small (the small CNN)"
    )
    p.add_argument("--clips-per-class", type=int, default=2)
    p.add_argument("--seed", type=int, default=2026)
    p.add_argument(
        "--min-confidence",
        type=float,
        default=0.3,
        help="the shipped model's softmax rarely passes the paper's 0.8 (see README)",
    )
    p.add_argument("--batch-size", type=int, default=4)
    add_audio_format(p)
    common.add_device(p)
    p.set_defaults(func=run_demo, checkpoint=None, front_end=None)


def add_audio_format(p) -> None:
    from listenable.report.audio import AUDIO_FORMATS

    p.add_argument(
        "--audio-format",
        choices=AUDIO_FORMATS,
        default="ogg",
        help="audio of the gallery (default ogg: ~235 kB per 10 s clip; flac lossless)",
    )


def _analyze_config(args):
    from listenable.analyze import AnalyzeConfig

    return AnalyzeConfig(
        split=args.split,
        min_confidence=args.min_confidence,
        correct_only=args.correct_only,
        **common.mask_settings(args),
        audio_format=args.audio_format,
        compare=[m.strip() for m in args.compare.split(",") if m.strip()],
        batch_size=args.batch_size,
        workers=args.workers,
    )


def check_out(data: Path, out: Path) -> None:
    """Refuse (:class:`UsageError`) an ``--out`` that is a file or below one (as ``explain``
    does), or that is or lies inside a folder data set: the next run would take its audio
    outputs for clips and its ``figures/`` for a class. A TAU tree or a CSV lists its
    clips, so ``--out`` may be inside those."""

    common.check_out(out)
    if not data.is_dir() or (data / "meta.csv").is_file() or (data / "evaluation_setup").is_dir():
        return
    root, target = os.path.realpath(data), os.path.realpath(out)
    if os.path.commonpath([root, target]) == root:
        raise UsageError(
            f"--out {out} is inside the folder data set {data}: the next run would read its "
            f"outputs as clips; choose an --out outside {data}"
        )


def _run_analyze(data_path: Path, out: Path, args, cfg, device: str) -> dict:
    from listenable.data import open_dataset
    from listenable.distributed import analyze, from_env

    model = common.load_model(args, device)
    spec = args.model or args.checkpoint or "default"
    meta = {**getattr(model, "checkpoint_meta", {}), "checkpoint_path": str(spec)}
    dataset = open_dataset(data_path, split=cfg.split)
    rank = from_env()  # under torchrun: this rank's share of the clips, one bar (rank 0)
    bars = []

    def on_plan(todo, done):
        label = "analyze" + rank.label()
        bars.append(common.progress(todo + done, label, disable=None if rank.is_main else True))
        bars[0].update(done)

    def progress(n, stats):
        bars[0].update(n)
        bars[0].set_postfix(clips_s=f"{stats['clips_per_s']:.2f}")

    try:
        return analyze(dataset, out, model, meta, cfg, progress=progress, on_plan=on_plan)
    finally:
        for bar in bars:
            bar.close()


def _print_summary(summary: dict, out: Path) -> None:
    from listenable.analyze import read_manifest

    for row in read_manifest(out).values():
        if row["status"] != "ok":
            print(f"failed: {row['error']}", file=sys.stderr)
    totals = summary["totals"]
    acc = totals["accuracy"]
    print(
        f"{totals['clips']} clips, {totals['selected']} selected, {totals['failed']} failed"
        + (f", accuracy {acc:.3f}" if acc is not None else "")
        + f"; method {summary['settings']['method']}"
    )
    for name, entry in summary["classes"].items():
        acc = entry["accuracy"]
        print(
            f"  {name:20s} clips {entry['clips']:4d}  selected {entry['selected']:4d}"
            + (f"  accuracy {acc:.3f}" if acc is not None else "")
        )


def run(args) -> int:
    from listenable.distributed import process_group
    from listenable.io import MAX_DURATION, duration_limit

    out = Path(args.out)
    cfg = _analyze_config(args)  # bad options: exit 2 before anything is loaded
    check_out(Path(args.data), out)
    common.check_max_duration(args.max_duration)
    with (
        duration_limit(args.max_duration or MAX_DURATION),
        process_group(common.device(args.device)) as rank,  # torchrun: clips sharded
    ):
        summary = _run_analyze(Path(args.data), out, args, cfg, rank.device)
    if not rank.is_main:  # rank 0 prints and builds the gallery
        return 1 if summary["totals"]["failed"] else 0
    _print_summary(summary, out)
    index = _gallery(out)
    if index:
        print(f"gallery: {index}")
    return 1 if summary["totals"]["failed"] else 0


def _gallery(out: Path):
    try:
        from listenable.report.gallery import build_gallery
    except ImportError:  # pragma: no cover - gallery is part of the package
        return None
    return build_gallery(out)


def run_demo(args) -> int:
    from listenable.analyze import AnalyzeConfig
    from listenable.data.scenes import write_scenes

    out = Path(args.out)
    data = out / "scenes"
    print(f"1/3 generating {args.clips_per_class} synthetic scenes per class in {data}")
    write_scenes(data, clips_per_class=args.clips_per_class, seed=args.seed, evaluate_fraction=0.5)
    print(f"2/3 explaining every clip with the shipped model ({args.model or 'default'})")
    cfg = AnalyzeConfig(
        split="all",
        min_confidence=args.min_confidence,
        batch_size=args.batch_size,
        audio_format=args.audio_format,
    )
    summary = _run_analyze(data, out / "gallery", args, cfg, common.device(args.device))
    _print_summary(summary, out / "gallery")
    print("3/3 building the gallery")
    index = _gallery(out / "gallery")
    print(f"open {index}")
    return 1 if summary["totals"]["failed"] else 0
