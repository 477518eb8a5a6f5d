"""Kaldi-compatible log-mel filterbank in pure torch, matching transformers' ``ASTFeatureExtractor``.

Without torchaudio the extractor takes its numpy path (``transformers.audio_utils.spectrogram``):
snip-edges frames of 400 samples every 160, per-frame DC removal, pre-emphasis 0.97 (first sample
scaled by 0.03), a *symmetric Hann* window (``window_function(400, "hann", periodic=False)`` - not
Kaldi's default Povey), zero padding to a 512-point rFFT, power, the Kaldi mel bank (20 Hz .. 8 kHz,
triangles in mel space), ``log(max(mel, 1.19e-7))``. The waveform is *not* scaled by 2**15 (that
line is commented out in the extractor) and there is no dither. ``ast_features`` then zero-pads or
truncates the *unnormalised* log-mel to ``max_length`` frames and only then normalises, so padded
frames equal ``-mean / (2 * std)`` (about 0.467), not 0.

Differences from ``torchaudio.compliance.kaldi.fbank`` (the extractor's other path, with
``window_type="hanning"``), all at rounding level: torchaudio computes everything in the input
dtype (float32), builds the mel bank in float32 with centres ``mel_low + k * delta`` (numpy path:
float64 ``linspace``) over 256 bins plus a zero Nyquist column (numpy path: 257 bins; its Nyquist
weight is 0 too), floors at float32 eps 2**-23 (numpy path: the literal below, 5e-15 larger). The
numpy path runs its FFT in float64 but stores it as complex64. Here every step runs in the input
dtype, like torchaudio, with the numpy path's float64 mel bank cast to that dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "AST_MEL_FLOOR",
    "AST_MEAN",
    "AST_STD",
    "hann_window",
    "povey_window",
    "kaldi_mel_banks",
    "kaldi_frames",
    "kaldi_power_spectrum",
    "kaldi_log",
    "ast_features",
    "frame_centres_s",
]

# The extractor's literal floor: meant to be float32 eps (2**-23 = 1.1920928955078125e-07) but one
# digit short; in float32 both round to 2**-23.
AST_MEL_FLOOR = 1.192092955078125e-07
AST_MEAN = -4.2677393
AST_STD = 4.5689974


def _positive_int(name: str, value: int) -> int:
    if isinstance(value, bool) or int(value) != value or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def hann_window(win_length: int, dtype=torch.float64, device=None) -> torch.Tensor:
    """Symmetric Hann window ``0.5 - 0.5 cos(2 pi n / (N - 1))``, shape (win_length,).

    This is the window the AST extractor uses (numpy ``np.hanning``; torchaudio ``"hanning"``).
    """
    win_length = _positive_int("win_length", win_length)
    return torch.hann_window(win_length, periodic=False, dtype=dtype, device=device)


def povey_window(win_length: int, dtype=torch.float64, device=None) -> torch.Tensor:
    """Kaldi's default Povey window, symmetric Hann ** 0.85, shape (win_length,).

    Not what the AST extractor uses (it asks for Hann, see ``hann_window``); kept for Kaldi parity.
    """
    return hann_window(win_length, dtype=dtype, device=device).pow(0.85)


def _mel(freq):
    return 1127.0 * torch.log(1.0 + freq / 700.0)


def kaldi_mel_banks(
    n_mels: int, n_fft: int, sample_rate: float, f_min: float, f_max: float, *, device=None
) -> torch.Tensor:
    """Kaldi mel filterbank, shape (n_mels, n_fft // 2 + 1), float64; row m is filter m.

    Triangles are linear in mel (``1127 ln(1 + f / 700)``) with edges equally spaced from
    mel(f_min) to mel(f_max); the transpose of the extractor's ``mel_filters``. ``f_max <= 0``
    means ``nyquist + f_max`` (Kaldi's convention).
    """
    n_mels = _positive_int("n_mels", n_mels)
    n_fft = _positive_int("n_fft", n_fft)
    if n_fft % 2:
        raise ValueError(f"n_fft must be even (Kaldi), got {n_fft}")
    nyquist = 0.5 * sample_rate
    f_max = f_max + nyquist if f_max <= 0 else f_max
    if not 0.0 <= f_min < f_max <= nyquist:
        raise ValueError(f"need 0 <= f_min < f_max <= nyquist, got {f_min}, {f_max}, {nyquist}")
    f64 = dict(dtype=torch.float64, device=device)
    lo, hi = _mel(torch.tensor(float(f_min), **f64)), _mel(torch.tensor(float(f_max), **f64))
    # numpy.linspace exactly: start + i * step, with the last edge set to stop.
    edges = torch.arange(n_mels + 2, **f64) * ((hi - lo) / (n_mels + 1)) + lo
    edges[-1] = hi
    fft_mel = _mel((sample_rate / n_fft) * torch.arange(n_fft // 2 + 1, **f64))
    width = torch.diff(edges)
    rising = (fft_mel[None, :] - edges[:-2, None]) / width[:-1, None]
    falling = (edges[2:, None] - fft_mel[None, :]) / width[1:, None]
    return torch.minimum(rising, falling).clamp_min(0.0)


def kaldi_frames(waveform: torch.Tensor, win_length: int, hop_length: int) -> torch.Tensor:
    """Snip-edges framing: (samples,) or (batch, samples) -> (batch, frames, win_length).

    ``frames = 1 + (samples - win_length) // hop_length``; frame j is
    ``waveform[..., j * hop : j * hop + win]``. A strided view (differentiable, no copy).
    """
    win_length = _positive_int("win_length", win_length)
    hop_length = _positive_int("hop_length", hop_length)
    if waveform.dim() == 1:
        waveform = waveform[None]
    if waveform.dim() != 2:
        raise ValueError(
            f"waveform must be (samples,) or (batch, samples), got {tuple(waveform.shape)}"
        )
    if waveform.shape[-1] < win_length:
        raise ValueError(f"waveform has {waveform.shape[-1]} samples, fewer than win {win_length}")
    return waveform.unfold(-1, win_length, hop_length)


def kaldi_power_spectrum(
    waveform: torch.Tensor,
    *,
    sample_rate: int = 16000,
    frame_length_ms: float = 25.0,
    frame_shift_ms: float = 10.0,
    preemphasis: float = 0.97,
    remove_dc_offset: bool = True,
    window: str | torch.Tensor = "hanning",
    round_to_power_of_two: bool = True,
) -> torch.Tensor:
    """Kaldi power spectrum: (samples,) or (batch, samples) -> (batch, n_fft // 2 + 1, frames).

    win = int(sr * ms * 0.001) as torchaudio does (400 at 16 kHz); n_fft is the next power of two
    >= win (512) or win. Per frame: subtract mean, ``x[i] -= c * x[i-1]`` (``x[0] *= 1 - c``),
    multiply by the window (``"hanning"`` = the extractor's, ``"povey"``, or a (win,) tensor),
    zero-pad, |rFFT|^2. No waveform scaling (the AST extractor applies none). Computed in the
    waveform's dtype (float32 in -> float32 out); differentiable.
    """
    if not waveform.is_floating_point():
        raise ValueError(f"waveform must be a floating-point tensor, got {waveform.dtype}")
    if not 0.0 <= preemphasis <= 1.0:
        raise ValueError(f"preemphasis must be in [0, 1], got {preemphasis}")
    win = int(sample_rate * frame_length_ms * 0.001)
    hop = int(sample_rate * frame_shift_ms * 0.001)
    if win < 2 or hop < 1:
        raise ValueError(f"frame length {win} / shift {hop} samples too small")
    n_fft = 1 << (win - 1).bit_length() if round_to_power_of_two else win
    kw = dict(dtype=waveform.dtype, device=waveform.device)
    if isinstance(window, torch.Tensor):
        if window.shape != (win,):
            raise ValueError(f"window must have shape ({win},), got {tuple(window.shape)}")
        window = window.to(**kw)
    elif window in ("hanning", "povey"):
        window = (hann_window if window == "hanning" else povey_window)(win, **kw)
    else:
        raise ValueError(f"window must be 'hanning', 'povey' or a tensor, got {window!r}")
    frames = kaldi_frames(waveform, win, hop)
    if remove_dc_offset:
        frames = frames - frames.mean(dim=-1, keepdim=True)
    if preemphasis:
        frames = frames - preemphasis * torch.cat([frames[..., :1], frames[..., :-1]], dim=-1)
    spec = torch.fft.rfft(frames * window, n=n_fft, dim=-1)
    return (spec.real.square() + spec.imag.square()).transpose(1, 2)


def kaldi_log(mel: torch.Tensor, floor: float = AST_MEL_FLOOR) -> torch.Tensor:
    """``log(max(mel, floor))``, any shape; floor defaults to the extractor's (float32 eps)."""
    if not floor > 0:
        raise ValueError(f"floor must be positive, got {floor}")
    return torch.log(torch.clamp_min(mel, floor))


def ast_features(
    waveform: torch.Tensor,
    *,
    max_length: int = 1024,
    mean: float = AST_MEAN,
    std: float = AST_STD,
    n_mels: int = 128,
) -> torch.Tensor:
    """AST ``input_values``: 16 kHz (samples,) or (batch, samples) -> (batch, max_length, n_mels).

    Kaldi log-mel (25 ms Hann frames, 10 ms hop, 512-point FFT, 20 Hz .. 8 kHz), zero-padded or
    truncated to ``max_length`` frames *before* ``(x - mean) / (2 * std)``, as the extractor does.
    Same dtype as the waveform; differentiable. Mel filter 3 of 128 is empty (narrower than an FFT
    bin), so that row is always the floor. Clips under 400 samples raise ValueError (the extractor
    returns all-padding for 240..399 samples and fails below).
    """
    max_length = _positive_int("max_length", max_length)
    power = kaldi_power_spectrum(waveform)  # (batch, 257, frames)
    banks = kaldi_mel_banks(n_mels, 512, 16000, 20.0, 8000.0, device=power.device)
    logmel = kaldi_log(torch.matmul(power.transpose(1, 2), banks.to(power.dtype).T))
    frames = logmel.shape[1]
    if frames < max_length:
        logmel = F.pad(logmel, (0, 0, 0, max_length - frames))
    else:
        logmel = logmel[:, :max_length]
    return (logmel - mean) / (std * 2)


def frame_centres_s(
    frames: int, *, sample_rate: float, win_length: int, hop_length: int
) -> torch.Tensor:
    """Centre time in seconds of each snip-edges frame, ``(j * hop + win / 2) / sr``: (frames,) f64."""
    if isinstance(frames, bool) or int(frames) != frames or frames < 0:
        raise ValueError(f"frames must be a non-negative integer, got {frames!r}")
    if not sample_rate > 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    hop_length = _positive_int("hop_length", hop_length)
    win_length = _positive_int("win_length", win_length)
    j = torch.arange(int(frames), dtype=torch.float64)
    return (j * hop_length + win_length / 2) / sample_rate
