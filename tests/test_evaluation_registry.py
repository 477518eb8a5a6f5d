"""The metric registry, the shuffled floor, ``apply_to``, and every metric of one method's
measurement on an oracle pipeline whose evidence is known by construction."""

import contextlib
import math
from types import SimpleNamespace

import pytest
import torch

from listenable.evaluation import registry
from listenable.evaluation.metrics import check_apply_to, shuffle_bins
from listenable.evaluation.registry import (
    REGISTRY,
    Metric,
    metric_keys,
    needs_of,
    register,
    unregister,
)
from listenable.evaluation.report import markdown_table
from listenable.evaluation.run import _measure


def test_registry_keys_and_directions():
    keys = registry.METRICS
    assert keys[:5] == ("AI", "AD", "AG", "FF", "fid_in")
    assert len(set(keys)) == len(keys)
    for metric in REGISTRY.values():
        for variant in (None, *metric.variants):
            assert registry.DIRECTIONS[metric.key(variant)] == metric.direction
    assert "AI_soft" in keys and "event_precision_shuffled" in keys
    assert "sps_shuffled" not in keys  # a permutation keeps the Gini index: no floor to read
    assert metric_keys("soft") == ("AI_soft", "AD_soft", "AG_soft", "FF_soft", "fid_in_soft")
    assert needs_of("soft") == {"masked"}
    assert needs_of() == {"masked", "curves", "truth", "boxes"}
    # the legacy import paths keep working
    from listenable.evaluation import DIRECTIONS, METRICS
    from listenable.evaluation.run import DIRECTIONS as D2
    from listenable.evaluation.run import METRICS as M2

    assert METRICS == M2 == keys and DIRECTIONS is D2


def test_adding_a_metric_is_one_entry():
    metric = Metric(
        "mask_area",
        "→1",
        frozenset(),
        lambda i: i.mask.double().mean(dim=(1, 2)),
        "share of the TF bins kept",
        ".2f",
        ("shuffled",),
    )
    register(metric)
    try:
        assert registry.METRICS[-1] == "mask_area_shuffled" and "mask_area" in registry.METRICS
        assert registry.DIRECTIONS["mask_area"] == "→1"
        with pytest.raises(ValueError, match="already registered"):
            register(metric)
        row = {k: 0.5 for k in registry.METRICS}
        results = {
            "methods": {"m": row},
            "reference": {"random_order": {}},
            "settings": {
                "clips": 1,
                "data": "d",
                "split": "s",
                "target": "predicted",
                "steps": 2,
                "baseline": "zero",
                "ground_truth": False,
            },
            "sanity": {},
        }
        md = markdown_table(results)
        assert "mask_area →1" in md and "mask_area_shuffled →1" in md and "| 0.50 |" in md
    finally:
        unregister("mask_area")
    assert "mask_area" not in registry.METRICS and "mask_area" not in registry.DIRECTIONS
    with pytest.raises(ValueError, match="direction"):
        Metric("x", "up", frozenset(), lambda i: i, "")
    with pytest.raises(ValueError, match="needs"):
        Metric("x", "↑", frozenset({"gpu"}), lambda i: i, "")


def test_shuffle_bins_permutes_each_clip():
    g = torch.Generator().manual_seed(0)
    mask = torch.rand(3, 4, 5, generator=g)
    attr = mask * 2
    s_mask, s_attr = shuffle_bins([mask, attr], torch.Generator().manual_seed(1))
    for j in range(3):  # the same values (area, Gini) in other places
        assert torch.equal(s_mask[j].flatten().sort().values, mask[j].flatten().sort().values)
        assert not torch.equal(s_mask[j], mask[j])
    assert torch.equal(s_attr, 2 * s_mask)  # one permutation for the pair
    again = shuffle_bins(mask, torch.Generator().manual_seed(1))
    assert torch.equal(again, s_mask)  # seeded
    # each clip its own permutation: the same map in every clip comes out differently
    same = mask[:1].expand(3, -1, -1)
    out = shuffle_bins(same, torch.Generator().manual_seed(2))
    assert not torch.equal(out[0], out[1])
    with pytest.raises(ValueError, match="shapes"):
        shuffle_bins([mask, mask[:, :2]])


def test_check_apply_to():
    from listenable.frontends import STFT, FrontEnd

    fe = FrontEnd.preset("mcdonnell_gao")
    listening = fe.listening_stft()
    ok = SimpleNamespace(
        model=SimpleNamespace(input="features", front_end=fe, name="m"), listening=listening
    )
    check_apply_to(ok, "features")
    check_apply_to(ok, "audio")
    other = SimpleNamespace(model=ok.model, listening=STFT(48_000, 1024, 512))
    with pytest.raises(ValueError, match="apply_to='audio'"):
        check_apply_to(other, "features")
    check_apply_to(other, "audio")
    waveform = SimpleNamespace(
        model=SimpleNamespace(input="waveform", front_end=fe, name="w"), listening=listening
    )
    with pytest.raises(ValueError, match="apply_to='audio'"):
        check_apply_to(waveform, "features")
    with pytest.raises(ValueError, match="apply_to must be"):
        check_apply_to(ok, "mel")


# --- an oracle pipeline ---------------------------------------------------------------------
# A 20 × 50 grid (bins at 100 Hz steps, frames of 0.1 s at sr 1000 Hz), every bin magnitude 1.
# The oracle's evidence for class 0 is the region E (bins 5-14, frames 20-29: 100 bins):
# p_0 = the share of E's magnitude that is still there. The explanation is E itself.

BINS, FRAMES, SR, HOP = 20, 50, 1000, 100
LENGTH = (FRAMES - 1) * HOP
E = torch.zeros(1, BINS, FRAMES, dtype=torch.bool)
E[:, 5:15, 20:30] = True
BOX = (2.0, 3.0, 450.0, 1450.0)  # E's frames 2.0-2.9 s and bins 500-1400 Hz, segments 20-29


def _oracle_scores(x):
    share = (x.abs() * E[:, None]).sum(dim=(1, 2, 3)) / E.sum()
    a = share.clamp(1e-9, 1 - 1e-9)
    return torch.stack([a.log(), (1 - a).log()], dim=1)


class _Model:
    input = "features"
    name = "oracle"

    def __call__(self, x):
        return _oracle_scores(x)

    def inputs(self, wave, spectrum=None):
        return wave

    def probabilities(self, logits):
        return torch.softmax(logits.float(), dim=1)


def _oracle_explainer(heatmap, mask):
    listening = SimpleNamespace(
        istft=lambda s, length: s,  # the identity: "audio" is the spectrum
        sample_rate=SR,
        hop_length=HOP,
        frequencies=lambda: torch.arange(BINS, dtype=torch.float64) * 100.0,
    )
    return SimpleNamespace(
        listening=listening,
        model=_Model(),
        front_end=SimpleNamespace(from_stft=lambda s: s),
        model_input=lambda x: x,
        autocast=contextlib.nullcontext,
        masks=lambda spectrum, target, waveforms=None: (
            SimpleNamespace(heatmap=heatmap, geometry=None),
            mask,
            torch.zeros(1, dtype=torch.bool),
        ),
        projection=lambda h, geometry, frames: h,
    )


@pytest.mark.parametrize("apply_to", ["audio", "features"])
def test_every_metric_on_the_oracle(apply_to):
    spectrum = torch.ones(1, 1, BINS, FRAMES, dtype=torch.complex64)
    heatmap = torch.where(E, 0.5, 0.0)
    heatmap[0, 9, 24] = 1.0  # the maximum, inside E
    mask = E.float()
    explainer = _oracle_explainer(heatmap, mask)
    probs_x = explainer.model.probabilities(_oracle_scores(spectrum))
    target = torch.tensor([0])
    truth = [(torch.where(E[:, None], spectrum, 0), E.any(dim=1))]
    values = _measure(
        explainer,
        None,
        spectrum,
        LENGTH,
        target,
        probs_x,
        torch.tensor([1e-9]),
        truth,
        [[BOX]],
        steps=2,
        baseline="zero",
        generator=torch.Generator().manual_seed(0),
        shuffler=torch.Generator().manual_seed(0),
        batch_size=4,
        apply_to=apply_to,
    )
    assert set(values) == set(registry.METRICS)
    v = {k: vals[0] for k, vals in values.items()}
    p = 1 - 1e-9  # p_c(x): all of E is there (float32: 1.0)
    # the mask is the evidence: nothing lost, everything lost without it
    assert v["AI"] == 0.0 and v["AD"] == pytest.approx(0.0, abs=1e-4)
    assert v["FF"] == pytest.approx(p - 1e-9, abs=1e-6) and v["fid_in"] == 1.0
    # soft: E at 0.5, one bin at 1 keeps (99 · 0.5 + 1) / 100 of E → AD = 49.5
    assert v["AD_soft"] == pytest.approx(100 * (1 - 0.505), abs=1e-3)
    assert v["FF_soft"] == pytest.approx(1 - 0.495, abs=1e-5)  # (1 − M) keeps 0.495 of E
    # shuffled: the same 100 ones spread over 1000 bins keep about a tenth of E
    assert v["AD_shuffled"] > 75 and v["FF_shuffled"] < 0.25 and v["fid_in_shuffled"] == 0.0
    # RISE, 2 steps: removing the top half removes all of E → p 1, 0, 0 (AUC 0.25); inserting
    # it → 0, 1, 1 (AUC 0.75)
    assert v["deletion_auc"] == pytest.approx(0.25, abs=1e-6)
    assert v["insertion_auc"] == pytest.approx(0.75, abs=1e-6)
    # ground truth: the mask is the ideal one
    for key in ("event_recall", "event_precision", "tf_iou", "time_smear"):
        assert v[key] == pytest.approx(1.0), key
    assert v["event_recall_shuffled"] < 0.3 and v["time_smear_shuffled"] > 2
    # localisation: the maximum is inside the box; the time profile is high exactly in the
    # event's segments
    assert v["pointing_game"] == 1.0 and v["segment_auc"] == 1.0
    assert v["pointing_game_shuffled"] in (0.0, 1.0)
    assert 0.0 <= v["segment_auc_shuffled"] < 0.9
    # SPS / COMP of the attribution: 99 bins at 0.5 and one at 1 among 1000
    assert v["comp"] == pytest.approx(
        -(99 * (0.5 / 50.5) * math.log(0.5 / 50.5) + (1 / 50.5) * math.log(1 / 50.5))
    )
    # Gini, sorted ascending: 900 zeros, 99 × 0.5 at ranks 901-999, 1 at rank 1000:
    # (0.5 · Σ_{901}^{999} (2i − 1001) + 999) / (1000 · 50.5) = 45499.5 / 50500; Quantus'
    # 1e-7 per bin moves it by ~2e-6
    assert v["sps"] == pytest.approx(45499.5 / 50500, abs=1e-5)
