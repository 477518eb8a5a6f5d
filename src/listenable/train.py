"""The McDonnell & Gao training recipe, resumable and seeded, for either shipped family.

SGD (momentum 0.9); per-batch cosine warm restarts from ``lr_max`` (0.1) to 1e-5 with T0 = 2
epochs and T_mult = 2; batch 32; mixup α = 0.4 with λ drawn per example; random crops of
the feature frames; random left/right swap with p = 0.5 for stereo front ends; weight decay
2e-3 on the convolution weights only (Keras L2 1e-3). bf16 autocast on CUDA.

``TrainConfig.architecture`` picks the network and, with it, the front end the clips are
loaded for and the features it takes (:data:`ARCHITECTURES`):

* ``"McDonnellGao"`` (alias ``"reference"``, the default): the reference network over
  ``FrontEnd.preset("mcdonnell_gao")`` (48 kHz stereo, 128 HTK log-mels + Δ + ΔΔ = 6
  channels, 461 frames per 10 s clip); crops of 400 frames; L/R swap.
* ``"SmallCNN"`` (alias ``"small"``): :class:`~listenable.models.SmallCNN` over
  ``FrontEnd.preset("small")`` (16 kHz mono, 64 Slaney mels in dB, 626 frames per 10 s
  clip); crops of 544 frames — 87 %, the reference's 400/461 fraction, so that the
  augmentation shifts the scene by the same share of the clip (≈ 1.3 s) and a crop rarely
  cuts away all of a clip's 2–4 signature events, rounded to a multiple of 16, the time
  stride of ``block4``, so that every pooled frame sees whole input frames; no swap (mono);
  ``lr_max`` 0.01: the reference ends in a BatchNorm of the logits, which keeps them bounded
  at 0.1, while the small model's linear head over pooled features (and its plain convolution
  stack) diverged at 0.1 and 0.03 in trial runs (the loss rose to 4–6 in the first steps).

Every epoch writes the model checkpoint (safetensors + JSON, with the front end's settings
and the training history) and a training state (``<out>.state.safetensors``: optimiser
momentum, epoch, step and RNG state) that ``resume=True`` continues from; the
learning-rate schedule is a pure function of the global step, so a resumed run follows the
same curve.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import DataLoader

from listenable.atomic import atomic_path, write_json
from listenable.checkpoint import save_checkpoint
from listenable.errors import CheckpointError, UsageError
from listenable.frontends import FrontEnd
from listenable.models import McDonnellGao, SmallCNN

__all__ = [
    "ARCHITECTURES",
    "TrainConfig",
    "train",
    "learning_rate",
    "mixup",
    "random_crop",
    "swap_channels",
    "precise_bn",
]

log = logging.getLogger(__name__)

#: The families the recipe trains: model class, front-end preset, and the defaults of the
#: settings that differ between them (crop in frames, peak learning rate).
ARCHITECTURES: dict[str, dict] = {
    "McDonnellGao": {
        "model": McDonnellGao,
        "preset": "mcdonnell_gao",
        "crop_frames": 400,
        "lr_max": 0.1,
    },
    "SmallCNN": {"model": SmallCNN, "preset": "small", "crop_frames": 544, "lr_max": 0.01},
}
#: Short names (the command line's ``--architecture``).
ALIASES = {"reference": "McDonnellGao", "small": "SmallCNN"}


@dataclass
class TrainConfig:
    epochs: int = 510
    batch_size: int = 32
    #: Peak learning rate of each cycle; ``None``: the architecture's (0.1 reference, 0.01
    #: small — a plain CNN without the reference's normalised logits diverges at 0.1).
    lr_max: float | None = None
    lr_min: float = 1e-5
    t0_epochs: int = 2
    t_mult: int = 2
    momentum: float = 0.9
    weight_decay: float = 2e-3
    mixup_alpha: float = 0.4
    #: Random crop length in feature frames; ``None``: the architecture's (400 reference,
    #: 544 small; see the module docstring).
    crop_frames: int | None = None
    swap_p: float = 0.5
    seed: int = 0
    workers: int = 0
    device: str = "cpu"
    #: Batches of "precise BN" after the last epoch: running statistics re-estimated as a
    #: plain average over training batches (no mixup) instead of the momentum-0.01 trace,
    #: which short runs (a few hundred steps) leave far from the data's statistics.
    precise_bn_batches: int = 0
    #: ``"McDonnellGao"`` / ``"reference"`` or ``"SmallCNN"`` / ``"small"``.
    architecture: str = "McDonnellGao"
    #: Keyword arguments of the model beyond ``n_classes`` (e.g. SmallCNN ``widths``).
    model_options: dict = field(default_factory=dict)
    #: Metadata stored at the top level of the checkpoint's JSON (the CLI's "provenance").
    extra: dict = field(default_factory=dict)

    def resolved(self) -> TrainConfig:
        """This config with the architecture's canonical name and its default crop filled in
        (a ``UsageError`` for an unknown architecture)."""
        for key in ("epochs", "batch_size"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UsageError(f"{key} must be a positive integer, got {value!r}")
        name = ALIASES.get(self.architecture, self.architecture)
        if name not in ARCHITECTURES:
            known = sorted(ARCHITECTURES) + sorted(ALIASES)
            raise UsageError(f"unknown architecture {self.architecture!r}; choose from {known}")
        crop = ARCHITECTURES[name]["crop_frames"] if self.crop_frames is None else self.crop_frames
        if isinstance(crop, bool) or not isinstance(crop, int) or crop < 1:
            raise UsageError(f"crop_frames must be a positive integer, got {crop!r}")
        lr_max = ARCHITECTURES[name]["lr_max"] if self.lr_max is None else float(self.lr_max)
        if not (math.isfinite(lr_max) and lr_max > 0):
            raise UsageError(f"lr_max must be a positive number, got {lr_max!r}")
        return replace(self, architecture=name, crop_frames=crop, lr_max=lr_max)

    def front_end(self) -> FrontEnd:
        """The front end of the architecture (clips are loaded at its rate and channels)."""
        return FrontEnd.preset(ARCHITECTURES[self.resolved().architecture]["preset"])

    def build_model(self, n_classes: int, front_end: FrontEnd) -> nn.Module:
        cls = ARCHITECTURES[self.resolved().architecture]["model"]
        return cls(n_classes=n_classes, n_mels=front_end.n_mels, **self.model_options)


def learning_rate(step: int, steps_per_epoch: int, cfg: TrainConfig) -> float:
    """Cosine warm restarts, per batch: cycles of T0, T0·T_mult, … epochs from lr_max to lr_min."""
    lr_max = cfg.resolved().lr_max
    epoch = step / steps_per_epoch
    cycle_len = cfg.t0_epochs
    start = 0.0
    while epoch >= start + cycle_len:
        start += cycle_len
        cycle_len *= cfg.t_mult
    progress = (epoch - start) / cycle_len
    return cfg.lr_min + 0.5 * (lr_max - cfg.lr_min) * (1 + math.cos(math.pi * progress))


def random_crop(features: torch.Tensor, frames: int, generator: torch.Generator) -> torch.Tensor:
    """Crop ``(batch, ch, mels, T)`` to ``frames`` frames at a random start per example."""
    total = features.shape[-1]
    if total <= frames:
        return features
    starts = torch.randint(0, total - frames + 1, (features.shape[0],), generator=generator)
    index = starts[:, None] + torch.arange(frames)  # (batch, frames)
    index = index.to(features.device)[:, None, None, :].expand(
        -1, features.shape[1], features.shape[2], -1
    )
    return torch.gather(features, 3, index)


def swap_channels(features: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
    """Swap left and right — the channel pairs 0↔1, 2↔3, … of stereo features ``[x_L, x_R,
    Δ_L, Δ_R, ΔΔ_L, ΔΔ_R]`` — with probability ``p`` per example."""
    channels = features.shape[1]
    if channels % 2:
        raise ValueError(f"swap_channels needs stereo (L, R pairs of) channels, got {channels}")
    swap = (torch.rand(features.shape[0], generator=generator) < p).to(features.device)
    swapped = features[:, [c ^ 1 for c in range(channels)]]
    return torch.where(swap[:, None, None, None], swapped, features)


def mixup(
    features: torch.Tensor, targets: torch.Tensor, alpha: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixup with λ ~ Beta(α, α) drawn per example; ``targets`` are one-hot ``(batch, classes)``."""
    batch = features.shape[0]
    beta = torch.distributions.Beta(torch.tensor(alpha), torch.tensor(alpha))
    # Beta sampling has no generator argument: draw through the inverse of two Gammas seeded
    # from ``generator`` so that the run is reproducible and resumable.
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        lam = beta.sample((batch,))
    perm = torch.randperm(batch, generator=generator)
    lam = lam.to(features.device)
    perm = perm.to(features.device)
    x = lam[:, None, None, None] * features + (1 - lam[:, None, None, None]) * features[perm]
    y = lam[:, None] * targets + (1 - lam[:, None]) * targets[perm]
    return x, y


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            (decay if isinstance(module, nn.Conv2d) and name == "weight" else no_decay).append(
                param
            )
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def _state_path(out: Path) -> Path:
    return out.with_name(out.stem + ".state.safetensors")


def _save_state(
    out: Path, model: nn.Module, optimizer, epoch: int, step: int, generator, history
) -> None:
    # the global RNGs drive dropout (SmallCNN): kept so that a resumed run draws the same masks
    tensors = {"rng": generator.get_state(), "torch_rng": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors["cuda_rng"] = torch.cuda.get_rng_state()
    # the BN running statistics as the epoch left them (the checkpoint's may be precise BN's)
    for name, buf in model.named_buffers():
        tensors[f"buffer.{name}"] = buf.detach().cpu().contiguous()
    for i, group in enumerate(optimizer.param_groups):
        for j, param in enumerate(group["params"]):
            buf = optimizer.state.get(param, {}).get("momentum_buffer")
            if buf is not None:
                tensors[f"momentum.{i}.{j}"] = buf.detach().cpu().contiguous()
    meta = {"epoch": str(epoch), "step": str(step), "history": json.dumps(history)}
    with atomic_path(_state_path(out)) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def _load_state(
    out: Path, model: nn.Module, optimizer, generator: torch.Generator
) -> tuple[int, int, list]:
    from safetensors import safe_open

    path = _state_path(out)
    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata()
    tensors = load_file(str(path))
    generator.set_state(tensors["rng"])
    if "torch_rng" in tensors:  # states written before dropout models lack it
        torch.set_rng_state(tensors["torch_rng"])
    if "cuda_rng" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["cuda_rng"])
    with torch.no_grad():
        for name, buf in model.named_buffers():
            if f"buffer.{name}" in tensors:
                buf.copy_(tensors[f"buffer.{name}"])
    for i, group in enumerate(optimizer.param_groups):
        for j, param in enumerate(group["params"]):
            key = f"momentum.{i}.{j}"
            if key in tensors:
                optimizer.state[param]["momentum_buffer"] = tensors[key].to(param.device)
    return int(meta["epoch"]), int(meta["step"]), json.loads(meta["history"])


def _resume_model(out: Path, model: nn.Module, front_end: FrontEnd, epochs: int) -> bool:
    """Load the weights of the checkpoint being resumed into ``model``; return whether its
    precise BN is done for a run of ``epochs`` epochs. A checkpoint of another architecture
    or front end is refused."""
    from listenable.checkpoint import front_end_for, load_checkpoint

    loaded, meta = load_checkpoint(out)
    if meta["architecture"] != model.architecture:
        raise CheckpointError(
            f"{out}: cannot resume a {meta['architecture']} checkpoint as {model.architecture}"
        )
    if front_end_for(meta).settings != front_end.settings:
        raise CheckpointError(f"{out}: cannot resume: the checkpoint has another front end")
    model.load_state_dict(loaded.state_dict())
    training = meta.get("training", {})
    return bool(training.get("precise_bn")) and training.get("epochs_done", 0) >= epochs


def train(
    dataset,
    out: str | os.PathLike,
    cfg: TrainConfig,
    *,
    resume: bool = False,
    on_batch: Callable[[dict], None] | None = None,
    on_epoch: Callable[[dict], None] | None = None,
    sampler=None,
    is_main: bool = True,
    wrap: Callable[[nn.Module], nn.Module] | None = None,
) -> Path:
    """Train ``cfg.architecture`` on ``dataset`` (``(waveform, label, path)`` items).

    The dataset's ``front_end`` (an :class:`~listenable.data.AudioDataset`'s) is set to the
    architecture's, so that clips load at its rate and channel count; a dataset without one
    must yield waveforms at that rate and channel count already. ``out`` is the checkpoint
    path (``.safetensors``); it is rewritten every epoch.
    ``sampler``/``wrap``/``is_main`` let :mod:`listenable.distributed` run it under DDP.
    """
    cfg = cfg.resolved()
    out = Path(out).with_suffix(".safetensors")
    device = torch.device(cfg.device)
    torch.manual_seed(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    classes = list(dataset.class_names)
    front_end = cfg.front_end()
    if hasattr(dataset, "front_end"):
        dataset.front_end = front_end
    else:
        log.warning(
            "%s has no front_end: its clips must be %d Hz with %d channel(s)",
            type(dataset).__name__,
            front_end.sample_rate,
            front_end.channels,
        )
    model = cfg.build_model(len(classes), front_end).to(device)
    front_end = front_end.to(device)
    stereo = front_end.channels == 2
    optimizer = torch.optim.SGD(
        _param_groups(model, cfg.weight_decay), lr=cfg.lr_max, momentum=cfg.momentum
    )
    start_epoch, step, history, bn_done = 0, 0, [], False
    if resume and out.exists() and _state_path(out).exists():
        bn_done = _resume_model(out, model, front_end, cfg.epochs)
        start_epoch, step, history = _load_state(out, model, optimizer, generator)
        log.info("resuming %s at epoch %d (step %d)", out, start_epoch, step)
    net = wrap(model) if wrap else model
    loader_gen = torch.Generator().manual_seed(cfg.seed)
    from listenable.data import collate_clips

    loader = DataLoader(
        dataset,
        batch_size=cfg.batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        num_workers=cfg.workers,
        collate_fn=collate_clips,
        drop_last=(len(sampler) if sampler is not None else len(dataset)) > cfg.batch_size,
        generator=loader_gen,
        persistent_workers=cfg.workers > 0,
    )
    steps_per_epoch = len(loader)
    use_bf16 = device.type == "cuda"

    def checkpoint(epochs_done: int, **more) -> None:
        training = {**asdict(cfg), "epochs_done": epochs_done, "steps": step, "history": history}
        save_checkpoint(
            model,
            out,
            class_names=classes,
            front_end=front_end,
            training={**training, **more},
            **cfg.extra,
        )

    for epoch in range(start_epoch, cfg.epochs):
        if sampler is not None and hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        loader_gen.manual_seed(cfg.seed + epoch)  # same order after a resume
        model.train()
        seen, correct, loss_sum, t0 = 0, 0, 0.0, time.perf_counter()
        for wave, labels, _ in loader:
            wave, labels = wave.to(device, non_blocking=True), labels.to(device)
            with torch.no_grad():
                x = front_end(wave)
                x = random_crop(x, cfg.crop_frames, generator)
                if stereo:
                    x = swap_channels(x, cfg.swap_p, generator)
                y = F.one_hot(labels, len(classes)).float()
                x, y = mixup(x, y, cfg.mixup_alpha, generator)
            lr = learning_rate(step, steps_per_epoch, cfg)
            for group in optimizer.param_groups:
                group["lr"] = lr
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                logits = net(x)
            loss = torch.sum(-y * F.log_softmax(logits.float(), dim=1), dim=1).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            seen += labels.shape[0]
            correct += int((logits.argmax(1) == y.argmax(1)).sum())
            loss_sum += loss.item() * labels.shape[0]
            if on_batch:
                elapsed = time.perf_counter() - t0
                on_batch(
                    {
                        "epoch": epoch,
                        "step": step,
                        "loss": loss_sum / seen,
                        "accuracy": correct / seen,
                        "clips_per_s": seen / elapsed,
                        "lr": lr,
                        "batch_clips": labels.shape[0],
                    }
                )
        record = {
            "epoch": epoch + 1,
            "loss": loss_sum / max(seen, 1),
            "accuracy": correct / max(seen, 1),
            "seconds": time.perf_counter() - t0,
        }
        history.append(record)
        if is_main:
            checkpoint(epoch + 1)
            _save_state(out, model, optimizer, epoch + 1, step, generator, history)
        log.info("epoch %d: %s", epoch + 1, record)
        if on_epoch:
            on_epoch(record)
    if cfg.precise_bn_batches and not bn_done:
        # seeded so that a run resumed after its last epoch gets the same statistics
        loader_gen.manual_seed(cfg.seed + cfg.epochs)
        precise_bn(model, front_end, loader, cfg.precise_bn_batches, cfg.crop_frames, generator)
        if is_main:
            checkpoint(cfg.epochs, precise_bn=True)
    if is_main:
        write_json(out.with_name(out.stem + ".history.json"), history)
    return out


@torch.no_grad()
def precise_bn(
    model: nn.Module,
    front_end: FrontEnd,
    loader,
    batches: int,
    crop_frames: int,
    generator: torch.Generator,
) -> None:
    """Re-estimate every BatchNorm's running statistics as an equal-weight average over
    ``batches`` training batches (random crops, no mixup), as in pycls' precise BN."""
    device = front_end.filterbank.device
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average
    model.train()
    try:
        for i, (wave, _, _) in enumerate(loader):
            if i >= batches:
                break
            model(random_crop(front_end(wave.to(device)), crop_frames, generator))
    finally:
        for m, momentum in zip(bns, saved):
            m.momentum = momentum
        model.eval()
