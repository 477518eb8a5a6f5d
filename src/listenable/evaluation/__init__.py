"""Measuring explanations (DESIGN §4): faithfulness, complexity, deletion/insertion,
sanity checks by cascading randomisation, and localisation against planted events.

``evaluate(data, out)`` runs them all over a data split; the modules hold the pieces:
:mod:`~listenable.evaluation.metrics`, :mod:`~listenable.evaluation.groundtruth`,
:mod:`~listenable.evaluation.sanity`, :mod:`~listenable.evaluation.run`.
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
from listenable.evaluation.metrics import (
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
    sparseness,
)
from listenable.evaluation.run import METRICS, evaluate
from listenable.evaluation.sanity import cascading_randomisation, spearman, ssim

__all__ = [
    "evaluate",
    "METRICS",
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
