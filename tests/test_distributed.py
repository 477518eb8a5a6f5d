"""``analyze`` and ``train`` under torchrun: 2 CPU processes with gloo, against one process."""

import json
import os
import socket
import subprocess
import sys

import pytest
import soundfile as sf
import torch

from listenable.analyze import AnalyzeConfig, analyze, read_manifest
from listenable.checkpoint import load_checkpoint, save_checkpoint
from listenable.data import folder_dataset
from listenable.distributed import Rank, from_env
from listenable.errors import ListenableError

pytestmark = pytest.mark.slow

CLASSES = ["airport", "bus", "park"]


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """3 classes x 2 clips of 1 s."""
    import numpy as np

    from tests.conftest import scene_like

    rng = np.random.default_rng(7)
    root = tmp_path_factory.mktemp("dist") / "data"
    for name in CLASSES:
        (root / name).mkdir(parents=True)
        for i in range(2):
            sf.write(root / name / f"{name}-{i}.wav", scene_like(rng, seconds=1.0).T, 48_000)
    return root


@pytest.fixture(scope="module")
def checkpoint(tree):
    from listenable.models import McDonnellGao

    torch.manual_seed(3)
    model = McDonnellGao(n_classes=3).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    return save_checkpoint(model, tree.parent / "m.safetensors", class_names=CLASSES)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    return {**env, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def _cli(
    args: list[str], *, nproc: int = 0, cwd=None, status: int = 0
) -> subprocess.CompletedProcess:
    launch = [sys.executable]
    if nproc:
        launch += [
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            str(nproc),
            "--master_addr",
            "127.0.0.1",
            "--master_port",
            str(_free_port()),
        ]
    cmd = [*launch, "-m", "listenable.cli", *args]
    res = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=180, cwd=cwd)
    ok = res.returncode == 0 if status == 0 else res.returncode != 0
    assert ok, f"{' '.join(cmd)}\n{res.stdout}\n{res.stderr[-4000:]}"
    return res


def _rows(out) -> list[dict]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


def test_torchrun_analyze_equals_one_process(tree, checkpoint, tmp_path):
    common = ["--checkpoint", str(checkpoint), "--split", "all", "--batch-size", "2"]
    common += ["--min-confidence", "0", "--device", "cpu"]
    single, multi = tmp_path / "single", tmp_path / "multi"
    _cli(["analyze", "--method", "layercam", str(tree), "--out", str(single), *common])
    res = _cli(
        ["analyze", "--method", "layercam", str(tree), "--out", str(multi), *common], nproc=2
    )
    assert "6 clips" in res.stdout  # rank 0 printed the merged summary, once
    assert res.stdout.count("6 clips") == 1

    one, two = _rows(single), _rows(multi)
    assert [r["clip_id"] for r in two] == [r["clip_id"] for r in one]  # data-set order
    for a, b in zip(one, two):
        assert a["status"] == b["status"] == "ok"
        assert a["predicted"] == b["predicted"]
        for name in CLASSES:
            assert abs(a["probabilities"][name] - b["probabilities"][name]) <= 1e-5
        assert abs(a["mask_area"] - b["mask_area"]) <= 1e-4
        assert a["files"] == b["files"] and all((multi / f).exists() for f in b["files"].values())
    assert not list(multi.glob("manifest.rank*"))  # merged and removed
    summary = json.loads((multi / "summary.json").read_text())
    assert summary["totals"]["clips"] == 6 and summary["world_size"] == 2
    assert summary["processed_this_run"] == 6


def test_torchrun_analyze_is_refused_while_another_run_holds_out(tree, checkpoint, tmp_path):
    """Rank 0 takes --out's lock; held by another run, every rank stops at once with the
    one-line message (none waits for the others), and nothing is written."""
    from listenable.manifest import LOCK, run_lock

    out = tmp_path / "busy"
    args = [
        "analyze",
        "--method",
        "layercam",
        str(tree),
        "--out",
        str(out),
        "--checkpoint",
        str(checkpoint),
    ]
    args += ["--split", "all", "--device", "cpu"]
    with run_lock(out):
        res = _cli(args, nproc=2, status=1)
    message = f"error: another analyze is running on {out} (pid {os.getpid()})"
    assert res.stderr.count(message) == 2  # each rank says it, once
    assert sorted(p.name for p in out.iterdir()) == [LOCK]


def test_torchrun_train_writes_one_checkpoint(tree, tmp_path):
    out = tmp_path / "ddp.safetensors"
    args = ["train", str(tree), "--out", str(out), "--split", "all", "--epochs", "1"]
    res = _cli([*args, "--batch-size", "4", "--device", "cpu"], nproc=2)
    assert res.stdout.count("checkpoint:") == 1  # rank 0 only
    model, meta = load_checkpoint(out)
    assert meta["class_names"] == CLASSES
    assert meta["distributed"] == {"world_size": 2, "batch_per_process": 2, "global_batch": 4}
    assert meta["training"]["epochs_done"] == 1
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_resume_reads_what_a_killed_sharded_run_left(tree, checkpoint, tmp_path):
    """A sharded run killed before the merge leaves manifest.rank*.jsonl: a later run (here
    one process) skips those clips and merges them into one manifest."""
    model, meta = load_checkpoint(checkpoint)
    cfg = AnalyzeConfig(
        split="all", batch_size=2, figures=False, min_confidence=0.0, method="layercam"
    )
    data = folder_dataset(tree)
    out = tmp_path / "out"
    part = analyze(data, out, model, meta, cfg, shard=(1, 2), manifest_name="manifest.rank1.jsonl")
    assert part["processed"] == 3 and (out / "manifest.rank1.jsonl").exists()
    summary = analyze(data, out, model, meta, cfg)
    assert summary["processed_this_run"] == 3  # only rank 0's share was left to do
    assert len(read_manifest(out)) == 6 and not list(out.glob("manifest.rank*"))


def test_a_shard_hands_the_merge_the_method_it_resolved(tmp_path, model10, rng):
    """With no method named, each rank takes the model's default; rank 0 writes the summary
    from the settings its shard returns, so they must name that method, not ``None``."""
    from tests.conftest import scene_like

    (tmp_path / "data" / "bus").mkdir(parents=True)
    sf.write(tmp_path / "data" / "bus" / "a.wav", scene_like(rng, 0.5).T, 48_000)
    cfg = AnalyzeConfig(split="all", batch_size=1, figures=False, min_confidence=0.0)
    assert cfg.method is None
    out = tmp_path / "out"
    part = analyze(
        folder_dataset(tmp_path / "data"), out, model10, {}, cfg, shard=(0, 2),
        manifest_name="manifest.rank0.jsonl",
    )  # fmt: skip
    assert part["cfg"].method == "optimised"  # model10 names fine_layers
    (row,) = [json.loads(line) for line in (out / "manifest.rank0.jsonl").open()]
    assert row["method"] == "optimised"


def test_rank_from_env(monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    assert from_env() == Rank() and not from_env().distributed
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    rank = from_env()
    assert (rank.rank, rank.world_size, rank.is_main) == (1, 2, False)
    assert rank.manifest_name == "manifest.rank1.jsonl"
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(ListenableError, match="RANK 2 of 2"):
        from_env()
    monkeypatch.setenv("RANK", "x")
    with pytest.raises(ListenableError, match="integers"):
        from_env()
