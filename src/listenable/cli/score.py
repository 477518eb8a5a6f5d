"""``listenable score DATA --out DIR``: accuracy, per-class recall, confusion matrix."""

from __future__ import annotations

from pathlib import Path

from listenable.cli import common


def add_parser(sub) -> None:
    p = sub.add_parser("score", help="accuracy, per-class recall and confusion matrix")
    p.add_argument("data")
    p.add_argument("--out", required=True, help="output folder (score.json, confusion.png)")
    common.add_model_options(p, layer=False)
    p.add_argument("--split", default="evaluate")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--workers", type=int, default=0)
    common.add_device(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from listenable.data import open_dataset
    from listenable.scoring import score, write_score

    model = common.load_model(args, common.device(args.device))
    dataset = open_dataset(Path(args.data), split=args.split)
    bar = common.progress(len(dataset), "score")
    result = score(
        model,
        None,
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
