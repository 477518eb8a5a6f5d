"""``listenable shortcut OUT``: a model caught cheating. Train the small model on scenes where
one class always carries a faint cue, and measure whether the listenable output finds it
(cue recall against a shuffled mask, residual flips); writes ``OUT/report.md`` and a gallery.
Resumable: run it again to reuse the data and continue the training."""

from __future__ import annotations

import json
from pathlib import Path

from listenable.cli import common


def add_parser(sub) -> None:
    from listenable.experiments.shortcut import ShortcutConfig

    d = ShortcutConfig()
    p = sub.add_parser(
        "shortcut",
        help="train on scenes with a spurious cue in one class; show that listenable finds it",
    )
    p.add_argument("out", help="output folder (data, checkpoint, gallery, report.md)")
    p.add_argument("--clips-per-class", type=int, default=d.clips_per_class)
    p.add_argument(
        "--evaluate-fraction",
        type=float,
        default=d.evaluate_fraction,
        help="share of each class's clips kept for testing",
    )
    p.add_argument("--duration", type=float, default=d.duration, help="clip length, s")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--precise-bn", type=int, default=d.precise_bn, metavar="BATCHES")
    p.add_argument(
        "--cue-class",
        default=d.cue_class,
        help="the class that carries the cue (default %(default)s)",
    )
    p.add_argument("--cue", default=d.cue, help="tone:HZ or click:RATE (default %(default)s)")
    p.add_argument(
        "--cue-db",
        type=float,
        default=d.cue_db,
        help="the cue's RMS over the clip's, dB (default %(default)s)",
    )
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--architecture", choices=("small", "reference"), default=d.architecture)
    p.add_argument("--method", default=d.method, help="attribution method (default %(default)s)")
    p.add_argument("--no-gallery", action="store_true", help="skip analyze and the gallery")
    from listenable.cli.analyze import add_audio_format

    add_audio_format(p)
    common.add_device(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from listenable.experiments.shortcut import ShortcutConfig, run_shortcut

    cfg = ShortcutConfig(
        clips_per_class=args.clips_per_class,
        evaluate_fraction=args.evaluate_fraction,
        duration=args.duration,
        seed=args.seed,
        cue_class=args.cue_class,
        cue=args.cue,
        cue_db=args.cue_db,
        architecture=args.architecture,
        epochs=args.epochs,
        batch_size=args.batch_size,
        precise_bn=args.precise_bn,
        method=args.method,
        gallery=not args.no_gallery,
        audio_format=args.audio_format,
        device=common.device(args.device),
    )
    bars: dict = {}

    def progress(step, done, total):
        bar = bars.get(step)
        if bar is None:
            bar = bars[step] = common.progress(total, step)
        bar.n = done
        bar.refresh()
        if done >= total:
            bar.close()

    train_bar = []

    def on_batch(stats):
        if not train_bar:
            train_bar.append(common.progress(None, "train"))
        bar = train_bar[0]
        bar.update(stats["batch_clips"])
        bar.set_postfix(
            epoch=stats["epoch"] + 1, loss=f"{stats['loss']:.3f}", acc=f"{stats['accuracy']:.3f}"
        )

    def on_epoch(record):
        line = (
            f"epoch {record['epoch']}: loss {record['loss']:.4f} "
            f"accuracy {record['accuracy']:.4f} ({record['seconds']:.0f} s)"
        )
        (train_bar[0].write if train_bar else print)(line)

    out = Path(args.out)
    report = run_shortcut(
        out, cfg, stage=print, progress=progress, on_batch=on_batch, on_epoch=on_epoch
    )
    for bar in [*bars.values(), *train_bar]:
        bar.close()
    r = report["results"]
    main = r["cue_recall"]["cue_class_explained"]
    flip = r["residual_flip"]
    cheat = r["cheating"]
    print(
        f"other classes called {cfg.cue_class}: "
        f"{_pct(cheat['other_classes_clean_called_cue_class'])} clean, "
        f"{_pct(cheat['other_classes_cued_called_cue_class'])} with the cue"
    )
    print(
        f"cue recall {_num(main['listenable'])} vs shuffled mask {_num(main['shuffled'])} "
        f"({_num(main['ratio'], 1)}x; bar {r['bar']['recall_ratio_at_least']:g}x: "
        f"{'met' if r['bar']['met'] else 'NOT met'})"
    )
    print(
        f"residual leaves {cfg.cue_class}: {_pct(flip['listenable_mask'])} "
        f"(shuffled mask {_pct(flip['shuffled_mask'])}) of {flip['clips']} clips"
    )
    if report.get("gallery") and report["gallery"].get("page"):
        print(f"hear it: {report['gallery']['page']}")
    print(f"report: {out / 'report.md'}")
    if args.verbose:
        print(json.dumps(r["accuracy"], indent=2))
    return 0


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.1f} %"


def _num(value, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"
