"""What a listenable output contains, by label: against stems rendered independently."""

import numpy as np
import pytest
import torch

from listenable.data.scenes import render_scene_file, write_scenes
from listenable.evaluation.content import BACKGROUND, class_content, listened_content
from listenable.frontends import STFT


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    root = tmp_path_factory.mktemp("content")
    write_scenes(root, clips_per_class=1, seed=3, duration=2.0)
    return root


def _clip_with_distractor(root):
    import json

    clips = json.loads((root / "scenes.json").read_text())["clips"]
    for name in clips:
        clip = render_scene_file(root, name)
        if any(e.role == "distractor" for e in clip.events):
            return name, clip
    pytest.skip("no clip with a distractor in this tiny set")


def test_mask_of_ones_keeps_everything_and_shares_are_energies(scenes):
    name, clip = _clip_with_distractor(scenes)
    stft = STFT(48_000, 1024, 256)  # 75 % overlap: Σ hann² is constant (Parseval per hop)
    n = clip.mixture.shape[-1]
    frames = n // 256 + 1
    mask = torch.ones(513, frames)
    content = listened_content(scenes, name, mask, stft, channels=2, length=n)
    signature = next(e.label for e in clip.events if e.role == "signature")
    assert set(content) >= {BACKGROUND, signature}
    for v in content.values():
        assert v["kept"] == pytest.approx(1.0, abs=1e-4)

    # shares: each part's energy over the parts' sum, in the time domain (Parseval; the
    # reflect-padded edges add at most 512 of 96 000 samples' worth: < 1 %)
    def energy(x):
        return float(np.sum(x.astype(np.float64) ** 2))

    parts = {BACKGROUND: clip.background, signature: clip.event_audio}
    total = sum(energy(p) for p in [clip.background, clip.event_audio, clip.distractor_audio])
    for label, audio in parts.items():
        assert content[label]["share"] == pytest.approx(energy(audio) / total, abs=0.02)
    assert sum(v["share"] for v in content.values()) == pytest.approx(1.0, abs=1e-3)


def test_a_mask_on_the_signature_frames_only(scenes):
    name, clip = _clip_with_distractor(scenes)
    stft = STFT(48_000, 1024, 512)
    n = clip.mixture.shape[-1]
    frames = n // 512 + 1
    mask = torch.zeros(513, frames)
    content_zero = listened_content(scenes, name, mask, stft, channels=2, length=n)
    assert all(v["kept"] == 0.0 and v["share"] == 0.0 for v in content_zero.values())
    # keep only the bins where the signature stem is 100x the other parts (both channels):
    # there the signature is at least 100/101 of every kept bin's energy
    power = {
        k: stft(torch.from_numpy(v)[None]).abs().square().sum(dim=(0, 1))
        for k, v in [
            ("sig", clip.event_audio),
            ("bg", clip.background),
            ("dis", clip.distractor_audio),
        ]
    }
    loud = power["sig"] > 100 * (power["bg"] + power["dis"])
    assert int(loud.sum()) > 10
    mask[loud] = 1.0
    content = listened_content(scenes, name, mask, stft, channels=2, length=n)
    signature = next(e.label for e in clip.events if e.role == "signature")
    assert content[signature]["share"] >= 100 / 101 - 1e-3
    assert 0 < content[signature]["kept"] < 1


def test_class_content_averages_per_predicted_class():
    rows = [
        {
            "status": "ok",
            "predicted": "bus",
            "content": {
                "engine": {"kept": 0.8, "share": 0.6},
                "background": {"kept": 0.1, "share": 0.4},
            },
        },
        {
            "status": "ok",
            "predicted": "bus",
            "content": {"background": {"kept": 0.3, "share": 1.0}},
        },
        {"status": "failed", "predicted": "bus", "content": {"engine": {"kept": 1, "share": 1}}},
        {"status": "ok", "predicted": "park", "content": None},
    ]
    out = class_content(rows)
    assert list(out) == ["bus"] and out["bus"]["clips"] == 2
    labels = out["bus"]["labels"]
    assert list(labels) == ["background", "engine"]  # by mean share: 0.7, 0.3
    assert labels["background"]["share"] == pytest.approx(0.7)
    assert labels["engine"]["share"] == pytest.approx(0.3)  # absent in one clip: share 0
    assert labels["engine"]["kept"] == pytest.approx(0.8) and labels["engine"]["clips"] == 1
