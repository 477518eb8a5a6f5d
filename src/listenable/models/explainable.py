"""``Explainable``: what the explainer needs to know about a model, for any PyTorch audio
classifier.

* what the module takes: its front end's features (``input="features"``), or the waveform
  when its front end is inside (``input="waveform"``, PANNs CNN14);
* how to read the pre-activation class scores: ``scores=None`` the output itself; a string:
  a key (or attribute) of the output, or the name of a submodule whose output they are
  (CNN14 applies its sigmoid inside ``forward``: its scores are ``fc_audioset``'s output);
* the output activation: ``"softmax"`` (single-label scene classifiers) or ``"sigmoid"``
  (multi-label taggers: any tag can be the target; "predicted" is the top tag);
* class names, and the layer to explain: ``"auto"`` is the last layer with a time axis
  before global pooling whose channels are features (not one map per class).

Layer geometry is derived from the model (:func:`listenable.geometry.probe`) once per
layer and cached; adapters can declare layers the probe cannot see through (transformer
tokens) and the layer groups a multi-scale method reads (``fine_layers``; a model that
names them is explained by ``optimised`` by default, else by LayerCAM:
:func:`listenable.cams.default_method`).

Shapes:
    waveform  (batch, front_end.channels, samples)   at front_end.sample_rate
    scores    (batch, n_classes)                      pre-activation, float32
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch
from torch import nn

from listenable.frontends import STFT, FrontEnd
from listenable.geometry import Layer, ProbeTooShort, probe

__all__ = ["Explainable", "ACTIVATIONS", "INPUTS"]

ACTIVATIONS = ("softmax", "sigmoid")
INPUTS = ("features", "waveform")


class Explainable:
    """A model as the explainer sees it. See the module docstring.

    Args:
        module: the ``nn.Module`` (put in eval mode).
        front_end: the :class:`~listenable.frontends.FrontEnd` whose features the module
            takes, or (``input="waveform"``) which its own front end equals.
        input, scores, activation, class_names, layer: see the module docstring.
        features_at: for ``input="waveform"``, the submodule whose output is the features
            (``(batch, 1, frames, mels)`` for CNN14's ``logmel_extractor``), in
            ``front_end.layout``; the layer geometry is measured on it.
        layers: declared :class:`~listenable.geometry.Layer` objects by name.
        fine_layers: groups of layer names for the multi-scale method (each group tiles
            the frequency rows; coarse to fine); naming them makes ``optimised`` the
            model's default method.
        listening: the STFT the mask lives on (default: the front end's own).
        probe_seconds: clip length the geometry is probed at.
        name: the family, for reports.
    """

    def __init__(
        self,
        module: nn.Module,
        front_end: FrontEnd,
        *,
        input: str = "features",
        scores: str | None = None,
        activation: str = "softmax",
        class_names: Sequence[str] | None = None,
        layer: str = "auto",
        features_at: str | None = None,
        layers: dict[str, Layer] | None = None,
        fine_layers: Sequence[Sequence[str]] | None = None,
        listening: STFT | None = None,
        probe_seconds: float = 10.0,
        name: str | None = None,
    ) -> None:
        if input not in INPUTS:
            raise ValueError(f"input must be one of {INPUTS}, got {input!r}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
        if not isinstance(front_end, FrontEnd):
            raise TypeError("front_end must be a listenable FrontEnd (FrontEnd.preset(...))")
        if input == "waveform" and features_at is None:
            raise ValueError(
                "a waveform-input model needs features_at: the submodule whose output is its "
                "features (e.g. 'logmel_extractor' for PANNs CNN14)"
            )
        self.module = module.eval()
        device = _device(module)
        # the front end and the listening STFT compute in the module's dtype (float64 tests)
        dtype = next((p.dtype for p in module.parameters() if p.is_floating_point()), None)
        dtype = dtype if dtype in (torch.float32, torch.float64) else torch.float32
        self.front_end = front_end.to(device, dtype)
        self.listening = (listening or front_end.listening_stft()).to(device, dtype)
        if self.listening.sample_rate != front_end.sample_rate:
            raise ValueError(
                f"the listening STFT runs at {self.listening.sample_rate} Hz, the front end at "
                f"{front_end.sample_rate} Hz"
            )
        self.input = input
        self.scores_from = scores
        self.activation = activation
        self.features_at = features_at
        self.fine_layers = [tuple(g) for g in fine_layers] if fine_layers else None
        self.probe_seconds = float(probe_seconds)
        self.name = name or type(module).__name__
        self._declared = dict(layers or {})
        self._layers: dict[str, Layer] = {}
        self._score_module = None
        if scores is not None and scores in dict(module.named_modules()) and scores != "":
            self._score_module = dict(module.named_modules())[scores]
        names = class_names or getattr(module, "class_names", None)
        self.class_names = list(names) if names else None
        self._layer_request = layer
        self._default_layer: str | None = None

    # --- what nn.Module-like callers use (the CAM methods) -----------------------------
    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        """Pre-activation scores ``(batch, n_classes)`` of the module's input."""
        return self.scores(inputs)

    def scores(self, inputs: torch.Tensor) -> torch.Tensor:
        if self._score_module is None:
            return _read_scores(self.module(inputs), self.scores_from)
        store = {}
        handle = self._score_module.register_forward_hook(
            lambda _m, _i, out: store.__setitem__("s", out)
        )
        try:
            self.module(inputs)
        finally:
            handle.remove()
        return store["s"]

    @property
    def training(self) -> bool:
        return self.module.training

    def parameters(self):
        return self.module.parameters()

    def named_parameters(self):
        return self.module.named_parameters()

    def named_modules(self):
        return self.module.named_modules()

    def modules(self):
        return self.module.modules()

    def eval(self) -> Explainable:
        self.module.eval()
        return self

    @property
    def device(self) -> torch.device:
        return _device(self.module)

    @property
    def n_classes(self) -> int:
        if self.class_names is not None:
            return len(self.class_names)
        n = getattr(self.module, "n_classes", None)
        if n is None:
            with torch.no_grad():
                n = self.scores(self.inputs(self._noise(0.5, 1))).shape[1]
        self.class_names = [str(i) for i in range(n)]
        return n

    def probabilities(self, scores: torch.Tensor) -> torch.Tensor:
        """Softmax or sigmoid of the scores (float32)."""
        s = scores.float()
        return torch.softmax(s, dim=1) if self.activation == "softmax" else torch.sigmoid(s)

    # --- inputs ------------------------------------------------------------------------
    def inputs(self, waveform: torch.Tensor, spectrum: torch.Tensor | None = None):
        """The module's input for ``waveform``; ``spectrum`` (the listening STFT of it)
        saves the front end's STFT where they coincide."""
        if self.input == "waveform":
            return waveform[:, 0] if waveform.shape[1] == 1 else waveform
        if spectrum is not None and self.front_end.shares_stft(self.listening):
            return self.front_end.from_stft(spectrum)
        return self.front_end(waveform)

    def masked_inputs(
        self, spectrum: torch.Tensor, mask: torch.Tensor, length: int, *, audio: bool = False
    ) -> torch.Tensor:
        """The module's input for the clip whose listening STFT is ``mask ⊙ spectrum``
        (differentiable in ``mask``). Where the front end shares the listening STFT, its
        features come from the masked power ``M² |X|²`` directly (the inverse STFT of a
        smooth mask changes them very little); otherwise, or with ``audio=True``, through
        the inverse STFT (the listenable output itself, as the listener hears it)."""
        if not audio and self.input == "features" and self.front_end.shares_stft(self.listening):
            power = spectrum.real.square() + spectrum.imag.square()
            masked = power * mask.square()[:, None]
            if self.front_end.power != 2.0:
                masked = masked.clamp_min(0).sqrt()
            return self.front_end.from_power(masked)
        wave = torch.istft(
            (spectrum * mask[:, None]).flatten(0, 1),
            n_fft=self.listening.n_fft,
            hop_length=self.listening.hop_length,
            window=self.listening.window,
            center=True,
            length=length,
        ).reshape(spectrum.shape[0], spectrum.shape[1], length)
        return self.inputs(wave)

    def _noise(self, seconds: float, batch: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(0)
        n = int(seconds * self.front_end.sample_rate)
        wave = 0.1 * torch.randn(batch, self.front_end.channels, n, generator=g)
        dtype = next((p.dtype for p in self.module.parameters()), torch.float32)
        return wave.to(self.device, dtype if dtype.is_floating_point else torch.float32)

    # --- layers ------------------------------------------------------------------------
    @property
    def default_layer(self) -> str:
        """The layer explained when none is named (``"auto"`` resolved)."""
        if self._default_layer is None:
            req = self._layer_request
            self._default_layer = self._auto_layer() if req == "auto" else req
        return self._default_layer

    def layer(self, name: str | None = None) -> Layer:
        """The :class:`~listenable.geometry.Layer` called ``name`` (``None``/"auto": the
        default), its geometry derived once and cached."""
        name = self.default_layer if name in (None, "auto") else name
        if name in self._declared:
            return self._declared[name]
        if name not in self._layers:
            modules = dict(self.module.named_modules())
            if name not in modules or name == "":
                listed = [n for n in modules if n and n.count(".") <= 1]
                raise ValueError(f"model has no layer {name!r}; try one of {listed}")
            module = modules[name]
            self._layers[name] = Layer(name, module, derive=lambda: self._probe(module))
        return self._layers[name]

    def _probe(self, module: nn.Module):
        fe = self.front_end
        frames = max(fe.frames(int(self.probe_seconds * fe.sample_rate)), 8)
        copies = 1

        def make_input(n_frames: int):
            samples = _samples_for(fe, n_frames)
            wave = self._noise(samples / fe.sample_rate, copies)
            if self.input == "waveform":
                return self.inputs(wave)
            with torch.no_grad():
                return self.inputs(wave).detach()

        if self.input == "features":
            current: dict = {}

            def run(x):
                x = x.requires_grad_(torch.is_grad_enabled())
                current["x"] = x
                return self.module(x)

            @contextlib.contextmanager
            def leaf(store):
                yield
                store["x"] = current.get("x")

        else:
            run = self.module
            inner = dict(self.module.named_modules())[self.features_at]

            @contextlib.contextmanager
            def leaf(store):
                def hook(_m, _i, out):
                    x = out.detach().requires_grad_(torch.is_grad_enabled())
                    store["x"] = x
                    return x

                handle = inner.register_forward_hook(hook)
                try:
                    yield
                finally:
                    handle.remove()

        f_dim, t_dim = fe.axes()
        saved = [(p, p.requires_grad) for p in self.module.parameters()]
        try:
            for p, _ in saved:
                p.requires_grad_(False)
            # at probe_seconds (the reference's fusion layer needs ~460 frames: one pass at
            # 10 s), longer where the receptive fields are wider still
            n, time_dim = frames, None
            while True:
                try:
                    return probe(
                        run, make_input, leaf, module, frames=n, input_axes=(t_dim, f_dim),
                        rows=fe.n_mels, time_dim=time_dim,
                    )  # fmt: skip
                except (ProbeTooShort, RuntimeError) as exc:  # RuntimeError: the model
                    if n >= 4 * frames:  # refused an input that short
                        raise ValueError(f"cannot derive the layer's geometry: {exc}") from None
                    n, time_dim = 2 * n, getattr(exc, "time_dim", None)
        finally:
            for p, flag in saved:
                p.requires_grad_(flag)
            _release_memory()

    def _auto_layer(self) -> str:
        """The last module (in completion order) whose output has a time axis and more
        channels than one per class; containers that hand on a child's output are skipped."""
        records: list[list] = []
        for seconds in (self.probe_seconds / 2, self.probe_seconds * 3 / 4):
            shapes: list = []
            handles = []
            for name, m in self.module.named_modules():
                if name:
                    handles.append(
                        m.register_forward_hook(
                            lambda _m, _i, out, name=name, shapes=shapes: shapes.append(
                                (name, tuple(out.shape), out)
                                if isinstance(out, torch.Tensor)
                                else (name, None, None)
                            )
                        )
                    )
            try:
                with torch.no_grad():
                    self.module(self.inputs(self._noise(seconds, 1)))
            finally:
                for h in handles:
                    h.remove()
            records.append(shapes)
        n_classes = None
        with contextlib.suppress(Exception):
            n_classes = self.n_classes
        best, last = None, None
        for (name, a, out), (_, b, _) in zip(*records):
            if a is None or b is None or len(a) not in (3, 4) or a[:2] != b[:2]:
                continue
            if sum(x != y for x, y in zip(a[2:], b[2:])) != 1 or a[1] == n_classes:
                continue
            if out is last:  # a container handing on its last child's output
                continue
            best, last = name, out
        if best is None:
            raise ValueError(
                "layer='auto' found no layer with a time axis before global pooling; name one"
            )
        return best

    def describe(self) -> dict:
        """What a result records about the model."""
        return {
            "family": self.name,
            "input": self.input,
            "activation": self.activation,
            "sample_rate": self.front_end.sample_rate,
            "channels": self.front_end.channels,
        }


def _release_memory() -> None:
    """Hand the probe's freed autograd buffers back to the system (glibc keeps them in the
    heap otherwise, and decoding workers forked later would count them in their RSS)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def _samples_for(fe: FrontEnd, frames: int) -> int:
    spectrum_frames = frames + 2 * fe.frame_offset
    if fe.kind == "stft":
        return (spectrum_frames - 1) * fe.hop_length
    return fe.win_length + (spectrum_frames - 1) * fe.hop_length


def _read_scores(out, key):
    if key is None:
        if isinstance(out, torch.Tensor):
            return out
        logits = getattr(out, "logits", None)
        if isinstance(logits, torch.Tensor):
            return logits
        raise ValueError(
            "the model's output is not a tensor: say where its scores are (scores='key' of a "
            "dict output, or the name of the submodule that computes them)"
        )
    if isinstance(out, dict) and key in out:
        return out[key]
    value = getattr(out, key, None)
    if isinstance(value, torch.Tensor):
        return value
    raise ValueError(f"the model's output has no scores {key!r}")


def _device(module: nn.Module) -> torch.device:
    for p in module.parameters():
        return p.device
    for b in module.buffers():
        return b.device
    return torch.device("cpu")
