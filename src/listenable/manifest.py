"""The run folder of ``listenable analyze``: the manifest's row type (one reader for
``analyze``, :mod:`listenable.distributed` and the gallery), the clip ids, the plan and
fingerprint that say which rows still stand, the refusal of symbolic links, and the lock
that makes one run the folder's only writer.

A manifest is JSON lines, one object per clip; the last line of a ``clip_id`` wins. A line
that is not UTF-8, not JSON (a run killed mid-write tears its last line) or not a valid
row (:func:`row_problem`) is skipped with a warning naming the file and the line.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TypedDict

from listenable.errors import ListenableError, UsageError

__all__ = [
    "MANIFEST",
    "ManifestRow",
    "assign_ids",
    "compact",
    "OutputLinkError",
    "Plan",
    "RunLockedError",
    "fingerprint",
    "format_line",
    "last_rows",
    "make_plan",
    "model_identity",
    "open_append",
    "read_lines",
    "read_rows",
    "refuse_links",
    "relative_path",
    "row_key",
    "row_problem",
    "run_lock",
    "still_good",
]

log = logging.getLogger(__name__)

MANIFEST = "manifest.jsonl"
#: Rows of clips that are not in the data set of the last run (moved out of the manifest).
DROPPED = "manifest.dropped.jsonl"
#: The lock file a run holds (``fcntl.flock``) for as long as it writes into the folder.
LOCK = ".analyze.lock"


class ManifestRow(TypedDict, total=False):
    """One clip of a manifest. Required: ``clip_id``, ``status``, ``selected``, ``files``;
    the other keys are checked when present (``None`` allowed where marked)."""

    clip_id: str
    status: str  # "ok" or "error"
    selected: bool
    files: dict[str, str]  # kind -> path relative to the run folder
    path: str  # the clip, as the data set named it
    data_root: str  # absolute data root of the run that wrote the row
    rel_path: str  # the clip's path relative to it
    fingerprint: str  # of the settings that made the row (:func:`fingerprint`)
    label: str | None
    predicted: str | None
    target: str | None
    confidence: float | None
    probabilities: dict[str, float] | None
    correct: bool | None
    mask_area: float | None
    empty_mask: bool | None
    mask_profile: list[float] | None
    notes: list[str]
    error: str | None
    method: str | None
    methods: dict
    scores: dict


_STATUSES = ("ok", "error")
_TEXT = ("path", "data_root", "rel_path", "fingerprint")
_TEXT_OR_NONE = ("label", "predicted", "target", "error", "method")
_NUMBER_OR_NONE = ("confidence", "mask_area")
_BOOL_OR_NONE = ("correct", "empty_mask")
_DICT = ("methods", "scores")


def _number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def row_problem(row: object) -> str | None:
    """Why ``row`` is not a manifest row (one phrase), or None when it is one."""
    if not isinstance(row, dict):
        return f"a JSON {type(row).__name__}, not an object"
    if not isinstance(row.get("clip_id"), str) or not row["clip_id"]:
        return "no clip_id (a non-empty string)"
    if row.get("status") not in _STATUSES:
        return f"status {row.get('status')!r} is not 'ok' or 'error'"
    if not isinstance(row.get("selected"), bool):
        return "selected is not true or false"
    files = row.get("files")
    if not isinstance(files, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in files.items()
    ):
        return "files is not an object of relative paths"
    for key in _TEXT:
        if key in row and not isinstance(row[key], str):
            return f"{key} is not a string"
    for key in _TEXT_OR_NONE:
        if row.get(key) is not None and not isinstance(row[key], str):
            return f"{key} is not a string"
    for key in _NUMBER_OR_NONE:
        if row.get(key) is not None and not _number(row[key]):
            return f"{key} is not a number"
    for key in _BOOL_OR_NONE:
        if row.get(key) is not None and not isinstance(row[key], bool):
            return f"{key} is not true, false or null"
    probs = row.get("probabilities")
    if probs is not None and not (
        isinstance(probs, dict) and all(_number(v) for v in probs.values())
    ):
        return "probabilities is not an object of numbers"
    for key in ("mask_profile", "time_profile"):
        profile = row.get(key)
        if profile is not None and not (
            isinstance(profile, list) and all(_number(v) for v in profile)
        ):
            return f"{key} is not a list of numbers"
    content = row.get("content")
    if content is not None and not (
        isinstance(content, dict)
        and all(
            isinstance(v, dict) and all(_number(x) for x in v.values()) for v in content.values()
        )
    ):
        return "content is not an object of {kept, share} numbers"
    notes = row.get("notes", [])
    if not isinstance(notes, list) or not all(isinstance(n, str) for n in notes):
        return "notes is not a list of strings"
    for key in _DICT:
        if key in row and not isinstance(row[key], dict):
            return f"{key} is not an object"
    return None


def read_lines(path: str | os.PathLike) -> list[ManifestRow]:
    """Every valid row of the manifest at ``path``, in file order (a missing file: none).
    Bad lines are skipped with a warning naming the file and the line."""
    path = Path(path)
    rows: list[ManifestRow] = []
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return rows
    for number, raw in enumerate(data.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            log.warning("%s, line %d: not UTF-8, skipped", path, number)
            continue
        except json.JSONDecodeError:
            log.warning("%s, line %d: not JSON, skipped (a torn line?)", path, number)
            continue
        problem = row_problem(row)
        if problem is not None:
            log.warning("%s, line %d: %s, skipped", path, number, problem)
            continue
        rows.append(row)
    return rows


def read_rows(path: str | os.PathLike) -> dict[str, ManifestRow]:
    """``clip_id -> row`` of the manifest at ``path``, in order of first appearance; the
    last line of a clip wins (:func:`read_lines`)."""
    return last_rows(read_lines(path))


def last_rows(lines: list[ManifestRow]) -> dict[str, ManifestRow]:
    """``clip_id -> row``: the last of each clip's lines."""
    rows: dict[str, ManifestRow] = {}
    for row in lines:
        rows[row["clip_id"]] = row
    return rows


def row_key(row: ManifestRow) -> tuple:
    """What file a row is about: ``(clip_id, data root, relative path)``."""
    return row["clip_id"], row.get("data_root"), row.get("rel_path")


def compact(lines: list[ManifestRow]) -> list[ManifestRow]:
    """The last line of each :func:`row_key`, in order of last appearance: the same rows
    win as in ``lines``, and a row of another file under the same id is not lost."""
    rows: dict[tuple, ManifestRow] = {}
    for row in lines:
        rows.pop(row_key(row), None)
        rows[row_key(row)] = row
    return list(rows.values())


def format_line(row: dict) -> str:
    """One manifest line, UTF-8; ``\\u`` escapes only where a path holds bytes that are not
    UTF-8 (``b"caf\\xe9.wav"`` decodes to a lone surrogate, which UTF-8 cannot encode)."""
    text = json.dumps(row, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(row)
    return text + "\n"


def fingerprint(settings: dict) -> str:
    """A short, stable hash of ``settings`` (JSON-serialisable; anything else by repr)."""
    text = json.dumps(settings, sort_keys=True, default=repr, ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()[:16]


# --------------------------------------------------------------------------- links


class OutputLinkError(ListenableError):
    """An output path that is, or lies below, a symbolic link inside the run folder."""


def refuse_links(out: Path, path: Path) -> None:
    """Raise :class:`OutputLinkError` if ``path`` (inside ``out``) or a folder between
    ``out`` and it is a symbolic link; ``out`` itself may be one. Missing parts are fine."""
    try:
        parts = Path(path).relative_to(out).parts
    except ValueError:
        raise OutputLinkError(f"output {path} is not inside {out}") from None
    current = Path(out)
    for part in parts:
        current = current / part
        if current.is_symlink():
            raise OutputLinkError(
                f"output {path}: {current} is a symbolic link; listenable never writes "
                "through links (remove it, or choose another --out)"
            )
        if not current.exists():
            return


# --------------------------------------------------------------------------- the lock


class RunLockedError(UsageError):
    """Another process holds the run folder's lock (exit status 2 on the command line)."""


@contextlib.contextmanager
def run_lock(out: str | os.PathLike) -> Iterator[Path]:
    """Hold an exclusive lock on the run folder ``out`` (created if missing) for the
    duration; yields the lock file. Non-blocking: while another process holds it, raise
    :class:`RunLockedError` naming that process's id. The lock file stays (removing it
    would let two runs lock two different files)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / LOCK
    refuse_links(out, path)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no lock, as before
        log.warning("%s: no file locking on this system; run one analyze at a time", out)
        yield path
        return
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            raise RunLockedError(f"another analyze is running on {out} (pid {holder})") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield path
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def open_append(path: str | os.PathLike):
    """``path`` opened for appending UTF-8 text, created if missing, never through a
    symbolic link (``O_NOFOLLOW``)."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
    flags |= getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    return os.fdopen(os.open(path, flags, 0o666), "a", encoding="utf-8")


# --------------------------------------------------------------------------- clip ids

#: Longest clip id (bytes): the longest output name, ``<id>.listenable.<method><ext>``,
#: then still fits a 255-byte file name.
MAX_ID_BYTES = 200


def relative_path(path: str | os.PathLike, root: str | os.PathLike | None) -> str:
    """``path`` relative to ``root`` (POSIX separators); its absolute path where there is
    no root or it lies outside it."""
    full = os.path.abspath(path)
    if root is None or root == "":
        return Path(full).as_posix()
    rel = os.path.relpath(full, os.path.abspath(root))
    if rel == os.pardir or rel.startswith(os.pardir + os.sep):
        return Path(full).as_posix()
    return Path(rel).as_posix()


def valid_id(clip_id: object) -> bool:
    """A clip id that can name output files: one path component, no NUL, not too long."""
    if not isinstance(clip_id, str) or not clip_id or clip_id in (".", ".."):
        return False
    if "/" in clip_id or "\0" in clip_id or (os.altsep and os.altsep in clip_id):
        return False
    return len(_bytes(clip_id)) <= MAX_ID_BYTES


def _bytes(text: str) -> bytes:
    try:
        return os.fsencode(text)
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")


def _digest(rel: str, n: int) -> str:
    return hashlib.sha1(_bytes(rel)).hexdigest()[:n]


def _head(text: str, limit: int) -> str:
    out, used = [], 0
    for char in text:
        used += len(_bytes(char))
        if used > limit:
            break
        out.append(char)
    return "".join(out)


def assign_ids(rels: list[str], known: dict[str, str] | None = None) -> list[str]:
    """Unique ids for the clips at ``rels`` (paths relative to the data root, unique).

    A clip's id is its file stem; where stems repeat, ``<stem>-<8 hex digits of the SHA-1
    of its relative path>``; a stem above :data:`MAX_ID_BYTES` bytes is cut and gets 16 hex
    digits. ``known`` (``rel -> id``, from the manifest) wins: a clip keeps the id it
    already has, so adding a same-stem file later never renames an explained clip.
    """
    known = {r: i for r, i in (known or {}).items() if valid_id(i)}
    stems = [PurePosixPath(r).stem or PurePosixPath(r).name or "clip" for r in rels]
    counts: dict[str, int] = {}
    for stem in stems:
        counts[stem] = counts.get(stem, 0) + 1

    def long_form(stem: str, rel: str, n: int = 16) -> str:
        return f"{_head(stem, MAX_ID_BYTES - n - 1)}-{_digest(rel, n)}"

    ids = []
    for stem, rel in zip(stems, rels):
        if rel in known:
            ids.append(known[rel])
        elif counts[stem] == 1 and valid_id(stem):
            ids.append(stem)
        elif valid_id(short := f"{stem}-{_digest(rel, 8)}"):
            ids.append(short)
        else:
            ids.append(long_form(stem, rel))
    for n in (16, 40):  # an id that is still taken (a stem like "x-1a2b3c4d"): longer ones
        seen: dict[str, int] = {}
        for ident in ids:
            seen[ident] = seen.get(ident, 0) + 1
        for k, (stem, rel) in enumerate(zip(stems, rels)):
            if seen[ids[k]] > 1 and rel not in known:
                ids[k] = long_form(stem, rel, n)
    return ids


# --------------------------------------------------------------------------- the plan


@dataclass
class Plan:
    """The clips of one run: unique paths in data-set order, their labels, paths relative
    to the data root, ids, and the fingerprint of the run's settings."""

    paths: list[Path]
    labels: list[int]
    rels: list[str]
    ids: list[str]
    root: str
    fingerprint: str

    def keys(self) -> dict[str, tuple[str, str]]:
        """``clip_id -> (data root, relative path)``."""
        return {c: (self.root, r) for c, r in zip(self.ids, self.rels)}


def make_plan(data, rows: dict[str, dict], fp: str) -> Plan:
    """The clips of ``data`` (duplicate rows once) with ids that keep those of ``rows``."""
    root = getattr(data, "root", None)
    root = os.path.abspath(root) if root is not None else ""
    paths, labels, rels, seen = [], [], [], set()
    for path, label in zip(data.paths, data.labels):
        rel = relative_path(path, root or None)
        if rel in seen:
            continue
        seen.add(rel)
        paths.append(Path(path))
        labels.append(int(label))
        rels.append(rel)
    if len(paths) < len(data.paths):
        log.warning(
            "%s: %d duplicate row(s) of the data set, each clip is explained once",
            root or "data set",
            len(data.paths) - len(paths),
        )
    known = {
        row["rel_path"]: cid
        for cid, row in rows.items()
        if row.get("data_root") == root and isinstance(row.get("rel_path"), str)
    }
    return Plan(paths, labels, rels, assign_ids(rels, known), root, fp)


def still_good(out: Path, row: dict | None, plan: Plan, i: int) -> bool:
    """A row that a rerun keeps: explained, same settings, same clip, its files there."""
    return (
        row is not None
        and row["status"] == "ok"
        and row.get("fingerprint") == plan.fingerprint
        and row.get("data_root") == plan.root
        and row.get("rel_path") == plan.rels[i]
        and all((out / rel).is_file() for rel in row["files"].values())
    )


def model_identity(explainer) -> str:
    """SHA-256 of the model's weights and buffers (names, dtypes, shapes, bytes) and of what
    it says about itself: the same for the same model however it was loaded."""
    import torch

    digest = hashlib.sha256()
    module = getattr(explainer.model, "module", explainer.model)
    if isinstance(module, torch.nn.Module):
        for name, tensor in module.state_dict().items():
            digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
            flat = tensor.detach().cpu().contiguous().reshape(-1)
            try:
                digest.update(flat.view(torch.uint8).numpy().tobytes())
            except (RuntimeError, TypeError):  # an exotic dtype
                digest.update(repr(flat.tolist()).encode())
    describe = getattr(explainer.model, "describe", None)
    digest.update(repr(describe() if callable(describe) else type(module).__name__).encode())
    return digest.hexdigest()
