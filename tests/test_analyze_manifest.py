"""The manifest's one row type: malformed lines skipped with a warning naming the file and
line (analyze, distributed and the gallery read through it), stable clip ids, short
temporary names, the run folder's lock and links. No model runs here."""

import json
import logging
import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from listenable.atomic import atomic_path, write_text
from listenable.manifest import (
    LOCK,
    MAX_ID_BYTES,
    OutputLinkError,
    RunLockedError,
    assign_ids,
    read_rows,
    refuse_links,
    row_problem,
    run_lock,
)

GOOD = {"clip_id": "good", "status": "ok", "selected": True, "files": {}, "label": "bus"}
#: (line bytes, what the warning says) of every kind of bad line
BAD = [
    (json.dumps({"clip_id": "a", "selected": True, "files": {}}), "status None is not"),
    (json.dumps({"clip_id": "b", "status": "ok", "files": {}}), "selected is not"),
    (json.dumps({"clip_id": ["c"], "status": "ok", "selected": True, "files": {}}), "no clip_id"),
    (json.dumps({"clip_id": "d", "status": "ok", "selected": True, "files": "x.wav"}), "files"),
    (json.dumps({**GOOD, "clip_id": "e", "label": 3}), "label is not a string"),
    (json.dumps({**GOOD, "clip_id": "f", "confidence": "high"}), "confidence is not a number"),
    (json.dumps({**GOOD, "clip_id": "g", "notes": "x"}), "notes is not a list"),
    (json.dumps([1, 2]), "a JSON list"),
    ('{"clip_id": "g", "status": "ok", "selec', "not JSON"),
]


def _write_bad_manifest(path) -> None:
    lines = [json.dumps(GOOD).encode()] + [line.encode() for line, _ in BAD]
    lines.insert(3, b'{"clip_id": "caf\xe9", "status": "ok"}')  # Latin-1, not UTF-8
    path.write_bytes(b"\n".join(lines) + b"\n")


def test_every_bad_line_is_skipped_with_a_warning_naming_file_and_line(tmp_path, caplog):
    path = tmp_path / "manifest.jsonl"
    _write_bad_manifest(path)
    with caplog.at_level(logging.WARNING, logger="listenable.manifest"):
        rows = read_rows(path)
    assert list(rows) == ["good"]
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == len(BAD) + 1
    assert f"{path}, line 4: not UTF-8, skipped" in warnings
    numbered = [w for w in warnings if "UTF-8" not in w]
    for k, ((_line, reason), warning) in enumerate(zip(BAD, numbered)):
        number = k + 2 if k < 2 else k + 3  # the UTF-8 line is line 4
        assert warning.startswith(f"{path}, line {number}: ") and reason in warning, warning


def test_row_problem_accepts_what_analyze_writes():
    row = {**GOOD, "path": "/d/x.wav", "data_root": "/d", "rel_path": "x.wav", "fingerprint": "f"}
    row |= {"predicted": None, "confidence": None, "correct": None, "mask_profile": [0.1, 0]}
    row |= {"probabilities": {"bus": 1.0}, "notes": ["n"], "error": None, "methods": {}}
    assert row_problem(row) is None
    assert row_problem({**row, "status": "done"}) and row_problem({**row, "correct": 1})


def test_the_gallery_builds_over_a_malformed_manifest(tmp_path, caplog):
    from listenable.report.gallery import build_gallery, read_manifest_rows

    out = tmp_path / "run"
    out.mkdir()
    _write_bad_manifest(out / "manifest.jsonl")
    assert [r["clip_id"] for r in read_manifest_rows(out / "manifest.jsonl")] == ["good"]
    index = build_gallery(out)
    assert index.is_file()
    assert "line 4: not UTF-8, skipped" in caplog.text


def test_clip_ids_are_stems_stable_under_additions():
    """Unique stems stay stems; repeated stems get a hash of the relative path (never of
    their order); ids the manifest already gives are kept, so a same-stem file added later
    does not rename an explained clip."""
    first = assign_ids(["bus/x.wav", "park/y.wav"])
    assert first == ["x", "y"]
    both = assign_ids(["bus/x.wav", "park/x.wav", "park/y.wav"])
    assert both[0] != both[1] and both[0].startswith("x-") and both[2] == "y"
    assert assign_ids(["park/x.wav", "bus/x.wav"]) == [both[1], both[0]]  # not order-dependent
    kept = assign_ids(["bus/x.wav", "park/x.wav"], known={"bus/x.wav": "x"})
    assert kept == ["x", both[1]]
    # a stem that looks like a hashed id of another clip is still unique
    tricky = assign_ids(["bus/x.wav", "park/x.wav", f"tram/{both[0]}.wav"])
    assert len(set(tricky)) == 3
    # an id the manifest gives that cannot name a file is not taken
    assert assign_ids(["bus/x.wav"], known={"bus/x.wav": "../../etc/x"}) == ["x"]


def test_clip_ids_fit_file_names():
    stem = "é" * 120  # 240 bytes in UTF-8
    (one,) = assign_ids([f"bus/{stem}.wav"])
    assert len(os.fsencode(one)) <= MAX_ID_BYTES and one.startswith("é" * 20)
    assert assign_ids([f"bus/{stem}.wav"]) == [one]  # stable


def test_temporary_names_are_short(tmp_path):
    """Any name that fits the file system (255 bytes) can be written atomically: the
    temporary name is at most 54 bytes, whatever the final one."""
    name = "x" * 250 + ".json"
    with atomic_path(tmp_path / name) as tmp:
        assert len(tmp.name) <= 54 and tmp.name.startswith(".x") and ".tmp-" in tmp.name
        assert tmp.name.endswith(".json")
        tmp.write_text("{}")
    assert (tmp_path / name).read_text() == "{}"
    write_text(tmp_path / ("ü" * 125 + ".txt"), "ok")  # 254 bytes
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


# --------------------------------------------------------------------------- the lock

_HOLDER = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
os.ftruncate(fd, 0)
os.pwrite(fd, f"{os.getpid()}\\n".encode(), 0)
print("locked", flush=True)
sys.stdin.read()
"""


@pytest.fixture
def held_lock(tmp_path):
    """Another process holding the lock of ``tmp_path / "out"`` until the test ends."""
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(out / LOCK)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline() == "locked\n"
    yield out, proc.pid
    proc.stdin.close()
    proc.wait(timeout=60)
    proc.stdout.close()


def test_a_second_lock_is_refused_naming_the_holder(held_lock):
    out, pid = held_lock
    with pytest.raises(RunLockedError) as info, run_lock(out):
        pass
    assert str(info.value) == f"another analyze is running on {out} (pid {pid})"


def test_the_lock_is_exclusive_in_one_process_and_released(tmp_path):
    out = tmp_path / "out"
    with run_lock(out):
        with pytest.raises(RunLockedError, match=f"pid {os.getpid()}"), run_lock(out):
            pass
    with run_lock(out):  # released: taken again
        pass


def test_analyze_refused_while_locked_touches_nothing(tmp_path):
    """A run refused by the lock writes nothing and leaves the other run's temporaries."""
    from listenable.analyze import AnalyzeConfig, analyze

    out = tmp_path / "out"
    stale = out / "bus" / ".x.tmp-abcd1234.ogg"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"being written")
    data = SimpleNamespace(paths=[], labels=[], class_names=[], root=tmp_path)
    with run_lock(out):
        with pytest.raises(RunLockedError, match="another analyze is running on"):
            analyze(data, out, None, {}, AnalyzeConfig(method="layercam"))
    assert stale.exists() and sorted(p.name for p in out.iterdir()) == [LOCK, "bus"]


def test_cli_refuses_a_second_analyze_with_exit_status_2(held_lock, tmp_path, capsys):
    from listenable.cli import main

    out, pid = held_lock
    (tmp_path / "data" / "bus").mkdir(parents=True)
    _tone_file(tmp_path / "data" / "bus" / "a.wav")
    status = main(["analyze", "--method", "layercam", str(tmp_path / "data"), "--out", str(out), "--model", "small",
                   "--split", "all", "--device", "cpu"])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and err == [f"error: another analyze is running on {out} (pid {pid})"]
    assert sorted(p.name for p in out.iterdir()) == [LOCK]


def _tone_file(path, seconds=0.6, rate=16_000):
    import soundfile as sf

    t = np.arange(int(seconds * rate)) / rate
    sf.write(path, 0.3 * np.sin(2 * np.pi * 440 * t), rate)


# --------------------------------------------------------------------------- links


def test_links_inside_out_are_refused(tmp_path):
    out, outside = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    outside.mkdir()
    (out / "bus").symlink_to(outside)
    (out / "manifest.jsonl").symlink_to(outside / "manifest.jsonl")  # dangling
    with pytest.raises(OutputLinkError, match="bus is a symbolic link"):
        refuse_links(out, out / "bus" / "x.ogg")
    with pytest.raises(OutputLinkError, match="manifest.jsonl is a symbolic link"):
        refuse_links(out, out / "manifest.jsonl")
    refuse_links(out, out / "park" / "x.ogg")  # missing folders are fine
    linked_out = tmp_path / "linked"
    linked_out.symlink_to(out)
    refuse_links(linked_out, linked_out / "park" / "x.ogg")  # --out itself may be a link


def test_stale_temporaries_are_removed_but_never_through_links(tmp_path):
    from listenable.analyze import remove_stale_temporaries

    out, outside = tmp_path / "out", tmp_path / "elsewhere"
    (out / "bus").mkdir(parents=True)
    outside.mkdir()
    (out / "bus" / ".x.tmp-1.ogg").write_bytes(b"stale")
    (out / "bus" / "x.tmp-2.ogg").write_bytes(b"not a temporary name")
    (outside / ".y.tmp-3.ogg").write_bytes(b"someone else's")
    (out / "park").symlink_to(outside)
    (out / ".z.tmp-4.ogg").symlink_to(outside / ".y.tmp-3.ogg")
    assert remove_stale_temporaries(out) == 1
    assert not (out / "bus" / ".x.tmp-1.ogg").exists() and (out / "bus" / "x.tmp-2.ogg").exists()
    assert (outside / ".y.tmp-3.ogg").exists() and (out / ".z.tmp-4.ogg").is_symlink()


def test_dangling_manifest_link_stops_analyze_before_any_write(tmp_path):
    from listenable.analyze import AnalyzeConfig, analyze

    out, outside = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    outside.mkdir()
    (out / "manifest.jsonl").symlink_to(outside / "victim.jsonl")
    data = SimpleNamespace(paths=[], labels=[], class_names=[], root=tmp_path)
    with pytest.raises(OutputLinkError, match="never writes through links"):
        analyze(data, out, None, {}, AnalyzeConfig(method="layercam"))
    assert not list(outside.iterdir())


# --------------------------------------------------------------------------- the writer


def _explanation(rate=16_000, n=8_000):
    wave = torch.sin(torch.arange(n, dtype=torch.float32) / 10)[None]
    return SimpleNamespace(sample_rate=rate, listenable=0.5 * wave, residual=0.5 * wave), wave


@pytest.mark.parametrize("failure", ["libsndfile", "enospc"])
def test_a_full_disk_is_named_and_leaves_no_file(tmp_path, monkeypatch, failure):
    """libsndfile's "System error." on a full disk, or ENOSPC from a JSON write: the
    writer removes every file of the clip and says "no space left on device"."""
    import soundfile

    from listenable.writers import OutputWriter, write_error_reason

    if failure == "libsndfile":
        import listenable.report.audio

        real = listenable.report.audio.write_track

        def write_track(path, *args):
            if ".listenable." in path.name:
                raise soundfile.LibsndfileError(2, "Error writing: ")
            real(path, *args)

        monkeypatch.setattr("listenable.report.audio.write_track", write_track)
        monkeypatch.setattr("listenable.writers.free_bytes", lambda folder: 0.0)
    else:

        def write_json(path, obj):
            raise OSError(28, "No space left on device")

        monkeypatch.setattr("listenable.writers.write_json", write_json)
    out = tmp_path / "out"
    writer = OutputWriter(out, figures=False, audio_format="flac", original=True)
    expl, wave = _explanation()
    with pytest.raises(OSError) as info:
        writer.write(expl, wave, "bus/clip", record={})
    assert info.value.errno == 28 and write_error_reason(info.value) == "no space left on device"
    assert not [p for p in out.rglob("*") if p.is_file()]


def test_a_libsndfile_system_error_with_free_space_is_not_called_a_full_disk(tmp_path, monkeypatch):
    import soundfile

    from listenable.writers import OutputWriter, write_error_reason

    def write_track(path, *args):
        raise soundfile.LibsndfileError(2, "Error writing: ")

    monkeypatch.setattr("listenable.report.audio.write_track", write_track)
    monkeypatch.setattr("listenable.writers.free_bytes", lambda folder: 1e12)
    writer = OutputWriter(tmp_path, figures=False, audio_format="ogg")
    expl, wave = _explanation()
    with pytest.raises(soundfile.LibsndfileError) as info:
        writer.write(expl, wave, "clip", record={})
    assert write_error_reason(info.value) == "Error writing: System error."
