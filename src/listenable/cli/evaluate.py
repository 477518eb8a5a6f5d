"""``listenable evaluate DATA --out DIR``: faithfulness, deletion/insertion, sanity, ground
truth and localisation of every attribution method (:func:`listenable.evaluation.run.evaluate`)."""

from __future__ import annotations

from listenable.cli import common
from listenable.evaluation.metrics import APPLY_TO, BASELINES
from listenable.evaluation.run import TARGETS


def add_parser(sub) -> None:
    from listenable.masking import MODES

    p = sub.add_parser(
        "evaluate",
        help="measure explanations: faithfulness, deletion/insertion, sanity, ground truth",
    )
    p.add_argument("data", help="TAU tree, synthetic scenes, class folders or a CSV")
    p.add_argument("--out", required=True, help="output folder (results.json, results.md, plots)")
    common.add_model_options(p, layer=False)
    p.add_argument("--split", default="evaluate")
    p.add_argument("--methods", help="comma-separated methods (default: all)")
    p.add_argument("--max-clips", type=int, help="evaluate this many clips, spread over the split")
    common.add_device(p)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=16, help="deletion/insertion steps (default 16)")
    p.add_argument("--baseline", choices=BASELINES, default="zero", help="what removed bins become")
    p.add_argument("--target", choices=TARGETS, default="predicted", help="class to explain")
    p.add_argument(
        "--apply-to",
        choices=APPLY_TO,
        default="audio",
        help="mask the re-synthesised audio (default) or the classifier's input spectrum",
    )
    mask = p.add_argument_group("mask (default: the explainer's)")
    mask.add_argument("--percentile", type=float, help="θ = this percentile of the heatmap")
    mask.add_argument("--delta", type=float, help="sigmoid slope 10^δ")
    mask.add_argument("--mode", choices=MODES)
    mask.add_argument(
        "--threshold-on",
        choices=("heatmap", "stft"),
        help="take θ over the heatmap's own cells or over the linear STFT bins",
    )
    p.add_argument(
        "--sanity-clips", type=int, default=2, help="clips for the sanity check (0 = skip)"
    )
    p.add_argument(
        "--sanity-methods", help="comma-separated (default: all but the multi-pass ones)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def run(args) -> int:
    from listenable.evaluation.run import evaluate, markdown_table

    bar = common.progress(0, "evaluate", unit="step")

    def progress(done, total):
        bar.total = total
        bar.n = done
        bar.refresh()

    results = evaluate(
        args.data,
        args.out,
        model=common.load_model(args, common.device(args.device)),
        split=args.split,
        methods=args.methods,
        max_clips=args.max_clips,
        device=common.device(args.device),
        batch_size=args.batch_size,
        steps=args.steps,
        baseline=args.baseline,
        target=args.target,
        apply_to=args.apply_to,
        percentile=args.percentile,
        delta=args.delta,
        mode=args.mode,
        threshold_on=args.threshold_on,
        sanity_clips=args.sanity_clips,
        sanity_methods=(
            [m.strip() for m in args.sanity_methods.split(",") if m.strip()]
            if args.sanity_methods
            else None
        ),
        seed=args.seed,
        progress=progress,
    )
    bar.close()
    print(markdown_table(results), end="")
    print(f"written to {args.out} in {results['timing']['total_s']:.0f} s")
    return 1 if results["errors"] else 0
