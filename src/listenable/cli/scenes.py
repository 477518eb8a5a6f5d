"""``listenable scenes DIR``: scenes with planted events, in the TAU 2019 layout.

``--sources synthetic`` (the default) generates every sound; ``--sources real`` cuts the
events and backgrounds from recordings that Debian packages ship (fetched with
``apt-get download`` into ``--sources-cache``, or read from ``--sources-dir``).
"""

from __future__ import annotations

from pathlib import Path

from listenable.cli import common
from listenable.errors import UsageError


def add_parser(sub) -> None:
    p = sub.add_parser("scenes", help="generate scenes with planted events (TAU layout)")
    p.add_argument("out")
    p.add_argument("--clips-per-class", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--sources",
        choices=("synthetic", "real"),
        default="synthetic",
        help="synthetic: generated sounds; real: recordings from Debian packages",
    )
    p.add_argument(
        "--sources-cache",
        help="--sources real: where the packages are downloaded and extracted, reused on "
        "later runs (default OUT/.sources)",
    )
    p.add_argument(
        "--sources-dir",
        help="--sources real: a tree with the packages already extracted (dpkg -x), one "
        "folder per package or one root; nothing is downloaded",
    )
    p.set_defaults(func=run)


def run(args) -> int:
    if args.clips_per_class < 1:
        raise UsageError(f"--clips-per-class {args.clips_per_class}: must be at least 1")
    real = args.sources == "real"
    if not real and (args.sources_cache or args.sources_dir):
        raise UsageError("--sources-cache and --sources-dir need --sources real")
    if real:
        from listenable.data.scenes import real as sources

        classes = sources.DEBIAN_SOURCES.classes
    else:
        from listenable.data.scenes import CLASSES as classes

    total = len(classes) * args.clips_per_class
    bar = common.progress(total, "scenes")

    def progress(done, _total):
        bar.n = done
        bar.refresh()

    try:
        if real:
            out = sources.write_real_scenes(
                Path(args.out),
                table=sources.DEBIAN_SOURCES,
                clips_per_class=args.clips_per_class,
                seed=args.seed,
                sources_dir=args.sources_dir,
                sources_cache=args.sources_cache,
                progress=progress,
            )
        else:
            from listenable.data.scenes import write_scenes

            out = write_scenes(
                Path(args.out),
                clips_per_class=args.clips_per_class,
                seed=args.seed,
                progress=progress,
            )
    finally:
        bar.close()
    print(f"wrote {total} {args.sources} clips in the TAU layout to {out}")
    if real:
        print(f"credits and licences of the recordings: {out / 'CREDITS.md'}")
    return 0
