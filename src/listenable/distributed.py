"""``analyze`` and ``train`` on several processes, GPUs or machines, with ``torchrun``.

    torchrun --nproc_per_node 2 -m listenable.cli analyze DATA --out run/
    torchrun --nproc_per_node 4 -m listenable.cli train DATA --out model.safetensors
    torchrun --nnodes 2 --node_rank 0 --master_addr HOST --nproc_per_node 8 -m listenable.cli ...

Every process (a *rank*) reads ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` from the
environment torchrun sets, joins the process group (gloo for CPU tensors, NCCL for CUDA
tensors) and works on its own device, ``cuda:LOCAL_RANK`` (or the CPU). Without those
variables every function here is the plain single-process one.

* ``analyze``: rank 0 takes the lock on ``--out`` (a second run on it is refused on every
  rank) and removes a killed run's temporaries; rank ``r`` then explains clips
  ``r, r + world, r + 2·world, …`` and appends to ``manifest.rank{r}.jsonl``; after a
  barrier rank 0 merges the rank manifests into one ``manifest.jsonl`` (data-set order),
  writes ``summary.json`` and lets the lock go. A killed run resumes with any number of
  ranks (or one process): every run reads the main and all rank manifests.
* ``train``: ``DistributedDataParallel`` with a ``DistributedSampler``. ``batch_size`` stays the
  global batch of the recipe (32): each rank takes ``batch_size / world`` clips a step, so
  the learning-rate schedule (per step) and the epoch length are those of one process.
  Rank 0 alone writes checkpoints. BatchNorm statistics are per rank (rank 0's are kept,
  DDP broadcasts them); the augmentation random streams are the same on every rank.

Set ``LISTENABLE_DIST_TIMEOUT`` (seconds, default 6 hours) for the collectives' timeout:
rank 0 waits at the final barrier for the slowest rank.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

from listenable.atomic import write_json
from listenable.errors import ListenableError

__all__ = ["Rank", "from_env", "process_group", "analyze", "train", "finished_clips"]

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 6 * 3600


@dataclass(frozen=True)
class Rank:
    """Where this process stands: ``rank`` of ``world_size``, ``local_rank`` on its machine,
    and the ``device`` it works on."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = "cpu"

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def manifest_name(self) -> str:
        return f"manifest.rank{self.rank}.jsonl"

    def label(self) -> str:
        """``" rank r/world"`` for progress bars, empty for one process."""
        return f" rank {self.rank}/{self.world_size}" if self.distributed else ""


def from_env(device: str = "cpu") -> Rank:
    """The :class:`Rank` torchrun's environment describes; one process without it.

    ``device`` ``"cuda"`` becomes ``cuda:LOCAL_RANK`` when distributed.
    """
    env = os.environ
    if "WORLD_SIZE" not in env:
        return Rank(device=device)
    try:
        world = int(env["WORLD_SIZE"])
        rank = int(env.get("RANK", "0"))
        local = int(env.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise ListenableError(
            "RANK / WORLD_SIZE / LOCAL_RANK must be integers (as torchrun sets them), got "
            f"{env.get('RANK')!r} / {env.get('WORLD_SIZE')!r} / {env.get('LOCAL_RANK')!r}"
        ) from None
    if world < 1 or not 0 <= rank < world or local < 0:
        raise ListenableError(f"inconsistent torchrun environment: RANK {rank} of {world}")
    if device == "cuda" and world > 1:
        if local >= torch.cuda.device_count():
            raise ListenableError(
                f"LOCAL_RANK {local} but this machine has {torch.cuda.device_count()} CUDA "
                "device(s): start at most one process per GPU (--nproc_per_node)"
            )
        device = f"cuda:{local}"
    return Rank(rank, world, local, device)


def _timeout() -> timedelta:
    value = os.environ.get("LISTENABLE_DIST_TIMEOUT", str(DEFAULT_TIMEOUT_S))
    try:
        return timedelta(seconds=float(value))
    except ValueError:
        raise ListenableError(f"LISTENABLE_DIST_TIMEOUT must be seconds, got {value!r}") from None


@contextlib.contextmanager
def process_group(device: str = "cpu") -> Iterator[Rank]:
    """Join torchrun's process group for the duration (left again at the end); yields the
    :class:`Rank`. Outside torchrun, a no-op that yields the single-process rank.

    ``device`` is ``"cpu"`` or ``"cuda"``: with CUDA the group has both gloo (CPU tensors:
    barriers, merged counts, the summary) and NCCL (CUDA tensors: DDP's gradients).
    """
    rank = from_env(device)
    if not rank.distributed or dist.is_initialized():
        yield rank
        return
    if rank.device.startswith("cuda"):
        torch.cuda.set_device(rank.local_rank)
        backend = "cpu:gloo,cuda:nccl"
    else:
        backend = "gloo"
    dist.init_process_group(backend=backend, timeout=_timeout())
    log.info("rank %d of %d joined (%s, %s)", rank.rank, rank.world_size, backend, rank.device)
    try:
        yield rank
    finally:
        dist.destroy_process_group()


def _barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def _reduce(value: float, op) -> float:
    tensor = torch.tensor([float(value)], dtype=torch.float64)
    dist.all_reduce(tensor, op=op)
    return float(tensor.item())


def _broadcast(obj, src: int = 0):
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def finished_clips(out: str | os.PathLike) -> set[str]:
    """Ids of the clips explained (status ``ok``) in ``out``'s manifest or in any rank
    manifest, whatever their settings (a resumed run also checks those)."""
    from listenable.analyze import read_manifest, read_rank_manifests

    out = Path(out)
    rows = {**read_manifest(out), **read_rank_manifests(out)}
    return {clip for clip, row in rows.items() if row["status"] == "ok"}


def analyze(
    data, out: str | os.PathLike, model, meta: dict, cfg, *, progress=None, on_plan=None
) -> dict:
    """:func:`listenable.analyze.analyze` with the clips sharded across torchrun's ranks.

    Every rank returns the merged summary (rank 0 writes it). Outside torchrun, the plain
    single-process run. Rank 0 holds ``out``'s lock for the whole run; when another run
    holds it, every rank raises its :class:`~listenable.manifest.RunLockedError`.
    """
    from listenable import analyze as run
    from listenable.manifest import run_lock

    rank = from_env()
    if not rank.distributed:
        return run.analyze(data, out, model, meta, cfg, progress=progress, on_plan=on_plan)
    if not dist.is_initialized():
        raise ListenableError("analyze under torchrun: call it inside process_group()")
    out = Path(out)
    with contextlib.ExitStack() as held:
        failure = None
        if rank.is_main:
            try:
                held.enter_context(run_lock(out))
                run.remove_stale_temporaries(out)  # before any rank writes temporaries
            except Exception as exc:  # the other ranks must not wait for rank 0 in vain
                failure = exc
        shared = _broadcast(_portable(failure))  # also the barrier before the ranks start
        if failure is not None:
            raise failure
        if shared is not None:
            raise shared
        part = run.analyze(
            data,
            out,
            model,
            meta,
            cfg,
            progress=progress,
            on_plan=on_plan,
            shard=(rank.rank, rank.world_size),
            manifest_name=rank.manifest_name,
        )
        processed = int(_reduce(part["processed"], dist.ReduceOp.SUM))
        seconds = _reduce(part["seconds"], dist.ReduceOp.MAX)  # also the barrier before merging
        summary = None
        meta = part.get("meta", meta)  # with the model's class names, rate and STFT
        cfg = part.get("cfg", cfg)  # with the method resolved for the model
        if rank.is_main:
            summary = run.finish(out, part["plan"], cfg, meta, processed, seconds)
            summary["world_size"] = rank.world_size
            write_json(out / "summary.json", summary)
        return _broadcast(summary)  # rank 0 lets the lock go after this


def _portable(exc: BaseException | None) -> ListenableError | None:
    """``exc`` as an error every rank can raise (a ListenableError keeps its type)."""
    if exc is None or isinstance(exc, ListenableError):
        return exc
    return ListenableError(f"rank 0: {type(exc).__name__}: {exc}")


def train(dataset, out: str | os.PathLike, cfg, **options) -> Path:
    """:func:`listenable.train.train` under ``DistributedDataParallel`` (see the module
    docstring); ``options`` go to it (``resume``, ``on_batch``, ``on_epoch``). Outside
    torchrun, the plain single-process run."""
    from torch.nn.parallel import DistributedDataParallel
    from torch.utils.data.distributed import DistributedSampler

    from listenable import train as run

    rank = from_env("cuda" if str(cfg.device).startswith("cuda") else "cpu")
    if not rank.distributed:
        return run.train(dataset, out, cfg, **options)
    if not dist.is_initialized():
        raise ListenableError("train under torchrun: call it inside process_group()")
    per_rank = cfg.batch_size // rank.world_size
    if per_rank < 1:
        raise ListenableError(
            f"--batch-size {cfg.batch_size} is smaller than the {rank.world_size} processes"
        )
    if per_rank * rank.world_size != cfg.batch_size:
        log.warning(
            "batch %d does not divide over %d processes: %d per process (global %d)",
            cfg.batch_size,
            rank.world_size,
            per_rank,
            per_rank * rank.world_size,
        )
    extra = {
        **cfg.extra,
        "distributed": {
            "world_size": rank.world_size,
            "batch_per_process": per_rank,
            "global_batch": per_rank * rank.world_size,
        },
    }
    local_cfg = replace(cfg, batch_size=per_rank, device=rank.device, extra=extra)
    sampler = DistributedSampler(
        dataset, num_replicas=rank.world_size, rank=rank.rank, shuffle=True, seed=cfg.seed
    )
    cuda = rank.device.startswith("cuda")

    def wrap(model):
        return DistributedDataParallel(model, device_ids=[rank.local_rank] if cuda else None)

    path = run.train(
        dataset, out, local_cfg, sampler=sampler, is_main=rank.is_main, wrap=wrap, **options
    )
    _barrier()  # the other ranks return once rank 0 has written the last checkpoint
    return path
