"""Faithfulness, complexity and deletion/insertion metrics on hand-computable cases."""

import contextlib
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from listenable.evaluation.metrics import (
    attribution_ranks,
    average_drop,
    average_gain,
    average_increase,
    baseline_spectrum,
    complexity,
    deletion_insertion,
    faithfulness,
    fid_in,
    masked_probabilities,
    pipeline_probabilities,
    sparseness,
)

P_X = torch.tensor([0.5, 0.2, 0.9])
P_M = torch.tensor([0.6, 0.1, 0.9])


def test_average_increase_drop_gain_by_hand():
    # clip 0 rises 0.5 -> 0.6, clip 1 falls 0.2 -> 0.1, clip 2 stays
    assert average_increase(P_X, P_M).item() == pytest.approx(100 / 3)
    assert average_drop(P_X, P_M).item() == pytest.approx(100 * (0.1 / 0.2) / 3)
    assert average_gain(P_X, P_M).item() == pytest.approx(100 * (0.1 / 0.5) / 3)
    torch.testing.assert_close(
        average_drop(P_X, P_M, reduction="none"),
        torch.tensor([0.0, 50.0, 0.0], dtype=torch.float64),
    )
    # equal probabilities are no increase
    assert average_increase(torch.tensor([0.3]), torch.tensor([0.3])).item() == 0.0


def test_faithfulness_and_fid_in_by_hand():
    p_inv = torch.tensor([0.1, 0.3, 0.9])
    torch.testing.assert_close(
        faithfulness(P_X, p_inv, reduction="none"),
        torch.tensor([0.4, -0.1, 0.0], dtype=torch.float64),
    )
    probs_x = torch.tensor([[0.7, 0.3], [0.4, 0.6]])
    probs_m = torch.tensor([[0.6, 0.4], [0.8, 0.2]])
    assert fid_in(probs_x, probs_m).item() == pytest.approx(0.5)
    with pytest.raises(ValueError):
        fid_in(P_X, P_M)
    with pytest.raises(ValueError, match="reduction"):
        average_drop(P_X, P_M, reduction="sum")


def test_sparseness_gini_by_hand():
    one_hot = torch.tensor([[0.0, 0.0, 0.0, 1.0]])
    uniform = torch.ones(1, 4)
    assert sparseness(one_hot).item() == pytest.approx(0.75, abs=1e-6)  # (n-1)/n
    assert sparseness(uniform).item() == pytest.approx(0.0, abs=1e-6)
    assert sparseness(torch.zeros(1, 4)).item() == pytest.approx(0.0, abs=1e-6)
    # [1, 2, 3, 4]: Σ(2i-n-1)a_i = -3 - 2 + 3 + 12 = 10; n Σa = 40
    assert sparseness(torch.tensor([[4.0, 1.0, 3.0, 2.0]])).item() == pytest.approx(0.25, abs=1e-6)
    # a scale does not change it (Quantus divides by the maximum before its epsilon)
    assert sparseness(torch.tensor([[40.0, 10.0, 30.0, 20.0]])).item() == pytest.approx(
        0.25, abs=1e-6
    )
    # against the Quantus formula in numpy, per clip of a batch of 2-D maps (Quantus' own
    # functions: tests/test_evaluation_quantus.py)
    rng = np.random.default_rng(0)
    maps = 5 * rng.random((3, 5, 7)) ** 3
    ours = sparseness(torch.from_numpy(maps), reduction="none").numpy()
    for m, value in zip(maps, ours):
        a = np.sort(np.abs(m.ravel()) / np.abs(m).max() + 1e-7)
        n = a.size
        ref = np.sum((2 * np.arange(1, n + 1) - n - 1) * a) / (n * np.sum(a))
        assert value == pytest.approx(ref, rel=1e-9)


def test_complexity_entropy_by_hand():
    assert complexity(torch.ones(1, 2, 2)).item() == pytest.approx(math.log(4))
    assert complexity(torch.tensor([[0.0, 5.0, 0.0]])).item() == pytest.approx(0.0, abs=1e-9)
    assert complexity(torch.tensor([[2.0, -2.0, 0.0, 0.0]])).item() == pytest.approx(math.log(2))
    assert complexity(torch.zeros(1, 8)).item() == pytest.approx(math.log(8))  # flat = uniform
    from scipy.stats import entropy

    x = torch.rand(2, 6, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ref = [entropy(m.ravel()) for m in x.numpy()]
    np.testing.assert_allclose(complexity(x, reduction="none").numpy(), ref, rtol=1e-9)


# --- a fake pipeline whose p_0 is the kept share of the spectrum's magnitude -------------


class _IdentityFeatures:
    """A listening STFT whose inverse passes the spectrum through."""

    def istft(self, spectrum, length):
        return spectrum


class _FakeModel:
    """An Explainable whose front end passes the 'waveform' (the spectrum) through."""

    def __init__(self, scores) -> None:
        self.scores = scores

    def __call__(self, x):
        return self.scores(x)

    def inputs(self, wave, spectrum=None):
        return wave

    def probabilities(self, logits):
        return torch.softmax(logits.float(), dim=1)


def _share_model(total):
    def model(x):
        a = (x.abs().sum(dim=(1, 2, 3)) / total).clamp(1e-9, 1 - 1e-9)
        return torch.stack([a.log(), (1 - a).log()], dim=1)

    return model


def _fake_explainer(total):
    return SimpleNamespace(
        listening=_IdentityFeatures(),
        model=_FakeModel(_share_model(total)),
        model_input=lambda x: x,
        autocast=contextlib.nullcontext,
    )


SPEC = torch.tensor([[[[4.0, 3.0], [2.0, 1.0]]]], dtype=torch.complex64)  # (1, 1, 2, 2)


def test_masked_probabilities_fake_pipeline():
    explainer = _fake_explainer(10.0)
    mask = torch.tensor([[[1.0, 0.0], [0.5, 0.0]]])
    p_m, p_inv = masked_probabilities(explainer, SPEC, mask, 4)
    assert p_m[0, 0].item() == pytest.approx(0.5)  # (4 + 1) / 10
    assert p_inv[0, 0].item() == pytest.approx(0.5)  # (1 + 3 + 1) / 10
    assert p_m.shape == p_inv.shape == (1, 2)


def test_deletion_insertion_by_hand():
    """Bins of magnitude 4, 3, 2, 1 and p_0 = kept magnitude / 10: removing the largest
    first gives 1, .6, .3, .1, 0 (AUC .375); inserting them gives 0, .4, .7, .9, 1 (.625)."""
    explainer = _fake_explainer(10.0)
    good = SPEC.abs()[:, 0].float()  # attribution = magnitude
    target = torch.tensor([0])
    res = deletion_insertion(explainer, SPEC, good, target, 4, steps=4, batch_size=3)
    torch.testing.assert_close(res.fractions, torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0]))
    torch.testing.assert_close(
        res.deletion, torch.tensor([[1.0, 0.6, 0.3, 0.1, 0.0]]), atol=1e-6, rtol=0
    )
    torch.testing.assert_close(
        res.insertion, torch.tensor([[0.0, 0.4, 0.7, 0.9, 1.0]]), atol=1e-6, rtol=0
    )
    assert res.deletion_auc.item() == pytest.approx(0.375, abs=1e-6)
    assert res.insertion_auc.item() == pytest.approx(0.625, abs=1e-6)
    # the reversed order is worse on both curves
    bad = deletion_insertion(explainer, SPEC, -good, target, 4, steps=4)
    assert bad.deletion_auc.item() == pytest.approx(0.625, abs=1e-6)
    assert bad.insertion_auc.item() == pytest.approx(0.375, abs=1e-6)
    # given end points are used as they are
    given = deletion_insertion(
        explainer,
        SPEC,
        good,
        target,
        4,
        steps=4,
        p_full=torch.tensor([0.8]),
        p_empty=torch.tensor([0.2]),
    )
    assert given.deletion[0, 0].item() == pytest.approx(0.8)
    assert given.insertion[0, 0].item() == pytest.approx(0.2)


def test_ranks_break_ties_at_random():
    flat = torch.zeros(2, 3, 4)
    r1 = attribution_ranks(flat, torch.Generator().manual_seed(0))
    r2 = attribution_ranks(flat, torch.Generator().manual_seed(0))
    assert torch.equal(r1, r2)
    assert sorted(r1[0].flatten().tolist()) == list(range(12))
    assert not torch.equal(r1[0].flatten(), torch.arange(12))  # not memory order
    attr = torch.tensor([[[0.1, 0.9], [0.5, 0.0]]])
    assert attribution_ranks(attr).tolist() == [[[2, 0], [1, 3]]]


def test_blur_baseline_keeps_phase_and_mean_magnitude():
    spec = torch.polar(torch.tensor([[[[1.0, 3.0]]]]), torch.tensor([[[[0.5, -1.0]]]]))
    blur = baseline_spectrum(spec, "blur")
    torch.testing.assert_close(blur.abs(), torch.full((1, 1, 1, 2), 2.0))
    torch.testing.assert_close(blur.angle(), spec.angle())
    assert baseline_spectrum(spec, "zero").abs().sum() == 0
    with pytest.raises(ValueError):
        baseline_spectrum(spec, "noise")


def test_real_pipeline_end_points(model10, clip):
    """With the real pipeline: a mask of ones gives p(x) back, its complement p(silence);
    the deletion curve starts at p_c(x) and ends at p_c(silence)."""
    from listenable.explain import Explainer

    explainer = Explainer(model10, method="layercam")
    wave = torch.from_numpy(clip[:, :48_000])[None]
    spec = explainer.listening(wave)
    with torch.no_grad():
        probs = torch.softmax(model10(explainer.model.inputs(wave)), dim=1)
    silent = pipeline_probabilities(explainer, torch.zeros_like(spec), wave.shape[-1])
    p_m, p_inv = masked_probabilities(
        explainer, spec, torch.ones(spec.shape[:1] + spec.shape[2:]), 48_000
    )
    torch.testing.assert_close(p_m, probs, atol=1e-4, rtol=0)
    torch.testing.assert_close(p_inv, silent, atol=1e-6, rtol=0)
    # on the classifier's input spectrum: no inverse STFT, so a mask of ones is the clip
    # itself: the same features, through other float32 kernels (channels-last, another batch
    # composition): logits agree to ~1e-6 of their size, probabilities to well below 1e-5
    f_m, f_inv = masked_probabilities(
        explainer,
        spec,
        torch.ones(spec.shape[:1] + spec.shape[2:]),
        48_000,
        apply_to="features",
    )
    torch.testing.assert_close(f_m, probs, atol=1e-5, rtol=0)
    with torch.no_grad():
        zero_feats = explainer.front_end.from_stft(torch.zeros_like(spec))
        p_zero = torch.softmax(model10(zero_feats), dim=1)
    torch.testing.assert_close(f_inv, p_zero, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="apply_to"):
        pipeline_probabilities(explainer, spec, 48_000, apply_to="mel")
    target = probs.argmax(dim=1)
    attribution = torch.rand(spec.shape[:1] + spec.shape[2:])
    res = deletion_insertion(explainer, spec, attribution, target, 48_000, steps=2)
    c = int(target)
    assert res.deletion[0, 0].item() == pytest.approx(probs[0, c].item(), abs=1e-4)
    assert res.deletion[0, -1].item() == pytest.approx(silent[0, c].item(), abs=1e-6)
    assert res.insertion[0, 0].item() == pytest.approx(silent[0, c].item(), abs=1e-6)
    assert 0.0 <= res.deletion_auc.item() <= 1.0
