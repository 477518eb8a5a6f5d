"""Audio in and out: any file libsndfile reads, at the rate and channel count a model's front
end wants (soxr resampling; mono duplicated or stereo mixed down, with a note).

Shapes: waveforms are ``(channels, samples)`` for one clip, ``(batch, channels, samples)``
for a batch, float32 in [-1, 1].
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import math
import os
import stat
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np
import soundfile as sf
import soxr
import torch

from listenable.atomic import atomic_path
from listenable.errors import AudioError

__all__ = [
    "SAMPLE_RATE",
    "MIN_SAMPLES",
    "MAX_PEAK",
    "MAX_DURATION",
    "FILE_RATES",
    "AudioInfo",
    "audio_info",
    "duration_limit",
    "file_problem",
    "load_audio",
    "load_for",
    "check_waveform",
    "write_audio",
]

log = logging.getLogger(__name__)

SAMPLE_RATE = 48_000
#: The shortest clip the reference model can explain: 24 STFT frames -> 16 feature frames
#: after the delta trims -> one frame of the top map (stride 16 in time).
MIN_SAMPLES = 24_000
#: Larger samples are not audio scaled to [-1, 1] (int32 values stored as float stay below):
#: from about 1e17 the float32 power spectrum overflows and every output would be NaN.
MAX_PEAK = 1e12
#: The longest clip (seconds) loaded unless a caller allows more (``max_duration=``,
#: :func:`duration_limit`, ``--max-duration``). Memory grows with the clip: ``listenable
#: explain`` with the reference model peaks at 1.0 GB for 120 s, 1.7 GB for 240 s and
#: 2.0 GB for 300 s, so 240 s keeps the longest accepted clip under 2 GB. Longer files are
#: refused from their header, before anything is decoded.
MAX_DURATION = 240.0
#: Sample rates (Hz) a file's header may declare: a header claiming 1 Hz turns 2 kB of
#: samples into minutes of audio at 48 kHz.
FILE_RATES = (1_000, 768_000)
_BLOCK = 1 << 16  # frames decoded (and resampled) at a time
_LIMIT = contextvars.ContextVar("listenable_max_duration", default=MAX_DURATION)
_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


@contextlib.contextmanager
def duration_limit(seconds: float):
    """Within the block, :func:`load_audio` refuses clips longer than ``seconds`` (instead of
    :data:`MAX_DURATION`) unless a call passes its own ``max_duration``; ``math.inf``
    allows any length. It holds for code the block calls (a writer, :func:`~listenable.
    explain`), including DataLoader workers forked inside it."""
    _check_limit(seconds)
    token = _LIMIT.set(float(seconds))
    try:
        yield
    finally:
        _LIMIT.reset(token)


def _check_limit(seconds) -> float:
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds > 0:
        raise ValueError(f"max_duration must be a positive number of seconds, got {seconds!r}")
    return float(seconds)


def file_problem(path: str | os.PathLike) -> str | None:
    """What makes ``path`` unusable as an input file, in a few words, or ``None`` for a
    regular file: ``"file not found"``, ``"not a regular file (a FIFO)"`` (a
    FIFO would block the reader), ``"not a regular file (a folder)"``, ``"cannot read (…)"``.
    Symlinks are followed."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "file not found"
    except OSError as exc:
        return f"cannot read ({exc.strerror or type(exc).__name__})"
    if stat.S_ISREG(mode):
        return None
    kind = next((what for test, what in _KINDS if test(mode)), "not a plain file")
    return f"not a regular file ({kind})"


def load_audio(
    path: str | os.PathLike,
    *,
    sample_rate: int = SAMPLE_RATE,
    channels: int = 2,
    min_samples: int = MIN_SAMPLES,
    max_duration: float | None = None,
) -> tuple[torch.Tensor, list[str]]:
    """Read an audio file as a float32 waveform ``(channels, samples)`` at ``sample_rate``.

    The defaults are the reference model's (48 kHz stereo); pass a front end's
    ``sample_rate`` and ``channels`` (:func:`load_for`). Mono is duplicated to left and
    right for a stereo model (with a warning), stereo is mixed down (mean of the channels)
    for a mono one; other sample rates are resampled with soxr (high quality). Returns the
    waveform and a list of notes describing what was done to it (for the explanation's
    JSON).

    The duration and sample rate are read from the header first: a clip longer than
    ``max_duration`` seconds (``None``: :data:`MAX_DURATION`, or the :func:`duration_limit`
    in force) or declaring a rate outside :data:`FILE_RATES` is refused before anything is
    decoded. The file is then decoded and resampled a block at a time, so memory stays
    about the size of the output, whatever the header says.

    Raises:
        AudioError: one line naming the file, for files that are missing, not regular
            files (a folder, a FIFO, a device), empty, unreadable, too long, at an
            implausible rate, have more than two channels, contain NaN/Inf, have samples
            beyond :data:`MAX_PEAK` or are too short. Names that are not printable (a
            newline, bytes that are not UTF-8) are shown ``ascii()``-escaped.
    """
    path = Path(path)
    name = display_name(path)
    limit = _LIMIT.get() if max_duration is None else _check_limit(max_duration)
    with _open(path, name) as handle:
        _check_header(handle, name, limit)
        notes: list[str] = []
        wave = _decode(handle, name, notes, sample_rate, channels, min_samples, limit)
    return wave, notes


class AudioInfo(NamedTuple):
    """What a file's header says: its own rate (Hz), channels, frames and seconds."""

    sample_rate: int
    channels: int
    frames: int
    duration: float


def audio_info(path: str | os.PathLike, *, max_duration: float | None = None) -> AudioInfo:
    """The header checks of :func:`load_audio` alone (regular file, not empty, readable,
    plausible rate, mono or stereo, not longer than ``max_duration``), without decoding:
    a cheap way to refuse a clip before building anything for it. Raises
    :class:`AudioError` as :func:`load_audio` would."""
    path = Path(path)
    name = display_name(path)
    limit = _LIMIT.get() if max_duration is None else _check_limit(max_duration)
    with _open(path, name) as handle:
        _check_header(handle, name, limit)
        rate, channels, frames = handle.samplerate, handle.channels, handle.frames
    return AudioInfo(rate, channels, frames, frames / rate)


def _source(path: Path):
    # bytes on POSIX: soundfile cannot encode names that are not UTF-8 (b"caf\xe9.wav")
    return os.fsencode(path) if os.name == "posix" else str(path)


@contextlib.contextmanager
def _open(path: Path, name: str):
    """``sf.SoundFile`` of a regular, non-empty file; libsndfile's errors as one line."""
    problem = file_problem(path)
    if problem is not None:
        raise AudioError(f"{name}: {problem}")
    if path.stat().st_size == 0:
        raise AudioError(f"{name}: empty file (0 bytes)")
    try:
        handle = sf.SoundFile(_source(path))
    except Exception as exc:  # libsndfile raises several types; all mean "unreadable"
        raise AudioError(f"{name}: not a readable audio file ({_reason(exc)})") from None
    try:
        yield handle
    except (sf.SoundFileError, RuntimeError, OSError) as exc:  # decoding failed part-way
        raise AudioError(f"{name}: not a readable audio file ({_reason(exc)})") from None
    finally:
        handle.close()


def _reason(exc: Exception) -> str:
    text = getattr(exc, "error_string", None) or str(exc)  # not "Error opening <name>: "
    return text.splitlines()[0] if text else type(exc).__name__


def load_for(
    path: str | os.PathLike, front_end, *, max_duration: float | None = None
) -> tuple[torch.Tensor, list[str]]:
    """:func:`load_audio` at ``front_end``'s rate and channel count (a
    :class:`~listenable.frontends.FrontEnd`), at least half a second long."""
    rate = front_end.sample_rate
    return load_audio(
        path,
        sample_rate=rate,
        channels=front_end.channels,
        min_samples=max(front_end.min_samples(), rate // 2),
        max_duration=max_duration,
    )


def check_waveform(
    wave: torch.Tensor | np.ndarray,
    *,
    name: str = "waveform",
    min_samples: int = MIN_SAMPLES,
    channels: int = 2,
    sample_rate: int = SAMPLE_RATE,
) -> torch.Tensor:
    """Validate an in-memory waveform ``(channels, samples)`` or ``(batch, channels, samples)``
    at ``sample_rate`` and return it as float32 with ``channels`` channels (mono duplicated
    for a stereo model, stereo mixed down for a mono one, with a warning)."""
    wave = torch.as_tensor(wave)
    if wave.ndim not in (2, 3):
        raise AudioError(
            f"{name}: expected (channels, samples) or (batch, channels, samples), "
            f"got shape {tuple(wave.shape)}"
        )
    if not wave.is_floating_point():
        raise AudioError(f"{name}: expected a float waveform in [-1, 1], got {wave.dtype}")
    have = wave.shape[-2]
    if have not in (1, 2):
        raise AudioError(f"{name}: {have} channels; listenable explains mono or stereo clips")
    if have == 1 and channels == 2:
        warnings.warn(f"{name}: mono input, duplicated to left and right", stacklevel=3)
        wave = torch.cat([wave, wave], dim=-2)
    elif have == 2 and channels == 1:
        warnings.warn(f"{name}: stereo input, mixed down to mono for the model", stacklevel=3)
        wave = wave.mean(dim=-2, keepdim=True)
    if wave.shape[-1] < min_samples:
        raise AudioError(
            f"{name}: too short ({wave.shape[-1]} samples = {wave.shape[-1] / sample_rate:.3f} s);"
            f" the model needs at least {min_samples / sample_rate:.2f} s"
        )
    if not bool(torch.isfinite(wave).all()):
        raise AudioError(f"{name}: contains NaN or Inf samples")
    _check_peak(float(wave.abs().max()), name)
    return wave.float()


def _check_header(handle, name: str, limit: float) -> None:
    """Refuse from the header alone: an implausible rate, no frames, more than two
    channels, longer than ``limit`` seconds."""
    file_rate, channels, frames = handle.samplerate, handle.channels, handle.frames
    lo, hi = FILE_RATES
    if not lo <= file_rate <= hi:
        raise AudioError(
            f"{name}: its header declares {file_rate} Hz, not a plausible sample rate "
            f"(listenable reads {lo}-{hi} Hz)"
        )
    if frames == 0:
        raise AudioError(f"{name}: no audio frames (empty file)")
    if channels > 2:
        raise AudioError(f"{name}: {channels} channels; listenable explains mono or stereo clips")
    if frames > _most_frames(limit, file_rate):
        raise AudioError(_too_long(name, frames / file_rate, limit))


def _most_frames(limit: float, rate: int) -> float:
    return math.inf if math.isinf(limit) else math.floor(limit * rate)


def _decode(handle, name, notes, sample_rate, want, min_samples, limit) -> torch.Tensor:
    """Decode an open :class:`soundfile.SoundFile` (its header checked) block by block into
    ``(want, samples)`` at ``sample_rate``: per block the sample checks, the channel
    conversion and soxr's streaming resampler (identical to its one-shot output)."""
    file_rate, channels = handle.samplerate, handle.channels
    most = _most_frames(limit, file_rate)
    stream = None
    if file_rate != sample_rate:
        stream = soxr.ResampleStream(file_rate, sample_rate, min(channels, want), "float32", "HQ")
    parts, read = [], 0
    while True:
        block = handle.read(_BLOCK, dtype="float32", always_2d=True)
        last = len(block) < _BLOCK
        read += len(block)
        if read > most:  # the header under-counted: stop at the limit all the same
            raise AudioError(_too_long(name, read / file_rate, limit))
        if not np.isfinite(block).all():
            raise AudioError(f"{name}: contains NaN or Inf samples")
        if len(block):
            _check_peak(float(np.abs(block).max()), name)
        if channels == 2 and want == 1:
            block = block.mean(axis=1, keepdims=True)
        if stream is not None:
            block = stream.resample_chunk(block, last=last)
        parts.append(block)
        if last:
            break
    if read == 0:
        raise AudioError(f"{name}: no audio frames (empty file)")
    if read * sample_rate / file_rate < min_samples:
        raise AudioError(_too_short(name, read / file_rate, min_samples / sample_rate))
    data = np.concatenate(parts).T  # (channels, samples)
    del parts
    if channels == 1 and want == 2:
        warnings.warn(f"{name}: mono file, duplicated to left and right", stacklevel=3)
        notes.append("mono duplicated to left and right")
        data = np.concatenate([data, data], axis=0)
    elif channels == 2 and want == 1:
        notes.append("stereo mixed down to mono (mean of the channels)")
        log.info("%s: stereo mixed down to mono", name)
    if stream is not None:
        notes.append(f"resampled from {file_rate} Hz to {sample_rate} Hz")
        log.info("%s: resampled %d -> %d Hz", name, file_rate, sample_rate)
    if data.shape[1] < min_samples:
        raise AudioError(_too_short(name, data.shape[1] / sample_rate, min_samples / sample_rate))
    peak = float(np.abs(data).max())
    if peak >= 1.0:
        notes.append(f"peak {peak:.2f} at or above full scale (clipping)")
    return torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32))


def display_name(path: str | os.PathLike) -> str:
    """``path`` for a one-line message: as is, or ``ascii()``-escaped when it holds control
    characters (a newline) or bytes that are not UTF-8."""
    text = str(path)
    return text if text.isprintable() else ascii(text)


def _check_peak(peak: float, name: str) -> None:
    if peak > MAX_PEAK:
        raise AudioError(
            f"{name}: peak amplitude {peak:.3g} is not audio scaled to [-1, 1] "
            f"(listenable refuses samples above {MAX_PEAK:.0e})"
        )


def _too_long(name: str, seconds: float, limit: float) -> str:
    return (
        f"{name}: {seconds:.1f} s long, over the {limit:g} s limit on clip length "
        "(raise it with --max-duration SECONDS, or max_duration= in Python)"
    )


def _too_short(name: str, seconds: float, minimum: float) -> str:
    return f"{name}: too short ({seconds:.3f} s); the model needs at least {minimum:.2f} s"


def write_audio(
    path: str | os.PathLike,
    wave: torch.Tensor | np.ndarray,
    sample_rate: int = SAMPLE_RATE,
    *,
    subtype: str = "FLOAT",
) -> None:
    """Write ``(channels, samples)`` to a WAV/FLAC file atomically (temporary name, then rename).

    The default subtype is 32-bit float, so a listenable output louder than the input
    (it cannot be, but a residual can be) is never clipped.
    """
    if isinstance(wave, torch.Tensor):
        wave = wave.detach().cpu().float().numpy()
    with atomic_path(path) as tmp:
        target = os.fsencode(tmp) if os.name == "posix" else str(tmp)  # as in load_audio
        sf.write(target, np.ascontiguousarray(wave.T), sample_rate, subtype=subtype)
