"""The Audio Spectrogram Transformer (Gong et al., 2021) of transformers
(``ASTForAudioClassification``).

**Input**: ``input_values (batch, max_length, num_mel_bins)``, the features of
``ASTFeatureExtractor``: Kaldi fbank of the 16 kHz waveform (25 ms frames every 10 ms,
128 bands from 20 Hz to 8 kHz), padded to ``max_length`` frames, then ``(x − mean) /
(2 std)`` — ``FrontEnd.preset("ast")`` with ``max_frames = config.max_length`` and
``n_mels = config.num_mel_bins`` (and the extractor's mean and std, when it is given).

**Tokens**: ``ASTPatchEmbeddings`` transposes the input to ``(batch, 1, freq, time)`` and
runs a ``patch_size`` convolution with strides ``(frequency_stride, time_stride)``: a grid
of ``f_dim × t_dim`` patches (12 × 101 for 128 bands, 1024 frames, patch 16, strides 10),
flattened frequency-major (token ``2 + f · t_dim + t`` is patch ``(f, t)``) after a CLS
and a distillation token. The explained layers are the transformer layers' outputs; their
canonical form drops the two special tokens and reshapes the rest to ``(batch, hidden,
f_dim, t_dim)``. The token grid is the patch grid: its geometry is derived by probing the
patch embedding's projection (patch ``(f, t)`` is centred on mel band ``10 f + 7.5`` and
frame ``10 t + 7.5``), and every layer is declared with it (the probe cannot see through
attention, which mixes all tokens).

**Default layer**: the input of the last transformer layer (the output of the one before
it, i.e. the residual stream entering the last layer). The classifier reads only the CLS
and distillation tokens of the last layer's output, so the gradient of every score with
respect to that output's patch tokens is exactly zero: Grad-CAM there is empty. The last
layer's attention is where the patch tokens reach the two tokens the classifier reads.

**Scores and activation**: the output's ``.logits``. ``activation``: ``"sigmoid"`` when
``config.problem_type == "multi_label_classification"``, or when the problem type is unset
and the model has AudioSet's 527 labels (the released AudioSet ASTs are multi-label taggers
trained with a binary cross-entropy, and ship without ``problem_type``); otherwise
``"softmax"`` (single-label, e.g. Speech Commands). Pass ``activation=`` to override.

Shapes (the released AudioSet model):
    features  (batch, 1024, 128)          btf
    tokens    (batch, 2 + 12 · 101, 768)  a transformer layer's output
    canonical (batch, 768, 12, 101)       rows = patch rows (mel), cells = patch columns
"""

from __future__ import annotations

import contextlib
import json
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

from listenable.errors import CheckpointError
from listenable.geometry import PROBES, Layer, LayerGeometry, probe

__all__ = [
    "AUDIOSET_LABELS",
    "activation_for",
    "front_end_for",
    "patch_grid",
    "patch_geometry",
    "tokens_to_grid",
    "token_layer",
    "transformer_layers",
    "explainable",
    "from_pretrained",
]

#: The number of AudioSet labels (the released AST checkpoints' head).
AUDIOSET_LABELS = 527
_MODEL_TYPE = "audio-spectrogram-transformer"


def activation_for(config) -> str:
    """``"sigmoid"`` or ``"softmax"`` for an AST config (see the module docstring)."""
    problem = getattr(config, "problem_type", None)
    if problem == "multi_label_classification":
        return "sigmoid"
    if problem is None and getattr(config, "num_labels", None) == AUDIOSET_LABELS:
        return "sigmoid"
    return "softmax"


def front_end_for(config, feature_extractor=None):
    """``FrontEnd.preset("ast")`` for ``config``: ``max_frames = config.max_length``,
    ``n_mels = config.num_mel_bins``; with ``feature_extractor`` (an
    ``ASTFeatureExtractor``), its normalisation, checked against the config."""
    from listenable.frontends import FrontEnd

    overrides = dict(max_frames=int(config.max_length), n_mels=int(config.num_mel_bins))
    if feature_extractor is not None:
        fx = feature_extractor
        wrong = {
            key: (ours, getattr(fx, key, None))
            for key, ours in (
                ("sampling_rate", 16_000),
                ("num_mel_bins", config.num_mel_bins),
                ("max_length", config.max_length),
            )
            if getattr(fx, key, None) != ours
        }
        if wrong:
            raise ValueError(
                f"the feature extractor does not match the model (expected, extractor): {wrong}"
            )
        if getattr(fx, "do_normalize", True):
            overrides |= dict(shift=float(fx.mean), scale=2.0 * float(fx.std))
        else:
            overrides |= dict(shift=0.0, scale=1.0)
    return FrontEnd.preset("ast", **overrides)


def _base(model: nn.Module) -> nn.Module:
    base = getattr(model, getattr(model, "base_model_prefix", ""), None)
    if base is None or not hasattr(base, "embeddings"):
        raise TypeError(f"{type(model).__name__} is not an AST model (no embeddings)")
    return base


def transformer_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``[(name, module)]`` of the transformer layers in order (``ASTLayer``; named
    ``audio_spectrogram_transformer.layers.N`` in transformers 5, ``...encoder.layer.N``
    in 4)."""
    found = [(n, m) for n, m in model.named_modules() if type(m).__name__ == "ASTLayer"]
    if not found:
        raise TypeError(f"{type(model).__name__} has no ASTLayer modules")
    return found


def patch_grid(projection: nn.Conv2d, n_mels: int, frames: int) -> tuple[int, int]:
    """``(f_dim, t_dim)``: the patch grid the projection makes of ``(n_mels, frames)``
    features (one shape-only pass on the meta device)."""
    dummy = torch.empty(1, projection.in_channels, n_mels, frames, device="meta")
    weight = torch.empty_like(projection.weight, device="meta")
    out = nn.functional.conv2d(
        dummy, weight, None, projection.stride, projection.padding, projection.dilation
    )
    return int(out.shape[2]), int(out.shape[3])


def patch_geometry(
    patch_embeddings: nn.Module, projection: nn.Module, *, n_mels: int, frames: int
) -> LayerGeometry:
    """The patch grid's geometry on the features, probed (:func:`listenable.geometry.probe`)
    through ``patch_embeddings`` (a module taking ``(batch, frames, n_mels)`` features, as
    AST's ``ASTPatchEmbeddings``) at its ``projection``: the probe finds which axis of the
    projection's output is time and fits each axis's stride and offset in feature frames
    and mel bands."""
    param = next(patch_embeddings.parameters())
    g = torch.Generator().manual_seed(0)
    base = torch.randn(1, 1, n_mels, generator=g)
    current: dict = {}

    def make_input(n: int) -> torch.Tensor:
        x = torch.randn(1, n, n_mels, generator=torch.Generator().manual_seed(n)) + base
        return x.expand(PROBES + 1, n, n_mels).contiguous().to(param.device, param.dtype)

    def run(x: torch.Tensor):
        x = x.requires_grad_(torch.is_grad_enabled())
        current["x"] = x
        return patch_embeddings(x)

    @contextlib.contextmanager
    def leaf(store: dict):
        yield
        store["x"] = current.get("x")

    saved = [(p, p.requires_grad) for p in patch_embeddings.parameters()]
    try:
        for p, _ in saved:
            p.requires_grad_(False)
        geometry, _ = probe(
            run, make_input, leaf, projection, frames=frames, input_axes=(1, 2), rows=n_mels
        )
    finally:
        for p, flag in saved:
            p.requires_grad_(flag)
    return geometry


def tokens_to_grid(f_dim: int, t_dim: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """``canonical`` of a token layer: ``(batch, specials + f_dim · t_dim, hidden)`` (or a
    tuple whose first element it is) → ``(batch, hidden, f_dim, t_dim)``, the special
    (CLS, distillation) tokens dropped; patches are frequency-major, as
    ``ASTPatchEmbeddings`` flattens its ``(batch, hidden, freq, time)`` output."""
    patches = f_dim * t_dim

    def canonical(x) -> torch.Tensor:
        if isinstance(x, (tuple, list)):
            x = x[0]
        batch, tokens, hidden = x.shape
        if tokens < patches:
            raise ValueError(f"a token layer of {tokens} tokens is not a {f_dim}×{t_dim} grid")
        grid = x[:, tokens - patches :].reshape(batch, f_dim, t_dim, hidden)
        return grid.permute(0, 3, 1, 2)

    return canonical


def token_layer(
    name: str,
    module: nn.Module,
    patch_embeddings: nn.Module,
    projection: nn.Module,
    *,
    n_mels: int,
    frames: int,
    geometry: Callable[[], LayerGeometry] | None = None,
) -> Layer:
    """A :class:`~listenable.geometry.Layer` for a token layer on the patch grid of
    ``projection`` (``frames`` = the model's input length): its canonical form
    (:func:`tokens_to_grid`) and its geometry, probed on first use (``geometry``: a shared
    callable returning it, so that the layers of one model probe once)."""
    grid = patch_grid(projection, n_mels, frames)
    canonical = tokens_to_grid(*grid)
    if geometry is None:
        geometry = _once(patch_embeddings, projection, n_mels, frames)
    return Layer(name, module, canonical=canonical, derive=lambda: (geometry(), canonical))


def _once(patch_embeddings, projection, n_mels: int, frames: int):
    cache: list = []
    # a short probe suffices (a convolution is translation-invariant): 16 patches' worth
    kernel, stride = projection.kernel_size[1], projection.stride[1]
    n = min(frames, kernel + 16 * stride)

    def geometry() -> LayerGeometry:
        if not cache:
            cache.append(patch_geometry(patch_embeddings, projection, n_mels=n_mels, frames=n))
        return cache[0]

    return geometry


def explainable(
    model: nn.Module,
    feature_extractor=None,
    *,
    class_names: Sequence[str] | None = None,
    layer: str | None = None,
    activation: str | None = None,
    **options,
):
    """An ``ASTForAudioClassification`` as an :class:`~listenable.models.Explainable`.

    Features ``input="features"`` from :func:`front_end_for` (layout ``btf``); scores the
    output's ``.logits``; ``activation`` from :func:`activation_for` unless given; class
    names from ``config.id2label`` unless given; every transformer layer and the
    embeddings declared as token layers (:func:`token_layer`), the default ``layer``
    being the input of the last transformer layer (see the module docstring).
    """
    from listenable.models.explainable import Explainable

    config = model.config
    if getattr(config, "model_type", None) != _MODEL_TYPE:
        raise TypeError(f"{type(model).__name__} is not an Audio Spectrogram Transformer")
    front_end = front_end_for(config, feature_extractor)
    base = _base(model)
    patch_embeddings = base.embeddings.patch_embeddings
    projection = patch_embeddings.projection
    n_mels, frames = int(config.num_mel_bins), int(config.max_length)
    grid = patch_grid(projection, n_mels, frames)
    get_shape = getattr(base.embeddings, "get_shape", None)
    if get_shape is not None and tuple(get_shape(config)) != grid:
        raise ValueError(f"the patch grid {grid} is not the config's {get_shape(config)}")
    geometry = _once(patch_embeddings, projection, n_mels, frames)
    prefix = next(n for n, m in model.named_modules() if m is base.embeddings)
    named = [(prefix, base.embeddings), *transformer_layers(model)]
    shape = dict(n_mels=n_mels, frames=frames, geometry=geometry)
    layers = {
        name: token_layer(name, module, patch_embeddings, projection, **shape)
        for name, module in named
    }
    if layer is None:
        layer = named[-2][0]  # the input of the last transformer layer
    if class_names is None:
        id2label = getattr(config, "id2label", None) or {}
        if len(id2label) == config.num_labels:
            class_names = [str(id2label[i]) for i in range(config.num_labels)]
    options = {"name": "ast"} | options
    return Explainable(
        model,
        front_end,
        input="features",
        scores="logits",
        activation=activation or activation_for(config),
        class_names=class_names,
        layer=layer,
        layers=layers,
        **options,
    )


def from_pretrained(directory, device="cpu"):
    """The AST saved in ``directory`` (``save_pretrained``) as an Explainable, read
    offline (``local_files_only``), weights as safetensors only (``use_safetensors``: a
    folder holding only a pickled ``pytorch_model.bin`` is refused, never unpickled). The
    feature extractor is read too where the folder has one. Errors: one-line
    :class:`~listenable.errors.CheckpointError`."""
    path = Path(directory)
    where = f"hf:{directory}"
    if not path.is_dir():
        raise CheckpointError(f"{where}: no such folder")
    config_file = path / "config.json"
    if not config_file.is_file():
        raise CheckpointError(f"{where}: no config.json (not a transformers model folder)")
    try:
        model_type = json.loads(config_file.read_text()).get("model_type")
    except (OSError, ValueError, AttributeError) as exc:
        raise CheckpointError(f"{where}: unreadable config.json ({exc})") from None
    if model_type != _MODEL_TYPE:
        raise CheckpointError(
            f"{where}: a {model_type!r} model; listenable reads Audio Spectrogram "
            f"Transformers ({_MODEL_TYPE!r}) from hf: folders"
        )
    weights = list(path.glob("*.safetensors")) + list(path.glob("*.safetensors.index.json"))
    if not weights:
        pickled = sorted(p.name for p in path.glob("*.bin"))
        hint = f" (found {pickled}: pickled weights, never loaded)" if pickled else ""
        raise CheckpointError(f"{where}: no .safetensors weights{hint}")
    from transformers import ASTFeatureExtractor, ASTForAudioClassification

    try:
        model = ASTForAudioClassification.from_pretrained(
            path, local_files_only=True, use_safetensors=True
        )
    except Exception as exc:  # noqa: BLE001 (one line for whatever transformers raises)
        message = " ".join(str(exc).split())
        raise CheckpointError(f"{where}: cannot load the model ({message})") from None
    extractor = None
    if (path / "preprocessor_config.json").is_file():
        try:
            with warnings.catch_warnings():
                # 128 Kaldi bands on a 512-point FFT leave one empty: transformers warns
                warnings.simplefilter("ignore", UserWarning)
                extractor = ASTFeatureExtractor.from_pretrained(path, local_files_only=True)
        except Exception as exc:  # noqa: BLE001
            message = " ".join(str(exc).split())
            raise CheckpointError(f"{where}: bad feature extractor ({message})") from None
    model = model.to(device).eval()
    try:
        return explainable(model, extractor)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{where}: {exc}") from None
