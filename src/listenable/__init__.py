"""listenable: listen to what an audio scene classifier heard.

Grad-CAM on a log-mel scene classifier, mapped back through the mel geometry onto the
linear STFT, turned into a mask and inverted with the original phase.
"""

from listenable.checkpoint import load_checkpoint, save_checkpoint
from listenable.errors import AudioError, CheckpointError, DatasetError, ListenableError
from listenable.explain import Explainer, Explanation, explain
from listenable.features import LogMelDeltas

__all__ = [
    "explain",
    "Explainer",
    "Explanation",
    "LogMelDeltas",
    "load_checkpoint",
    "save_checkpoint",
    "ListenableError",
    "AudioError",
    "CheckpointError",
    "DatasetError",
]
__version__ = "0.1.0"
