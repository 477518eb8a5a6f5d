"""The metric registry: one entry per metric, from which the runner, ``results.json``, the
tables and the figures all read. Adding a metric is one :func:`register` call.

An entry (:class:`Metric`) says: its ``name`` (the ``results.json`` key), which way is
better (``direction``: ``↑``, ``↓`` or ``→1``), what it ``needs`` (:data:`NEEDS`; the runner
computes an input only when some metric needs it), the function from :class:`Inputs` to one
value per clip, how the table prints it, a one-line description, and the ``variants`` it is
also reported for (:data:`VARIANTS`), each under the key ``f"{name}_{variant}"``:

* ``soft`` — the same metric with the continuous map as the mask (the attribution: the
  heatmap on the STFT grid, min-max normalised; the mask of ``mode="soft"``, what L-MAC's
  recipe uses for its baselines) instead of the listening mask (the explainer's ``mode``:
  by default the sigmoid at the percentile, i.e. binarised);
* ``shuffled`` — the floor: the same metric on the same mask (and attribution) with its
  values permuted at random over the TF bins of each clip (seeded; same values, same area,
  no location). A number means something only as far as it beats its floor.

A value is NaN where it is undefined for a clip (no ground truth, a single-label clip);
the data-set score is the mean over the clips where it is finite (``None`` when there are
none).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from listenable.evaluation import groundtruth as gt
from listenable.evaluation import localisation as loc
from listenable.evaluation.metrics import (
    DeletionInsertion,
    average_drop,
    average_gain,
    average_increase,
    complexity,
    faithfulness,
    fid_in,
    sparseness,
)

__all__ = [
    "Metric",
    "Inputs",
    "REGISTRY",
    "NEEDS",
    "VARIANTS",
    "register",
    "unregister",
    "metric_keys",
    "needs_of",
    "METRICS",
    "DIRECTIONS",
]

#: What a metric can need; the runner computes each only when some metric needs it.
NEEDS = {
    "masked": "p(M⊙x) and p((1−M)⊙x): one batched re-run (2 × batch forwards)",
    "curves": "RISE deletion/insertion curves: 2 (steps − 1) forwards per clip",
    "truth": "the signature events' audio rendered again (scenes.json + events.csv)",
    "boxes": "the signature events' boxes in seconds and hertz (events.csv)",
}
#: Variants a metric can be reported for, besides its own key (see the module docstring).
VARIANTS = {
    "soft": "the continuous map (attribution, mode soft) as the mask",
    "shuffled": "the mask and attribution with their values permuted over the TF bins",
}


@dataclass
class Inputs:
    """Everything a metric reads, for one batch of clips and one method (and variant).

    Attributes:
        target: ``(batch,)`` explained class.
        probs_x: ``(batch, n_classes)`` on the clips as they are.
        mask: ``(batch, bins, frames)`` in [0, 1], the mask this variant scores.
        attribution: ``(batch, bins, frames)`` in [0, 1], the continuous map.
        spectrum: complex listening STFT ``(batch, channels, bins, frames)``.
        listening: the listening :class:`~listenable.frontends.STFT`.
        length: samples of the clips.
        probs_masked, probs_inverse: ``p(M⊙x)``, ``p((1−M)⊙x)`` (need ``"masked"``).
        curves: deletion/insertion (need ``"curves"``).
        truth: per clip ``(event spectrum (1, channels, bins, frames), event frames (1,
            frames))`` or None (need ``"truth"``).
        boxes: per clip a list of signature event boxes or None (need ``"boxes"``).
        segment_s: segment length of the segment ROC-AUC, seconds.
    """

    target: torch.Tensor
    probs_x: torch.Tensor
    mask: torch.Tensor
    attribution: torch.Tensor
    spectrum: torch.Tensor
    listening: object
    length: int
    probs_masked: torch.Tensor | None = None
    probs_inverse: torch.Tensor | None = None
    curves: DeletionInsertion | None = None
    truth: list | None = None
    boxes: list | None = None
    segment_s: float = loc.SEGMENT_S

    def _pick(self, probs: torch.Tensor) -> torch.Tensor:
        return probs.gather(1, self.target.to(probs.device)[:, None])[:, 0]

    @property
    def p_x(self) -> torch.Tensor:
        """``p_c(x)`` ``(batch,)``."""
        return self._pick(self.probs_x)

    @property
    def p_masked(self) -> torch.Tensor:
        """``p_c(M⊙x)`` ``(batch,)``."""
        return self._pick(self.probs_masked)

    @property
    def p_inverse(self) -> torch.Tensor:
        """``p_c((1−M)⊙x)`` ``(batch,)``."""
        return self._pick(self.probs_inverse)

    @property
    def batch(self) -> int:
        return self.mask.shape[0]

    def frequencies(self) -> torch.Tensor:
        """Hz of the listening STFT's bins ``(bins,)`` float64."""
        return self.listening.frequencies()

    def frame_samples(self) -> torch.Tensor:
        """Sample of each frame's centre ``(frames,)`` int64 (centred frames)."""
        return torch.arange(self.mask.shape[-1], dtype=torch.int64) * self.listening.hop_length

    def times(self) -> torch.Tensor:
        """Seconds of each frame's centre ``(frames,)`` float64."""
        return self.frame_samples().double() / self.listening.sample_rate


@dataclass(frozen=True)
class Metric:
    """One metric (see the module docstring).

    ``compute(inputs)`` returns one value per clip ``(batch,)`` (NaN where undefined);
    ``fmt`` is the format spec of the tables.
    """

    name: str
    direction: str
    needs: frozenset
    compute: Callable[[Inputs], torch.Tensor]
    description: str
    fmt: str = ".3f"
    variants: tuple[str, ...] = ()
    group: str = ""

    def __post_init__(self) -> None:
        if self.direction not in ("↑", "↓", "→1"):
            raise ValueError(f"{self.name}: direction must be ↑, ↓ or →1, got {self.direction!r}")
        unknown = set(self.needs) - set(NEEDS)
        if unknown:
            raise ValueError(
                f"{self.name}: unknown needs {sorted(unknown)}; choose from {list(NEEDS)}"
            )
        bad = [v for v in self.variants if v not in VARIANTS]
        if bad:
            raise ValueError(f"{self.name}: unknown variants {bad}; choose from {list(VARIANTS)}")

    def key(self, variant: str | None = None) -> str:
        """The ``results.json`` key of this metric (or of one of its variants)."""
        return self.name if variant is None else f"{self.name}_{variant}"

    def format(self, value) -> str:
        if value is None or (isinstance(value, float) and not math.isfinite(value)):
            return "—"
        return format(value, self.fmt)


#: name → :class:`Metric`, in table order.
REGISTRY: dict[str, Metric] = {}


def register(metric: Metric) -> Metric:
    """Add ``metric`` to :data:`REGISTRY` (its name must be new); returns it."""
    if metric.name in REGISTRY:
        raise ValueError(f"metric {metric.name!r} is already registered")
    REGISTRY[metric.name] = metric
    _refresh()
    return metric


def unregister(name: str) -> Metric:
    """Remove the metric ``name`` from :data:`REGISTRY` (e.g. one a test added); returns it."""
    metric = REGISTRY.pop(name)
    _refresh()
    return metric


def metric_keys(variant: str | None = None) -> tuple[str, ...]:
    """The keys of one table: the metrics' own (``variant=None``) or of a variant."""
    return tuple(
        m.key(variant) for m in REGISTRY.values() if variant is None or variant in m.variants
    )


def needs_of(variant: str | None = None) -> frozenset:
    """What the metrics reported for ``variant`` need, together."""
    chosen = [m for m in REGISTRY.values() if variant is None or variant in m.variants]
    return frozenset().union(*(m.needs for m in chosen))


#: Every ``results.json`` key of a method, in table order: the metrics, then each variant
#: (kept up to date by :func:`register`; a name imported before a later registration keeps
#: the tuple it had: read ``registry.METRICS`` or :func:`metric_keys` for the current one).
METRICS: tuple[str, ...] = ()
#: Key → which way is better.
DIRECTIONS: dict[str, str] = {}


def _refresh() -> None:
    global METRICS
    METRICS = metric_keys() + tuple(k for v in VARIANTS for k in metric_keys(v))
    DIRECTIONS.clear()
    for m in REGISTRY.values():
        for variant in (None, *m.variants):
            DIRECTIONS[m.key(variant)] = m.direction


# --------------------------------------------------------------------------- the metrics


def _per_clip(inputs: Inputs, items, fn) -> torch.Tensor:
    """``fn(j, item)`` for the clips whose item is not None; NaN for the others."""
    out = torch.full((inputs.batch,), math.nan, dtype=torch.float64)
    for j, item in enumerate(items or [None] * inputs.batch):
        if item is not None:
            out[j] = float(fn(j, item))
    return out


def _truth(fn):
    def compute(inputs: Inputs) -> torch.Tensor:
        def one(j, truth):
            event, frames = truth
            return fn(inputs.mask[j : j + 1], event, inputs.spectrum[j : j + 1], frames)

        return _per_clip(inputs, inputs.truth, one)

    return compute


_FAITH = frozenset({"masked"})
_TRUTH = frozenset({"truth"})
_BOXES = frozenset({"boxes"})
_BOTH = ("soft", "shuffled")

for _m in (
    Metric(
        "AI",
        "↑",
        _FAITH,
        lambda i: average_increase(i.p_x, i.p_masked, reduction="none"),
        "average increase: share of clips whose p_c rises when only the mask is kept, ×100",
        ".1f",
        _BOTH,
        "faithfulness",
    ),
    Metric(
        "AD",
        "↓",
        _FAITH,
        lambda i: average_drop(i.p_x, i.p_masked, reduction="none"),
        "average drop: relu(p_c(x) − p_c(M⊙x)) / p_c(x), ×100",
        ".1f",
        _BOTH,
        "faithfulness",
    ),
    Metric(
        "AG",
        "↑",
        _FAITH,
        lambda i: average_gain(i.p_x, i.p_masked, reduction="none"),
        "average gain: relu(p_c(M⊙x) − p_c(x)) / (1 − p_c(x)), ×100",
        ".1f",
        _BOTH,
        "faithfulness",
    ),
    Metric(
        "FF",
        "↑",
        _FAITH,
        lambda i: faithfulness(i.p_x, i.p_inverse, reduction="none"),
        "faithfulness: p_c(x) − p_c((1−M)⊙x), probability units",
        ".3f",
        _BOTH,
        "faithfulness",
    ),
    Metric(
        "fid_in",
        "↑",
        _FAITH,
        lambda i: fid_in(i.probs_x, i.probs_masked, reduction="none"),
        "input fidelity: the masked clip keeps the top class (0/1 mean)",
        ".3f",
        _BOTH,
        "faithfulness",
    ),
    Metric(
        "deletion_auc",
        "↓",
        frozenset({"curves"}),
        lambda i: i.curves.deletion_auc.double(),
        "RISE deletion: area under p_c as the top-attributed TF bins are removed",
        group="deletion/insertion",
    ),
    Metric(
        "insertion_auc",
        "↑",
        frozenset({"curves"}),
        lambda i: i.curves.insertion_auc.double(),
        "RISE insertion: area under p_c as the top-attributed TF bins are inserted",
        group="deletion/insertion",
    ),
    Metric(
        "sps",
        "↑",
        frozenset(),
        lambda i: sparseness(i.attribution, reduction="none"),
        "sparseness: Gini index of the attribution (Quantus Sparseness)",
        group="complexity",
    ),
    Metric(
        "comp",
        "↓",
        frozenset(),
        lambda i: complexity(i.attribution, reduction="none"),
        "complexity: entropy (nats) of the attribution's distribution (Quantus Complexity)",
        group="complexity",
    ),
    Metric(
        "event_recall",
        "↑",
        _TRUTH,
        _truth(lambda m, e, x, f: gt.event_recall(m, e)),
        "share of the signature events' energy the mask keeps",
        variants=("shuffled",),
        group="ground truth",
    ),
    Metric(
        "event_precision",
        "↑",
        _TRUTH,
        _truth(lambda m, e, x, f: gt.event_precision(m, e, x)),
        "share of the kept energy that belongs to the signature events",
        variants=("shuffled",),
        group="ground truth",
    ),
    Metric(
        "tf_iou",
        "↑",
        _TRUTH,
        _truth(lambda m, e, x, f: gt.tf_iou(m, e, x)),
        "IoU of the mask ≥ 0.5 with the ideal binary mask of the events",
        variants=("shuffled",),
        group="ground truth",
    ),
    Metric(
        "time_smear",
        "→1",
        _TRUTH,
        _truth(lambda m, e, x, f: gt.time_smear(m, e, x, event_frames=f)),
        "active frames of the mask over the annotated event frames",
        variants=("shuffled",),
        group="ground truth",
    ),
    Metric(
        "pointing_game",
        "↑",
        _BOXES,
        lambda i: loc.pointing_game(
            i.attribution, i.boxes, frequencies=i.frequencies(), times=i.times()
        ),
        "the attribution's maximum lies inside a signature event box (ties share)",
        variants=("shuffled",),
        group="localisation",
    ),
    Metric(
        "segment_auc",
        "↑",
        _BOXES,
        lambda i: loc.segment_auc(
            i.attribution,
            i.boxes,
            i.frame_samples(),
            length=i.length,
            sample_rate=i.listening.sample_rate,
            segment_s=i.segment_s,
        ),
        "ROC-AUC of the attribution's time profile in 100 ms segments against event segments",
        variants=("shuffled",),
        group="localisation",
    ),
):
    register(_m)
del _m
