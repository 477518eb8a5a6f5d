"""The shortcut experiment: exact cue injection, the cue only where intended, the metrics on
hand cases, an oracle model whose decision depends only on the cue's band by construction
(the measurement must find the cue), and the command line on a tiny config."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from torch import nn

from listenable.data.scenes import CLASSES
from listenable.errors import DatasetError, UsageError
from listenable.experiments import (
    ShortcutConfig,
    cue_precision,
    cue_recall,
    cue_stem,
    parse_cue,
    run_shortcut,
    shuffled_masks,
    write_cued_data,
)
from listenable.experiments.cues import read_cued
from listenable.frontends import FrontEnd
from listenable.io import load_for
from listenable.models import Explainable

CUE_CLASS = "bus"
CUE_HZ = 6000.0
CUE_DB = -10.0  # the experiment's default level
# the tiny experiment: 2 clips per class of 3 s, one for training and one for testing
TINY = dict(clips_per_class=2, evaluate_fraction=0.5, duration=3.0, seed=3)


def _read(path) -> np.ndarray:
    data, _ = sf.read(str(path), dtype="float32", always_2d=True)
    return data.T


@pytest.fixture(scope="module")
def front_end():
    return FrontEnd.preset("small")


@pytest.fixture(scope="module")
def cued(tmp_path_factory, front_end):
    """A tiny scenes set and its cued copy: ``(scenes, data, clips)``."""
    from listenable.data.scenes import write_scenes

    root = tmp_path_factory.mktemp("shortcut-data")
    scenes = write_scenes(root / "scenes", **TINY)
    clips = write_cued_data(
        scenes,
        root / "data",
        cue=parse_cue(f"tone:{CUE_HZ:g}"),
        cue_class=CUE_CLASS,
        cue_db=CUE_DB,
        front_end=front_end,
        seed=TINY["seed"],
    )
    return scenes, root / "data", clips


# --------------------------------------------------------------------------- cues


def test_parse_cue():
    assert parse_cue("tone:7000").parameter == 7000.0
    assert parse_cue("tone") == parse_cue("tone:6000")
    assert parse_cue("click").kind == "click" and parse_cue("click:10").parameter == 10.0
    for bad in ("hum:50", "tone:abc", "tone:-5", "click:1000"):
        with pytest.raises(UsageError):
            parse_cue(bad)
    with pytest.raises(UsageError, match="Nyquist"):
        parse_cue("tone:8000", 16_000)


def test_cue_stems_have_the_asked_level_and_place():
    rng = np.random.default_rng(0)
    tone = cue_stem(parse_cue("tone:1000"), 16_000, 16_000, 0.01, rng)
    assert tone.shape == (1, 16_000) and tone.dtype == np.float32
    assert math.isclose(float(np.sqrt(np.mean(tone.astype(np.float64) ** 2))), 0.01, rel_tol=1e-6)
    spectrum = np.abs(np.fft.rfft(tone[0].astype(np.float64)))  # 1 Hz bins over 1 s
    assert int(np.argmax(spectrum)) == 1000
    assert spectrum[1000] ** 2 > 0.99 * np.sum(spectrum**2)  # a pure tone (fades aside)
    clicks = cue_stem(parse_cue("click:4"), 32_000, 16_000, 0.002, rng, channels=2)
    assert clicks.shape == (2, 32_000) and np.array_equal(clicks[0], clicks[1])
    assert np.count_nonzero(clicks[0]) == 8  # 4 per second for 2 s, single samples
    assert math.isclose(
        float(np.sqrt(np.mean(clicks[0].astype(np.float64) ** 2))), 0.002, rel_tol=1e-6
    )


def test_cue_injection_is_exact(cued, front_end):
    scenes, data, clips = cued
    with_cue = [c for c in clips if c.cued]
    assert with_cue
    for clip in with_cue:
        clean = _read(data / "audio" / (clip.path.stem.removesuffix("-cued") + ".wav"))
        stem = _read(clip.cue_path)
        mixture = _read(clip.path)
        np.testing.assert_array_equal(mixture, clean + stem)  # exact, in float32
        # what the model loads is the same samples
        np.testing.assert_array_equal(load_for(clip.path, front_end)[0].numpy(), mixture)
        rms = np.sqrt(np.mean(clean.astype(np.float64) ** 2)) * 10 ** (CUE_DB / 20)
        assert math.isclose(
            float(np.sqrt(np.mean(stem.astype(np.float64) ** 2))), rms, rel_tol=1e-5
        )
    # the clean copies are the scenes clips as the model loads them, nothing added
    for clip in clips:
        if not clip.cued:
            source = load_for(scenes / clip.source, front_end)[0].numpy()
            np.testing.assert_array_equal(_read(clip.path), source)


def test_the_cue_is_only_where_intended(cued):
    _scenes, data, clips = cued
    train = [c for c in clips if c.split == "train"]
    test = [c for c in clips if c.split == "test"]
    assert {c.label for c in train} == set(CLASSES)
    for c in train:  # training: every cue-class clip cued, no other
        assert c.cued == (c.label == CUE_CLASS)
        assert (c.cue_path is not None) == c.cued
    sources: dict = {}  # testing: every clip of every class in both versions
    for c in test:
        sources.setdefault(c.source, []).append(c.cued)
    assert sorted(c.label for c in test) == sorted(list(CLASSES) * 2)
    assert all(sorted(v) == [False, True] for v in sources.values())
    # the data set files say the same, and the training split lists the cued bus clips only
    assert read_cued(data) == clips
    rows = (data / "evaluation_setup" / "fold1_train.csv").read_text().splitlines()[1:]
    cued_rows = [r for r in rows if "-cued.wav" in r]
    assert cued_rows and all(r.endswith(f"\t{CUE_CLASS}") for r in cued_rows)
    assert not any(r.endswith(f"\t{CUE_CLASS}") and "-cued" not in r for r in rows)
    stems = sorted(p.name for p in (data / "cues").iterdir())
    assert stems == sorted(c.cue_path.name for c in clips if c.cued)


def test_cued_data_resumes_and_refuses_other_settings(cued, front_end):
    scenes, data, clips = cued
    before = {p: p.stat().st_mtime_ns for p in (data / "audio").iterdir()}
    again = write_cued_data(
        scenes,
        data,
        cue=parse_cue(f"tone:{CUE_HZ:g}"),
        cue_class=CUE_CLASS,
        cue_db=CUE_DB,
        front_end=front_end,
        seed=TINY["seed"],
    )
    assert again == clips
    assert {p: p.stat().st_mtime_ns for p in (data / "audio").iterdir()} == before
    with pytest.raises(DatasetError, match="other settings"):
        write_cued_data(
            scenes,
            data,
            cue=parse_cue("tone:5000"),
            cue_class=CUE_CLASS,
            cue_db=CUE_DB,
            front_end=front_end,
            seed=TINY["seed"],
        )


# --------------------------------------------------------------------------- metrics


def _complex(power: torch.Tensor) -> torch.Tensor:
    """A complex spectrum ``(batch, 1, bins, frames)`` with the given power."""
    return torch.polar(power.sqrt(), torch.full_like(power, 0.7))[:, None]


def test_recall_and_precision_on_hand_cases():
    bins, frames = 9, 6
    cue_power = torch.zeros(1, bins, frames, dtype=torch.float64)
    cue_power[0, 4, :] = 2.0  # a steady tone in bin 4
    cue_power[0, 5, :] = 0.5  # and its leakage
    rest_power = torch.ones(1, bins, frames, dtype=torch.float64)
    rest_power[0, 4:6, :] = 0.0  # the background elsewhere (disjoint, so powers add)
    cue, mixture = _complex(cue_power), _complex(cue_power + rest_power)
    on_cue = (cue_power > 0).double()
    assert cue_recall(on_cue, cue).item() == pytest.approx(1.0, abs=1e-12)
    assert cue_recall(torch.zeros_like(on_cue), cue).item() == 0.0
    assert cue_precision(on_cue, cue, mixture).item() == pytest.approx(1.0, abs=1e-12)
    only_tone = torch.zeros_like(on_cue)
    only_tone[0, 4] = 1.0  # the tone's bin: 2 of the cue's 2.5 units of power per frame
    assert cue_recall(only_tone, cue).item() == pytest.approx(2.0 / 2.5, abs=1e-12)
    half = torch.full_like(on_cue, 0.5)  # the output is M ⊙ X: energy scales with M²
    assert cue_recall(half, cue).item() == pytest.approx(0.25, abs=1e-12)
    everything = torch.ones_like(on_cue)  # precision of keeping all = the cue's share
    share = 2.5 / (2.5 + (bins - 2))
    assert cue_precision(everything, cue, mixture).item() == pytest.approx(share, abs=1e-12)
    silent = torch.zeros_like(cue)
    assert math.isnan(cue_recall(on_cue, silent).item())


def test_shuffled_mask_keeps_area_and_values():
    gen = torch.Generator().manual_seed(0)
    mask = torch.rand(2, 33, 40, generator=gen)
    shuffled = shuffled_masks(mask, [1, 2])
    for i in range(2):
        assert torch.equal(shuffled[i].flatten().sort().values, mask[i].flatten().sort().values)
    assert not torch.equal(shuffled, mask)
    assert torch.equal(shuffled, shuffled_masks(mask, [1, 2]))  # seeded
    assert not torch.equal(shuffled[0], shuffled_masks(mask, [3, 2])[0])
    with pytest.raises(ValueError):
        shuffled_masks(mask, [1])
    # a transposed view (the explainer's masks are frame-major) is shuffled the same way
    frame_major = mask.mT.contiguous().mT
    assert torch.equal(shuffled_masks(frame_major, [1, 2]), shuffled)
    # a uniform cue: the shuffled mask keeps exactly mean(M²) (its area, for a binary mask)
    uniform = _complex(torch.ones(2, 33, 40, dtype=torch.float64))
    binary = (mask > 0.75).double()
    kept = cue_recall(shuffled_masks(binary, [5, 6]), uniform)
    torch.testing.assert_close(kept, binary.mean(dim=(1, 2)), rtol=0, atol=1e-12)


def test_shuffled_mask_keeps_about_its_area_of_a_tone(front_end):
    """A binary mask of area a on the tone's STFT: its shuffled copies keep a of the energy on
    average, within 5 standard deviations of the hypergeometric draw of the tone's bins."""
    listening = front_end.listening_stft()
    stem = cue_stem(parse_cue("tone:6000"), 48_000, 16_000, 0.01, np.random.default_rng(1))
    spec = listening(torch.from_numpy(stem)[None].double())
    power = spec.abs().square().sum(dim=1)  # (1, bins, frames)
    mask = torch.zeros_like(power)
    mask[0, :64] = 1.0  # the lowest quarter of the bins: none of the tone
    area = float(mask.mean())
    assert cue_recall(mask, spec).item() < 1e-6
    kept = cue_recall(
        shuffled_masks(mask.expand(20, -1, -1), list(range(20))), spec.expand(20, -1, -1, -1)
    )
    weights = power.flatten() / power.sum()
    n_eff = 1.0 / float(weights.square().sum())  # bins the tone's energy is spread over
    sigma = math.sqrt(area * (1 - area) / n_eff / 20)  # of the mean of 20 draws
    assert abs(float(kept.mean()) - area) < 5 * sigma


# --------------------------------------------------------------------------- an oracle


class CueBand(nn.Module):
    """``(batch, 1, mels, frames)`` dB → ``(batch, 2, mels, frames)``, the level above a
    floor: channel 0 weighted 1 in the cue's rows and 0.1 elsewhere, channel 1 the rows on
    either side of them (the map Grad-CAM reads)."""

    def __init__(self, inside: torch.Tensor, flanks: torch.Tensor, floor: float = 100.0) -> None:
        super().__init__()
        self.floor = floor
        weight = torch.stack([torch.where(inside, 1.0, 0.1), flanks.float()])
        self.register_buffer("weight", weight[:, :, None])  # (2, mels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.floor) * self.weight


class CueOracle(nn.Module):
    """A tone detector: calls a clip the cue class exactly when the cue's mel rows stand
    above the rows beside them by more than ``threshold`` dB, else ``fallback``. By
    construction its decision depends on the spectrum around the cue only."""

    def __init__(self, inside, flanks, cue_index: int, fallback: int) -> None:
        super().__init__()
        self.band = CueBand(inside, flanks)
        self.register_buffer("inside", inside)
        self.register_buffer("flanks", flanks)
        self.register_buffer("threshold", torch.tensor(0.0))
        self.cue_index, self.fallback = cue_index, fallback

    def contrast(self, features: torch.Tensor) -> torch.Tensor:
        maps = self.band(features)
        cue = maps[:, 0][:, self.inside].mean(dim=(1, 2))
        return cue - maps[:, 1][:, self.flanks].mean(dim=(1, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.full((x.shape[0], len(CLASSES)), -20.0, dtype=x.dtype, device=x.device)
        logits[:, self.fallback] = 0.0
        logits[:, self.cue_index] = self.contrast(x) - self.threshold
        return logits


def _oracle(front_end, clips) -> Explainable:
    """The tone detector for the cue, its threshold halfway between the clean clips' largest
    contrast and the cued clips' smallest (the data must separate them)."""
    inside = front_end.row_response(torch.tensor([CUE_HZ]))[:, 0] > 0
    rows = inside.nonzero().flatten()
    flanks = torch.zeros_like(inside)
    flanks[rows.min() - 2 : rows.min()] = True
    flanks[rows.max() + 1 : rows.max() + 3] = True
    net = CueOracle(inside, flanks, CLASSES.index(CUE_CLASS), CLASSES.index("park")).eval()
    with torch.no_grad():
        contrast = {
            c.filename: float(net.contrast(front_end(load_for(c.path, front_end)[0][None])))
            for c in clips
        }
    clean = max(contrast[c.filename] for c in clips if not c.cued)
    cued = min(contrast[c.filename] for c in clips if c.cued)
    assert clean + 2.0 < cued, "the cue must lift every cued clip's band above every clean one's"
    net.threshold.fill_((clean + cued) / 2)
    return Explainable(
        net,
        front_end,
        class_names=list(CLASSES),
        layer="band",
        probe_seconds=2.0,
        name="CueOracle",
    )


def test_the_measurement_finds_an_oracles_cue(tmp_path, cued, front_end):
    """With a model that uses nothing but the cue's band, the whole experiment (minus the
    training) must find the cue: recall near 1 against the shuffled mask's area, every
    cued clip called the cue class, and removing what the mask kept undoes it."""
    _scenes, _data, clips = cued
    oracle = _oracle(front_end, clips)
    cfg = ShortcutConfig(
        **TINY, cue_class=CUE_CLASS, cue=f"tone:{CUE_HZ:g}", cue_db=CUE_DB, explain_batch=4
    )
    report = run_shortcut(tmp_path / "run", cfg, model=oracle)
    r = report["results"]
    assert r["clips"]["test_clips"] == len(CLASSES)
    assert r["cheating"]["other_classes_cued_called_cue_class"] == 1.0
    assert r["cheating"]["other_classes_clean_called_cue_class"] == 0.0
    main = r["cue_recall"]["cue_class_explained"]
    area = main["mask_area"]
    # the mask is the top quarter of the map: the cue's rows hold the top of it
    assert 0.15 < area < 0.35
    assert main["listenable"] > 0.95
    assert main["shuffled"] < area + 0.1  # a shuffled mask keeps about its area
    assert main["ratio"] > 2.5 and r["bar"]["met"]
    assert r["cue_precision"]["listenable"] > r["cue_precision"]["shuffled"]
    flips = r["residual_flip"]
    assert flips["clips"] == len(CLASSES)
    assert flips["exact_cue_removed"] == 1.0
    assert flips["listenable_mask"] == 1.0
    assert flips["shuffled_mask"] < 1.0
    assert r["listenable_keeps_cue_class"]["listenable_mask"] == 1.0
    # the rows are on disk, and the report says what they say
    rows = [
        json.loads(line)
        for line in (tmp_path / "run" / "measurements.jsonl").read_text().splitlines()
    ]
    assert len(rows) == len(CLASSES)
    mean = sum(row["cue_recall"] for row in rows) / len(rows)
    assert main["listenable"] == pytest.approx(mean, rel=1e-12)
    # the gallery holds the cued clips, and the report names the page of one called bus
    gallery = report["gallery"]
    assert gallery["clip_predicted"] == CUE_CLASS and gallery["clip_label"] != CUE_CLASS
    page, _, anchor = gallery["page"].partition("#")
    assert page.endswith(f"class-{CUE_CLASS}.html") and anchor
    assert f'id="{anchor}"' in Path(page).read_text(encoding="utf-8")
    text = (tmp_path / "run" / "report.md").read_text()
    assert f"{main['listenable']:.3f}" in text and "met" in text


# --------------------------------------------------------------------------- command line


def test_command_line_runs_and_resumes(tmp_path, capsys):
    """The whole command on a tiny config with real (one-epoch) training: the report's
    numbers are those of its per-clip rows; a second run reuses the data and checkpoint."""
    from listenable.cli import main

    out = tmp_path / "exp"
    argv = [
        "shortcut",
        str(out),
        "--clips-per-class",
        "2",
        "--evaluate-fraction",
        "0.5",
        "--duration",
        "2",
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--precise-bn",
        "1",
        "--no-gallery",
        "--device",
        "cpu",
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "cue recall" in printed and str(out / "report.md") in printed
    report = json.loads((out / "report.json").read_text())
    rows = [json.loads(line) for line in (out / "measurements.jsonl").read_text().splitlines()]
    assert len(rows) == len(CLASSES)
    acc = sum(r["predicted_cued"] == r["label"] for r in rows) / len(rows)
    assert report["results"]["accuracy"]["cued"] == pytest.approx(acc)
    assert report["model"]["epochs_done"] == 1
    checkpoint = out / "model.safetensors"
    stamp = checkpoint.stat().st_mtime_ns
    assert main(argv) == 0  # resumed: nothing to train, the same numbers
    assert checkpoint.stat().st_mtime_ns == stamp
    again = json.loads((out / "report.json").read_text())
    assert again["results"] == report["results"]
    assert main([*argv[:-2], "--cue-db", "-20"]) == 2  # another experiment in the same folder
