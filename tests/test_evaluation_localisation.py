"""Pointing game and segment ROC-AUC on hand-computable cases, against scipy's Mann–Whitney U,
and on an oracle map whose evidence is the event by construction."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from listenable.evaluation.localisation import (
    box_mask,
    event_boxes,
    pointing_game,
    roc_auc,
    segment_auc,
    segment_labels,
    segment_scores,
)

# a grid of 5 bins at 0, 100, ..., 400 Hz and 6 frames at 0, 0.1, ..., 0.5 s
FREQS = torch.arange(5, dtype=torch.float64) * 100.0
TIMES = torch.arange(6, dtype=torch.float64) * 0.1


def test_box_mask_bounds_included():
    inside = box_mask([(0.1, 0.2, 100.0, 200.0)], FREQS, TIMES)
    expected = torch.zeros(5, 6, dtype=torch.bool)
    expected[1:3, 1:3] = True
    assert torch.equal(inside, expected)


def test_pointing_game_by_hand():
    a = torch.zeros(3, 5, 6)
    a[0, 1, 1] = 1.0  # inside the box
    a[1, 4, 5] = 1.0  # outside
    a[2, 1, 1] = a[2, 4, 5] = 1.0  # two tied maxima, one inside: half a hit
    boxes = [[(0.1, 0.2, 100.0, 200.0)]] * 3
    hits = pointing_game(a, boxes, frequencies=FREQS, times=TIMES)
    assert hits.tolist() == [1.0, 0.0, 0.5]
    # a flat map points everywhere: the box's share of the plane (4 of 30 bins)
    flat = pointing_game(torch.zeros(1, 5, 6), boxes[:1], frequencies=FREQS, times=TIMES)
    assert flat.item() == pytest.approx(4 / 30)
    # no boxes: undefined
    none = pointing_game(a[:2], [None, []], frequencies=FREQS, times=TIMES)
    assert torch.isnan(none).all()
    with pytest.raises(ValueError, match="one box list per clip"):
        pointing_game(a, boxes[:2], frequencies=FREQS, times=TIMES)


def test_event_boxes_keep_the_signature_events():
    events = [
        SimpleNamespace(role="signature", onset_s=1.0, offset_s=2.0, low_hz=10.0, high_hz=20.0),
        SimpleNamespace(role="distractor", onset_s=0.0, offset_s=9.0, low_hz=0.0, high_hz=1e4),
    ]
    assert event_boxes(events) == [(1.0, 2.0, 10.0, 20.0)]


def test_roc_auc_by_hand_and_against_mannwhitneyu():
    # positives 0.9, 0.4; negatives 0.5, 0.1: pairs (0.9>0.5, 0.9>0.1, 0.4<0.5, 0.4>0.1) → 3/4
    s = torch.tensor([0.9, 0.5, 0.4, 0.1])
    y = torch.tensor([True, False, True, False])
    assert roc_auc(s, y) == pytest.approx(0.75)
    # a tie between a positive and a negative counts half: (1 + 0.5) / 2
    assert roc_auc(torch.tensor([0.3, 0.3, 0.9]), torch.tensor([1, 0, 0])) == pytest.approx(0.25)
    assert math.isnan(roc_auc(torch.tensor([1.0, 2.0]), torch.tensor([1, 1])))  # one class
    assert math.isnan(roc_auc(torch.tensor([1.0, 2.0]), torch.tensor([0, 0])))
    # against scipy: U of the positives / (n1 n0), ties included (many repeated values)
    from scipy.stats import mannwhitneyu

    rng = np.random.default_rng(0)
    for _ in range(5):
        scores = rng.integers(0, 6, size=40).astype(np.float64)
        labels = rng.random(40) < 0.3
        u = mannwhitneyu(scores[labels], scores[~labels], alternative="two-sided").statistic
        ours = roc_auc(torch.from_numpy(scores), torch.from_numpy(labels))
        assert ours == pytest.approx(u / (labels.sum() * (~labels).sum()), rel=1e-12)


def test_segment_scores_average_the_time_profile():
    # 8 frames at hop 100 samples, sr 1000 Hz: frame centres 0, 100, ..., 700; segments of
    # 200 samples (0.2 s) over 800 samples: 4 segments of 2 frames each
    a = torch.zeros(1, 2, 8, dtype=torch.float64)
    a[0, 0] = torch.arange(8, dtype=torch.float64)  # profile = mean over 2 bins = t / 2
    frames = torch.arange(8) * 100
    got = segment_scores(a, frames, length=800, sample_rate=1000, segment_s=0.2)
    torch.testing.assert_close(got, torch.tensor([[0.25, 1.25, 2.25, 3.25]], dtype=torch.float64))
    # a longer clip leaves the last segment without frames: NaN
    got = segment_scores(a, frames, length=1000, sample_rate=1000, segment_s=0.2)
    assert got.shape == (1, 5) and torch.isnan(got[0, 4])
    # a frame centre exactly on a boundary belongs to the segment that starts there
    # (integer samples: 300 // 100 = 3, never 2.999...)
    b = torch.zeros(1, 1, 4, dtype=torch.float64)
    b[0, 0, 3] = 1.0
    got = segment_scores(
        b, torch.tensor([0, 100, 200, 300]), length=400, sample_rate=1000, segment_s=0.1
    )
    assert got.tolist() == [[0.0, 0.0, 0.0, 1.0]]


def test_segment_labels_need_half_a_segment():
    # 1 s at 1 kHz, 100 ms segments: an event over 0.26-0.58 s covers 40 % of segment 2,
    # all of 3 and 4, 80 % of 5
    labels = segment_labels([(0.26, 0.58, 0.0, 1.0)], length=1000, sample_rate=1000)
    assert labels.nonzero().flatten().tolist() == [3, 4, 5]
    # two events sharing a segment add up (merged, overlaps counted once)
    labels = segment_labels(
        [(0.10, 0.13, 0, 1), (0.12, 0.16, 0, 1), (0.17, 0.20, 0, 1)],
        length=1000,
        sample_rate=1000,
    )
    assert labels.nonzero().flatten().tolist() == [1]  # 60 + 30 = 90 % of segment 1
    # the last, short segment is judged on its own length
    labels = segment_labels([(0.98, 1.05, 0, 1)], length=1030, sample_rate=1000)
    assert labels.nonzero().flatten().tolist() == [10]  # 30 of its 30 samples


def test_segment_auc_on_an_oracle_map():
    """A map that is high exactly during the event (any frequency) scores 1, its reverse 0,
    a constant map 0.5; a clip that is all event is skipped."""
    sr, hop, length = 1000, 50, 2000  # 41 frames, 20 segments of 100 ms
    frames = torch.arange(41) * hop
    event = [(0.5, 1.0, 0.0, 500.0)]
    t = frames.double() / sr
    on = ((t >= 0.5) & (t < 1.0)).double()
    oracle = on[None, None, :].expand(1, 3, 41).clone()
    kw = {"length": length, "sample_rate": sr}
    assert segment_auc(oracle, [event], frames, **kw).item() == pytest.approx(1.0)
    assert segment_auc(1 - oracle, [event], frames, **kw).item() == pytest.approx(0.0)
    assert segment_auc(torch.ones_like(oracle), [event], frames, **kw).item() == 0.5
    everywhere = [(0.0, 2.0, 0.0, 500.0)]
    assert math.isnan(segment_auc(oracle, [everywhere], frames, **kw).item())
    assert math.isnan(segment_auc(oracle, [None], frames, **kw).item())
