"""Compare where θ is taken (``--threshold-on heatmap|stft``) from two ``listenable evaluate``
runs of the same model and clips: per method, the metrics that decide the default, each next
to its shuffled-mask floor. Prints a markdown table; with ``--bars METHOD[,SHARPER...]``
also checks issue 12's bars on that pair of runs and exits 1 if one fails:

* METHOD (the default explanation): event precision at least 0.10 above its shuffled mask's,
  at a Fid-In of at least 0.6, and no lower than with θ over the STFT bins;
* each SHARPER method: higher event precision than Grad-CAM at an equal or higher Fid-In.

    python benchmarks/threshold_rules.py work/eval/small-real-heatmap work/eval/small-real-stft
    python benchmarks/threshold_rules.py HEATMAP_RUN STFT_RUN --bars layercam,optimised
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

KEYS = ("event_precision", "tf_iou", "event_recall", "fid_in", "AI", "AD", "time_smear")
MARGIN = 0.10  # precision above the shuffled floor
MIN_FID_IN = 0.6


def _load(folder: str) -> dict:
    return json.loads((Path(folder) / "results.json").read_text(encoding="utf-8"))


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
    out.append((ok, f"{default}: precision heatmap {_fmt(p)} >= stft {_fmt(q)}"))
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
                f"{_fmt(sf)} >= {_fmt(gf)}",
            )
        )
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("heatmap", help="evaluate --out folder of the --threshold-on heatmap run")
    parser.add_argument("stft", help="the same model and clips with --threshold-on stft")
    parser.add_argument("--bars", help="DEFAULT[,SHARPER...]: check issue 12's bars")
    args = parser.parse_args(argv)
    heatmap, stft = _load(args.heatmap), _load(args.stft)
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
