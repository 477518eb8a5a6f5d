"""The ``listenable`` command line. It prints (with progress bars); the library only logs.

Exit status: 0 success, 1 when any clip failed (the others are still processed),
2 for usage errors. User errors are one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from pathlib import Path

from listenable.errors import ListenableError

__all__ = ["main"]


def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ListenableError("--device cuda: no CUDA device is available")
    return name


def _load_model(checkpoint: str | None, device: str):
    from listenable.checkpoint import load_checkpoint

    model, meta = load_checkpoint(checkpoint, device=device)
    return model, meta


def _progress(total: int, desc: str, unit: str = "clip", *, disable: bool | None = None):
    from tqdm import tqdm

    return tqdm(
        total=total, desc=desc, unit=unit, dynamic_ncols=True, file=sys.stderr, disable=disable
    )


# --- explain ---------------------------------------------------------------------------
def _add_mask_options(p: argparse.ArgumentParser) -> None:
    from listenable.masking import DEFAULT_DELTA, DEFAULT_PERCENTILE

    p.add_argument("--method", default="gradcam", help="attribution method (default gradcam)")
    p.add_argument("--layer", default="fusion", help="layer the CAM reads (default fusion)")
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


def cmd_explain(args) -> int:
    from listenable.io import display_name
    from listenable.writers import ExplanationWriter

    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise ListenableError(f"--out {args.out}: exists and is not a folder")
    device = _device(args.device)
    model, meta = _load_model(args.checkpoint, device)
    writer = ExplanationWriter(
        model,
        meta,
        Path(args.out),
        method=args.method,
        layer=args.layer,
        percentile=args.percentile,
        delta=args.delta,
        mode=args.mode,
        target=args.target,
        inputs=args.clips,
    )
    failures = 0
    bar = _progress(len(args.clips), "explain")
    for clip in args.clips:
        try:
            stem = writer.explain_file(Path(clip))
            bar.write(f"{display_name(clip)}: {stem}.listenable.wav")
        except ListenableError as exc:
            failures += 1
            bar.write(f"error: {exc}")
        except (OSError, ValueError, RuntimeError) as exc:  # one clip must not stop the run
            failures += 1
            reason = (str(exc).splitlines() or [""])[0]
            bar.write(f"error: {display_name(clip)}: {type(exc).__name__}: {reason}")
        bar.update(1)
    bar.close()
    print(
        f"wrote {len(args.clips) - failures} explanation(s) to {args.out}"
        + (f"; {failures} clip(s) failed" if failures else "")
    )
    return 1 if failures else 0


# --- scenes ----------------------------------------------------------------------------
def cmd_scenes(args) -> int:
    from listenable.data.scenes import CLASSES, write_scenes

    total = len(CLASSES) * args.clips_per_class
    bar = _progress(total, "scenes")

    def progress(done, _total):
        bar.n = done
        bar.refresh()

    out = write_scenes(
        Path(args.out), clips_per_class=args.clips_per_class, seed=args.seed, progress=progress
    )
    bar.close()
    print(f"wrote {total} clips in the TAU layout to {out}")
    return 0


# --- train -----------------------------------------------------------------------------
def cmd_train(args) -> int:
    from listenable.distributed import process_group

    with process_group(_device(args.device)) as rank:  # torchrun: DDP; else one process
        return _train(args, rank)


def _train(args, rank) -> int:
    from listenable.data import open_dataset
    from listenable.distributed import train
    from listenable.train import TrainConfig

    dataset = open_dataset(Path(args.data), split=args.split)
    cfg = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        seed=args.seed,
        workers=args.workers,
        device=rank.device,
        precise_bn_batches=args.precise_bn,
        extra={
            "provenance": {
                "command": "listenable " + " ".join(sys.argv[1:]),
                "data": str(args.data),
                "split": args.split,
                "seed": args.seed,
                "clips": len(dataset),
            }
        },
    )
    from tqdm import tqdm

    bar = tqdm(
        desc="train" + rank.label(),
        unit="clip",
        dynamic_ncols=True,
        file=sys.stderr,
        disable=None if rank.is_main else True,
    )

    def on_batch(stats):
        bar.update(stats["batch_clips"])
        bar.set_postfix(
            epoch=stats["epoch"] + 1,
            loss=f"{stats['loss']:.3f}",
            acc=f"{stats['accuracy']:.3f}",
            clips_s=f"{stats['clips_per_s']:.1f}",
            lr=f"{stats['lr']:.2g}",
        )

    def on_epoch(record):
        if not rank.is_main:  # each rank has its own share: rank 0 reports
            return
        bar.write(
            f"epoch {record['epoch']}: loss {record['loss']:.4f} "
            f"accuracy {record['accuracy']:.4f} ({record['seconds']:.0f} s)"
        )

    out = train(
        dataset, Path(args.out), cfg, resume=args.resume, on_batch=on_batch, on_epoch=on_epoch
    )
    bar.close()
    if rank.is_main:
        print(f"checkpoint: {out}")
    return 0


# --- score -----------------------------------------------------------------------------
def cmd_score(args) -> int:
    from listenable.data import open_dataset
    from listenable.scoring import score, write_score

    device = _device(args.device)
    model, meta = _load_model(args.checkpoint, device)
    dataset = open_dataset(Path(args.data), split=args.split)
    bar = _progress(len(dataset), "score")
    result = score(
        model,
        meta,
        dataset,
        batch_size=args.batch_size,
        workers=args.workers,
        progress=lambda n: bar.update(n),
    )
    bar.close()
    write_score(result, Path(args.out))
    print(
        f"accuracy {result['accuracy']:.4f} on {result['clips']} clips "
        f"({args.split}); written to {args.out}"
    )
    for name, recall in result["per_class_recall"].items():
        print(f"  {name:20s} {recall:.3f}")
    return 0


# --- analyze ---------------------------------------------------------------------------
def _analyze_config(args):
    from listenable.analyze import AnalyzeConfig

    return AnalyzeConfig(
        split=args.split,
        min_confidence=args.min_confidence,
        correct_only=args.correct_only,
        method=args.method,
        layer=args.layer,
        percentile=args.percentile,
        delta=args.delta,
        mode=args.mode,
        batch_size=args.batch_size,
        workers=args.workers,
    )


def _run_analyze(data_path: Path, out: Path, checkpoint, cfg, device: str) -> dict:
    from listenable.analyze import clip_ids
    from listenable.data import open_dataset
    from listenable.distributed import analyze, finished_clips, from_env

    model, meta = _load_model(checkpoint, device)
    meta = {**meta, "checkpoint_path": str(checkpoint or "shipped")}
    dataset = open_dataset(data_path, split=cfg.split)
    rank = from_env()  # under torchrun: this rank's share of the clips, one bar (rank 0)
    mine = clip_ids(list(dataset.paths))[rank.rank :: rank.world_size]
    bar = _progress(len(mine), "analyze" + rank.label(), disable=None if rank.is_main else True)
    done = finished_clips(out)
    bar.update(sum(c in done for c in mine))

    def progress(n, stats):
        bar.update(n)
        bar.set_postfix(clips_s=f"{stats['clips_per_s']:.2f}")

    summary = analyze(dataset, out, model, meta, cfg, progress=progress)
    bar.close()
    return summary


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
    )
    for name, entry in summary["classes"].items():
        acc = entry["accuracy"]
        print(
            f"  {name:20s} clips {entry['clips']:4d}  selected {entry['selected']:4d}"
            + (f"  accuracy {acc:.3f}" if acc is not None else "")
        )


def cmd_analyze(args) -> int:
    from listenable.distributed import process_group

    out = Path(args.out)
    with process_group(_device(args.device)) as rank:  # torchrun: clips sharded over ranks
        summary = _run_analyze(
            Path(args.data), out, args.checkpoint, _analyze_config(args), rank.device
        )
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


def cmd_demo(args) -> int:
    from listenable.analyze import AnalyzeConfig
    from listenable.data.scenes import write_scenes

    out = Path(args.out)
    data = out / "scenes"
    print(f"1/3 generating {args.clips_per_class} synthetic scenes per class in {data}")
    write_scenes(data, clips_per_class=args.clips_per_class, seed=args.seed, evaluate_fraction=0.5)
    print("2/3 explaining every clip with the shipped model")
    cfg = AnalyzeConfig(split="all", min_confidence=args.min_confidence, batch_size=args.batch_size)
    summary = _run_analyze(data, out / "gallery", None, cfg, _device(args.device))
    _print_summary(summary, out / "gallery")
    print("3/3 building the gallery")
    index = _gallery(out / "gallery")
    print(f"open {index}")
    return 1 if summary["totals"]["failed"] else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="listenable", description="Listen to what an audio scene classifier heard."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("explain", help="explain clips: listenable + residual audio, JSON, figure")
    p.add_argument("clips", nargs="+", help="audio files (wav, flac, ogg, ...)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--checkpoint", help="safetensors checkpoint (default: the shipped model)")
    p.add_argument("--target", help="class name to explain (default: the predicted class)")
    _add_mask_options(p)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--batch-size", type=int, default=1)
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("scenes", help="generate synthetic scenes with planted events (TAU layout)")
    p.add_argument("out")
    p.add_argument("--clips-per-class", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_scenes)

    p = sub.add_parser("train", help="train the McDonnell-Gao model with their recipe")
    p.add_argument("data", help="TAU tree, class folders or a path,label CSV")
    p.add_argument("--out", required=True, help="checkpoint path (.safetensors)")
    p.add_argument("--split", default="train")
    p.add_argument("--epochs", type=int, default=510)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--resume", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--precise-bn",
        type=int,
        default=0,
        metavar="BATCHES",
        help="re-estimate BN statistics over this many batches at the end",
    )
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("score", help="accuracy, per-class recall and confusion matrix")
    p.add_argument("data")
    p.add_argument("--out", required=True, help="output folder (score.json, confusion.png)")
    p.add_argument("--checkpoint")
    p.add_argument("--split", default="evaluate")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.set_defaults(func=cmd_score)

    p = sub.add_parser(
        "analyze",
        help="the paper's experiment: explain a whole split, keep the "
        "confident clips, write a listenable gallery (resumable)",
    )
    p.add_argument("data", help="TAU tree, class folders or a path,label CSV")
    p.add_argument("--out", required=True)
    p.add_argument("--checkpoint")
    p.add_argument("--split", default="train", help="train, evaluate, test or all")
    p.add_argument("--min-confidence", type=float, default=0.8)
    p.add_argument("--correct-only", action="store_true")
    _add_mask_options(p)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--workers", type=int, default=0, help="decoding worker processes")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.set_defaults(func=cmd_analyze)

    p = sub.add_parser("demo", help="synthetic scenes + shipped model + analyze + gallery")
    p.add_argument("--out", default="listenable-demo")
    p.add_argument("--clips-per-class", type=int, default=2)
    p.add_argument("--seed", type=int, default=2026)
    p.add_argument(
        "--min-confidence",
        type=float,
        default=0.3,
        help="the shipped model's softmax rarely passes the paper's 0.8 (see README)",
    )
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.set_defaults(func=cmd_demo)

    for extra in _EXTRA_COMMANDS:
        extra(sub)
    return parser


def _evaluate_parser(sub) -> None:
    from listenable.evaluation.run import add_parser

    add_parser(sub)


#: Functions ``(subparsers) -> None`` that add the sub-commands other modules own.
_EXTRA_COMMANDS: list = [_evaluate_parser]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    warnings.simplefilter("default")
    warnings.formatwarning = lambda msg, cat, *a, **k: f"warning: {msg}\n"
    try:
        return int(args.func(args) or 0)
    except ListenableError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # e.g. an unwritable --out, a folder given as a file
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
