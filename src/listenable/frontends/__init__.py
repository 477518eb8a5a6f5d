"""Front ends: waveform → the features a model takes, with their geometry in samples and
hertz (:class:`FrontEnd`), and the STFT a clip is masked and inverted with (:class:`STFT`).
"""

from listenable.frontends.filterbanks import hz_to_mel, mel_filterbank, mel_to_hz
from listenable.frontends.frontend import LAYOUTS, PRESETS, FrontEnd, delta
from listenable.frontends.stft import STFT

__all__ = [
    "FrontEnd",
    "STFT",
    "PRESETS",
    "LAYOUTS",
    "delta",
    "hz_to_mel",
    "mel_to_hz",
    "mel_filterbank",
]
