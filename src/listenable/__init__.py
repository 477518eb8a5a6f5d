"""listenable: listen to what an audio classifier heard.

A CAM on any layer of any PyTorch audio classifier, projected through the front end's
geometry (seconds and hertz) onto a linear STFT, turned into a mask and inverted with the
original phase.
"""

from listenable.checkpoint import load_checkpoint, load_explainable, save_checkpoint
from listenable.errors import AudioError, CheckpointError, DatasetError, ListenableError
from listenable.explain import Explainer, Explanation, explain
from listenable.frontends import STFT, FrontEnd
from listenable.models import Explainable

__all__ = [
    "explain",
    "Explainer",
    "Explanation",
    "Explainable",
    "FrontEnd",
    "STFT",
    "load_checkpoint",
    "load_explainable",
    "save_checkpoint",
    "ListenableError",
    "AudioError",
    "CheckpointError",
    "DatasetError",
]
__version__ = "0.1.0"
