"""``explain``: from a stereo clip to the sound the model used.

    audio ─► stft ─► features ─► model ─► CAM ─► mapping ─► mask ─► istft ─► listenable

Batched torch end to end on the model's device; no numpy in the hot path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from listenable.cams import get_method
from listenable.features import LogMelDeltas
from listenable.io import check_waveform, load_audio
from listenable.mapping import SpectrogramMapping
from listenable.masking import (
    DEFAULT_DELTA,
    DEFAULT_PERCENTILE,
    binarise,
    heatmap_to_mask,
)

__all__ = ["Explanation", "Explainer", "explain", "PRECISIONS"]

#: ``precision`` of :class:`Explainer`: the dtype the model runs in (autocast). Features,
#: mapping, mask and ISTFT always run in float32.
PRECISIONS = ("fp32", "bf16")


@dataclass
class Explanation:
    """What the model used, for one clip or a batch (then every tensor has a leading batch
    dimension and ``class_name`` is a list).

    Attributes:
        heatmap: raw CAM after ReLU, ``(n_mels, cam_frames)`` (a layer inside one band path
            covers only its bands, see ``mel_bands``).
        mask: ``(freq_bins, frames)`` in [0, 1] on the linear STFT grid (laid out frame-major
            in memory, as ``torch.stft`` lays out the spectrum: a transposed view).
        listenable: the masked audio, same shape as the input waveform.
        residual: input − listenable, i.e. the audio the mask removed.
        probabilities: softmax over classes ``(n_classes,)``.
        target: index of the explained class; ``class_name`` its name.
        empty: the heatmap was flat (e.g. a silent clip): the mask is all zeros.
        mask_area: mean of the mask (share of the TF bins kept).
    """

    heatmap: torch.Tensor
    mask: torch.Tensor
    listenable: torch.Tensor
    residual: torch.Tensor
    probabilities: torch.Tensor
    target: torch.Tensor | int
    class_name: str | list[str]
    sample_rate: int
    empty: torch.Tensor | bool
    mask_area: torch.Tensor | float
    mel_bands: tuple[int, int] = (0, 128)
    settings: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)

    @property
    def batched(self) -> bool:
        return self.mask.ndim == 3

    def __len__(self) -> int:
        return self.mask.shape[0] if self.batched else 1

    def item(self, i: int) -> Explanation:
        """The ``i``-th clip of a batched explanation."""
        if not self.batched:
            raise IndexError("not a batched explanation")
        return replace(
            self,
            heatmap=self.heatmap[i],
            mask=self.mask[i],
            listenable=self.listenable[i],
            residual=self.residual[i],
            probabilities=self.probabilities[i],
            target=int(self.target[i]),
            class_name=self.class_name[i],
            empty=bool(self.empty[i]),
            mask_area=float(self.mask_area[i]),
            notes=self.notes[i] if self.notes and isinstance(self.notes[0], list) else self.notes,
        )

    def __iter__(self):
        return (self.item(i) for i in range(len(self)))


class Explainer:
    """A reusable explain pipeline for one model and one set of settings.

    ``Explainer(model)(waveforms)`` with ``waveforms (batch, 2, samples)`` at 48 kHz returns a
    batched :class:`Explanation`.

    Speed options (the explanation is the same up to float rounding):

    * ``precision="bf16"`` runs the model (forward and CAM backward) under bfloat16 autocast;
      meant for CUDA. Features, mapping, mask and ISTFT stay float32. Check the binarised
      masks against float32 on your model (``benchmarks/pipeline.py --checkpoint``): with
      a model trained on the synthetic scenes they agreed on 99.7–100 % of the bins per clip
      (CPU bf16), with random weights (flat maps, many bins near θ) on ~97 %.
    * ``channels_last`` hands the features to the model in the channels-last memory format
      (faster convolutions on CPU and on tensor cores); the model itself is not modified.
    * ``cam_batch``: clips per CAM pass (forward + backward); default the whole batch. On an
      otherwise idle CPU, ``cam_batch=2`` explains batches of 4 or more ~5 % faster: the
      head's 768-channel maps and their gradients then stay below glibc's 32 MiB mmap
      threshold (larger blocks are page-faulted in again on every call). On a CPU shared
      with other work (or with decoding workers) more, smaller passes mean more OpenMP
      barriers to wait at, and it can be much slower: measure before setting it.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        method: str = "gradcam",
        layer: str = "fusion",
        percentile: float = DEFAULT_PERCENTILE,
        delta: float = DEFAULT_DELTA,
        mode: str = "sigmoid",
        class_names: list[str] | None = None,
        features: LogMelDeltas | None = None,
        method_options: dict | None = None,
        precision: str = "fp32",
        channels_last: bool = True,
        cam_batch: int | None = None,
    ) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}; choose from {PRECISIONS}")
        if cam_batch is not None and cam_batch < 1:
            raise ValueError(f"cam_batch must be at least 1, got {cam_batch}")
        self.precision = precision
        self.channels_last = channels_last
        self.cam_batch = cam_batch
        self.model = model.eval()
        device = next(model.parameters()).device
        self.features = (features or LogMelDeltas()).to(device)
        self.mapping = SpectrogramMapping(self.features)
        cls = get_method(method)
        options = dict(method_options or {})
        if getattr(cls, "uses_spectrum", False):  # it re-runs the mask: hand it ours
            options.setdefault("features", self.features)
            options.setdefault("percentile", percentile)
            options.setdefault("delta", delta)
            options.setdefault("mode", mode)
        self.cam = cls(model, layer, **options)
        self.method = method
        self.layer = layer
        self.percentile = percentile
        self.delta = delta
        self.mode = mode
        n_classes = getattr(model, "n_classes", None)
        self.class_names = list(
            class_names
            or getattr(model, "class_names", None)
            or [str(i) for i in range(n_classes or 0)]
        )
        self.mel_bands = getattr(self.cam, "mel_bands", None) or (0, self.features.n_mels)
        binarise(torch.zeros(1, 2, 2), mode=mode, percentile_=percentile, delta=delta)  # validate

    @property
    def device(self) -> torch.device:
        return self.features.window.device

    @property
    def settings(self) -> dict:
        return {
            "method": self.method,
            "layer": self.layer,
            "percentile": self.percentile,
            "delta": self.delta,
            "mode": self.mode,
            "precision": self.precision,
        }

    def target_index(self, target) -> int | list | None:
        """Accept a class name, an index, or a list of either."""
        if target is None:
            return None
        if isinstance(target, (list, tuple)):
            return [self.target_index(t) for t in target]
        if isinstance(target, str):
            if target not in self.class_names:
                raise ValueError(f"unknown target class {target!r}; classes: {self.class_names}")
            return self.class_names.index(target)
        return int(target)

    def model_input(self, features: torch.Tensor) -> torch.Tensor:
        """Features ``(batch, 6, n_mels, frames)`` in the memory format the model is run in."""
        if self.channels_last:
            return features.contiguous(memory_format=torch.channels_last)
        return features

    def autocast(self):
        """The autocast context the model runs in (a no-op for ``precision="fp32"``)."""
        return torch.autocast(
            self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"
        )

    @torch.inference_mode()
    def logits(self, waveforms: torch.Tensor) -> torch.Tensor:
        """Features and model forward only (no CAM, no mask): ``(batch, n_classes)`` float32
        logits, with the same precision and memory format as an explanation."""
        feats = self.model_input(self.features(waveforms.to(self.device)))
        with self.autocast():
            return self.model(feats).float()

    def masks(self, spectrum: torch.Tensor, target=None, *, silent: torch.Tensor | None = None):
        """``spectrum (batch, 2, bins, frames)`` → ``(heatmap, mask, logits, target, empty)``.

        ``silent (batch,)`` flags clips known to be all zeros (then their mask is empty);
        by default it is read off the spectrum.
        """
        with torch.no_grad():
            feats = self.model_input(self.features.from_stft(spectrum))
        with self.autocast():
            result = self._cam(feats, self.target_index(target), spectrum)
        with torch.no_grad():
            grid = self.mapping(result.heatmap.float(), spectrum.shape[-1], self.mel_bands)
            if silent is None:
                silent = torch.view_as_real(spectrum).flatten(1).abs().amax(dim=1) == 0
            mask, empty = heatmap_to_mask(
                grid,
                mode=self.mode,
                percentile_=self.percentile,
                delta=self.delta,
                empty=silent,
                inplace=True,
            )
        return result.heatmap, mask, result.logits, result.target, empty

    def _cam(self, feats: torch.Tensor, target, spectrum: torch.Tensor):
        """The CAM over ``feats`` in passes of :attr:`cam_batch` clips (results concatenated);
        a method that ``uses_spectrum`` gets the matching part of ``spectrum`` too."""
        step = self.cam_batch or len(feats)
        wants = getattr(self.cam, "uses_spectrum", False)

        def run(part: slice):
            t = target[part] if isinstance(target, list) else target
            if wants:
                return self.cam(feats[part], t, spectrum=spectrum[part])
            return self.cam(feats[part], t)

        if len(feats) <= step:
            return run(slice(None))
        parts = [run(slice(i, i + step)) for i in range(0, len(feats), step)]
        return replace(
            parts[0],
            heatmap=torch.cat([p.heatmap for p in parts]),
            logits=torch.cat([p.logits for p in parts]),
            target=torch.cat([p.target for p in parts]),
        )

    def __call__(self, waveforms: torch.Tensor, target=None) -> Explanation:
        waveforms = waveforms.to(self.device)
        with torch.no_grad():
            spectrum = self.features.stft(waveforms)
            flat = waveforms.flatten(1)  # all-zero audio ⇔ an all-zero spectrum
            silent = (flat.amax(dim=1) == 0) & (flat.amin(dim=1) == 0)
        heatmap, mask, logits, target_idx, empty = self.masks(spectrum, target, silent=silent)
        with torch.no_grad():
            listenable = self.features.istft(spectrum, waveforms.shape[-1], mask=mask)
            residual = waveforms - listenable
        return Explanation(
            heatmap=heatmap,
            mask=mask,
            listenable=listenable,
            residual=residual,
            probabilities=torch.softmax(logits, dim=1),
            target=target_idx,
            class_name=[self.class_names[i] for i in target_idx.tolist()],
            sample_rate=self.features.sample_rate,
            empty=empty,
            mask_area=mask.mean(dim=(1, 2)),
            mel_bands=self.mel_bands,
            settings=self.settings,
        )


def explain(
    audio,
    model: nn.Module | None = None,
    *,
    target=None,
    method: str = "gradcam",
    layer: str = "fusion",
    percentile: float = DEFAULT_PERCENTILE,
    delta: float = DEFAULT_DELTA,
    mode: str = "sigmoid",
    class_names: list[str] | None = None,
    method_options: dict | None = None,
) -> Explanation:
    """Explain what ``model`` used in ``audio``, as a mask and as listenable audio.

    Args:
        audio: a path to an audio file; a waveform ``(channels, samples)`` at 48 kHz; or a
            batch ``(batch, channels, samples)``.
        model: a scene classifier taking ``(batch, 6, 128, frames)`` features; ``None`` loads
            the shipped model.
        target: class index or name to explain (one per clip for a batch); ``None`` = the
            predicted class.
        method, layer: the attribution method and the layer it reads (default: Grad-CAM on
            the fused top map).
        percentile, delta, mode: the mask (see :mod:`listenable.masking`).
        method_options: keyword options of the method's class (e.g. ``{"n_steps": 32}``).

    Returns:
        An :class:`Explanation`; batched when ``audio`` was a batch.
    """
    if model is None:
        from listenable.checkpoint import load_checkpoint

        model, _ = load_checkpoint()
    notes: list[str] = []
    if isinstance(audio, (str, os.PathLike)):
        wave, notes = load_audio(Path(audio))
        batch, batched = wave[None], False
    else:
        wave = check_waveform(audio)
        batched = wave.ndim == 3
        batch = wave if batched else wave[None]
    explainer = Explainer(
        model,
        method=method,
        layer=layer,
        percentile=percentile,
        delta=delta,
        mode=mode,
        class_names=class_names,
        method_options=method_options,
    )
    result = explainer(batch, target)
    result.notes = notes
    return result if batched else result.item(0)
