"""What each attribution method costs per explanation, on real clips and a trained model.

``pipeline.py`` times Grad-CAM on random weights, where every method's cost is fixed. The
default method, ``optimised``, is not: it edits the map only for the clips whose masked
clip loses the decision, up to ``steps`` times (one forward and one backward pass each),
so its cost depends on the model and the clips. This times ``Explainer(model,
method=m)(waves)`` (features, map, mask, inverse STFT: the whole explanation, no metrics)
for each method on the same clips, interleaved round by round (the order rotates), and
prints the median seconds per clip, the ratio to the first method, and for ``optimised``
how many edit steps the clips took::

    python benchmarks/method_cost.py work/real-scenes-eval --split evaluate \\
        --model benchmarks/checkpoints/small-real.safetensors --clips 16
    python benchmarks/method_cost.py work/real-scenes-eval --split evaluate \\
        --model work/ckpt/reference-real.safetensors --clips 8 --batch-size 4
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time

import torch


class _Steps(logging.Handler):
    """Collects the per-clip edit steps ``optimised`` logs at DEBUG."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.steps: list[int] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("optimised mask: edit steps per clip"):
            self.steps.extend(record.args[0])


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("data", help="a data set listenable opens (TAU tree, class folders, CSV)")
    p.add_argument("--split", default="evaluate")
    p.add_argument("--model", default=None, help="model spec or checkpoint (default: shipped)")
    p.add_argument("--methods", default="layercam,optimised")
    p.add_argument("--clips", type=int, default=16, help="the first N clips of the split")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    return p.parse_args(argv)


def main(argv=None) -> int:
    from listenable.data import open_dataset
    from listenable.explain import Explainer
    from listenable.io import load_for
    from listenable.models.spec import load_model

    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_model(args.model)
    dataset = open_dataset(args.data, split=args.split)
    paths = dataset.paths[: args.clips]
    if not paths:
        print(f"{args.data}: no clips in split {args.split!r}", file=sys.stderr)
        return 2
    waves = [load_for(p, model.front_end)[0] for p in paths]
    length = min(w.shape[-1] for w in waves)
    waves = torch.stack([w[..., :length] for w in waves])
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    explainers = {m: Explainer(model, method=m) for m in methods}
    handler = _Steps()
    log = logging.getLogger("listenable.cams.optimised")
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    explainers[methods[0]](waves[:1])  # warm-up: geometry probes, allocator
    seconds: dict[str, list[float]] = {m: [] for m in methods}
    for r in range(args.rounds):
        handler.steps.clear()
        for m in methods[r % len(methods) :] + methods[: r % len(methods)]:
            t0 = time.perf_counter()
            for i in range(0, len(waves), args.batch_size):
                explainers[m](waves[i : i + args.batch_size])
            seconds[m].append((time.perf_counter() - t0) / len(waves))
    base = statistics.median(seconds[methods[0]])
    print(
        f"{len(waves)} clips of {args.data} ({args.split}), {length / model.front_end.sample_rate:.1f} s, "
        f"model {args.model or 'shipped'}, batch {args.batch_size}, {torch.get_num_threads()} "
        f"thread(s), median of {args.rounds} rounds"
    )
    for m in methods:
        per_clip = statistics.median(seconds[m])
        print(f"  {m:12s} {per_clip:7.3f} s per clip   x{per_clip / base:5.2f} of {methods[0]}")
    if handler.steps:
        steps = handler.steps
        print(
            f"  optimised edit steps per clip (last round): none {sum(s == 0 for s in steps)}, "
            f"mean {statistics.mean(steps):.1f}, max {max(steps)} of {len(steps)} clips"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
