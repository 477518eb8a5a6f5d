"""``explain``: from a clip to the sound the model used, for any :class:`Explainable`.

    audio ─► listening STFT ─► front end ─► model ─► layer map ─► projection ─► mask ─► ISTFT

Batched torch end to end on the model's device; no numpy in the hot path. The audio is at
the front end's rate and channel count, and so are the listenable and residual outputs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from listenable.cams import default_method, get_method
from listenable.io import check_waveform, load_for
from listenable.masking import (
    DEFAULT_DELTA,
    DEFAULT_PERCENTILE,
    DEFAULT_THRESHOLD_ON,
    THRESHOLD_ON,
    binarise,
    heatmap_to_mask,
)
from listenable.models import Explainable, as_explainable
from listenable.projection import Projection

__all__ = ["Explanation", "Explainer", "explain", "PRECISIONS"]

#: ``precision`` of :class:`Explainer`: the dtype the model runs in (autocast). Features,
#: mapping, mask and ISTFT always run in float32.
PRECISIONS = ("fp32", "bf16")


@dataclass
class Explanation:
    """What the model used, for one clip or a batch (then every tensor has a leading batch
    dimension and ``class_name`` is a list).

    Attributes:
        heatmap: the layer map after ReLU, ``(rows, cells)`` (for the reference model's
            ``fusion``: 128 mel bands × 29 cells); ``geometry`` says where its cells lie.
        mask: ``(freq_bins, frames)`` in [0, 1] on the listening STFT's grid (laid out
            frame-major in memory, as ``torch.stft`` lays out the spectrum: a transposed view).
        listenable: the masked audio, same shape as the input waveform.
        residual: input − listenable, i.e. the audio the mask removed.
        probabilities: softmax or sigmoid over classes ``(n_classes,)`` (the model's
            activation; ``settings["activation"]`` says which).
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
    layer: str = ""
    geometry: object = None
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


class Explainer:
    """A reusable explain pipeline for one model and one set of settings.

    ``Explainer(model)(waveforms)`` with ``waveforms (batch, channels, samples)`` at the
    model's rate (``explainer.front_end.sample_rate`` and ``.channels``) returns a batched
    :class:`Explanation`. ``model`` is an :class:`~listenable.models.Explainable`, or a
    reference model / small CNN (wrapped by its adapter), or any module together with
    ``front_end``. ``method=None`` takes :func:`~listenable.cams.default_method` of the
    model (``optimised`` where its adapter names ``fine_layers``, else ``layercam``, also
    when another ``layer`` than the model's default is named); ``explainer.method`` says
    which.

    Speed options (the explanation is the same up to float rounding):

    * ``precision="bf16"`` runs the model (forward and CAM backward) under bfloat16 autocast;
      meant for CUDA. Features, mapping, mask and ISTFT stay float32. Check the binarised
      masks against float32 on your model (``benchmarks/pipeline.py --checkpoint``; what
      was measured: ``docs/measurements.md``).
    * ``channels_last`` hands the features to the model in the channels-last memory format
      (faster convolutions on CPU and on tensor cores); the model itself is not modified.
    * ``cam_batch``: clips per CAM pass (forward + backward); default the whole batch.
      Smaller passes can be faster or much slower depending on the CPU's load
      (``docs/measurements.md``): measure before setting it.
    """

    def __init__(
        self,
        model: Explainable | nn.Module,
        *,
        method: str | None = None,
        layer: str | None = None,
        percentile: float = DEFAULT_PERCENTILE,
        delta: float = DEFAULT_DELTA,
        mode: str = "sigmoid",
        threshold_on: str = DEFAULT_THRESHOLD_ON,
        class_names: list[str] | None = None,
        front_end=None,
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
        self.model = as_explainable(model, front_end).eval()
        self.front_end = self.model.front_end
        self.listening = self.model.listening
        self.projection = Projection(self.front_end, self.listening)
        method = method or default_method(self.model, layer)
        cls = get_method(method)
        options = dict(method_options or {})
        if getattr(cls, "uses_spectrum", False):  # it re-runs the mask: hand it ours
            options.setdefault("projection", self.projection)
            options.setdefault("percentile", percentile)
            options.setdefault("delta", delta)
            options.setdefault("mode", mode)
            options.setdefault("threshold_on", threshold_on)
        self.cam = cls(self.model, layer, **options)
        self.method = method
        self.layer = self.cam.layer_name
        self.percentile = percentile
        self.delta = delta
        self.mode = mode
        self.threshold_on = threshold_on
        if class_names:
            self.model.class_names = list(class_names)
        self.model.n_classes  # noqa: B018 (resolves the class names)
        self.class_names = list(self.model.class_names)
        binarise(torch.zeros(1, 2, 2), mode=mode, percentile_=percentile, delta=delta)  # validate
        if threshold_on not in THRESHOLD_ON:
            raise ValueError(f"unknown threshold_on {threshold_on!r}; choose from {THRESHOLD_ON}")

    @property
    def device(self) -> torch.device:
        return self.listening.window.device

    @property
    def settings(self) -> dict:
        return {
            "method": self.method,
            "layer": self.layer,
            "percentile": self.percentile,
            "delta": self.delta,
            "mode": self.mode,
            "threshold_on": self.threshold_on,
            "precision": self.precision,
            "activation": self.model.activation,
            "model": self.model.name,
            "sample_rate": self.front_end.sample_rate,
            "listening_stft": self.listening.settings,
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
        """The module's input in the memory format it is run in (4-D inputs channels-last
        when :attr:`channels_last`)."""
        if self.channels_last and features.ndim == 4:
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
        pre-activation scores, with the same precision and memory format as an explanation."""
        feats = self.model_input(self.model.inputs(waveforms.to(self.device)))
        with self.autocast():
            return self.model(feats).float()

    def masks(
        self,
        spectrum: torch.Tensor,
        target=None,
        *,
        silent: torch.Tensor | None = None,
        waveforms: torch.Tensor | None = None,
    ):
        """``spectrum (batch, channels, bins, frames)`` (the listening STFT) →
        ``(result, mask, empty)`` with ``result`` the :class:`~listenable.cams.CAMResult`.

        ``waveforms`` are the clips (needed when the front end does not share the listening
        STFT or the model takes the waveform; else read off the spectrum); ``silent
        (batch,)`` flags clips known to be all zeros (then their mask is empty); by default
        it is read off the spectrum.
        """
        length = (spectrum.shape[-1] - 1) * self.listening.hop_length
        if waveforms is None:
            if self.model.input == "waveform" or not self.front_end.shares_stft(self.listening):
                with torch.no_grad():
                    waveforms = self.listening.istft(spectrum, length)
        else:
            length = waveforms.shape[-1]
        with torch.no_grad():
            feats = self.model_input(self.model.inputs(waveforms, spectrum))
        with self.autocast():
            result = self._cam(feats, self.target_index(target), spectrum, length)
        with torch.no_grad():
            cells = result.heatmap.float()
            grid = self.projection(cells, result.geometry, spectrum.shape[-1])
            if silent is None:
                silent = torch.view_as_real(spectrum).flatten(1).abs().amax(dim=1) == 0
            mask, empty = heatmap_to_mask(
                grid,
                mode=self.mode,
                percentile_=self.percentile,
                delta=self.delta,
                empty=silent,
                inplace=True,
                cells=cells if self.threshold_on == "heatmap" else None,
            )
        return result, mask, empty

    def _cam(self, feats: torch.Tensor, target, spectrum: torch.Tensor, length: int):
        """The CAM over ``feats`` in passes of :attr:`cam_batch` clips (results concatenated);
        a method that ``uses_spectrum`` gets the matching part of ``spectrum`` too."""
        step = self.cam_batch or len(feats)
        wants = getattr(self.cam, "uses_spectrum", False)

        def run(part: slice):
            t = target[part] if isinstance(target, list) else target
            if wants:
                return self.cam(feats[part], t, spectrum=spectrum[part], length=length)
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
        if waveforms.ndim != 3 or waveforms.shape[1] != self.front_end.channels:
            raise ValueError(
                f"{self.model.name} reads (batch, {self.front_end.channels}, samples) at "
                f"{self.front_end.sample_rate} Hz, got shape {tuple(waveforms.shape)}"
            )
        with torch.no_grad():
            spectrum = self.listening(waveforms)
            flat = waveforms.flatten(1)  # all-zero audio ⇔ an all-zero spectrum
            silent = (flat.amax(dim=1) == 0) & (flat.amin(dim=1) == 0)
        result, mask, empty = self.masks(spectrum, target, silent=silent, waveforms=waveforms)
        with torch.no_grad():
            listenable = self.listening.istft(spectrum, waveforms.shape[-1], mask=mask)
            residual = waveforms - listenable
        return Explanation(
            heatmap=result.heatmap,
            mask=mask,
            listenable=listenable,
            residual=residual,
            probabilities=self.model.probabilities(result.logits),
            target=result.target,
            class_name=[self.class_names[i] for i in result.target.tolist()],
            sample_rate=self.front_end.sample_rate,
            empty=empty,
            mask_area=mask.mean(dim=(1, 2)),
            layer=self.layer,
            geometry=result.geometry,
            settings=self.settings,
        )


def explain(
    audio,
    model: Explainable | nn.Module | None = None,
    *,
    target=None,
    method: str | None = None,
    layer: str | None = None,
    percentile: float = DEFAULT_PERCENTILE,
    delta: float = DEFAULT_DELTA,
    mode: str = "sigmoid",
    threshold_on: str = DEFAULT_THRESHOLD_ON,
    class_names: list[str] | None = None,
    method_options: dict | None = None,
) -> Explanation:
    """Explain what ``model`` used in ``audio``, as a mask and as listenable audio.

    Args:
        audio: a path to an audio file (loaded at the model's rate and channel count); a
            waveform ``(channels, samples)`` at the model's rate; or a batch
            ``(batch, channels, samples)``.
        model: an :class:`~listenable.models.Explainable` (or a reference model / small
            CNN); ``None`` loads the shipped model.
        target: class index or name to explain (one per clip for a batch); ``None`` = the
            predicted class (the top tag of a multi-label model).
        method, layer: the attribution method and the layer it reads (default:
            :func:`~listenable.cams.default_method`, ``optimised`` where the model's adapter
            names ``fine_layers``, else ``layercam``; on the model's default layer —
            ``fusion`` for the reference model).
        percentile, delta, mode, threshold_on: the mask (see :mod:`listenable.masking`):
            θ is the ``percentile``-th percentile of the heatmap's own cells
            (``threshold_on="heatmap"``, the default) or of the linear STFT bins
            (``"stft"``).
        method_options: keyword options of the method's class (e.g. ``{"n_steps": 32}``).

    Returns:
        An :class:`Explanation`; batched when ``audio`` was a batch.
    """
    if model is None:
        from listenable.checkpoint import load_explainable

        model = load_explainable()
    model = as_explainable(model)
    fe = model.front_end
    notes: list[str] = []
    if isinstance(audio, (str, os.PathLike)):
        wave, notes = load_for(Path(audio), fe)
        batch, batched = wave[None], False
    else:
        wave = check_waveform(
            audio,
            channels=fe.channels,
            sample_rate=fe.sample_rate,
            min_samples=max(fe.min_samples(), fe.sample_rate // 2),
        )
        batched = wave.ndim == 3
        batch = wave if batched else wave[None]
    explainer = Explainer(
        model,
        method=method,
        layer=layer,
        percentile=percentile,
        delta=delta,
        mode=mode,
        threshold_on=threshold_on,
        class_names=class_names,
        method_options=method_options,
    )
    result = explainer(batch, target)
    result.notes = notes
    return result if batched else result.item(0)
