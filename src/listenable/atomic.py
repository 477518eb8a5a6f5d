"""Atomic file writes: write to a temporary name in the same folder, then rename.

A run killed at any moment (SIGKILL included) leaves either the old file, the new file,
or a stray ``.<head>.tmp-*`` file that the next run ignores and overwrites, never a
half-written output under its final name. The temporary name is short (at most 54 bytes:
the first 24 bytes of the stem, a random part and the suffix), so any final name that fits
the file system has a temporary name that fits too.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_path", "write_json", "write_text"]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``.

    The temporary name keeps the suffix (up to 16 bytes) so that libraries choosing a
    format by extension (soundfile, matplotlib) still do the right thing.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix if len(os.fsencode(path.suffix)) <= _SUFFIX_BYTES else ""
    prefix = f".{_head(path.stem, _HEAD_BYTES)}.tmp-"
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as handle:
            os.fsync(handle.fileno())
        # mkstemp creates 0600; an output gets the mode a plain open() would give it
        # (a published gallery must be readable by the web server)
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


_HEAD_BYTES = 24
_SUFFIX_BYTES = 16


def _head(text: str, limit: int) -> str:
    """The longest start of ``text`` whose file-system encoding takes at most ``limit``
    bytes (never half a character)."""
    out = []
    used = 0
    for char in text:
        try:
            size = len(os.fsencode(char))
        except UnicodeEncodeError:  # a surrogate no file name holds
            size = 4
        if used + size > limit:
            break
        out.append(char)
        used += size
    return "".join(out)


def _umask() -> int:
    """The process's umask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, obj) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, allow_nan=False) + "\n")
