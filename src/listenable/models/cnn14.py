"""PANNs CNN14 (Kong et al., 2020), the AudioSet tagger of ``panns_inference``.

CNN14 takes the 32 kHz waveform and computes its own features inside ``forward``:
torchlibrosa's ``Spectrogram`` (a centred, reflect-padded STFT with a periodic Hann window,
``n_fft = win = 1024``, hop 320, power 2, as a Conv1d) and ``LogmelFilterBank`` (librosa's
Slaney mel bank with Slaney area norm, 64 bands from 50 Hz to 14 kHz, ``10 log10(max(x,
1e-10))`` with ``ref = 1``, no ``top_db`` floor): exactly ``FrontEnd.preset("panns")``
(tested against torchlibrosa). ``bn0`` then normalises each mel band (inside the model: its
running statistics belong to the model, not to the front end). Six ``ConvBlock``\\ s of two
3×3 convolutions (padding 1), the first five followed by a 2×2 average pool, the sixth by
none; mean over frequency, max + mean over time, ``fc1``, and ``fc_audioset``, whose output
goes through a sigmoid inside ``forward``. So the explained scores are ``fc_audioset``'s
output (pre-sigmoid) and the activation is the sigmoid: a multi-label tagger, any of the
527 tags can be the target.

The conv blocks output ``(batch, channels, time, freq)``; the probe finds the time axis.
Geometry of ``conv_block6`` (by hand: five 2×2 average pools, each putting cell ``i`` on
``2 i + 0.5`` of its input; 3×3 same-padded convolutions keep positions): time stride 32,
offset ``0.5 · (1 + 2 + 4 + 8 + 16) = 15.5`` feature frames, frequency stride 32, offset
15.5 mel bands: two rows, each the average of 32 bands (``conv_block5``: the same; block
``k ≤ 5``: stride ``2^k``, offset ``(2^k − 1) / 2``).

Importing ``panns_inference`` runs ``wget`` for its label file (its ``__init__`` imports
``config``); :func:`panns_models` loads ``panns_inference/models.py`` from its path without
running the package's ``__init__``.

Shapes (a clip of ``s`` seconds: ``frames = 1 + 32000 s // 320``):
    waveform     (batch, samples)                32 kHz mono (the module's input)
    features     (batch, 1, frames, 64)          logmel_extractor's output, layout bctf
    conv_block6  (batch, 2048, frames // 32, 2)
    scores       (batch, classes_num)            fc_audioset, pre-sigmoid
"""

from __future__ import annotations

import importlib.util
import os
import sys
import types
from collections.abc import Sequence

import torch
from torch import nn

__all__ = [
    "CNN14_SETTINGS",
    "FINE_LAYERS",
    "LAYERS",
    "PROBE_SECONDS",
    "panns_models",
    "build_cnn14",
    "front_end_of",
    "explainable",
]

#: The constructor arguments of the released AudioSet CNN14 (``Cnn14_mAP=0.431.pth``).
CNN14_SETTINGS = dict(
    sample_rate=32_000, window_size=1024, hop_size=320, mel_bins=64, fmin=50, fmax=14_000
)
#: The conv blocks, declared with their geometry (any other module is probed generically).
LAYERS = tuple(f"conv_block{i}" for i in range(1, 7))
#: The multi-scale method's layer groups: time (and frequency) stride 16, then 8
#: (``conv_block5`` has conv_block6's stride 32, so it adds no resolution).
FINE_LAYERS = (("conv_block4",), ("conv_block3",))
#: Probe length: ``conv_block6``'s receptive field is 284 feature frames (2.84 s), and two
#: probed cells must have theirs inside the clip.
PROBE_SECONDS = 6.0

_PACKAGE = "_listenable_panns"


def panns_models() -> types.ModuleType:
    """``panns_inference.models`` (``Cnn14`` and friends), without the package's
    ``__init__`` (which downloads a label file with ``wget`` when it is not in
    ``~/panns_data``): the module file is loaded from its path, in a private package
    whose ``__path__`` is panns_inference's folder (for its relative imports)."""
    for name in ("panns_inference.models", f"{_PACKAGE}.models"):
        if name in sys.modules:
            return sys.modules[name]
    spec = importlib.util.find_spec("panns_inference")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("PANNs CNN14 needs panns_inference: pip install panns-inference")
    folder = list(spec.submodule_search_locations)[0]
    package = types.ModuleType(_PACKAGE)
    package.__path__ = [folder]
    sys.modules.setdefault(_PACKAGE, package)
    loader = importlib.util.spec_from_file_location(
        f"{_PACKAGE}.models", os.path.join(folder, "models.py")
    )
    module = importlib.util.module_from_spec(loader)
    sys.modules[f"{_PACKAGE}.models"] = module
    try:
        loader.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(f"{_PACKAGE}.models", None)
        raise
    return module


def build_cnn14(classes_num: int = 527, seed: int = 0) -> nn.Module:
    """A CNN14 with the released model's settings (:data:`CNN14_SETTINGS`) and its own
    random initialisation under ``seed`` (the global RNG is left as it was), in eval mode.
    Load trained weights into it with ``model.load_state_dict(...)``."""
    cls = panns_models().Cnn14
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = cls(**CNN14_SETTINGS, classes_num=classes_num)
    return model.eval()


def _check_cnn14(model: nn.Module) -> None:
    missing = [
        name
        for name in ("spectrogram_extractor", "logmel_extractor", "bn0", *LAYERS, "fc_audioset")
        if not hasattr(model, name)
    ]
    if missing:
        raise TypeError(f"{type(model).__name__} is not a PANNs Cnn14: it has no {missing}")


def front_end_of(model: nn.Module, front_end=None):
    """The :class:`~listenable.frontends.FrontEnd` equal to ``model``'s own front end:
    ``FrontEnd.preset("panns")`` with the STFT, mel-band count and dB settings read off
    its torchlibrosa modules (or ``front_end`` as given), checked against them — the
    filterbank against the model's ``melW`` — so that a CNN14 built with other settings
    (e.g. the 16 kHz one) is refused rather than explained on the wrong geometry."""
    from listenable.frontends import FrontEnd

    _check_cnn14(model)
    stft = model.spectrogram_extractor.stft
    logmel = model.logmel_extractor
    mel_w = logmel.melW.detach().double().cpu()  # (n_fft // 2 + 1, n_mels)
    read = dict(
        n_fft=int(stft.n_fft), win_length=int(stft.win_length), hop_length=int(stft.hop_length),
        pad_mode=stft.pad_mode, n_mels=int(mel_w.shape[1]), ref=float(logmel.ref),
        amin=float(logmel.amin), top_db=logmel.top_db,
    )  # fmt: skip
    if front_end is None:
        front_end = FrontEnd.preset("panns", **read)
    own = front_end.settings
    wrong = {k: (own[k], v) for k, v in read.items() if own[k] != v}
    if stft.window != "hann" or not stft.center:
        wrong["window"] = ("hann, centred", f"{stft.window}, center={stft.center}")
    if float(model.spectrogram_extractor.power) != own["power"]:
        wrong["power"] = (own["power"], model.spectrogram_extractor.power)
    if not logmel.is_log or own["compression"] != "db":
        wrong["compression"] = (own["compression"], "db" if logmel.is_log else None)
    if not wrong:
        fb = front_end._filterbank64.T  # (bins, n_mels)
        if fb.shape != mel_w.shape or (fb - mel_w).abs().max() > 1e-6 * mel_w.abs().max():
            wrong["filterbank"] = ("the front end's", "the model's melW")
    if wrong:
        raise ValueError(
            f"the front end does not match this Cnn14's own (front end, model): {wrong}; pass "
            "front_end=FrontEnd.preset('panns', sample_rate=..., f_min=..., f_max=...) with "
            "the settings the model was built with"
        )
    return front_end


def explainable(
    model: nn.Module,
    front_end=None,
    *,
    class_names: Sequence[str] | None = None,
    layer: str = "conv_block6",
    probe_seconds: float = PROBE_SECONDS,
    **options,
):
    """A PANNs ``Cnn14`` as an :class:`~listenable.models.Explainable`.

    The module takes the waveform (``input="waveform"``); its features are
    ``logmel_extractor``'s output (``features_at``), equal to ``FrontEnd.preset("panns")``
    (checked against the model, :func:`front_end_of`); the scores are ``fc_audioset``'s
    output before the sigmoid ``forward`` applies (``activation="sigmoid"``: multi-label);
    the default layer is ``conv_block6`` (the last map with a time axis, before CNN14's
    global pooling), and ``conv_block4`` / ``conv_block3`` are the multi-scale method's
    fine layers. ``class_names``: the 527 AudioSet labels in index order (``panns_inference``
    reads them from ``class_labels_indices.csv``); default the indices.

    The conv blocks' geometry is derived by the generic probe
    (:func:`listenable.geometry.probe`, on ``logmel_extractor``'s output), once per layer.
    Where the receptive fields are wider than the 64 mel bands (``conv_block4``–``6``: 76,
    156 and 284 bands) every support is clipped to the same rows, and the probe takes the
    tiling axis, ``stride = 64 / rows``, offset ``(stride − 1) / 2`` — exact for CNN14, whose
    2×2 average pools of 64 = 2⁶ bands make each row the mean of ``stride`` consecutive
    bands' positions.
    """
    from listenable.models.explainable import Explainable

    front_end = front_end_of(model, front_end)
    device = next(model.parameters()).device
    front_end = front_end.to(device)
    options = {"fine_layers": FINE_LAYERS, "name": "cnn14"} | options
    return Explainable(
        model,
        front_end,
        input="waveform",
        scores="fc_audioset",
        activation="sigmoid",
        class_names=class_names,
        layer=layer,
        features_at="logmel_extractor",
        probe_seconds=probe_seconds,
        **options,
    )
