"""What the model listens to, per class: event content and profiles in summary.json and on
the gallery's index, from an analysis of a scenes set (stems known exactly)."""

import json

import pytest
import torch

from listenable.analyze import TIME_SEGMENTS, AnalyzeConfig, analyze, time_profile
from listenable.checkpoint import SHIPPED, load_checkpoint
from listenable.data import open_dataset
from listenable.data.scenes import load_events, write_scenes


def test_time_profile_hand_computed():
    mask = torch.zeros(3, 40)
    mask[:, :2] = 1.0  # the first twentieth of the clip, every bin
    mask[0, 38:] = 1.0  # the last twentieth, one bin of three
    profile = time_profile(mask)
    assert len(profile) == TIME_SEGMENTS
    assert profile[0] == 1.0 and profile[-1] == pytest.approx(1 / 3, abs=1e-4)
    assert all(v == 0.0 for v in profile[1:-1])


def test_analysis_of_scenes_says_what_each_class_listens_to(tmp_path):
    root = write_scenes(tmp_path / "scenes", clips_per_class=1, seed=4, duration=2.0)
    model, meta = load_checkpoint(SHIPPED["small"])
    data = open_dataset(root, split="all")
    out = tmp_path / "run"
    summary = analyze(
        data,
        out,
        model,
        meta,
        AnalyzeConfig(split="all", min_confidence=0.0, figures=False, method="layercam"),
    )
    rows = [json.loads(line) for line in (out / "manifest.jsonl").open()]
    events = load_events(root)
    for row in rows:
        assert row["status"] == "ok"
        assert len(row["time_profile"]) == TIME_SEGMENTS
        labels = {e.label for e in events[row["rel_path"]] if e.role == "signature"}
        content = row["content"]
        assert labels <= set(content) and "background" in content
        assert sum(v["share"] for v in content.values()) == pytest.approx(1.0, abs=1e-3)
        assert all(0.0 <= v["kept"] <= 1.0 for v in content.values())
    # per class: the mean over the clips predicted as that class
    for name, entry in summary["class_content"].items():
        mine = [r for r in rows if r["predicted"] == name]
        assert entry["clips"] == len(mine)
        for label, v in entry["labels"].items():
            share = sum(r["content"].get(label, {}).get("share", 0.0) for r in mine) / len(mine)
            assert v["share"] == pytest.approx(share, abs=1e-4)
    assert all(p["mean_time_profile"] for p in summary["class_profiles"].values())

    from listenable.report import build_gallery

    index = build_gallery(out).read_text(encoding="utf-8")
    assert 'id="listens-table"' in index
    some = next(iter(summary["class_content"].values()))
    assert next(iter(some["labels"])) in index
