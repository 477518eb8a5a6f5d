"""Resumed and hostile ``analyze`` runs with the small shipped model on short 16 kHz clips:
settings and data sets that change, a full disk, links in ``--out``, long names, duplicate
rows, bad options and an ``--out`` inside the data."""

import json
import math
import os

import numpy as np
import pytest
import soundfile as sf

from listenable.analyze import AnalyzeConfig, AnalyzeConfigError, analyze, read_manifest
from listenable.checkpoint import SHIPPED, load_checkpoint
from listenable.data import folder_dataset

RATE = 16_000


@pytest.fixture(scope="module")
def small():
    """The small shipped model, loaded once (its layer geometry is probed once)."""
    return load_checkpoint(SHIPPED["small"])


def _clip(path, k: int, seconds: float = 0.6) -> None:
    rng = np.random.default_rng(k)
    t = np.arange(int(seconds * RATE)) / RATE
    wave = 0.2 * np.sin(2 * np.pi * (200 + 150 * k) * t) + 0.05 * rng.standard_normal(t.size)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(os.fsencode(path), wave, RATE)


def _folder(root, names: dict[str, list[str]]):
    for k, (cls, stems) in enumerate(names.items()):
        for j, stem in enumerate(stems):
            _clip(root / cls / f"{stem}.wav", 3 * k + j)
    return root


def _run(data, out, small, **cfg):
    model, meta = small
    cfg = {"split": "all", "min_confidence": 0.0, "figures": False, "batch_size": 2,
           "method": "layercam", **cfg}  # fmt: skip
    dataset = data if hasattr(data, "paths") else folder_dataset(data)
    return analyze(dataset, out, model, meta, AnalyzeConfig(**cfg))


def _ids(out) -> list[str]:
    return [json.loads(line)["clip_id"] for line in (out / "manifest.jsonl").open()]


def test_other_settings_are_explained_again(tmp_path, small):
    """A rerun with another percentile recomputes every clip (and the summary tells the
    settings the rows were made with); a rerun with the same settings recomputes none."""
    data = _folder(tmp_path / "data", {"bus": ["a", "b"]})
    out = tmp_path / "out"
    first = _run(data, out, small)
    areas = {c: r["mask_area"] for c, r in read_manifest(out).items()}
    assert _run(data, out, small)["processed_this_run"] == 0
    second = _run(data, out, small, percentile=10.0)
    assert second["processed_this_run"] == 2 and second["settings"]["percentile"] == 10.0
    assert second["fingerprint"] != first["fingerprint"]
    rows = read_manifest(out)
    assert {r["fingerprint"] for r in rows.values()} == {second["fingerprint"]}
    assert all(rows[c]["mask_area"] > areas[c] + 0.2 for c in areas)  # θ = 10th percentile
    assert second["totals"]["clips"] == 2


def test_a_run_resumed_with_another_default_method_says_which(tmp_path, small, caplog):
    """Rows made with LayerCAM (the default before) resumed without a method: the model's
    default now (``optimised``) is another setting, so every clip is explained again, and
    the warning names both methods and the option that keeps the old rows."""
    data = _folder(tmp_path / "data", {"bus": ["a", "b"]})
    out = tmp_path / "out"
    _run(data, out, small)
    with caplog.at_level("WARNING", logger="listenable.analyze"):
        summary = _run(data, out, small, method=None)
    assert summary["processed_this_run"] == 2 and summary["settings"]["method"] == "optimised"
    assert "they were explained with layercam, this run uses optimised" in caplog.text
    assert "(--method layercam keeps them)" in caplog.text
    assert {r["method"] for r in read_manifest(out).values()} == {"optimised"}


def test_rows_of_another_data_set_are_dropped_not_counted(tmp_path, small):
    """Set A then set B (same stems, another root) into one --out: B's clips are explained,
    A's rows move to manifest.dropped.jsonl, the summary counts B's 2 clips."""
    a = _folder(tmp_path / "a", {"bus": ["x"], "park": ["y"]})
    b = _folder(tmp_path / "b", {"bus": ["x"], "park": ["y"]})
    out = tmp_path / "out"
    _run(a, out, small)
    summary = _run(b, out, small)
    assert summary["processed_this_run"] == 2
    assert summary["totals"]["clips"] == 2 and summary["dropped_rows"] == 2
    rows = read_manifest(out)
    assert {r["data_root"] for r in rows.values()} == {str(b)}
    dropped = [json.loads(line) for line in (out / "manifest.dropped.jsonl").open()]
    assert {r["data_root"] for r in dropped} == {str(a)}
    # and back to A: explained again, B's rows dropped in turn
    assert _run(a, out, small)["totals"]["clips"] == 2


def test_a_same_stem_file_added_later_keeps_the_first_clips_id(tmp_path, small):
    data = _folder(tmp_path / "data", {"bus": ["x"]})
    out = tmp_path / "out"
    _run(data, out, small)
    assert _ids(out) == ["x"]
    _clip(data / "park" / "x.wav", 9)
    summary = _run(folder_dataset(data), out, small)
    assert summary["processed_this_run"] == 1 and summary["totals"]["clips"] == 2
    ids = _ids(out)
    assert ids[0] == "x" and ids[1].startswith("x-") and len(set(ids)) == 2
    assert read_manifest(out)[ids[1]]["rel_path"] == "park/x.wav"


def test_duplicate_rows_of_a_data_set_are_explained_once(tmp_path, small, caplog):
    """However the data set was built (here by hand, with a row repeated as is and as
    ``./a.wav``), analyze explains each file once."""
    from listenable.data import AudioDataset

    root = tmp_path / "data"
    _clip(root / "a.wav", 1)
    _clip(root / "b.wav", 2)
    items = [
        (root / "a.wav", 0),
        (root / "b.wav", 1),
        (root / "a.wav", 0),
        (root / "." / "a.wav", 0),
    ]
    summary = _run(AudioDataset(items, ["bus", "park"], root), tmp_path / "out", small)
    assert summary["processed_this_run"] == 2 and summary["totals"]["clips"] == 2
    assert _ids(tmp_path / "out") == ["a", "b"]
    assert "2 duplicate row(s) of the data set, each clip is explained once" in caplog.text


def test_a_full_disk_fails_one_clip_cleanly_and_it_is_retried(tmp_path, small, monkeypatch):
    """libsndfile's "System error." while the disk is full: the clip's row says "no space
    left on device", none of its files (or temporaries) stay; the next run, with space
    again, explains it."""
    import soundfile

    import listenable.report.audio

    data = _folder(tmp_path / "data", {"bus": ["a", "b"]})
    out = tmp_path / "out"
    real = listenable.report.audio.write_track

    def full_for_b(path, *args):
        if path.name.startswith("b.residual"):
            raise soundfile.LibsndfileError(2, "Error writing: ")
        real(path, *args)

    with monkeypatch.context() as patch:
        patch.setattr("listenable.report.audio.write_track", full_for_b)
        patch.setattr("listenable.writers.free_bytes", lambda folder: 0.0)
        summary = _run(data, out, small)
    rows = read_manifest(out)
    assert rows["a"]["status"] == "ok" and rows["b"]["status"] == "error"
    assert rows["b"]["error"].endswith("b.wav: cannot write outputs (no space left on device)")
    assert summary["totals"]["failed"] == 1
    assert not [p for p in out.rglob("*") if p.name.startswith(("b.", ".b"))]
    summary = _run(data, out, small)
    assert summary["processed_this_run"] == 1 and summary["totals"]["failed"] == 0
    assert read_manifest(out)["b"]["status"] == "ok"


def test_a_linked_class_folder_is_never_written_through(tmp_path, small):
    """Every class folder of --out is a link to a folder outside: no clip writes through
    it (each one says so), nothing appears outside."""
    from listenable.analyze import slug

    model, _meta = small
    data = _folder(tmp_path / "data", {"bus": ["a"]})
    out, outside = tmp_path / "out", tmp_path / "elsewhere"
    outside.mkdir()
    out.mkdir()
    for name in model.class_names:
        (out / slug(name)).symlink_to(outside)
    summary = _run(data, out, small)
    (row,) = read_manifest(out).values()
    assert row["status"] == "error" and "is a symbolic link" in row["error"]
    assert summary["totals"]["failed"] == 1 and not list(outside.iterdir())


def test_a_name_as_long_as_the_file_system_allows_is_explained(tmp_path, small):
    stem = "n" * 251  # the clip's name is 255 bytes
    data = tmp_path / "data"
    _clip(data / "bus" / f"{stem}.wav", 1)
    summary = _run(data, tmp_path / "out", small, figures=True)
    (row,) = read_manifest(tmp_path / "out").values()
    assert row["status"] == "ok", row["error"]
    assert summary["totals"]["failed"] == 0 and len(row["clip_id"]) <= 200
    assert all((tmp_path / "out" / f).is_file() for f in row["files"].values())


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        ("min_confidence", math.nan, "min_confidence (--min-confidence) must be a number in [0, 1], got nan"),
        ("min_confidence", 2, "must be a number in [0, 1], got 2"),
        ("percentile", 101.0, "percentile (--percentile) must be a number in [0, 100]"),
        ("delta", math.inf, "delta (--delta) must be a finite number"),
        ("batch_size", 0, "batch_size (--batch-size) must be an integer >= 1"),
        ("audio_format", "aiff", "audio_format (--audio-format) must be one of"),
    ],
)  # fmt: skip
def test_bad_options_are_refused_up_front(setting, value, message):
    with pytest.raises(AnalyzeConfigError) as info:
        AnalyzeConfig(**{setting: value}, method="layercam")
    assert message in str(info.value)


def test_cli_bad_option_and_out_inside_data_exit_2_before_any_work(tmp_path, capsys):
    from listenable.cli import main

    data = _folder(tmp_path / "data", {"bus": ["a"]})
    common = ["--model", "small", "--split", "all", "--device", "cpu"]
    status = main(["analyze", "--method", "layercam", str(data), "--out", str(tmp_path / "o"), "--min-confidence", "nan",
                   *common])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and err == [
        "error: min_confidence (--min-confidence) must be a number in [0, 1], got nan"
    ]
    for out in (data / "run", data):
        status = main(["analyze", "--method", "layercam", str(data), "--out", str(out), *common])
        err = capsys.readouterr().err.strip().splitlines()
        assert status == 2 and len(err) == 1, err
        assert err[0].startswith(f"error: --out {out} is inside the folder data set {data}")
    assert not (tmp_path / "o").exists() and not (data / "run").exists()
    assert sorted(p.name for p in data.rglob("*")) == ["a.wav", "bus"]
