"""``listenable explain a.wav b.flac --out DIR``: listenable and residual audio, JSON, figure."""

from __future__ import annotations

from pathlib import Path

from listenable.cli import common
from listenable.errors import ListenableError, UsageError


def add_parser(sub) -> None:
    p = sub.add_parser("explain", help="explain clips: listenable + residual audio, JSON, figure")
    p.add_argument("clips", nargs="+", help="audio files (wav, flac, ogg, ...)")
    p.add_argument("--out", required=True, help="output folder")
    common.add_model_options(p)
    common.add_mask_options(p)
    common.add_device(p)
    p.add_argument("--batch-size", type=int, default=1)
    p.set_defaults(func=run)


def run(args) -> int:
    from listenable.io import display_name
    from listenable.writers import ExplanationWriter

    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise UsageError(f"--out {args.out}: exists and is not a folder")
    model = common.load_model(args, common.device(args.device))
    writer = ExplanationWriter(
        model,
        None,
        Path(args.out),
        target=args.target,
        inputs=args.clips,
        **common.mask_settings(args),
    )
    rate = model.front_end.sample_rate
    failures = 0
    bar = common.progress(len(args.clips), "explain")
    for clip in args.clips:
        try:
            stem = writer.explain_file(Path(clip))
            bar.write(f"{display_name(clip)}: {stem}.listenable.wav ({rate} Hz)")
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
