"""Labelled audio data sets: the TAU 2019 Task 1A layout, class folders, and a plain CSV.

Every data set yields ``(waveform, label_index, path)``: ``waveform`` is float32
``(2, samples)`` at 48 kHz, read with :func:`listenable.io.load_audio` inside
``__getitem__`` (so DataLoader workers do the decoding); ``label_index`` is an ``int``
(``-1`` where the split has no labels, e.g. TAU ``fold1_test.csv``); ``path`` is a ``str``.

Rows are validated when the data set is built: the path stays inside the data root, also
once symlinks are resolved; it names a regular file (not a folder or a FIFO named
``.wav``); the label is known and not empty; the row has as many fields as the header
(a stray tab or comma is not read as a column); the file is UTF-8; a file listed twice
with two labels is a bad row naming both lines (a repeated identical row is kept once,
with a warning). The first bad row raises a one-line
:class:`~listenable.errors.DatasetError` naming the file and its line, or, with
``on_error="skip"``, every bad row is logged, left out and recorded in ``.rejected``.
Decoding errors surface later, in ``__getitem__``, as :class:`~listenable.errors.AudioError`.
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TypeVar

import torch
from torch.utils.data import Dataset

from listenable.errors import DatasetError, ListenableError
from listenable.io import display_name, file_problem, load_audio, load_for

__all__ = [
    "AUDIO_EXTENSIONS",
    "TAU_SPLITS",
    "AudioDataset",
    "Guarded",
    "collate_clips",
    "csv_dataset",
    "folder_dataset",
    "group_by_length",
    "open_dataset",
    "tau_dataset",
]

log = logging.getLogger(__name__)

#: File extensions :func:`folder_dataset` picks up (lower case, without the dot).
AUDIO_EXTENSIONS = ("wav", "flac", "ogg", "aiff", "aif")
#: Splits of :func:`tau_dataset`; ``"all"`` reads ``meta.csv``.
TAU_SPLITS = ("train", "evaluate", "test", "all")
_ON_ERROR = ("raise", "skip")
T = TypeVar("T")


class AudioDataset(Dataset):
    """Audio files with class indices; ``dataset[i] -> (waveform (2, samples), label, path)``.

    Args:
        items: ``(path, label_index)`` pairs, in the order the data set yields them;
            ``label_index`` is ``-1`` for unlabelled clips.
        class_names: the class list; ``label_index`` indexes it.
        root: the data root the paths were resolved against.
        rejected: ``(row path, reason)`` of the rows left out (``on_error="skip"``).
    """

    def __init__(
        self,
        items: Sequence[tuple[Path, int]],
        class_names: Sequence[str],
        root: str | os.PathLike,
        *,
        rejected: Sequence[tuple[str, str]] = (),
    ) -> None:
        #: the front end clips are loaded for (rate, channels); ``None``: 48 kHz stereo
        self.front_end = None
        #: the longest clip loaded, in seconds; ``None``: :data:`listenable.io.MAX_DURATION`
        self.max_duration: float | None = None
        self.items: list[tuple[Path, int]] = [(Path(p), int(label)) for p, label in items]
        self.class_names: list[str] = list(class_names)
        self.root = Path(root)
        self.rejected: list[tuple[str, str]] = list(rejected)
        for path, label in self.items:
            if not -1 <= label < len(self.class_names):
                raise DatasetError(
                    f"{path}: label index {label} outside the {len(self.class_names)} classes"
                )

    @property
    def paths(self) -> list[Path]:
        """The audio files, in data-set order."""
        return [path for path, _ in self.items]

    @property
    def labels(self) -> list[int]:
        """The label indices, in data-set order (``-1`` = unlabelled)."""
        return [label for _, label in self.items]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, str]:
        path, label = self.items[index]
        if self.front_end is not None:
            wave, _notes = load_for(path, self.front_end, max_duration=self.max_duration)
        else:
            wave, _notes = load_audio(path, max_duration=self.max_duration)
        return wave, label, str(path)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({len(self)} clips, {len(self.class_names)} classes, "
            f"root={str(self.root)!r})"
        )


class Guarded(Dataset):
    """``dataset[i]`` as ``(wave, label, path, None)``, or ``(None, label, path, error)``
    for a clip that cannot be loaded (``error``: its one-line message), so that one bad
    file costs one record, not the run. Use it with a ``collate_fn`` that keeps the list
    (``lambda batch: batch``), then :func:`group_by_length` the good items."""

    def __init__(self, dataset: AudioDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        path, label = self.dataset.items[index]
        try:
            wave, label, path = self.dataset[index]
            return wave, label, str(path), None
        except ListenableError as exc:
            return None, label, str(path), str(exc)
        except Exception as exc:  # an unexpected decoder failure must not stop the run
            reason = (str(exc).splitlines() or [""])[0]
            return None, label, str(path), f"{display_name(path)}: {type(exc).__name__}: {reason}"


def collate_clips(
    batch: Sequence[tuple[torch.Tensor, int, str]],
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """DataLoader ``collate_fn``: ``(batch, 2, samples)`` float32, ``(batch,)`` int64, paths.

    The waveforms must have equal lengths (crop or pad before, e.g. in a wrapper data set).
    """
    if not batch:
        raise DatasetError("collate_clips: empty batch")
    waves, labels, paths = zip(*batch)
    length = waves[0].shape[-1]
    for wave, path in zip(waves, paths):
        if wave.shape != waves[0].shape:
            raise DatasetError(
                f"{path}: shape {tuple(wave.shape)} differs from {tuple(waves[0].shape)} of "
                f"{paths[0]} in the same batch; clips must have equal length ({length} samples)"
            )
    return torch.stack(waves), torch.tensor(labels, dtype=torch.long), list(paths)


def group_by_length(items: Iterable[T], length: Callable[[T], int]) -> list[list[T]]:
    """``items`` in groups of equal ``length(item)`` (groups in the order their first item
    comes, items in their order), so that clips of different lengths run as separate
    sub-batches: padding them to one length would change a global average pool, and so
    the prediction and the explanation."""
    groups: dict[int, list[T]] = {}
    for item in items:
        groups.setdefault(int(length(item)), []).append(item)
    return list(groups.values())


# --------------------------------------------------------------------------- row checking


class _Rows:
    """Collects the valid rows of one data set; raises or records the bad ones."""

    def __init__(self, root: Path, class_names: Sequence[str] | None, on_error: str) -> None:
        if on_error not in _ON_ERROR:
            raise DatasetError(f"on_error must be one of {_ON_ERROR}, got {on_error!r}")
        self.root = Path(os.path.abspath(root))
        self.real_root = os.path.realpath(self.root)
        self.class_index = (
            None if class_names is None else {c: i for i, c in enumerate(class_names)}
        )
        self.on_error = on_error
        #: real path -> (path, label index, label, where it is listed); insertion-ordered
        self._kept: dict[str, tuple] = {}
        #: real paths listed with two labels -> (first label, where it was first listed)
        self._conflicts: dict[str, tuple[str | None, str]] = {}
        self.rejected: list[tuple[str, str]] = []

    @property
    def items(self) -> list[tuple[Path, int]]:
        return [(path, index) for path, index, *_ in self._kept.values()]

    def add(self, source: Path, line: int | None, row_path: str, label: str | None) -> None:
        """Check one row (``label=None``: unlabelled; ``line=None``: a file found in a
        folder) and keep it or reject it."""
        try:
            path, real = self._check_path(row_path)
            index = -1 if label is None else self._check_label(label)
        except _BadRow as bad:
            self.reject(source, line, row_path, str(bad))
            return
        where = f"line {line}" if line is not None else f"as {row_path}"
        if real in self._conflicts:
            first_label, first_where = self._conflicts[real]
            self.reject(
                source, line, row_path, _two_labels(row_path, label, first_label, first_where)
            )
            return
        if real in self._kept:
            path0, _, first_label, first_where = self._kept[real]
            if first_label == label:
                log.warning(
                    "%s, %s repeats %s (%s); kept once",
                    display_name(source), where, first_where, display_name(path0),
                )  # fmt: skip
                return
            del self._kept[real]
            self._conflicts[real] = (first_label, first_where)
            self.reject(
                source, line, row_path, _two_labels(row_path, label, first_label, first_where)
            )
            return
        self._kept[real] = (path, index, label, where)

    def reject(self, source: Path, line: int | None, row_path: str, reason: str) -> None:
        where = display_name(source) if line is None else f"{display_name(source)}, line {line}"
        message = f"{where}: {reason}"
        if self.on_error == "raise":
            raise DatasetError(message)
        log.warning("skipped row: %s", message)
        self.rejected.append((row_path, message))

    def _check_path(self, row_path: str) -> tuple[Path, str]:
        if not row_path:
            raise _BadRow("empty path")
        joined = os.path.normpath(os.path.join(self.root, row_path))
        if os.path.commonpath([joined, str(self.root)]) != str(self.root):
            raise _BadRow(f"path {row_path!r} leaves the data root {self.root}")
        real = os.path.realpath(joined)
        if os.path.commonpath([real, self.real_root]) != self.real_root:
            raise _BadRow(
                f"path {row_path!r} resolves to {display_name(real)}, outside the data root "
                f"{self.root} (a symlink)"
            )
        problem = file_problem(joined)
        if problem is not None:
            raise _BadRow(f"{problem}: {display_name(joined)}")
        return Path(joined), real

    def _check_label(self, label: str) -> int:
        if self.class_index is None:
            raise AssertionError("labels need a class list")  # internal: callers pass one
        if not label:
            raise _BadRow("empty label")
        if label not in self.class_index:
            known = ", ".join(self.class_index)
            raise _BadRow(f"unknown label {label!r} (classes: {known})")
        return self.class_index[label]


def _two_labels(row_path: str, label, first_label, first_where: str) -> str:
    first_where = f"on {first_where}" if first_where.startswith("line") else first_where
    return (
        f"{row_path!r} is labelled {label!r} here but {first_label!r} {first_where}; "
        "neither is used (remove the wrong row)"
    )


class _BadRow(Exception):
    pass


def _read_table(path: Path, delimiter: str, required: Sequence[str]):
    """Read a delimited file with a header; return ``(header, [(line, fields), ...])``."""
    problem = file_problem(path)
    if problem is not None:
        raise DatasetError(f"{display_name(path)}: {problem}")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"{display_name(path)}: cannot read ({exc.strerror})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise DatasetError(
            f"{display_name(path)}, line {line}: not UTF-8 (byte 0x{raw[exc.start]:02x}); "
            "save the file as UTF-8"
        ) from None
    lines = text.splitlines()
    rows = list(csv.reader(lines, delimiter=delimiter, quoting=csv.QUOTE_MINIMAL))
    sep = "tab" if delimiter == "\t" else repr(delimiter)
    expected = f"a header row naming {', '.join(required)} ({sep}-separated)"
    if not rows or not rows[0]:
        raise DatasetError(f"{path}, line 1: empty; expected {expected}")
    header = [name.strip() for name in rows[0]]
    missing = [name for name in required if name not in header]
    if missing:
        raise DatasetError(
            f"{path}, line 1: header {lines[0]!r} lacks column {', '.join(missing)}; "
            f"expected {expected}"
        )
    body = [(number, fields) for number, fields in enumerate(rows[1:], start=2) if fields]
    return header, body


def _table_rows(
    path: Path, delimiter: str, required: Sequence[str], rows: _Rows, path_col: str, label_col
) -> None:
    header, body = _read_table(path, delimiter, required)
    col = {name: header.index(name) for name in required}
    sep = "tab" if delimiter == "\t" else repr(delimiter)
    for line, fields in body:
        row_path = fields[col[path_col]].strip() if len(fields) > col[path_col] else ""
        if not "".join(fields).strip():
            rows.reject(path, line, "", "a line of only spaces or tabs; remove it")
            continue
        while len(fields) > len(header) and not fields[-1].strip():
            fields = fields[:-1]  # a trailing separator adds no column
        if len(fields) != len(header):
            stray = f"; a stray {sep} inside the row?" if len(fields) > len(header) else ""
            rows.reject(
                path,
                line,
                row_path,
                f"{len(fields)} fields, the header names {len(header)} ({', '.join(header)})"
                + stray,
            )
            continue
        label = None if label_col is None else fields[col[label_col]].strip()
        rows.add(path, line, row_path, label)


# --------------------------------------------------------------------------- TAU 2019 1A


def tau_dataset(
    root: str | os.PathLike, split: str = "train", *, on_error: str = "raise"
) -> AudioDataset:
    """The TAU Urban Acoustic Scenes 2019 development layout (Task 1A, fold 1).

    ``root`` holds ``audio/``, ``meta.csv`` (``filename scene_label identifier
    source_label``) and ``evaluation_setup/fold1_{train,evaluate,test}.csv``, all
    tab-separated with a header row and ``filename`` carrying the ``audio/`` prefix.
    ``split="all"`` reads ``meta.csv``; ``"test"`` has no labels (``-1``).
    The class list is the sorted scene labels of ``meta.csv`` (of the split files when
    ``meta.csv`` is absent). ``on_error="skip"`` leaves bad rows out (see module doc).
    """
    root = Path(root)
    if split not in TAU_SPLITS:
        raise DatasetError(f"split must be one of {TAU_SPLITS}, got {split!r}")
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder (expected a TAU 2019 development tree)")
    meta = root / "meta.csv"
    setup = root / "evaluation_setup"
    class_names = _tau_classes(meta, setup)
    source = meta if split == "all" else setup / f"fold1_{split}.csv"
    rows = _Rows(root, class_names, on_error)
    if split == "test":
        _table_rows(source, "\t", ["filename"], rows, "filename", None)
    else:
        _table_rows(source, "\t", ["filename", "scene_label"], rows, "filename", "scene_label")
    return AudioDataset(rows.items, class_names, root, rejected=rows.rejected)


def _tau_classes(meta: Path, setup: Path) -> list[str]:
    sources = (
        [meta] if meta.is_file() else [setup / f"fold1_{s}.csv" for s in ("train", "evaluate")]
    )
    labels: set[str] = set()
    for source in sources:
        if not source.is_file():
            continue
        header, body = _read_table(source, "\t", ["filename", "scene_label"])
        col = header.index("scene_label")
        labels.update(f[col].strip() for _, f in body if len(f) > col and f[col].strip())
    if not labels:
        raise DatasetError(
            f"{meta.parent}: no scene labels found in meta.csv or "
            "evaluation_setup/fold1_train.csv / fold1_evaluate.csv"
        )
    return sorted(labels)


# --------------------------------------------------------------------------- folders, CSV


def folder_dataset(root: str | os.PathLike, *, on_error: str = "raise") -> AudioDataset:
    """One sub-folder per class (class = folder name, sorted); audio files found recursively.

    Files are those ending in one of :data:`AUDIO_EXTENSIONS` (any case), sorted by path
    within each class. Hidden folders and files (``.name``) are ignored. An entry named
    like an audio file that is not a regular file (a FIFO, a folder named ``x.wav``), or
    that resolves (through a symlink) outside ``root``, is a bad row: it raises a
    :class:`~listenable.errors.DatasetError` naming it, or with ``on_error="skip"`` is
    logged, left out and recorded in ``.rejected``.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder")
    class_dirs = sorted(
        (d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")),
        key=lambda d: d.name,
    )
    if not class_dirs:
        raise DatasetError(f"{root}: no class sub-folders (expected one folder per class)")
    rows = _Rows(root, [d.name for d in class_dirs], on_error)
    for class_dir in class_dirs:
        files = sorted(f for f in class_dir.rglob("*") if _is_audio_name(f, class_dir))
        if not files:
            log.warning("%s: class folder holds no audio files", class_dir)
        for f in files:
            rows.add(class_dir, None, os.path.relpath(f, rows.root), class_dir.name)
    if not rows.items and not rows.rejected:
        raise DatasetError(
            f"{root}: no audio files ({', '.join(AUDIO_EXTENSIONS)}) in its class folders"
        )
    return AudioDataset(rows.items, [d.name for d in class_dirs], root, rejected=rows.rejected)


def _is_audio_name(path: Path, base: Path) -> bool:
    if path.suffix.lower().lstrip(".") not in AUDIO_EXTENSIONS:
        return False
    return not any(part.startswith(".") for part in path.relative_to(base).parts)


def csv_dataset(
    csv_path: str | os.PathLike,
    root: str | os.PathLike | None = None,
    class_names: Sequence[str] | None = None,
    *,
    on_error: str = "raise",
) -> AudioDataset:
    """A comma-separated file with a header ``path,label`` (more columns are ignored).

    Paths are relative to ``root`` (default: the CSV's folder) and must stay inside it.
    ``class_names`` defaults to the sorted labels of the file; when given, other labels
    are errors.
    """
    csv_path = Path(csv_path)
    root = csv_path.parent if root is None else Path(root)
    if class_names is None:
        header, body = _read_table(csv_path, ",", ["path", "label"])
        col = header.index("label")
        class_names = sorted({f[col].strip() for _, f in body if len(f) > col and f[col].strip()})
    rows = _Rows(root, class_names, on_error)
    _table_rows(csv_path, ",", ["path", "label"], rows, "path", "label")
    return AudioDataset(rows.items, class_names, root, rejected=rows.rejected)


def open_dataset(
    path: str | os.PathLike,
    split: str | None = None,
    *,
    default_split: str = "train",
    **options,
) -> AudioDataset:
    """Open ``path`` as whatever kind it is.

    A folder with ``meta.csv`` or ``evaluation_setup/`` -> :func:`tau_dataset` (``split``,
    one of :data:`TAU_SPLITS`; ``None``: ``default_split``); a ``.csv`` file ->
    :func:`csv_dataset`; a folder of class folders -> :func:`folder_dataset`. Sets without
    splits are read whole: their ``split`` must be ``None``, ``default_split`` or
    ``"all"``; any other is refused rather than ignored. ``options`` go to the chosen
    constructor (e.g. ``on_error``).
    """
    path = Path(path)
    if path.is_dir():
        if (path / "meta.csv").is_file() or (path / "evaluation_setup").is_dir():
            return tau_dataset(path, default_split if split is None else split, **options)
        if any(d.is_dir() and not d.name.startswith(".") for d in path.iterdir()):
            _whole(path, split, default_split, "a folder of class folders")
            return folder_dataset(path, **options)
        raise DatasetError(
            f"{path}: not a data set (expected a TAU tree with meta.csv, a folder of class "
            "folders, or a .csv file)"
        )
    if path.suffix.lower() == ".csv" and path.is_file():
        _whole(path, split, default_split, "a CSV list")
        return csv_dataset(path, **options)
    if not path.exists():
        raise DatasetError(f"{path}: not found")
    raise DatasetError(f"{path}: not a data set (expected a folder or a .csv file)")


def _whole(path: Path, split: str | None, default_split: str, kind: str) -> None:
    if split not in (None, default_split, "all"):
        raise DatasetError(
            f"{display_name(path)}: {kind} has no splits, so split {split!r} cannot be read; "
            f"leave the split out (splits {', '.join(TAU_SPLITS)} exist in TAU trees only)"
        )
