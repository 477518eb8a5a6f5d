"""SPS and COMP against Quantus' own ``Sparseness`` and ``Complexity`` (the functions L-MAC's
SpeechBrain recipe calls, with its settings: ``abs=True``, default normalisation by the
maximum), one clip per call as the recipe evaluates them."""

import contextlib
import io
import warnings

import numpy as np
import pytest
import torch

from listenable.evaluation.metrics import complexity, sparseness


@pytest.fixture(scope="module")
def quantus():
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        import quantus

    return quantus


def _quantus_score(quantus, metric_cls, a: np.ndarray) -> float:
    """Quantus' score of one attribution ``a (bins, frames)`` (a batch of one clip)."""
    a_batch = a[None, None].astype(np.float64).copy()
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        metric = metric_cls(abs=True, disable_warnings=True, display_progressbar=False)
        (score,) = metric(
            model=None,
            x_batch=np.zeros_like(a_batch),
            y_batch=np.zeros(1, dtype=int),
            a_batch=a_batch,
            device="cpu",
        )
    return float(score)


def _attributions():
    rng = np.random.default_rng(7)
    relu_like = np.maximum(rng.standard_normal((12, 30)), 0.0)  # half exact zeros
    return {
        "uniform": rng.random((8, 20)),
        "sparse": rng.random((16, 25)) ** 6,
        "relu": relu_like,
        "scaled": 37.5 * rng.random((10, 10)),  # exercises the normalisation by the maximum
        "signed": rng.standard_normal((9, 11)),  # abs=True
        "one_hot": np.eye(1, 40).reshape(5, 8),
    }


@pytest.mark.parametrize("name", list(_attributions()))
def test_sparseness_equals_quantus(quantus, name):
    a = _attributions()[name]
    ours = sparseness(torch.from_numpy(a)[None]).item()
    ref = _quantus_score(quantus, quantus.Sparseness, a)
    # the same float64 formula, summed in another order: a few ulps
    assert ours == pytest.approx(ref, rel=1e-12, abs=1e-14)


@pytest.mark.parametrize("name", list(_attributions()))
def test_complexity_equals_quantus(quantus, name):
    a = _attributions()[name]
    ours = complexity(torch.from_numpy(a)[None]).item()
    ref = _quantus_score(quantus, quantus.Complexity, a)
    # Quantus takes log(p + 1e-12), we log(p): each term differs by at most
    # p · log(1 + 1e-12 / p) ≤ 1e-12 (≈ 1e-12 for every p ≫ 1e-12), so ours is larger by up
    # to n · 1e-12: a bound that is nearly reached, hence the factor 2
    assert ref - 1e-12 <= ours <= ref + 2 * a.size * 1e-12


def test_flat_map_convention_differs_from_quantus(quantus):
    """An all-zero map (a flat heatmap): Quantus refuses it (an AssertionError, on which
    L-MAC's evaluation script drops the clip); we count it as uniform: COMP = log n, SPS = 0."""
    a = np.zeros((4, 5))
    assert complexity(torch.from_numpy(a)[None]).item() == pytest.approx(np.log(20))
    assert sparseness(torch.from_numpy(a)[None]).item() == pytest.approx(0.0, abs=1e-12)
    for metric_cls in (quantus.Complexity, quantus.Sparseness):
        with pytest.raises(AssertionError):
            _quantus_score(quantus, metric_cls, a)
