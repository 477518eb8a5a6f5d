"""Measuring explanations (DESIGN §4): faithfulness, complexity, deletion/insertion,
sanity checks by cascading randomisation, and localisation against planted events.

``evaluate(data, out)`` runs them all over a data split; the modules hold the pieces:
:mod:`~listenable.evaluation.metrics` (faithfulness, complexity, RISE, re-running),
:mod:`~listenable.evaluation.groundtruth` (energy against the rendered events),
:mod:`~listenable.evaluation.localisation` (pointing game, segment ROC-AUC),
:mod:`~listenable.evaluation.sanity`, :mod:`~listenable.evaluation.registry` (one entry per
metric), :mod:`~listenable.evaluation.run` (the runner) and
:mod:`~listenable.evaluation.report` (tables and figures). Conventions and how they compare
with L-MAC's recipe and Quantus: ``docs/evaluation-conventions.md``.
"""

from listenable.evaluation.groundtruth import (
    annotated_frames,
    event_precision,
    event_recall,
    ideal_binary_mask,
    scene_truth,
    tf_iou,
    time_smear,
)
from listenable.evaluation.localisation import pointing_game, roc_auc, segment_auc
from listenable.evaluation.metrics import (
    APPLY_TO,
    DeletionInsertion,
    average_drop,
    average_gain,
    average_increase,
    complexity,
    deletion_insertion,
    faithfulness,
    fid_in,
    masked_probabilities,
    pipeline_probabilities,
    shuffle_bins,
    sparseness,
)
from listenable.evaluation.registry import DIRECTIONS, METRICS, REGISTRY, Metric, register
from listenable.evaluation.report import markdown_table
from listenable.evaluation.run import evaluate
from listenable.evaluation.sanity import cascading_randomisation, spearman, ssim

__all__ = [
    "evaluate",
    "METRICS",
    "DIRECTIONS",
    "REGISTRY",
    "Metric",
    "register",
    "markdown_table",
    "APPLY_TO",
    "shuffle_bins",
    "pointing_game",
    "segment_auc",
    "roc_auc",
    "average_increase",
    "average_drop",
    "average_gain",
    "faithfulness",
    "fid_in",
    "sparseness",
    "complexity",
    "pipeline_probabilities",
    "masked_probabilities",
    "deletion_insertion",
    "DeletionInsertion",
    "event_recall",
    "event_precision",
    "tf_iou",
    "time_smear",
    "ideal_binary_mask",
    "annotated_frames",
    "scene_truth",
    "cascading_randomisation",
    "spearman",
    "ssim",
]
