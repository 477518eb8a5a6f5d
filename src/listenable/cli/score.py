"""``listenable score DATA --out DIR``: accuracy, per-class recall, confusion matrix.

A clip that cannot be loaded costs one ``error:`` line and is left out of the scores
(listed under ``"failed"`` in ``score.json``); the exit status is then 1.
"""

from __future__ import annotations

from pathlib import Path

from listenable.cli import common
from listenable.errors import UsageError


def add_parser(sub) -> None:
    p = sub.add_parser("score", help="accuracy, per-class recall and confusion matrix")
    p.add_argument("data")
    p.add_argument("--out", required=True, help="output folder (score.json, confusion.png)")
    common.add_model_options(p, layer=False)
    p.add_argument(
        "--split",
        default=None,
        help="train, evaluate, test or all for a TAU tree (default evaluate); sets without "
        "splits (class folders, a CSV list) are scored whole",
    )
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--workers", type=int, default=0)
    common.add_max_duration(p)
    common.add_device(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from listenable.data import open_dataset
    from listenable.scoring import score, write_score

    common.check_out(args.out)
    common.check_max_duration(args.max_duration)
    if args.batch_size < 1 or args.workers < 0:
        raise UsageError(
            f"--batch-size {args.batch_size} --workers {args.workers}: need a batch size of "
            "at least 1 and 0 or more workers"
        )
    model = common.load_model(args, common.device(args.device))
    dataset = open_dataset(Path(args.data), split=args.split, default_split="evaluate")
    dataset.max_duration = args.max_duration
    bar = common.progress(len(dataset), "score")
    result = score(
        model,
        None,
        dataset,
        batch_size=args.batch_size,
        workers=args.workers,
        progress=lambda n: bar.update(n),
    )
    for failure in result["failed"]:
        bar.write(f"error: {failure['error']}")
    bar.close()
    write_score(result, Path(args.out))
    failed = len(result["failed"])
    print(
        f"accuracy {result['accuracy']:.4f} on {result['clips']} clips"
        + (f" ({args.split})" if args.split else "")
        + f"; written to {args.out}"
        + (f"; {failed} clip(s) could not be scored" if failed else "")
    )
    for name, recall in result["per_class_recall"].items():
        print(f"  {name:20s} " + ("no clips" if recall is None else f"{recall:.3f}"))
    return 1 if failed else 0
