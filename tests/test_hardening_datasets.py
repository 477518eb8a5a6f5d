"""Hardening of data-set rows: every bad row is refused (or, with ``on_error="skip"``,
recorded) in one line naming the file and its line; nothing is read from outside the data
root, even through a symlink; a split that does not exist is refused, never ignored."""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest
import soundfile as sf

from listenable.data import csv_dataset, folder_dataset, open_dataset, tau_dataset
from listenable.data.datasets import group_by_length
from listenable.errors import DatasetError

SR = 48_000


def _wav(path, seconds=0.5):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.zeros((int(seconds * SR), 2), np.float32), SR)


@pytest.fixture
def listing(tmp_path):
    """``clips/{a,b,c}.wav`` and a writer of ``clips/list.csv`` (header ``path,label``)."""
    root = tmp_path / "clips"
    for name in ("a", "b", "c"):
        _wav(root / f"{name}.wav")

    def write(*rows: str, header: str = "path,label", encoding: str = "utf-8"):
        path = root / "list.csv"
        path.write_bytes("\n".join([header, *rows, ""]).encode(encoding))
        return path

    return root, write


def _one_error(make, *args, **kwargs) -> str:
    with pytest.raises(DatasetError) as info:
        make(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    "row, line, reason",
    [
        ("gone.wav,bus", 3, "file not found"),
        ("b.wav,", 3, "empty label"),
        ("b.wav,spaceship", 3, "unknown label 'spaceship'"),
        ("b,x.wav,bus", 3, "3 fields, the header names 2 (path, label); a stray ','"),
        ("   ", 3, "a line of only spaces or tabs"),
        ("sub.wav,bus", 3, "not a regular file (a folder)"),
        ("pipe.wav,bus", 3, "not a regular file (a FIFO)"),
    ],
    ids=["missing", "empty_label", "unknown_label", "stray_comma", "spaces", "folder", "fifo"],
)
def test_bad_csv_row_names_file_and_line(listing, row, line, reason):
    root, write = listing
    (root / "sub.wav").mkdir()
    os.mkfifo(root / "pipe.wav")
    path = write("a.wav,bus", row, "c.wav,tram")
    message = _one_error(csv_dataset, path, class_names=["bus", "tram"])
    assert message.startswith(f"{path}, line {line}: ") and reason in message, message
    data = csv_dataset(path, class_names=["bus", "tram"], on_error="skip")
    assert [p.name for p in data.paths] == ["a.wav", "c.wav"]
    ((_, recorded),) = data.rejected
    assert recorded == message


def test_stray_tab_in_a_tau_row(tmp_path):
    root = tmp_path / "tau"
    _wav(root / "audio" / "a.wav")
    (root / "evaluation_setup").mkdir()
    (root / "meta.csv").write_text("filename\tscene_label\naudio/a.wav\tbus\n")
    split = root / "evaluation_setup" / "fold1_train.csv"
    split.write_text("filename\tscene_label\naudio/a.wav\t\tbus\naudio/a.wav\tbus\t\n")
    message = _one_error(tau_dataset, root, "train")
    assert f"{split}, line 2: 3 fields, the header names 2" in message
    assert "a stray tab inside the row?" in message
    data = tau_dataset(root, "train", on_error="skip")  # a trailing tab adds no column
    assert data.paths == [root / "audio" / "a.wav"] and len(data.rejected) == 1


def test_latin1_csv_names_the_line(listing):
    _root, write = listing
    path = write("a.wav,bus", "b.wav,caf\xe9", encoding="latin-1")
    message = _one_error(csv_dataset, path)
    assert message == f"{path}, line 3: not UTF-8 (byte 0xe9); save the file as UTF-8"
    # a whole-file problem: skipping rows does not hide it
    assert _one_error(csv_dataset, path, on_error="skip") == message


def test_duplicate_row_is_kept_once_with_a_warning(listing, caplog):
    _root, write = listing
    path = write("a.wav,bus", "b.wav,tram", "./a.wav,bus")
    with caplog.at_level(logging.WARNING, logger="listenable.data.datasets"):
        data = csv_dataset(path)
    assert [p.name for p in data.paths] == ["a.wav", "b.wav"] and not data.rejected
    (record,) = caplog.records
    assert f"{path}, line 4 repeats line 2" in record.getMessage()
    assert "kept once" in record.getMessage()


def test_file_listed_with_two_labels_is_a_bad_row_naming_both_lines(listing):
    _root, write = listing
    path = write("a.wav,bus", "b.wav,tram", "a.wav,tram", "c.wav,bus")
    message = _one_error(csv_dataset, path)
    assert message == (
        f"{path}, line 4: 'a.wav' is labelled 'tram' here but 'bus' on line 2; neither is "
        "used (remove the wrong row)"
    )
    data = csv_dataset(path, on_error="skip")  # neither label is taken
    assert [p.name for p in data.paths] == ["b.wav", "c.wav"]
    assert [reason for _, reason in data.rejected] == [message]


def test_symlink_in_audio_resolving_outside_the_root_is_a_bad_row(tmp_path):
    root = tmp_path / "tau"
    _wav(root / "audio" / "a.wav")
    _wav(tmp_path / "secret.wav")
    (root / "audio" / "link.wav").symlink_to(tmp_path / "secret.wav")
    (root / "audio" / "inside.wav").symlink_to(root / "audio" / "a.wav")
    (root / "evaluation_setup").mkdir()
    (root / "meta.csv").write_text("filename\tscene_label\naudio/a.wav\tbus\naudio/link.wav\tbus\n")
    message = _one_error(tau_dataset, root, "all")
    assert f"{root / 'meta.csv'}, line 3: path 'audio/link.wav' resolves to" in message
    assert "outside the data root" in message and "secret.wav" in message
    data = tau_dataset(root, "all", on_error="skip")
    assert data.paths == [root / "audio" / "a.wav"]
    # a symlink that stays inside the root is an ordinary row
    (root / "meta.csv").write_text("filename\tscene_label\naudio/inside.wav\tbus\n")
    assert tau_dataset(root, "all").paths == [root / "audio" / "inside.wav"]


def test_folder_set_symlinks_and_special_files(tmp_path):
    root = tmp_path / "scenes"
    _wav(root / "bus" / "a.wav")
    _wav(root / "park" / "b.wav")
    _wav(tmp_path / "outside" / "secret.wav")
    (root / "park" / "leak.wav").symlink_to(tmp_path / "outside" / "secret.wav")
    (root / "tram").symlink_to(tmp_path / "outside", target_is_directory=True)
    os.mkfifo(root / "bus" / "pipe.wav")
    message = _one_error(folder_dataset, root)
    assert message.startswith(f"{root / 'bus'}: ") and "pipe.wav" in message
    assert "not a regular file (a FIFO)" in message
    data = folder_dataset(root, on_error="skip")
    assert [p.relative_to(root).as_posix() for p in data.paths] == ["bus/a.wav", "park/b.wav"]
    reasons = sorted(reason for _, reason in data.rejected)
    assert len(reasons) == 3
    assert "not a regular file (a FIFO)" in reasons[0]
    assert all("outside the data root" in r for r in reasons[1:])
    assert {r.split(":")[0] for r in reasons[1:]} == {str(root / "park"), str(root / "tram")}


def test_folder_named_like_audio_in_a_class_folder(tmp_path):
    root = tmp_path / "scenes"
    _wav(root / "bus" / "a.wav")
    _wav(root / "bus" / "takes.wav" / "b.wav")  # a folder named .wav: its files are clips
    data = folder_dataset(root, on_error="skip")
    assert [p.relative_to(root).as_posix() for p in data.paths] == [
        "bus/a.wav",
        "bus/takes.wav/b.wav",
    ]
    ((row, reason),) = data.rejected
    assert row == "bus/takes.wav" and "not a regular file (a folder)" in reason


@pytest.mark.parametrize("kind", ["folder", "csv"])
def test_split_of_a_set_without_splits_is_refused(tmp_path, listing, kind):
    if kind == "folder":
        path = tmp_path / "scenes"
        _wav(path / "bus" / "a.wav")
    else:
        path = listing[1]("a.wav,bus")
    for whole in (None, "train", "all"):
        assert len(open_dataset(path, split=whole)) == 1
    assert len(open_dataset(path, split="evaluate", default_split="evaluate")) == 1
    for split in ("bogus", "evaluate"):
        message = _one_error(open_dataset, path, split=split)
        assert f"has no splits, so split {split!r} cannot be read" in message
        assert "train, evaluate, test, all" in message and str(path) in message


def test_bogus_split_of_a_tau_tree_names_the_splits(tmp_path):
    root = tmp_path / "tau"
    _wav(root / "audio" / "a.wav")
    (root / "meta.csv").write_text("filename\tscene_label\naudio/a.wav\tbus\n")
    message = _one_error(open_dataset, root, split="bogus")
    assert "split must be one of ('train', 'evaluate', 'test', 'all'), got 'bogus'" in message


def test_group_by_length_keeps_order():
    items = [("a", 3), ("b", 5), ("c", 3), ("d", 4), ("e", 5)]
    groups = group_by_length(items, lambda item: item[1])
    assert groups == [[("a", 3), ("c", 3)], [("b", 5), ("e", 5)], [("d", 4)]]
