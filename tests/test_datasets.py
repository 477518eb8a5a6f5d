import logging

import numpy as np
import pytest
import soundfile as sf
import torch
from torch.utils.data import DataLoader

from listenable.data import (
    AudioDataset,
    collate_clips,
    csv_dataset,
    folder_dataset,
    open_dataset,
    tau_dataset,
)
from listenable.errors import AudioError, DatasetError

SR = 48_000

# (filename, scene_label, split); the order is the order of the rows in the files
TAU_ROWS = [
    ("audio/bus-lyon-1-10-a.wav", "bus", "train"),
    ("audio/airport-barcelona-0-0-a.wav", "airport", "train"),
    ("audio/park-helsinki-2-5-b.wav", "park", "train"),
    ("audio/airport-barcelona-0-1-a.wav", "airport", "evaluate"),
    ("audio/park-helsinki-3-0-c.wav", "park", "evaluate"),
    ("audio/metro_station-paris-4-0-a.wav", "metro_station", "evaluate"),
]


def _wav(path, seconds=1.0, value=0.1):
    path.parent.mkdir(parents=True, exist_ok=True)
    n = int(seconds * SR)
    data = np.stack([np.full(n, value), np.full(n, -value)], axis=1)
    sf.write(path, data, SR, subtype="PCM_24")


def _tsv(path, header, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(["\t".join(header), *["\t".join(r) for r in rows]]) + "\n")


@pytest.fixture
def tau_root(tmp_path):
    root = tmp_path / "TAU-urban-acoustic-scenes-2019-development"
    for i, (name, _, _) in enumerate(TAU_ROWS):
        _wav(root / name, value=0.01 * (i + 1))
    meta = [(n, s, "-".join(n[6:].split("-")[1:3]), n[-5]) for n, s, _ in TAU_ROWS]
    _tsv(root / "meta.csv", ["filename", "scene_label", "identifier", "source_label"], meta)
    setup = root / "evaluation_setup"
    for split in ("train", "evaluate"):
        rows = [(n, s) for n, s, sp in TAU_ROWS if sp == split]
        _tsv(setup / f"fold1_{split}.csv", ["filename", "scene_label"], rows)
    _tsv(
        setup / "fold1_test.csv", ["filename"], [(n,) for n, _, sp in TAU_ROWS if sp == "evaluate"]
    )
    return root


CLASSES = ["airport", "bus", "metro_station", "park"]


def test_tau_splits_classes_labels_order(tau_root):
    train = tau_dataset(tau_root, "train")
    assert train.class_names == CLASSES
    assert len(train) == 3
    assert train.paths == [tau_root / n for n, _, sp in TAU_ROWS if sp == "train"]
    assert train.labels == [1, 0, 3]
    assert train.rejected == []

    evaluate = tau_dataset(tau_root, "evaluate")
    assert [evaluate.class_names[i] for i in evaluate.labels] == [
        "airport",
        "park",
        "metro_station",
    ]
    test = tau_dataset(tau_root, "test")
    assert test.paths == evaluate.paths and test.labels == [-1, -1, -1]
    everything = tau_dataset(tau_root, "all")
    assert len(everything) == 6 and everything.class_names == CLASSES

    wave, label, path = train[1]
    assert wave.shape == (2, SR) and wave.dtype == torch.float32
    assert label == 0 and path == str(tau_root / "audio/airport-barcelona-0-0-a.wav")
    assert wave[0, 0].item() == pytest.approx(0.02, abs=1e-6)  # the second file written
    assert wave[1, 0].item() == pytest.approx(-0.02, abs=1e-6)


def test_tau_classes_from_split_files_without_meta(tau_root):
    (tau_root / "meta.csv").unlink()
    assert tau_dataset(tau_root, "train").class_names == CLASSES
    assert len(tau_dataset(tau_root, "evaluate")) == 3
    with pytest.raises(DatasetError, match="meta.csv"):
        tau_dataset(tau_root, "all")


def test_tau_bad_split_and_root(tau_root, tmp_path):
    with pytest.raises(DatasetError, match="split"):
        tau_dataset(tau_root, "validation")
    with pytest.raises(DatasetError, match="not a folder"):
        tau_dataset(tmp_path / "nowhere")


def _add_train_row(root, *fields):
    path = root / "evaluation_setup" / "fold1_train.csv"
    path.write_text(path.read_text() + "\t".join(fields) + "\n")
    return path


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        (("audio/../../x.wav", "bus"), "leaves the data root"),
        (("audio/gone-a.wav", "bus"), "file not found"),
        (("audio/bus-lyon-1-10-a.wav", "spaceship"), "unknown label 'spaceship'"),
        (("audio/bus-lyon-1-10-a.wav",), "1 fields"),
    ],
)
def test_tau_bad_row_names_file_and_line(tau_root, fields, reason):
    _wav(tau_root.parent / "x.wav")  # exists, so escaping the root is what is wrong
    csv_path = _add_train_row(tau_root, *fields)
    with pytest.raises(DatasetError) as info:
        tau_dataset(tau_root, "train")
    message = str(info.value)
    assert str(csv_path) in message and "line 5" in message and reason in message
    assert "\n" not in message


def test_absolute_paths_inside_root_ok_outside_rejected(tau_root):
    inside = tau_root / "audio/bus-lyon-9-9-a.wav"
    outside = tau_root.parent / "x.wav"
    _wav(inside)
    _wav(outside)
    _add_train_row(tau_root, str(inside), "bus")
    assert tau_dataset(tau_root, "train").paths[-1] == inside
    _add_train_row(tau_root, str(outside), "bus")
    with pytest.raises(DatasetError, match="line 6: path .* leaves the data root"):
        tau_dataset(tau_root, "train")


def test_tau_wrong_header(tau_root):
    path = tau_root / "evaluation_setup" / "fold1_evaluate.csv"
    text = path.read_text()
    path.write_text(text.replace("\t", ","))  # comma-separated: one column named oddly
    with pytest.raises(DatasetError) as info:
        tau_dataset(tau_root, "evaluate")
    assert str(path) in str(info.value) and "line 1" in str(info.value)
    assert "scene_label" in str(info.value)
    path.write_text("")
    with pytest.raises(DatasetError, match="line 1: empty"):
        tau_dataset(tau_root, "evaluate")
    # header errors are about the whole file: "skip" does not hide them
    path.write_text("file\tlabel\n")
    with pytest.raises(DatasetError, match="lacks column filename, scene_label"):
        tau_dataset(tau_root, "evaluate", on_error="skip")


def test_tau_skip_records_rejected_rows(tau_root, caplog):
    _wav(tau_root.parent / "x.wav")
    _add_train_row(tau_root, "audio/../../x.wav", "bus")
    _add_train_row(tau_root, "audio/gone-a.wav", "park")
    _add_train_row(tau_root, "audio/park-helsinki-3-0-c.wav", "spaceship")
    _add_train_row(tau_root, "audio/park-helsinki-3-0-c.wav", "park")  # a good row after
    with caplog.at_level(logging.WARNING, logger="listenable.data.datasets"):
        data = tau_dataset(tau_root, "train", on_error="skip")
    assert len(data) == 4 and data.paths[-1].name == "park-helsinki-3-0-c.wav"
    assert [p for p, _ in data.rejected] == [
        "audio/../../x.wav",
        "audio/gone-a.wav",
        "audio/park-helsinki-3-0-c.wav",
    ]
    reasons = [r for _, r in data.rejected]
    assert "line 5" in reasons[0] and "leaves the data root" in reasons[0]
    assert "line 6" in reasons[1] and "file not found" in reasons[1]
    assert "line 7" in reasons[2] and "unknown label" in reasons[2]
    assert sum("skipped row" in r.getMessage() for r in caplog.records) == 3
    with pytest.raises(DatasetError, match="on_error"):
        tau_dataset(tau_root, "train", on_error="ignore")


def test_folder_dataset(tmp_path):
    root = tmp_path / "scenes"
    _wav(root / "park" / "b.wav")
    _wav(root / "park" / "a.FLAC".lower())
    _wav(root / "bus" / "day1" / "x.wav")
    (root / "bus" / "notes.txt").write_text("not audio")
    _wav(root / ".cache" / "hidden.wav")
    (root / "stray.wav").write_bytes(b"")  # files beside the class folders are ignored
    data = folder_dataset(root)
    assert data.class_names == ["bus", "park"]
    assert [p.relative_to(root).as_posix() for p in data.paths] == [
        "bus/day1/x.wav",
        "park/a.flac",
        "park/b.wav",
    ]
    assert data.labels == [0, 1, 1]
    assert open_dataset(root).items == data.items
    with pytest.raises(DatasetError, match="no class sub-folders"):
        folder_dataset(root / "park")


def test_csv_dataset(tmp_path):
    root = tmp_path / "clips"
    _wav(root / "one.wav")
    _wav(root / "sub" / "two.wav")
    listing = root / "list.csv"
    listing.write_text("path,label\none.wav,tram\nsub/two.wav,bus\n")
    data = csv_dataset(listing)
    assert data.class_names == ["bus", "tram"] and data.labels == [1, 0]
    assert data.paths == [root / "one.wav", root / "sub" / "two.wav"]
    assert open_dataset(listing).items == data.items

    # given class list, paths relative to another root
    elsewhere = tmp_path / "list2.csv"
    elsewhere.write_text("path,label,comment\none.wav,tram,x\nsub/two.wav,metro,y\n")
    with pytest.raises(DatasetError, match=r"list2\.csv, line 3: unknown label 'metro'"):
        csv_dataset(elsewhere, root=root, class_names=["bus", "tram"])
    data = csv_dataset(elsewhere, root=root, class_names=["bus", "tram"], on_error="skip")
    assert len(data) == 1 and data.rejected[0][0] == "sub/two.wav"

    listing.write_text("file;label\none.wav;tram\n")
    with pytest.raises(DatasetError, match="line 1: header .* lacks column path, label"):
        csv_dataset(listing)
    listing.write_text("path,label\n../escape.wav,tram\n")
    with pytest.raises(DatasetError, match="line 2: path '../escape.wav' leaves the data root"):
        csv_dataset(listing)


def test_open_dataset_kinds(tau_root, tmp_path):
    assert len(open_dataset(tau_root)) == 3
    assert len(open_dataset(tau_root, split="evaluate")) == 3
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError, match="not a data set"):
        open_dataset(empty)
    text = tmp_path / "x.txt"
    text.write_text("hello")
    with pytest.raises(DatasetError, match="not a data set"):
        open_dataset(text)
    with pytest.raises(DatasetError, match="not found"):
        open_dataset(tmp_path / "missing.csv")


def test_dataloader_and_collate(tau_root):
    data = tau_dataset(tau_root, "all")
    loader = DataLoader(data, batch_size=4, num_workers=0, collate_fn=collate_clips)
    batches = list(loader)
    assert [b[0].shape for b in batches] == [(4, 2, SR), (2, 2, SR)]
    waves, labels, paths = batches[0]
    assert waves.dtype == torch.float32 and labels.dtype == torch.long
    assert labels.tolist() == data.labels[:4]
    assert paths == [str(p) for p in data.paths[:4]]
    short = torch.zeros(2, SR // 2)
    with pytest.raises(DatasetError, match="clips must have equal length"):
        collate_clips([data[0], (short, 0, "short.wav")])


def test_decode_errors_surface_in_getitem(tau_root):
    data = tau_dataset(tau_root, "train")
    data.paths[0].write_bytes(b"RIFF not really a wave file")
    with pytest.raises(AudioError, match="not a readable audio file"):
        data[0]
    wave, _, _ = data[1]  # the others still load
    assert wave.shape == (2, SR)


def test_audio_dataset_checks_labels(tmp_path):
    with pytest.raises(DatasetError, match="outside the 2 classes"):
        AudioDataset([(tmp_path / "a.wav", 2)], ["a", "b"], tmp_path)
    data = AudioDataset([(tmp_path / "a.wav", -1)], ["a", "b"], tmp_path)
    assert data.labels == [-1] and "1 clips" in repr(data)
