"""The gallery's audio files: compressed by default, lossless on request.

=========  =====================================  ========  ============================
format     codec (libsndfile, through soundfile)  suffix    10 s, 48 kHz stereo, 3 tracks
=========  =====================================  ========  ============================
``ogg``    Ogg Vorbis, quality 0 (VBR)            ``.ogg``  190–235 kB (the default)
``mp3``    MPEG-1 Layer III (VBR), for Safari     ``.mp3``  210–250 kB
``flac``   FLAC, 16 bit (lossless)                ``.flac`` 2.4–3.0 MB
``wav``    WAV, 16 bit PCM (as before)            ``.wav``  5.76 MB
=========  =====================================  ========  ============================

(measured on synthetic scenes with the shipped model's explanations: original, listenable
and residual together; a listenable or residual track is smaller than the original).
Every format keeps the clip's own sample rate, channel count and exact length (Ogg and MP3
decode to the same number of frames). Ogg Vorbis plays in Chromium and Firefox; Safari
plays MP3 and FLAC.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from listenable.atomic import atomic_path

__all__ = ["AUDIO_FORMATS", "DEFAULT_AUDIO_FORMAT", "audio_suffix", "write_track"]

#: name → (libsndfile format, subtype, compression level or None, file suffix)
AUDIO_FORMATS: dict[str, tuple[str, str, float | None, str]] = {
    "ogg": ("OGG", "VORBIS", 1.0, ".ogg"),
    "mp3": ("MP3", "MPEG_LAYER_III", 0.9, ".mp3"),
    "flac": ("FLAC", "PCM_16", None, ".flac"),
    "wav": ("WAV", "PCM_16", None, ".wav"),
}
DEFAULT_AUDIO_FORMAT = "ogg"


def audio_suffix(audio_format: str) -> str:
    """The file suffix of ``audio_format`` (``".ogg"``...); ValueError for an unknown one."""
    return _spec(audio_format)[3]


def _spec(audio_format: str) -> tuple[str, str, float | None, str]:
    try:
        return AUDIO_FORMATS[audio_format]
    except (KeyError, TypeError):
        choices = ", ".join(AUDIO_FORMATS)
        raise ValueError(f"audio_format must be one of {choices}, got {audio_format!r}") from None


def write_track(
    path: str | os.PathLike, wave, sample_rate: int, audio_format: str = DEFAULT_AUDIO_FORMAT
) -> None:
    """Write ``wave`` ``(channels, samples)`` (numpy or torch) to ``path`` atomically.

    Samples beyond [-1, 1] (a residual can have some) are clipped for the 16-bit formats;
    the lossy codecs code floats.
    """
    fmt, subtype, level, _suffix = _spec(audio_format)
    if hasattr(wave, "detach"):
        wave = wave.detach().cpu().float().numpy()
    data = np.ascontiguousarray(np.asarray(wave, dtype=np.float32).T)
    if subtype.startswith("PCM"):
        data = np.clip(data, -1.0, 1.0)
    import soundfile as sf

    options = {} if level is None else {"compression_level": level}
    with atomic_path(Path(path)) as tmp:
        target = os.fsencode(tmp) if os.name == "posix" else str(tmp)
        sf.write(target, data, int(sample_rate), format=fmt, subtype=subtype, **options)
