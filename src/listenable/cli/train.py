"""``listenable train DATA --out model.safetensors``: the McDonnell & Gao recipe (reference
model, or ``--architecture small``); resumable; DDP under torchrun."""

from __future__ import annotations

import sys
from pathlib import Path

from listenable.cli import common
from listenable.errors import UsageError


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train a model with the McDonnell-Gao recipe")
    p.add_argument("data", help="TAU tree, class folders or a path,label CSV")
    p.add_argument("--out", required=True, help="checkpoint path (.safetensors)")
    p.add_argument(
        "--architecture",
        choices=("reference", "small"),
        default="reference",
        help="the McDonnell-Gao network (default) or the small 16 kHz CNN",
    )
    p.add_argument(
        "--split",
        default=None,
        help="train, evaluate, test or all for a TAU tree (default train); sets without "
        "splits (class folders, a CSV list) are read whole",
    )
    p.add_argument("--epochs", type=int, default=510)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=0)
    common.add_device(p)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--precise-bn",
        type=int,
        default=0,
        metavar="BATCHES",
        help="re-estimate BN statistics over this many batches at the end",
    )
    p.set_defaults(func=run)


def run(args) -> int:
    from listenable.distributed import process_group

    if args.epochs < 1 or args.batch_size < 1 or args.workers < 0 or args.precise_bn < 0:
        raise UsageError(
            f"--epochs {args.epochs} --batch-size {args.batch_size}: need at least one epoch "
            "and a batch size of at least 1 (and --workers, --precise-bn of 0 or more)"
        )

    with process_group(common.device(args.device)) as rank:  # torchrun: DDP; else one process
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
        architecture=args.architecture,
        extra={
            "provenance": {
                "command": "listenable " + " ".join(sys.argv[1:]),
                "data": str(args.data),
                "split": args.split or "train",
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
