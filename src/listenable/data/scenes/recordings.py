"""The recordings of a source table: fetching the packages, reading and splitting the files.

Packages are fetched with ``apt-get download`` and extracted with ``dpkg-deb -x`` into a
cache folder (one folder per package, reused once complete), or read from a tree extracted
beforehand. Each recording is read at its own rate (soundfile: WAV, FLAC, Ogg; OpenTTD
``.cat`` sound containers are unpacked), made mono, its mean removed, and resampled (soxr).
"""

from __future__ import annotations

import gzip
import io
import logging
import os
import re
import shutil
import struct
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import soundfile as sf

from listenable.data.scenes.rendering import SAMPLE_RATE
from listenable.data.scenes.signals import _fade, _rms
from listenable.data.scenes.sources import DEBIAN_SOURCES, SourceFile, SourceTable
from listenable.errors import DatasetError

__all__ = ["RealSources", "fetch_packages", "load_sources"]

log = logging.getLogger(__name__)

#: Share of each event type's recordings (at least one) kept for the evaluate clips.
SOURCE_EVALUATE_FRACTION = 0.3
#: A type with one recording: train clips cut from ``[0, 0.7)`` of it, evaluate from the rest.
SEGMENT_SPLIT = 0.7
APT_GET = "apt-get"
DPKG_DEB = "dpkg-deb"
_MARKER = ".listenable-extracted"  # in a cached package folder: its version, once complete
_FADE_S = 0.02  # fade in/out of a cut event


# --------------------------------------------------------------------------- fetching


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """Run ``cmd`` in ``cwd``, output captured (the one place that runs a program)."""
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=1800)


def fetch_packages(packages: Sequence[str], cache: str | os.PathLike) -> dict[str, Path]:
    """Each package extracted under ``cache/NAME`` (``apt-get download`` + ``dpkg-deb -x``
    the first time, reused afterwards) -> ``{name: folder}``.

    Raises :class:`DatasetError` naming the package when it cannot be fetched.
    """
    cache = Path(cache).absolute()  # the tools run in a temporary folder
    roots = {}
    for name in packages:
        root = cache / name
        if not (root / _MARKER).is_file():
            _fetch(name, cache)
        roots[name] = root
    return roots


def _fetch(name: str, cache: Path) -> None:
    hint = f"pass --sources-dir DIR with it extracted there (dpkg -x {name}_*.deb DIR/{name})"
    tools = {tool: shutil.which(tool) for tool in (APT_GET, DPKG_DEB)}
    for tool, found in tools.items():
        if found is None:
            raise DatasetError(f"{name}: cannot fetch the Debian package: {tool} not found; {hint}")
    log.info("fetching Debian package %s into %s", name, cache)
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{name}.tmp-", dir=cache) as tmp:
        tmp = Path(tmp)
        done = _call([tools[APT_GET], "download", name], tmp, name, hint)
        debs = sorted(tmp.glob("*.deb"))
        if not debs:
            raise DatasetError(
                f"{name}: apt-get download left no .deb ({done.stdout[-200:]}); {hint}"
            )
        tree = tmp / "tree"
        _call([tools[DPKG_DEB], "-x", str(debs[0]), str(tree)], tmp, name, hint)
        version = _call([tools[DPKG_DEB], "-f", str(debs[0]), "Version"], tmp, name, hint)
        (tree / _MARKER).write_text(version.stdout.strip() + "\n", encoding="utf-8")
        root = cache / name
        if root.exists():
            shutil.rmtree(root)  # an earlier, incomplete extraction
        os.replace(tree, root)


def _call(cmd: list[str], cwd: Path, name: str, hint: str) -> subprocess.CompletedProcess:
    try:
        done = _run(cmd, cwd)
    except (OSError, subprocess.SubprocessError) as exc:
        raise DatasetError(f"{name}: {Path(cmd[0]).name} failed ({exc}); {hint}") from None
    if done.returncode != 0:
        lines = [x.strip() for x in (done.stderr or done.stdout or "").splitlines() if x.strip()]
        errors = [x for x in lines if x.startswith("E:")] or lines or [f"exit {done.returncode}"]
        raise DatasetError(f"{name}: {Path(cmd[0]).name} {cmd[1]} failed ({errors[-1]}); {hint}")
    return done


def _package_version(root: Path, name: str) -> str:
    """The version of the package extracted in ``root``: from the fetch marker, else from
    the first line of its ``changelog.Debian.gz``, else ``"unknown"``."""
    marker = root / _MARKER
    if marker.is_file():
        return marker.read_text(encoding="utf-8").strip() or "unknown"
    changelog = root / "usr/share/doc" / name / "changelog.Debian.gz"
    try:
        with gzip.open(changelog, "rt", encoding="utf-8", errors="replace") as f:
            match = re.match(r"\S+ \(([^)]+)\)", f.readline())
    except OSError:
        return "unknown"
    return match.group(1) if match else "unknown"


# --------------------------------------------------------------------------- loading


class RealSources:
    """The recordings of a :class:`SourceTable`, loaded at ``sample_rate`` from
    ``roots = {package: extracted folder}``, split into train and evaluate."""

    def __init__(self, table: SourceTable, roots: dict[str, Path], sample_rate: int = SAMPLE_RATE):
        table.validate()
        self.table = table
        self.sample_rate = sample_rate
        self.versions = {p.name: _package_version(roots[p.name], p.name) for p in table.packages}
        self.audio: dict[str, np.ndarray] = {}
        self.descriptions: dict[str, str] = {}
        containers: dict[Path, list[tuple[str, bytes]]] = {}
        for f in table.files:
            if f.id in self.audio:
                continue
            path = roots[f.package] / f.path
            if f.member is None:
                data, description = path, ""
            else:
                if path not in containers:
                    containers[path] = _read_cat(path, f.package)
                if not 0 <= f.member < len(containers[path]):
                    raise DatasetError(f"{path}: no sample {f.member} ({f.package})")
                description, data = containers[path][f.member]
                data = io.BytesIO(data)
            self.audio[f.id] = _load(data, path, f, sample_rate)
            self.descriptions[f.id] = description
        self.events: dict[str, dict[str, list[tuple[SourceFile, float, float]]]] = {}
        for kind in dict.fromkeys(table.event_types[c] for c in table.classes):
            self.events[kind] = _split([f for f in table.files if f.kind == kind])
        self.background = list({f.id: f for f in table.files if f.kind == "background"}.values())
        log.info("loaded %d recordings of %d packages", len(self.audio), len(table.packages))

    def split_of(self, f: SourceFile) -> dict[str, list[float]]:
        """``{split: [start, end]}`` (fractions of the recording) where ``f`` is used."""
        if f.kind == "background":
            return {"train": [0.0, 1.0], "evaluate": [0.0, 1.0]}
        out = {}
        for split, choices in self.events[f.kind].items():
            for g, a, b in choices:
                if g.id == f.id:
                    out[split] = [a, b]
        return out

    def describe(self, file_id: str) -> dict:
        """The ``scenes.json`` / ``CREDITS.md`` entry of one recording."""
        f = next(x for x in self.table.files if x.id == file_id)
        package = next(p for p in self.table.packages if p.name == f.package)
        credit = "; ".join(x for x in (self.descriptions[file_id], f.credit) if x)
        return {
            "package": f.package,
            "path": f.path,
            "member": f.member,
            "kind": f.kind,
            "group": f.group or f.id,
            "split": self.split_of(f),
            "credit": credit or package.copyright,
            "licence": f.licence or package.licence,
            "seconds": round(len(self.audio[file_id]) / self.sample_rate, 3),
        }

    def cut_event(self, rng, kind: str, split: str, length: int) -> tuple[np.ndarray, list]:
        """A mono cut ``(m,)`` of a random ``split`` recording of ``kind``, ``m = min(length,
        what the recording has)``, from a loud part of it, faded in and out; and its
        provenance ``[file id, offset_s, length_s]``."""
        choices = self.events[kind][split]
        f, a, b = choices[int(rng.integers(len(choices)))]
        audio = self.audio[f.id]
        lo, hi = int(a * len(audio)), max(int(a * len(audio)) + 1, int(b * len(audio)))
        m = max(1, min(length, hi - lo))
        level = float(np.mean(np.square(audio[lo:hi])))
        best, best_power = lo, -1.0
        for _ in range(8):  # a part at least half as loud as the whole, if one is found
            start = lo + int(rng.integers(0, hi - lo - m + 1))
            power = float(np.mean(np.square(audio[start : start + m])))
            if power > best_power:
                best, best_power = start, power
            if power >= 0.5 * level:
                break
        sr = self.sample_rate
        cut = audio[best : best + m] * _fade(m, sr, _FADE_S, _FADE_S)
        return cut, [f.id, round(best / sr, 6), round(m / sr, 6)]


def _split(files: list[SourceFile]) -> dict[str, list[tuple[SourceFile, float, float]]]:
    """``{"train"|"evaluate": [(file, start, end)]}``: whole recordings when the files come
    from two or more original recordings (the last ~30 % of groups, at least one, for
    evaluate), else the first :data:`SEGMENT_SPLIT` of each for train, the rest for evaluate."""
    groups = list(dict.fromkeys(f.group or f.id for f in files))
    if len(groups) >= 2:
        held = set(groups[-max(1, round(SOURCE_EVALUATE_FRACTION * len(groups))) :])
        return {
            "train": [(f, 0.0, 1.0) for f in files if (f.group or f.id) not in held],
            "evaluate": [(f, 0.0, 1.0) for f in files if (f.group or f.id) in held],
        }
    return {
        "train": [(f, 0.0, SEGMENT_SPLIT) for f in files],
        "evaluate": [(f, SEGMENT_SPLIT, 1.0) for f in files],
    }


def _read_cat(path: Path, package: str) -> list[tuple[str, bytes]]:
    """The samples ``[(description, wav bytes)]`` of an OpenTTD ``.cat`` sound container:
    a table of ``(offset | 0x80000000, size)`` uint32 pairs, then at each offset a length
    byte, the NUL-terminated description and ``size`` bytes of RIFF WAVE."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DatasetError(
            f"{path}: missing (package {package}); fetch it again or fix --sources-dir"
        ) from None
    try:
        count = (struct.unpack_from("<I", data, 0)[0] & 0x7FFFFFFF) // 8
        samples = []
        for i in range(count):
            offset, size = struct.unpack_from("<II", data, 8 * i)
            offset &= 0x7FFFFFFF
            name_len = data[offset]
            name = data[offset + 1 : offset + 1 + name_len].rstrip(b"\0").decode("utf-8", "replace")
            start = offset + 1 + name_len
            if start + size > len(data):
                raise ValueError(f"sample {i} runs past the end")
            samples.append((name, data[start : start + size]))
    except (struct.error, IndexError, ValueError) as exc:
        raise DatasetError(f"{path}: not an OpenTTD .cat sound container ({exc})") from None
    return samples


def _load(data, path: Path, f: SourceFile, sample_rate: int) -> np.ndarray:
    """Mono float64 ``(n,)`` at ``sample_rate``, mean removed."""
    import soxr

    what = path if f.member is None else f"{path}#{f.member}"
    if f.member is None and not path.is_file():
        raise DatasetError(
            f"{what}: missing (package {f.package}); fetch it again or fix --sources-dir"
        )
    try:
        audio, rate = sf.read(data, dtype="float64", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        raise DatasetError(f"{what}: unreadable audio ({exc})") from None
    mono = audio.mean(axis=1)
    if len(mono) < rate // 10 or not np.isfinite(mono).all() or _rms(mono - mono.mean()) < 1e-6:
        raise DatasetError(f"{what}: too short, silent or not finite ({len(mono)} samples)")
    mono = mono - mono.mean()
    if rate != sample_rate:
        mono = soxr.resample(mono, rate, sample_rate, quality="HQ")
    return np.ascontiguousarray(mono, dtype=np.float64)


def load_sources(
    *,
    sources_dir: str | os.PathLike | None = None,
    cache: str | os.PathLike | None = None,
    table: SourceTable = DEBIAN_SOURCES,
    sample_rate: int = SAMPLE_RATE,
) -> RealSources:
    """The recordings of ``table``: from ``sources_dir`` (an extracted tree: one folder per
    package, or all packages extracted into one root), else fetched into ``cache``."""
    names = [p.name for p in table.packages]
    if sources_dir is not None:
        base = Path(sources_dir)
        if not base.is_dir():
            raise DatasetError(f"{base}: not a folder (--sources-dir: the extracted packages)")
        roots = {n: base / n if (base / n).is_dir() else base for n in names}
    elif cache is not None:
        roots = fetch_packages(names, cache)
    else:
        raise DatasetError("real scenes need sources_dir (extracted packages) or a cache folder")
    return RealSources(table, roots, sample_rate)
