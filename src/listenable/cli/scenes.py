"""``listenable scenes DIR``: synthetic scenes with planted events, in the TAU 2019 layout."""

from __future__ import annotations

from pathlib import Path

from listenable.cli import common


def add_parser(sub) -> None:
    p = sub.add_parser("scenes", help="generate synthetic scenes with planted events (TAU layout)")
    p.add_argument("out")
    p.add_argument("--clips-per-class", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def run(args) -> int:
    from listenable.data.scenes import CLASSES, write_scenes

    total = len(CLASSES) * args.clips_per_class
    bar = common.progress(total, "scenes")

    def progress(done, _total):
        bar.n = done
        bar.refresh()

    out = write_scenes(
        Path(args.out), clips_per_class=args.clips_per_class, seed=args.seed, progress=progress
    )
    bar.close()
    print(f"wrote {total} clips in the TAU layout to {out}")
    return 0
