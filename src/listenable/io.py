"""Audio in and out: any file libsndfile reads, at the rate and channel count a model's front
end wants (soxr resampling; mono duplicated or stereo mixed down, with a note).

Shapes: waveforms are ``(channels, samples)`` for one clip, ``(batch, channels, samples)``
for a batch, float32 in [-1, 1].
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

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


def load_audio(
    path: str | os.PathLike,
    *,
    sample_rate: int = SAMPLE_RATE,
    channels: int = 2,
    min_samples: int = MIN_SAMPLES,
) -> tuple[torch.Tensor, list[str]]:
    """Read an audio file as a float32 waveform ``(channels, samples)`` at ``sample_rate``.

    The defaults are the reference model's (48 kHz stereo); pass a front end's
    ``sample_rate`` and ``channels`` (:func:`load_for`). Mono is duplicated to left and
    right for a stereo model (with a warning), stereo is mixed down (mean of the channels)
    for a mono one; other sample rates are resampled with soxr (high quality). Returns the
    waveform and a list of notes describing what was done to it (for the explanation's
    JSON).

    Raises:
        AudioError: one line naming the file, for files that are missing, empty,
            unreadable, have more than two channels, contain NaN/Inf, have samples beyond
            :data:`MAX_PEAK` or are too short. Names that are not printable (a newline,
            bytes that are not UTF-8) are shown ``ascii()``-escaped.
    """
    path = Path(path)
    name = display_name(path)
    if not path.exists():
        raise AudioError(f"{name}: file not found")
    if path.is_dir():
        raise AudioError(f"{name}: is a folder, not an audio file")
    if path.stat().st_size == 0:
        raise AudioError(f"{name}: empty file (0 bytes)")
    try:
        # bytes on POSIX: soundfile cannot encode names that are not UTF-8 (b"caf\xe9.wav")
        source = os.fsencode(path) if os.name == "posix" else str(path)
        data, file_rate = sf.read(source, dtype="float32", always_2d=True)
    except Exception as exc:  # libsndfile raises several types; all mean "unreadable"
        text = getattr(exc, "error_string", None) or str(exc)  # not "Error opening <name>: "
        reason = text.splitlines()[0] if text else type(exc).__name__
        raise AudioError(f"{name}: not a readable audio file ({reason})") from None
    notes: list[str] = []
    wave = _conform(data.T, file_rate, name, notes, sample_rate, channels, min_samples)
    return wave, notes


def load_for(path: str | os.PathLike, front_end) -> tuple[torch.Tensor, list[str]]:
    """:func:`load_audio` at ``front_end``'s rate and channel count (a
    :class:`~listenable.frontends.FrontEnd`), at least half a second long."""
    rate = front_end.sample_rate
    return load_audio(
        path,
        sample_rate=rate,
        channels=front_end.channels,
        min_samples=max(front_end.min_samples(), rate // 2),
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


def _conform(data, file_rate, name, notes, sample_rate, want, min_samples) -> torch.Tensor:
    channels, frames = data.shape
    if frames == 0:
        raise AudioError(f"{name}: no audio frames (empty file)")
    if channels > 2:
        raise AudioError(f"{name}: {channels} channels; listenable explains mono or stereo clips")
    if not np.isfinite(data).all():
        raise AudioError(f"{name}: contains NaN or Inf samples")
    _check_peak(float(np.abs(data).max()), name)
    if channels == 1 and want == 2:
        warnings.warn(f"{name}: mono file, duplicated to left and right", stacklevel=3)
        notes.append("mono duplicated to left and right")
        data = np.concatenate([data, data], axis=0)
    elif channels == 2 and want == 1:
        notes.append("stereo mixed down to mono (mean of the channels)")
        log.info("%s: stereo mixed down to mono", name)
        data = data.mean(axis=0, keepdims=True)
    if file_rate != sample_rate:
        if frames * sample_rate / file_rate < min_samples:
            raise AudioError(_too_short(name, frames / file_rate, min_samples / sample_rate))
        data = soxr.resample(data.T, file_rate, sample_rate, quality="HQ").T
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
