"""Ground-truth localisation, the sanity check and ``evaluate`` end to end."""

import argparse
import json

import pytest
import torch

from listenable.errors import DatasetError
from listenable.evaluation.groundtruth import (
    annotated_frames,
    event_precision,
    event_recall,
    ideal_binary_mask,
    scene_truth,
    tf_iou,
    time_smear,
)
from listenable.evaluation.sanity import cascading_randomisation, ssim
from listenable.evaluation.sanity import spearman as spearman_
from listenable.frontends import FrontEnd

# --- ground truth ---------------------------------------------------------------------------


def _disjoint_scene():
    """Event on frames 2-4 of bins 3-5, background everywhere else: no TF overlap."""
    g = torch.Generator().manual_seed(0)
    shape = (1, 2, 8, 10)
    noise = torch.complex(torch.randn(shape, generator=g), torch.randn(shape, generator=g))
    where = torch.zeros(1, 8, 10, dtype=torch.bool)
    where[:, 3:6, 2:5] = True
    event = torch.where(where[:, None], 3 * noise, 0)
    background = torch.where(where[:, None], 0, 0.5 * noise.flip(-1))
    return event, event + background, where


def test_ideal_mask_scores_one():
    event, mixture, where = _disjoint_scene()
    ideal = where.float()
    assert torch.equal(ideal_binary_mask(event, mixture), where)
    assert event_recall(ideal, event).item() == pytest.approx(1.0)
    assert event_precision(ideal, event, mixture).item() == pytest.approx(1.0)
    assert tf_iou(ideal, event, mixture).item() == pytest.approx(1.0)
    assert time_smear(ideal, event, mixture).item() == pytest.approx(1.0)
    # a mask over the whole clip keeps all of the event, but mostly background,
    # and is active over all 10 frames instead of 3
    full = torch.ones_like(ideal)
    assert event_recall(full, event).item() == pytest.approx(1.0)
    e2 = event.abs().square().sum()
    assert event_precision(full, event, mixture).item() == pytest.approx(
        (e2 / mixture.abs().square().sum()).item(), rel=1e-6
    )
    assert tf_iou(full, event, mixture).item() == pytest.approx(9 / 80)
    assert time_smear(full, event, mixture).item() == pytest.approx(10 / 3)
    # half the event's bins kept by hand: recall = their energy share
    half = ideal.clone()
    half[:, 3] = 0
    kept = event[:, :, 4:6].abs().square().sum() / e2
    assert event_recall(half, event).item() == pytest.approx(kept.item(), rel=1e-6)


def test_random_mask_recall_is_its_area():
    from listenable.data.scenes import render_clip

    scene = render_clip(3, 8, 0, duration=2.0)  # car horns over a noisy background
    feats = FrontEnd.preset("mcdonnell_gao").listening_stft()
    event = feats.stft(torch.from_numpy(scene.event_audio)[None])
    mixture = feats.stft(torch.from_numpy(scene.mixture)[None])
    g = torch.Generator().manual_seed(0)
    draws = 16  # the energy sits in a few harmonic bins: average over draws of the mask
    events = event.expand(draws, -1, -1, -1)
    mixtures = mixture.expand(draws, -1, -1, -1)
    for area in (0.25, 0.6):
        mask = (torch.rand(events.shape[:1] + events.shape[2:], generator=g) < area).float()
        assert event_recall(mask, events).item() == pytest.approx(area, abs=0.02)
        assert time_smear(mask, events, mixtures).item() > 1.5  # active in every frame
    ibm = ideal_binary_mask(event, mixture).float()
    assert tf_iou(ibm, event, mixture).item() == 1.0
    assert time_smear(ibm, event, mixture).item() == 1.0
    assert event_recall(ibm, event).item() > 0.8  # the event dominates where it is loud
    assert event_precision(ibm, event, mixture).item() > 0.8


def test_annotated_frames_and_smear_against_them():
    from listenable.data.scenes import Event

    events = [
        Event("car_horn", "signature", 0.5, 1.0, 300.0, 5000.0, 0.7, 0.7),
        Event("birdsong", "distractor", 2.0, 2.5, 2000.0, 6000.0, 0.7, 0.7),
    ]
    frames = annotated_frames(events, 94, 1024, 48_000)  # 2 s
    times = torch.arange(94) * 1024 / 48_000
    assert torch.equal(frames, (times >= 0.5) & (times <= 1.0))  # distractors are not events
    event, mixture, _ = _disjoint_scene()
    mask = torch.zeros(1, 8, 10)
    mask[:, :, 1:7] = 1.0  # 6 active frames
    given = torch.zeros(1, 10, dtype=torch.bool)
    given[:, 2:5] = True
    assert time_smear(mask, event, mixture, event_frames=given).item() == pytest.approx(2.0)
    with pytest.raises(ValueError, match="event_frames"):
        time_smear(mask, event, mixture, event_frames=given[:, :4])


def test_scene_truth_matches_the_render(tmp_path):
    from listenable.data.scenes import render_clip, write_scenes

    root = write_scenes(tmp_path / "s", clips_per_class=1, seed=5, duration=3.0)
    feats = FrontEnd.preset("mcdonnell_gao").listening_stft()
    name = "audio/bus-synth5-0-0-a.wav"
    spec, frames = scene_truth(root, name, feats, length=3 * 48_000)
    clip = render_clip(5, 1, 0, duration=3.0)
    expected = feats(torch.from_numpy(clip.event_audio)[None])
    torch.testing.assert_close(spec, expected)
    assert frames.shape == (1, expected.shape[-1]) and frames.any()
    with pytest.raises(DatasetError):
        scene_truth(root, name, feats, length=100)
    with pytest.raises(DatasetError):
        scene_truth(root, "audio/nope.wav", feats)


def test_ground_truth_rejects_mismatched_grids():
    event, mixture, where = _disjoint_scene()
    with pytest.raises(ValueError, match="grid"):
        event_recall(where.float()[:, :4], event)


# --- sanity ----------------------------------------------------------------------------------


def test_ssim_and_spearman_by_hand():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(2, 20, 16, generator=g)
    torch.testing.assert_close(ssim(a, a), torch.ones(2, dtype=torch.float64))
    assert spearman_(a, a).tolist() == pytest.approx([1.0, 1.0])
    assert spearman_(a, -a).tolist() == pytest.approx([-1.0, -1.0])
    assert spearman_(a, 3 * a.exp()).tolist() == pytest.approx([1.0, 1.0])  # ranks only
    assert ssim(a, torch.rand(2, 20, 16, generator=g)).max() < 0.3
    assert ssim(a[:, :5, :4], a[:, :5, :4]).tolist() == pytest.approx([1.0, 1.0])  # tiny maps
    assert torch.isnan(spearman_(a, torch.zeros_like(a))).all()


def test_cascading_randomisation_lowers_gradcam_correlation(model10, clip):
    before = {k: v.clone() for k, v in model10.state_dict().items()}
    wave = torch.from_numpy(clip[:, :48_000])[None]
    result = cascading_randomisation(model10, wave, methods=["gradcam"], seed=1)
    rows = result["gradcam"]
    assert [r["stage"] for r in rows] == ["head", "stage4", "stage3", "stage2", "stage1", "input"]
    rho = [r["spearman"] for r in rows if r["spearman"] == r["spearman"]]  # NaN: a flat map
    assert rho and rho[-1] < 0.8  # the identity would be 1.0
    assert min(rho) < 0.5
    assert all(-1.0 <= r["ssim"] <= 1.0 for r in rows)
    # the model itself is untouched
    for k, v in model10.state_dict().items():
        assert torch.equal(v, before[k]), k


# --- evaluate end to end ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def scenes_and_checkpoint(tmp_path_factory, model10):
    from listenable import save_checkpoint
    from listenable.data.scenes import CLASSES, write_scenes

    root = tmp_path_factory.mktemp("eval")
    data = write_scenes(root / "scenes", clips_per_class=1, seed=3, duration=3.0)
    ckpt = save_checkpoint(model10, root / "model.safetensors", class_names=list(CLASSES))
    return data, ckpt


def _methods():
    from listenable.cams import METHODS

    return [m for m in ("gradcam", "random") if m in METHODS]


def test_evaluate_end_to_end(scenes_and_checkpoint, tmp_path):
    from listenable.evaluation import METRICS, evaluate

    data, ckpt = scenes_and_checkpoint
    calls = []
    results = evaluate(
        data,
        tmp_path / "out",
        checkpoint=ckpt,
        split="all",
        methods=_methods(),
        max_clips=2,
        steps=2,
        target="label",
        sanity_clips=1,
        sanity_methods=["gradcam"],
        progress=lambda done, total: calls.append((done, total)),
    )
    out = tmp_path / "out"
    for name in ("results.json", "results.md", "metrics.png", "sanity.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk == json.loads(json.dumps(results))
    assert set(on_disk) >= {"methods", "sanity", "settings"}
    assert set(on_disk["methods"]) == set(_methods())
    for name, row in on_disk["methods"].items():
        assert list(row) == list(METRICS), name
        for key in ("AI", "AD", "AG"):
            assert 0.0 <= row[key] <= 100.0
        assert 0.0 <= row["fid_in"] <= 1.0
        assert 0.0 <= row["deletion_auc"] <= 1.0 and 0.0 <= row["insertion_auc"] <= 1.0
        assert 0.0 <= row["sps"] <= 1.0 and row["comp"] > 0
        # the data has events.csv and the label is explained: ground truth is there
        assert 0.0 <= row["event_recall"] <= 1.0
        assert 0.0 <= row["event_precision"] <= 1.0
        assert 0.0 <= row["tf_iou"] <= 1.0
        assert row["time_smear"] > 0
        assert 0.0 <= row["pointing_game"] <= 1.0
        # every variant is there; the shuffled mask keeps the mask's values, so its
        # sparseness-free metrics stay in range too
        for key in ("AI", "AD", "AG"):
            assert 0.0 <= row[f"{key}_soft"] <= 100.0 and 0.0 <= row[f"{key}_shuffled"] <= 100.0
        for key in ("fid_in_soft", "fid_in_shuffled", "event_precision_shuffled"):
            assert 0.0 <= row[key] <= 1.0, key
        # segment AUC: None only if every clip's segments are all event or all background
        assert row["segment_auc"] is None or 0.0 <= row["segment_auc"] <= 1.0
    for name, rows in on_disk["sanity"].items():
        assert [set(r) for r in rows] == [{"stage", "spearman", "ssim"}] * 6, name
    assert list(on_disk["sanity"]) == ["gradcam"]
    s = on_disk["settings"]
    assert s["clips"] == 2 and s["steps"] == 2 and s["ground_truth"] is True
    assert s["apply_to"] == "audio" and s["events_annotated"] is True
    assert set(s["metrics"]) <= set(METRICS) and s["variants"].keys() == {"soft", "shuffled"}
    assert len(s["clip_list"]) == 2
    # the per-clip values, one per clip in clip_list's order, average to the reported means
    for name, row in on_disk["methods"].items():
        for key, values in on_disk["per_clip"][name].items():
            assert len(values) == 2, (name, key)
            finite = [v for v in values if v is not None]
            if finite:
                assert row[key] == pytest.approx(sum(finite) / len(finite), rel=1e-12), key
            else:
                assert row[key] is None, key
    assert calls and calls[-1][0] == calls[-1][1]  # progress reaches its total
    assert not on_disk["errors"]
    md = (out / "results.md").read_text()
    assert "| method | AI ↑ | AD ↓" in md and "gradcam" in md and "random order" in md
    assert "| method | AI_soft ↑" in md and "event_precision_shuffled ↑" in md


def test_evaluate_cli_without_ground_truth(scenes_and_checkpoint, tmp_path, capsys):
    """The sub-command on a TAU tree without events.csv: ground truth is null."""
    import shutil

    from listenable.cli.evaluate import add_parser

    data, ckpt = scenes_and_checkpoint
    plain = tmp_path / "tau"
    shutil.copytree(data, plain, ignore=shutil.ignore_patterns("events.csv", "scenes.json"))
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        [
            "evaluate",
            str(plain),
            "--out",
            str(tmp_path / "out"),
            "--checkpoint",
            str(ckpt),
            "--methods",
            "gradcam",
            "--max-clips",
            "1",
            "--steps",
            "1",
            "--sanity-clips",
            "0",
            "--split",
            "all",
            "--device",
            "cpu",
            "--apply-to",
            "features",
            "--threshold-on",
            "stft",
            "--percentile",
            "80",
        ]
    )
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert "| gradcam |" in printed
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    row = results["methods"]["gradcam"]
    assert row["event_recall"] is None and row["time_smear"] is None
    assert row["AD"] is not None and row["AD_soft"] is not None
    assert row["pointing_game"] is None and row["event_precision_shuffled"] is None
    s = results["settings"]
    assert s["apply_to"] == "features" and s["events_annotated"] is False
    assert s["mask"]["threshold_on"] == "stft" and s["mask"]["percentile"] == 80.0
    assert results["sanity"] == {} and (tmp_path / "out" / "sanity.png").is_file()


def test_evaluate_rejects_unknown_method(scenes_and_checkpoint, tmp_path):
    from listenable.evaluation import evaluate

    data, ckpt = scenes_and_checkpoint
    with pytest.raises(ValueError, match="unknown method"):
        evaluate(data, tmp_path, checkpoint=ckpt, methods=["nope"])
    with pytest.raises(ValueError, match="apply_to"):
        evaluate(data, tmp_path, checkpoint=ckpt, methods=["gradcam"], apply_to="mel")
    with pytest.raises(ValueError, match="mask mode"):  # before the model is even loaded
        evaluate(data, tmp_path, checkpoint=ckpt, methods=["gradcam"], mode="binary")
    with pytest.raises(ValueError, match="percentile"):
        evaluate(data, tmp_path, checkpoint=ckpt, methods=["gradcam"], percentile=120)
