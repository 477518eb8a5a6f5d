"""``listenable explain a.wav b.flac --out DIR``: listenable and residual audio, JSON, figure."""

from __future__ import annotations

from pathlib import Path

from listenable.cli import common
from listenable.errors import AudioError, ListenableError


def add_parser(sub) -> None:
    p = sub.add_parser("explain", help="explain clips: listenable + residual audio, JSON, figure")
    p.add_argument("clips", nargs="+", help="audio files (wav, flac, ogg, ...)")
    p.add_argument("--out", required=True, help="output folder")
    common.add_model_options(p)
    common.add_mask_options(p)
    common.add_device(p)
    p.add_argument("--batch-size", type=int, default=1)
    common.add_max_duration(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from listenable.io import MAX_DURATION, audio_info, duration_limit
    from listenable.writers import ExplanationWriter

    common.check_out(args.out)
    common.check_max_duration(args.max_duration)
    model = common.load_model(args, common.device(args.device))
    with duration_limit(args.max_duration or MAX_DURATION):
        refused = {}  # clips refused from their header alone: before the explainer is built
        for clip in args.clips:
            try:
                audio_info(clip)
            except AudioError as exc:
                refused[clip] = str(exc)
        writer = None
        if len(refused) < len(args.clips):
            writer = ExplanationWriter(
                model,
                None,
                Path(args.out),
                target=args.target,
                inputs=args.clips,
                **common.mask_settings(args),
            )
        failures = _explain_all(args, writer, refused, model.front_end.sample_rate)
    method = f" with {writer.explainer.method}" if writer is not None else ""
    print(
        f"wrote {len(args.clips) - failures} explanation(s){method} to {args.out}"
        + (f"; {failures} clip(s) failed" if failures else "")
    )
    return 1 if failures else 0


def _explain_all(args, writer, refused: dict, rate: int) -> int:
    from listenable.io import display_name

    failures = 0
    bar = common.progress(len(args.clips), "explain")
    for clip in args.clips:
        if clip in refused:
            failures += 1
            bar.write(f"error: {refused[clip]}")
        else:
            try:
                stem = writer.explain_file(Path(clip))
                bar.write(f"{display_name(clip)}: {stem}.listenable.wav ({rate} Hz)")
            except ListenableError as exc:
                failures += 1
                bar.write(f"error: {exc}")
            except (OSError, ValueError, RuntimeError, MemoryError) as exc:  # one clip only
                failures += 1
                reason = (str(exc).splitlines() or [""])[0]
                bar.write(f"error: {display_name(clip)}: {type(exc).__name__}: {reason}")
        bar.update(1)
    bar.close()
    return failures
