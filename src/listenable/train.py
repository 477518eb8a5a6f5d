"""The McDonnell & Gao training recipe, resumable and seeded.

SGD (lr 0.1, momentum 0.9); per-batch cosine warm restarts from 0.1 to 1e-5 with T0 = 2
epochs and T_mult = 2; batch 32; mixup α = 0.4 with λ drawn per example; random crops of
400 of the 461 feature frames; random left/right swap with p = 0.5; weight decay 2e-3 on
the convolution weights only (Keras L2 1e-3). bf16 autocast on CUDA.

Every epoch writes the model checkpoint (safetensors + JSON) and a training state
(``<out>.state.safetensors``: optimiser momentum, epoch, step and RNG state) that
``resume=True`` continues from; the learning-rate schedule is a pure function of the
global step, so a resumed run follows the same curve.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import DataLoader

from listenable.atomic import atomic_path, write_json
from listenable.checkpoint import save_checkpoint
from listenable.features import LogMelDeltas
from listenable.models import McDonnellGao

__all__ = ["TrainConfig", "train", "learning_rate", "mixup", "random_crop", "swap_channels"]

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    epochs: int = 510
    batch_size: int = 32
    lr_max: float = 0.1
    lr_min: float = 1e-5
    t0_epochs: int = 2
    t_mult: int = 2
    momentum: float = 0.9
    weight_decay: float = 2e-3
    mixup_alpha: float = 0.4
    crop_frames: int = 400
    swap_p: float = 0.5
    seed: int = 0
    workers: int = 0
    device: str = "cpu"
    #: Batches of "precise BN" after the last epoch: running statistics re-estimated as a
    #: plain average over training batches (no mixup) instead of the momentum-0.01 trace,
    #: which short runs (a few hundred steps) leave far from the data's statistics.
    precise_bn_batches: int = 0
    extra: dict = field(default_factory=dict)


def learning_rate(step: int, steps_per_epoch: int, cfg: TrainConfig) -> float:
    """Cosine warm restarts, per batch: cycles of T0, T0·T_mult, … epochs from lr_max to lr_min."""
    epoch = step / steps_per_epoch
    cycle_len = cfg.t0_epochs
    start = 0.0
    while epoch >= start + cycle_len:
        start += cycle_len
        cycle_len *= cfg.t_mult
    progress = (epoch - start) / cycle_len
    return cfg.lr_min + 0.5 * (cfg.lr_max - cfg.lr_min) * (1 + math.cos(math.pi * progress))


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
    """Swap left and right (channel pairs 0↔1, 2↔3, 4↔5) with probability ``p`` per example."""
    swap = (torch.rand(features.shape[0], generator=generator) < p).to(features.device)
    swapped = features[:, [1, 0, 3, 2, 5, 4]]
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
    out: Path, optimizer, epoch: int, step: int, generator: torch.Generator, history
) -> None:
    tensors = {"rng": generator.get_state()}
    for i, group in enumerate(optimizer.param_groups):
        for j, param in enumerate(group["params"]):
            buf = optimizer.state.get(param, {}).get("momentum_buffer")
            if buf is not None:
                tensors[f"momentum.{i}.{j}"] = buf.detach().cpu().contiguous()
    meta = {"epoch": str(epoch), "step": str(step), "history": json.dumps(history)}
    with atomic_path(_state_path(out)) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def _load_state(out: Path, optimizer, generator: torch.Generator) -> tuple[int, int, list]:
    from safetensors import safe_open

    path = _state_path(out)
    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata()
    tensors = load_file(str(path))
    generator.set_state(tensors["rng"])
    for i, group in enumerate(optimizer.param_groups):
        for j, param in enumerate(group["params"]):
            key = f"momentum.{i}.{j}"
            if key in tensors:
                optimizer.state[param]["momentum_buffer"] = tensors[key].to(param.device)
    return int(meta["epoch"]), int(meta["step"]), json.loads(meta["history"])


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
    """Train the reference model on ``dataset`` (``(waveform, label, path)`` items).

    ``out`` is the checkpoint path (``.safetensors``); it is rewritten every epoch.
    ``sampler``/``wrap``/``is_main`` let :mod:`listenable.distributed` run it under DDP.
    """
    out = Path(out).with_suffix(".safetensors")
    device = torch.device(cfg.device)
    torch.manual_seed(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    classes = list(dataset.class_names)
    model = McDonnellGao(n_classes=len(classes)).to(device)
    features = LogMelDeltas().to(device)
    optimizer = torch.optim.SGD(
        _param_groups(model, cfg.weight_decay), lr=cfg.lr_max, momentum=cfg.momentum
    )
    start_epoch, step, history, bn_done = 0, 0, [], False
    if resume and out.exists() and _state_path(out).exists():
        from listenable.checkpoint import load_checkpoint

        loaded, loaded_meta = load_checkpoint(out)
        bn_done = bool(loaded_meta.get("training", {}).get("precise_bn"))
        model.load_state_dict(loaded.state_dict())
        start_epoch, step, history = _load_state(out, optimizer, generator)
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
    for epoch in range(start_epoch, cfg.epochs):
        if sampler is not None and hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        loader_gen.manual_seed(cfg.seed + epoch)  # same order after a resume
        model.train()
        seen, correct, loss_sum, t0 = 0, 0, 0.0, time.perf_counter()
        for wave, labels, _ in loader:
            wave, labels = wave.to(device, non_blocking=True), labels.to(device)
            with torch.no_grad():
                x = features(wave)
                x = random_crop(x, cfg.crop_frames, generator)
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
            save_checkpoint(
                model,
                out,
                class_names=classes,
                features=features,
                training={
                    **asdict(cfg),
                    "epochs_done": epoch + 1,
                    "steps": step,
                    "history": history,
                },
                **cfg.extra,
            )
            _save_state(out, optimizer, epoch + 1, step, generator, history)
        log.info("epoch %d: %s", epoch + 1, record)
        if on_epoch:
            on_epoch(record)
    if cfg.precise_bn_batches and not bn_done:
        # seeded so that a run resumed after its last epoch gets the same statistics
        loader_gen.manual_seed(cfg.seed + cfg.epochs)
        precise_bn(model, features, loader, cfg.precise_bn_batches, cfg.crop_frames, generator)
        if is_main:
            save_checkpoint(
                model,
                out,
                class_names=classes,
                features=features,
                training={
                    **asdict(cfg),
                    "epochs_done": cfg.epochs,
                    "steps": step,
                    "history": history,
                    "precise_bn": True,
                },
                **cfg.extra,
            )
    if is_main:
        write_json(out.with_name(out.stem + ".history.json"), history)
    return out


@torch.no_grad()
def precise_bn(
    model: nn.Module,
    features: LogMelDeltas,
    loader,
    batches: int,
    crop_frames: int,
    generator: torch.Generator,
) -> None:
    """Re-estimate every BatchNorm's running statistics as an equal-weight average over
    ``batches`` training batches (random crops, no mixup), as in pycls' precise BN."""
    device = features.window.device
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
            model(random_crop(features(wave.to(device)), crop_frames, generator))
    finally:
        for m, momentum in zip(bns, saved):
            m.momentum = momentum
        model.eval()
