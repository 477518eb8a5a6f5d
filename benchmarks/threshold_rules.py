"""Compare where θ is taken (``--threshold-on heatmap|stft``) from two ``listenable evaluate``
runs of the same model and clips: per method, the metrics that decide the default, each next
to its shuffled-mask floor. Prints a markdown table.

    python benchmarks/threshold_rules.py work/eval/small-real-heatmap work/eval/small-real-stft
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

KEYS = ("event_precision", "tf_iou", "event_recall", "fid_in", "AI", "AD", "time_smear")


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


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    print(table(_load(sys.argv[1]), _load(sys.argv[2])))
