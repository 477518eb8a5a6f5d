"""Log-mel, delta and delta-delta features of McDonnell & Gao (DCASE 2019 Task 1A).

A pure function per step plus one thin ``nn.Module`` that holds the constants (Hann window,
mel filterbank) as buffers, in the torchaudio manner. The module also keeps the geometry
the way back needs: STFT settings, the frame offset of the delta trims and the filterbank.

Shapes:
    waveform  (batch, channels, samples)               float32, 48 kHz, channels = 2
    spectrum  (batch, channels, freq_bins, frames)     complex, freq_bins = n_fft // 2 + 1
    features  (batch, 6, n_mels, feature_frames)       feature_frames = frames - 8
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["LogMelDeltas", "hz_to_mel", "mel_to_hz", "mel_filterbank", "delta", "FRAME_OFFSET"]

#: Feature frame ``j`` is STFT frame ``j + FRAME_OFFSET``: the log-mel is trimmed ``[4:-4]``
#: so that it lines up with the valid part of the delta-delta (two valid deltas of width 5).
FRAME_OFFSET = 4
LOG_OFFSET = 1e-8


def hz_to_mel(hz: torch.Tensor | float) -> torch.Tensor:
    """HTK mel scale: ``2595 log10(1 + f / 700)``."""
    return 2595.0 * torch.log10(1.0 + torch.as_tensor(hz, dtype=torch.float64) / 700.0)


def mel_to_hz(mel: torch.Tensor | float) -> torch.Tensor:
    """Inverse of :func:`hz_to_mel`."""
    return 700.0 * (10.0 ** (torch.as_tensor(mel, dtype=torch.float64) / 2595.0) - 1.0)


def mel_filterbank(
    sample_rate: int, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None
) -> torch.Tensor:
    """Unnormalised triangular HTK mel filterbank ``(n_mels, n_fft // 2 + 1)``, float64.

    Equal to ``librosa.filters.mel(sr, n_fft, n_mels, fmin, fmax, htk=True, norm=None)``.
    """
    fmax = sample_rate / 2 if fmax is None else fmax
    fft_freqs = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    mel_points = torch.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2, dtype=torch.float64)
    hz_points = mel_to_hz(mel_points)
    widths = torch.diff(hz_points)  # (n_mels + 1,)
    ramps = hz_points[:, None] - fft_freqs[None, :]  # (n_mels + 2, bins)
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    return torch.clamp(torch.minimum(lower, upper), min=0.0)


def delta(x: torch.Tensor, width: int = 5) -> torch.Tensor:
    """Valid-only delta along the last axis: ``d[t] = Σ_n n (x[t+n] − x[t−n]) / (2 Σ n²)``.

    For width 5 this is ``Σ_{n=1,2} n (x[t+n] − x[t−n]) / 10``, librosa's
    ``delta(width=5)`` on the interior; no edge padding, so the output is ``width - 1``
    frames shorter.
    """
    half = width // 2
    frames = x.shape[-1]
    if frames < width:
        raise ValueError(f"delta needs at least {width} frames, got {frames}")
    norm = 2.0 * sum(n * n for n in range(1, half + 1))
    out = x[..., half + 1 : frames - half + 1] - x[..., half - 1 : frames - half - 1]
    for n in range(2, half + 1):
        out = out + n * (
            x[..., half + n : frames - half + n] - x[..., half - n : frames - half - n]
        )
    return out.div_(norm)


class LogMelDeltas(nn.Module):
    """Waveform ``(batch, 2, samples)`` → features ``(batch, 6, n_mels, frames - 8)``.

    Channel order ``[logmel_L, logmel_R, Δ_L, Δ_R, ΔΔ_L, ΔΔ_R]``. STFT: Hann window of
    ``n_fft``, centred with reflect padding; power spectrum; HTK mel without normalisation;
    natural log of ``mel + 1e-8``; valid deltas of width 5; log-mel trimmed ``[4:-4]`` and
    delta ``[2:-2]`` so all three have the same frames. 10 s at 48 kHz gives 469 STFT frames
    and 461 feature frames.

    Use :meth:`stft` and :meth:`from_stft` to keep the spectrum for the way back.
    """

    def __init__(
        self,
        sample_rate: int = 48_000,
        n_fft: int = 2048,
        hop_length: int = 1024,
        n_mels: int = 128,
        fmin: float = 0.0,
        fmax: float | None = None,
    ) -> None:
        super().__init__()
        self.sample_rate = sample_rate
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.n_mels = n_mels
        self.fmin = fmin
        self.fmax = sample_rate / 2 if fmax is None else fmax
        self.frame_offset = FRAME_OFFSET
        self.register_buffer("window", torch.hann_window(n_fft, periodic=True), persistent=False)
        fb = mel_filterbank(sample_rate, n_fft, n_mels, fmin, self.fmax)
        self.register_buffer("filterbank", fb.float(), persistent=False)

    @property
    def settings(self) -> dict:
        """The feature settings, as stored in checkpoint metadata."""
        return {
            "sample_rate": self.sample_rate,
            "n_fft": self.n_fft,
            "hop_length": self.hop_length,
            "window": "hann",
            "center": True,
            "pad_mode": "reflect",
            "n_mels": self.n_mels,
            "fmin": self.fmin,
            "fmax": self.fmax,
            "mel_scale": "htk",
            "mel_norm": None,
            "log_offset": LOG_OFFSET,
            "delta_width": 5,
            "frame_offset": self.frame_offset,
        }

    def stft(self, waveform: torch.Tensor) -> torch.Tensor:
        """``(batch, channels, samples)`` → complex ``(batch, channels, n_fft//2 + 1, frames)``."""
        batch, channels, samples = waveform.shape
        spec = torch.stft(
            waveform.reshape(batch * channels, samples),
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            window=self.window,
            center=True,
            pad_mode="reflect",
            return_complex=True,
        )
        return spec.reshape(batch, channels, spec.shape[-2], spec.shape[-1])

    def istft(
        self, spectrum: torch.Tensor, length: int, *, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Inverse of :meth:`stft`: complex ``(batch, channels, bins, frames)`` →
        ``(batch, channels, length)``, same window, hop and centring.

        ``mask (batch, bins, frames)``: multiply every channel by it first (phase kept, as
        :func:`~listenable.masking.apply_mask`); ``spectrum`` itself is left as it is.

        Where the hop divides ``n_fft`` (the reference 2048 / 1024), the overlap-add is done
        by reshaping and the window envelope is cached per length: the same sums as
        ``torch.istft``, with fewer passes over the signal. On the CPU it runs one clip at a
        time: the temporaries stay small enough for the allocator to reuse them (larger
        blocks are page-faulted in again on every call) and the masked spectrum is still in
        cache when the inverse FFT reads it.
        """
        from listenable.masking import apply_mask

        batch, channels, bins, frames = spectrum.shape
        if self.n_fft % self.hop_length == 0 and bins == self.n_fft // 2 + 1:
            envelope = self._envelope(frames, length, spectrum.device, spectrum.real.dtype)
            if envelope is not None:
                wave = envelope.new_empty(batch, channels, length)
                step = batch if spectrum.device.type != "cpu" else 1
                start = self.n_fft // 2
                for i in range(0, batch, step):
                    part = spectrum[i : i + step]
                    if mask is not None:
                        part = apply_mask(part, mask[i : i + step])
                    summed = self._overlap_add(part.reshape(-1, bins, frames))
                    out = wave[i : i + step].view(-1, length)
                    torch.div(summed[:, start : start + length], envelope, out=out)
                return wave
        if mask is not None:
            spectrum = apply_mask(spectrum, mask)
        wave = torch.istft(
            spectrum.reshape(batch * channels, bins, frames),
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            window=self.window,
            center=True,
            length=length,
        )
        return wave.reshape(batch, channels, length)

    def _overlap_add(self, spectrum: torch.Tensor) -> torch.Tensor:
        """``(n, bins, frames)`` → windowed frames summed at hop spacing ``(n, samples)``."""
        n, _, frames = spectrum.shape
        hop, ratio = self.hop_length, self.n_fft // self.hop_length
        segments = torch.fft.irfft(spectrum, n=self.n_fft, dim=1).transpose(1, 2)
        if segments.is_contiguous():  # frame-major spectrum (as torch.stft returns it)
            segments = segments.mul_(self.window)
        else:
            segments = segments * self.window
        segments = segments.reshape(n, frames, ratio, hop)
        if ratio == 2:  # the reference 50 % overlap: every output block is one sum, one pass
            out = segments.new_empty(n, frames + 1, hop)
            out[:, 0] = segments[:, 0, 0]
            torch.add(segments[:, 1:, 0], segments[:, :-1, 1], out=out[:, 1:frames])
            out[:, frames] = segments[:, -1, 1]
            return out.reshape(n, (frames + 1) * hop)
        out = segments.new_zeros(n, (frames + ratio - 1) * hop)
        for r in range(ratio):
            out[:, r * hop : (r + frames) * hop] += segments[:, :, r].reshape(n, frames * hop)
        return out

    def _envelope(self, frames: int, length: int, device, dtype) -> torch.Tensor | None:
        """Σ window² at hop spacing over the kept samples ``(length,)``, cached; ``None`` where
        it vanishes or ends before ``length`` (then torch.istft decides: it raises)."""
        key = (frames, length, str(device), dtype)
        cache = self.__dict__.setdefault("_envelopes", {})
        if key not in cache:
            hop, ratio = self.hop_length, self.n_fft // self.hop_length
            env = self.window.to(device, dtype).square().reshape(ratio, hop).repeat(1, frames)
            total = env.new_zeros((frames + ratio - 1) * hop)
            for r in range(ratio):
                total[r * hop : (r + frames) * hop] += env[r]
            start = self.n_fft // 2
            kept = total[start : start + length]
            vanishes = start + length > total.shape[0] or bool((kept.abs() < 1e-11).any())
            if len(cache) >= 16:
                cache.pop(next(iter(cache)))
            cache[key] = None if vanishes else kept.contiguous()
        return cache[key]

    def from_stft(self, spectrum: torch.Tensor) -> torch.Tensor:
        """Complex spectrum ``(batch, 2, bins, frames)`` → features ``(batch, 6, n_mels, frames - 8)``."""
        return self.from_power(spectrum.real.square() + spectrum.imag.square())

    def from_power(self, power: torch.Tensor) -> torch.Tensor:
        """Power spectrum ``|X|²`` ``(batch, 2, bins, frames)`` → features, as :meth:`from_stft`
        (differentiable: a method may optimise a mask on the power spectrum through it)."""
        mel = torch.matmul(self.filterbank, power)  # (batch, 2, n_mels, frames)
        logmel = torch.log(mel + LOG_OFFSET)
        d1 = delta(logmel)
        d2 = delta(d1)
        trim = self.frame_offset
        return torch.cat([logmel[..., trim:-trim], d1[..., 2:-2], d2], dim=1)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return self.from_stft(self.stft(waveform))

    def n_frames(self, samples: int) -> int:
        """Number of STFT frames for a clip of ``samples`` samples (centred STFT)."""
        return 1 + samples // self.hop_length

    def extra_repr(self) -> str:
        return (
            f"sample_rate={self.sample_rate}, n_fft={self.n_fft}, hop_length={self.hop_length}, "
            f"n_mels={self.n_mels}, fmin={self.fmin}, fmax={self.fmax}"
        )
