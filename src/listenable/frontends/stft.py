"""The short-time Fourier transform a clip is analysed, masked and inverted with.

:class:`STFT` is a thin ``nn.Module`` holding its window as a buffer. It is the *listening*
STFT of an explanation (the grid the mask lives on) and, for the front ends that start from
a plain STFT, their first step too. It knows its geometry in physical units: the frequency
of every bin and the sample each frame is centred on.

Shapes:
    waveform  (batch, channels, samples)
    spectrum  (batch, channels, n_fft // 2 + 1, frames)   complex
    mask      (batch, n_fft // 2 + 1, frames)             real, in [0, 1]
"""

from __future__ import annotations

import torch
from torch import nn

from listenable.frontends.filterbanks import bin_frequencies

__all__ = ["STFT", "WINDOWS"]

WINDOWS = ("hann",)


class STFT(nn.Module):
    """A centred STFT with a periodic Hann window and its inverse.

    Args:
        sample_rate: the rate of the waveforms it takes (hertz).
        n_fft, win_length, hop_length: as ``torch.stft`` (``win_length`` defaults to
            ``n_fft``; a shorter window is zero-padded to ``n_fft``, centred).
        pad_mode: padding of the centred frames (``"reflect"`` or ``"constant"``).
    """

    def __init__(
        self,
        sample_rate: int,
        n_fft: int,
        hop_length: int,
        *,
        win_length: int | None = None,
        window: str = "hann",
        center: bool = True,
        pad_mode: str = "reflect",
    ) -> None:
        super().__init__()
        win_length = n_fft if win_length is None else int(win_length)
        if window not in WINDOWS:
            raise ValueError(f"unknown window {window!r}; choose from {WINDOWS}")
        if not 0 < win_length <= n_fft or not 0 < hop_length:
            raise ValueError(
                f"need 0 < win_length <= n_fft and hop_length > 0; got n_fft={n_fft}, "
                f"win_length={win_length}, hop_length={hop_length}"
            )
        if not center:
            raise ValueError("the listening STFT is centred (center=True)")
        self.sample_rate = int(sample_rate)
        self.n_fft = int(n_fft)
        self.win_length = win_length
        self.hop_length = int(hop_length)
        self.pad_mode = pad_mode
        window_ = torch.hann_window(win_length, periodic=True)
        if win_length < n_fft:  # as torch.stft pads a short window: centred in n_fft
            left = (n_fft - win_length) // 2
            window_ = torch.nn.functional.pad(window_, (left, n_fft - win_length - left))
        self.register_buffer("window", window_, persistent=False)

    @property
    def settings(self) -> dict:
        return {
            "sample_rate": self.sample_rate,
            "n_fft": self.n_fft,
            "win_length": self.win_length,
            "hop_length": self.hop_length,
            "window": "hann",
            "center": True,
            "pad_mode": self.pad_mode,
        }

    @property
    def bins(self) -> int:
        return self.n_fft // 2 + 1

    def frequencies(self) -> torch.Tensor:
        """Frequency of each bin in hertz ``(bins,)``, float64."""
        return bin_frequencies(self.sample_rate, self.n_fft)

    def frame_centres(self, frames: int) -> torch.Tensor:
        """The sample each frame is centred on ``(frames,)``, float64 (``hop · k``)."""
        return torch.arange(frames, dtype=torch.float64) * self.hop_length

    def frames(self, samples: int) -> int:
        """Frames of a clip of ``samples`` samples."""
        return 1 + samples // self.hop_length

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        """``(batch, channels, samples)`` → complex ``(batch, channels, bins, frames)``."""
        batch, channels, samples = waveform.shape
        spec = torch.stft(
            waveform.reshape(batch * channels, samples),
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            window=self.window,
            center=True,
            pad_mode=self.pad_mode,
            return_complex=True,
        )
        return spec.reshape(batch, channels, spec.shape[-2], spec.shape[-1])

    stft = forward

    def istft(
        self, spectrum: torch.Tensor, length: int, *, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Inverse of :meth:`forward`: complex ``(batch, channels, bins, frames)`` →
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
        if (
            self.n_fft % self.hop_length == 0
            and bins == self.bins
            and self.win_length == self.n_fft
        ):
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
