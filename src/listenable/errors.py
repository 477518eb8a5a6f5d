"""One package error type, with subclasses that say which stage refused the input."""

from __future__ import annotations


class ListenableError(Exception):
    """Base class for every error listenable raises on bad input or bad settings.

    The message is one line and names the file (where there is one) and what is wrong,
    so a command-line run can print it as is, without a traceback.
    """


class AudioError(ListenableError, ValueError):
    """An audio file or waveform that cannot be explained (unreadable, empty, NaN, too short...)."""


class CheckpointError(ListenableError, ValueError):
    """A checkpoint that is missing, malformed, tampered with, or not a safetensors file."""


class DatasetError(ListenableError, ValueError):
    """A data-set row or layout that is wrong (missing file, unknown label, path outside root)."""


class UsageError(ListenableError):
    """A command line or model spec that cannot work (exit status 2 on the command line)."""
