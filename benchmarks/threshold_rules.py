"""Compare where θ is taken (``--threshold-on heatmap|stft``) from two ``listenable evaluate``
runs of the same model and clips: per method, the metrics that decide the default, each next
to its shuffled-mask floor. Prints a markdown table; with ``--bars METHOD[,SHARPER...]``
also checks issue 12's bars on that pair of runs and exits 1 if one fails:

* METHOD (the default explanation): event precision at least 0.10 above its shuffled mask's,
  at a Fid-In of at least 0.6, and no lower than with θ over the STFT bins;
* each SHARPER method: higher event precision than Grad-CAM at an equal or higher Fid-In.

Each precision comparison also prints the paired difference over the clips both runs scored
(from ``per_clip`` in results.json) with a 95 % bootstrap interval: a bar decided by less
than that interval's width is decided by which clips were drawn. The bars themselves are
the issue's: the means.

    python benchmarks/threshold_rules.py work/eval/small-real-heatmap work/eval/small-real-stft
    python benchmarks/threshold_rules.py HEATMAP_RUN STFT_RUN [MORE_STFT_RUNS] --bars layercam,optimised
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

KEYS = ("event_precision", "tf_iou", "event_recall", "fid_in", "AI", "AD", "time_smear")
MARGIN = 0.10  # precision above the shuffled floor
MIN_FID_IN = 0.6


def _load(folder: str) -> dict:
    return json.loads((Path(folder) / "results.json").read_text(encoding="utf-8"))


def _merge(runs: list[dict]) -> dict:
    """Several runs of the same clips (methods split over runs) as one."""
    merged = {"methods": {}, "per_clip": {}}
    for run in runs:
        merged["methods"].update(run.get("methods", {}))
        merged["per_clip"].update(run.get("per_clip", {}))
        if "settings" in run:
            merged.setdefault("settings", run["settings"])
    return merged


def _clip_names(run: dict) -> list[str] | None:
    clips = run.get("settings", {}).get("clip_list")
    return None if clips is None else [c.get("name") for c in clips]


def paired(a: dict, ma: str, b: dict, mb: str, key: str = "event_precision", draws: int = 4000):
    """Mean of ``a[ma] - b[mb]`` over the clips both scored, with a 95 % bootstrap interval;
    None where the runs lack per-clip values or were not run on the same clips."""
    xa = a.get("per_clip", {}).get(ma, {}).get(key)
    xb = b.get("per_clip", {}).get(mb, {}).get(key)
    if xa is None or xb is None or len(xa) != len(xb) or _clip_names(a) != _clip_names(b):
        return None
    diffs = [u - v for u, v in zip(xa, xb) if u is not None and v is not None]
    if len(diffs) < 2:
        return None
    rng = random.Random(0)
    means = sorted(sum(rng.choice(diffs) for _ in diffs) / len(diffs) for _ in range(draws))
    low, high = means[int(0.025 * draws)], means[int(0.975 * draws) - 1]
    return sum(diffs) / len(diffs), low, high, len(diffs)


def _paired_text(result) -> str:
    if result is None:
        return ""
    mean, low, high, n = result
    return f"; paired {mean:+.3f} [{low:+.3f}, {high:+.3f}] over {n} clips"


def _fmt(v) -> str:
    return "–" if v is None else f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"


def table(heatmap: dict, stft: dict) -> str:
    head = ["method"] + [f"{k} heatmap / stft (shuffled)" for k in KEYS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method, a in heatmap["methods"].items():
        b = stft["methods"].get(method, {})
        cells = [method]
        for k in KEYS:
            floor = a.get(f"{k}_shuffled")
            extra = f" ({_fmt(floor)})" if floor is not None else ""
            cells.append(f"{_fmt(a.get(k))} / {_fmt(b.get(k))}{extra}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def bars(heatmap: dict, stft: dict, default: str, sharper: list[str]) -> list[tuple[bool, str]]:
    """(passed, line) per bar; a metric missing from a run fails its bar."""
    out = []
    a = heatmap["methods"].get(default, {})
    b = stft["methods"].get(default, {})
    p, floor, fid = a.get("event_precision"), a.get("event_precision_shuffled"), a.get("fid_in")
    ok = None not in (p, floor, fid) and p >= floor + MARGIN and fid >= MIN_FID_IN
    out.append(
        (
            ok,
            f"{default}: precision {_fmt(p)} vs shuffled {_fmt(floor)} (need +{MARGIN}), "
            f"Fid-In {_fmt(fid)} (need >= {MIN_FID_IN})",
        )
    )
    q = b.get("event_precision")
    ok = None not in (p, q) and p >= q
    out.append(
        (
            ok,
            f"{default}: precision heatmap {_fmt(p)} >= stft {_fmt(q)}"
            + _paired_text(paired(heatmap, default, stft, default)),
        )
    )
    g = heatmap["methods"].get("gradcam", {})
    for m in sharper:
        s = heatmap["methods"].get(m, {})
        sp, sf, gp, gf = (
            s.get("event_precision"),
            s.get("fid_in"),
            g.get("event_precision"),
            g.get("fid_in"),
        )
        ok = None not in (sp, sf, gp, gf) and sp > gp and sf >= gf
        out.append(
            (
                ok,
                f"{m} vs gradcam: precision {_fmt(sp)} > {_fmt(gp)} at Fid-In "
                f"{_fmt(sf)} >= {_fmt(gf)}" + _paired_text(paired(heatmap, m, heatmap, "gradcam")),
            )
        )
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("heatmap", help="evaluate --out folder of the --threshold-on heatmap run")
    parser.add_argument(
        "stft", nargs="+", help="the same model and clips with --threshold-on stft (one or more)"
    )
    parser.add_argument("--bars", help="DEFAULT[,SHARPER...]: check issue 12's bars")
    args = parser.parse_args(argv)
    heatmap, stft = _load(args.heatmap), _merge([_load(f) for f in args.stft])
    print(table(heatmap, stft))
    if not args.bars:
        return 0
    default, *sharper = args.bars.split(",")
    results = bars(heatmap, stft, default, sharper)
    print()
    for ok, line in results:
        print(f"{'PASS' if ok else 'FAIL'}  {line}")
    return 0 if all(ok for ok, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
