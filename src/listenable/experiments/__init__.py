"""Experiments that use listenable end to end: :mod:`listenable.experiments.shortcut` (a model
trained on a spurious cue, and whether the listenable output finds it)."""

from listenable.experiments.cues import Cue, cue_stem, parse_cue, write_cued_data
from listenable.experiments.shortcut import (
    ShortcutConfig,
    cue_precision,
    cue_recall,
    measure,
    run_shortcut,
    shuffled_masks,
)

__all__ = [
    "Cue",
    "ShortcutConfig",
    "cue_precision",
    "cue_recall",
    "cue_stem",
    "measure",
    "parse_cue",
    "run_shortcut",
    "shuffled_masks",
    "write_cued_data",
]
