"""``FrontEnd``: waveform → the features a model takes, built from small steps, with its
geometry in samples and hertz.

Steps, in order (each optional but the first two):

1. **spectrum** — a centred STFT (``kind="stft"``, torch) or Kaldi's framing
   (``kind="kaldi"``: snip-edges frames, DC removal, pre-emphasis, Povey/Hann window; the
   fbank of AST and BEATs), then ``|X|^power`` (``power=2``: power, ``1``: magnitude);
2. **filterbank** — mel triangles (``mel_scale`` HTK or Slaney, ``norm`` None or Slaney, or
   Kaldi's banks), ``(n_mels, bins) @ spectrum``;
3. **compression** — ``"ln"``: ``ln(x + eps)`` (``eps_mode="clamp"``: ``ln(max(x, eps))``),
   ``"db"``: ``10 log10(max(x, amin)) − 10 log10(max(ref, amin))`` floored at ``top_db``
   below the clip's maximum, ``"log1p"``: ``ln(1 + x)``, ``None``: none;
4. **deltas** — ``deltas=1`` or ``2`` valid-only deltas of width ``delta_width`` stacked as
   extra channels (the reference model's 6 channels), every part trimmed to the frames the
   last delta keeps: feature frame ``j`` is spectrum frame ``j + frame_offset``;
5. **padding** to ``max_frames`` (AST's 1024) and **normalisation** ``(x − shift) / scale``;
6. **layout** — what the model takes: ``"bcft"`` ``(batch, channels, mels, frames)``,
   ``"bctf"`` ``(batch, channels, frames, mels)``, ``"btf"`` ``(batch, frames, mels)``,
   ``"bft"`` ``(batch, mels, frames)`` (the last two for one feature channel).

Keyword names follow ``torchaudio.transforms.MelSpectrogram``. ``channels`` is what the
front end reads: 1 (mono; audio is mixed down when loaded) or 2 (stereo kept, the
reference model). Everything after the spectrum is differentiable
(:meth:`FrontEnd.from_power`), so a method can optimise a mask through it.

Geometry (what the way back needs): :meth:`FrontEnd.frame_centres` — the sample each
feature frame is centred on; :meth:`FrontEnd.row_response` — each feature row's response
at any frequency in hertz (the filterbank, interpolated); :meth:`FrontEnd.listening_stft` —
the STFT whose grid the mask lives on by default (the front end's own).

Shapes:
    waveform  (batch, channels, samples)
    power     (batch, channels, bins, frames)
    canonical (batch, feature_channels, n_mels, feature_frames)   feature_channels =
              channels · (1 + deltas), order [x_L, x_R, Δ_L, Δ_R, ΔΔ_L, ΔΔ_R]
    features  the canonical tensor in ``layout``
"""

from __future__ import annotations

import math

import torch
from torch import nn

from listenable.frontends import kaldi
from listenable.frontends.filterbanks import (
    MEL_SCALES,
    bin_frequencies,
    mel_centres,
    mel_filterbank,
)
from listenable.frontends.stft import STFT

__all__ = ["FrontEnd", "PRESETS", "LAYOUTS", "COMPRESSIONS", "delta"]

LAYOUTS = ("bcft", "bctf", "btf", "bft")
COMPRESSIONS = ("ln", "db", "log1p", None)
KINDS = ("stft", "kaldi")

#: Presets: settings equal to each model's reference implementation (tested against it).
PRESETS: dict[str, dict] = {
    # McDonnell & Gao, DCASE 2019 1A (oracle: librosa with htk=True, norm=None)
    "mcdonnell_gao": dict(
        sample_rate=48_000, n_fft=2048, hop_length=1024, n_mels=128, f_min=0.0,
        f_max=24_000.0, mel_scale="htk", norm=None, power=2.0, compression="ln", eps=1e-8,
        deltas=2, delta_width=5, channels=2, layout="bcft",
    ),
    # PANNs CNN14 (oracle: torchlibrosa Spectrogram + LogmelFilterBank as CNN14 builds them)
    "panns": dict(
        sample_rate=32_000, n_fft=1024, hop_length=320, n_mels=64, f_min=50.0,
        f_max=14_000.0, mel_scale="slaney", norm="slaney", power=2.0, compression="db",
        ref=1.0, amin=1e-10, top_db=None, channels=1, layout="bctf",
    ),
    # transformers' ASTFeatureExtractor (oracle: the extractor itself)
    "ast": dict(
        kind="kaldi", sample_rate=16_000, n_fft=512, win_length=400, hop_length=160,
        n_mels=128, f_min=20.0, f_max=8_000.0, power=2.0, compression="ln",
        eps=kaldi.AST_MEL_FLOOR, eps_mode="clamp", preemphasis=0.97,
        waveform_scale=1.0, max_frames=1024, shift=-4.2677393, scale=2 * 4.5689974,
        channels=1, layout="btf",
    ),
    # SpeechBrain-style CNN14 classifiers (L-MAC): 16 kHz, 80 mels, log1p of the magnitude
    "log1p": dict(
        sample_rate=16_000, n_fft=1024, win_length=400, hop_length=160, n_mels=80,
        f_min=0.0, f_max=8_000.0, mel_scale="htk", norm=None, power=1.0,
        compression="log1p", channels=1, layout="btf",
    ),
    # the small shipped model: 16 kHz mono, 64 Slaney mels in dB
    "small": dict(
        sample_rate=16_000, n_fft=512, hop_length=256, n_mels=64, f_min=0.0, f_max=8_000.0,
        mel_scale="slaney", norm="slaney", power=2.0, compression="db", ref=1.0,
        amin=1e-10, top_db=80.0, channels=1, layout="bcft",
    ),
}  # fmt: skip

_LIMITS = {"sample_rate": (1_000, 384_000), "n_fft": (16, 65_536), "n_mels": (1, 1_024)}


def delta(x: torch.Tensor, width: int = 5) -> torch.Tensor:
    """Valid-only delta along the last axis: ``d[t] = Σ_n n (x[t+n] − x[t−n]) / (2 Σ n²)``.

    For width 5 this is ``Σ_{n=1,2} n (x[t+n] − x[t−n]) / 10``, librosa's
    ``delta(width=5)`` on the interior; no edge padding, so the output is ``width − 1``
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
    return out / norm


class FrontEnd(nn.Module):
    """Waveform ``(batch, channels, samples)`` → features in ``layout``. See the module doc."""

    def __init__(
        self,
        sample_rate: int = 48_000,
        n_fft: int = 2048,
        *,
        win_length: int | None = None,
        hop_length: int | None = None,
        f_min: float = 0.0,
        f_max: float | None = None,
        n_mels: int = 128,
        power: float = 2.0,
        center: bool = True,
        pad_mode: str = "reflect",
        norm: str | None = None,
        mel_scale: str = "htk",
        kind: str = "stft",
        compression: str | None = "ln",
        eps: float = 1e-8,
        eps_mode: str = "add",
        ref: float = 1.0,
        amin: float = 1e-10,
        top_db: float | None = None,
        preemphasis: float | None = None,
        waveform_scale: float = 1.0,
        deltas: int = 0,
        delta_width: int = 5,
        max_frames: int | None = None,
        shift: float = 0.0,
        scale: float = 1.0,
        channels: int = 1,
        layout: str = "bcft",
    ) -> None:
        super().__init__()
        hop_length = n_fft // 2 if hop_length is None else hop_length
        win_length = n_fft if win_length is None else win_length
        f_max = sample_rate / 2 if f_max is None else f_max
        _check(locals())
        self.sample_rate, self.n_fft, self.win_length = int(sample_rate), int(n_fft), win_length
        self.hop_length, self.f_min, self.f_max, self.n_mels = hop_length, f_min, f_max, n_mels
        self.power, self.center, self.pad_mode, self.norm = power, center, pad_mode, norm
        self.mel_scale, self.kind, self.compression = mel_scale, kind, compression
        self.eps, self.eps_mode, self.ref, self.amin, self.top_db = eps, eps_mode, ref, amin, top_db
        self.preemphasis, self.waveform_scale = preemphasis, waveform_scale
        self.deltas, self.delta_width, self.max_frames = deltas, delta_width, max_frames
        self.shift, self.scale, self.channels, self.layout = shift, scale, channels, layout
        #: feature frame ``j`` is spectrum frame ``j + frame_offset`` (the delta trims)
        self.frame_offset = deltas * (delta_width // 2)
        if kind == "stft":
            self.spectrum_stft = STFT(
                sample_rate, n_fft, hop_length, win_length=win_length, pad_mode=pad_mode
            )
            fb = mel_filterbank(
                sample_rate, n_fft, n_mels, f_min, f_max, mel_scale=mel_scale, norm=norm
            )
        else:
            self.spectrum_stft = None
            fb = kaldi.kaldi_mel_banks(n_mels, n_fft, sample_rate, f_min, f_max)
        self.register_buffer("filterbank", fb.float(), persistent=False)
        self._filterbank64 = fb

    # --- construction ------------------------------------------------------------------
    @classmethod
    def preset(cls, name: str, **overrides) -> FrontEnd:
        """A front end equal to a model family's reference implementation (:data:`PRESETS`)."""
        if name not in PRESETS:
            raise ValueError(f"unknown front-end preset {name!r}; choose from {sorted(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

    @property
    def settings(self) -> dict:
        """All settings, JSON-serialisable; ``FrontEnd(**settings)`` rebuilds it."""
        keys = (
            "kind", "sample_rate", "n_fft", "win_length", "hop_length", "f_min", "f_max",
            "n_mels", "power", "center", "pad_mode", "norm", "mel_scale", "compression",
            "eps", "eps_mode", "ref", "amin", "top_db", "preemphasis", "waveform_scale",
            "deltas", "delta_width", "max_frames", "shift", "scale", "channels", "layout",
        )  # fmt: skip
        return {k: getattr(self, k) for k in keys}

    @classmethod
    def from_settings(cls, settings: dict) -> FrontEnd:
        """Rebuild from :attr:`settings` (unknown keys and bad values: ``ValueError``)."""
        if not isinstance(settings, dict):
            raise ValueError("front-end settings must be a JSON object")
        known = set(cls().settings)
        unknown = sorted(set(settings) - known)
        if unknown:
            raise ValueError(f"unknown front-end setting(s) {unknown}")
        return cls(**settings)

    # --- the steps ---------------------------------------------------------------------
    def power_spectrum(self, waveform: torch.Tensor) -> torch.Tensor:
        """``(batch, channels, samples)`` → ``|X|^power`` ``(batch, channels, bins, frames)``."""
        self._check_channels(waveform)
        if self.waveform_scale != 1.0:
            waveform = waveform * self.waveform_scale
        if self.kind == "kaldi":
            b, c, n = waveform.shape
            power = kaldi.kaldi_power_spectrum(
                waveform.reshape(b * c, n),
                sample_rate=self.sample_rate,
                frame_length_ms=1000.0 * self.win_length / self.sample_rate,
                frame_shift_ms=1000.0 * self.hop_length / self.sample_rate,
                preemphasis=self.preemphasis or 0.0,
            )
            power = power.reshape(b, c, *power.shape[-2:])
            return power if self.power == 2.0 else power.pow(self.power / 2)
        if self.preemphasis:
            waveform = torch.cat(
                [waveform[..., :1], waveform[..., 1:] - self.preemphasis * waveform[..., :-1]],
                dim=-1,
            )
        return self.power_of(self.spectrum_stft(waveform))

    def power_of(self, spectrum: torch.Tensor) -> torch.Tensor:
        """Complex spectrum → ``|X|^power`` (the power the filterbank reads)."""
        power = spectrum.real.square() + spectrum.imag.square()
        return power if self.power == 2.0 else power.pow(self.power / 2)

    def from_power(self, power: torch.Tensor) -> torch.Tensor:
        """``|X|^power`` ``(batch, channels, bins, frames)`` → features in ``layout``
        (differentiable)."""
        mel = torch.matmul(self.filterbank, power)  # (batch, channels, n_mels, frames)
        x = self.compress(mel)
        parts = [x]
        for _ in range(self.deltas):
            parts.append(delta(parts[-1], self.delta_width))
        if self.deltas:
            keep = parts[-1].shape[-1]
            parts = [p[..., (p.shape[-1] - keep) // 2 :][..., :keep] for p in parts]
            x = torch.cat(parts, dim=1)
        if self.max_frames is not None:
            frames = x.shape[-1]
            if frames < self.max_frames:
                x = torch.nn.functional.pad(x, (0, self.max_frames - frames))
            else:
                x = x[..., : self.max_frames]
        if self.shift != 0.0 or self.scale != 1.0:
            x = (x - self.shift) / self.scale
        return self.to_layout(x)

    def compress(self, mel: torch.Tensor) -> torch.Tensor:
        if self.compression == "ln":
            if self.eps_mode == "clamp":
                return torch.log(torch.clamp(mel, min=self.eps))
            return torch.log(mel + self.eps)
        if self.compression == "log1p":
            return torch.log1p(mel)
        if self.compression == "db":
            db = 10.0 * torch.log10(torch.clamp(mel, min=self.amin))
            db = db - 10.0 * math.log10(max(self.amin, self.ref))
            if self.top_db is not None:
                peak = db.amax(dim=(-2, -1), keepdim=True)
                db = torch.maximum(db, peak - self.top_db)
            return db
        return mel

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        """``(batch, channels, samples)`` → features in ``layout``."""
        return self.from_power(self.power_spectrum(waveform))

    # --- layout ------------------------------------------------------------------------
    @property
    def feature_channels(self) -> int:
        return self.channels * (1 + self.deltas)

    def to_layout(self, canonical: torch.Tensor) -> torch.Tensor:
        """``(batch, feature_channels, n_mels, frames)`` → ``layout``."""
        if self.layout == "bcft":
            return canonical
        if self.layout == "bctf":
            return canonical.transpose(-1, -2)
        if self.layout == "bft":
            return canonical[:, 0]
        return canonical[:, 0].transpose(-1, -2)  # btf

    def to_canonical(self, features: torch.Tensor) -> torch.Tensor:
        """Features in ``layout`` → ``(batch, feature_channels, n_mels, frames)``."""
        if self.layout == "bcft":
            return features
        if self.layout == "bctf":
            return features.transpose(-1, -2)
        if self.layout == "bft":
            return features[:, None]
        return features.transpose(-1, -2)[:, None]  # btf

    def axes(self) -> tuple[int, int]:
        """``(freq_dim, time_dim)`` of the features in ``layout``."""
        return {"bcft": (2, 3), "bctf": (3, 2), "bft": (1, 2), "btf": (2, 1)}[self.layout]

    # --- geometry ----------------------------------------------------------------------
    def listening_stft(self) -> STFT:
        """The STFT whose grid the mask lives on by default: the front end's own (for
        Kaldi's frames, a centred Hann STFT of the same window and hop)."""
        if self.spectrum_stft is not None:
            return STFT(**{**self.spectrum_stft.settings, "window": "hann"})
        return STFT(self.sample_rate, self.n_fft, self.hop_length, win_length=self.win_length)

    def shares_stft(self, listening: STFT) -> bool:
        """Whether the features can be computed from ``listening``'s spectrum directly."""
        return (
            self.kind == "stft"
            and not self.preemphasis
            and self.waveform_scale == 1.0
            and listening.settings == self.spectrum_stft.settings
        )

    def from_stft(self, spectrum: torch.Tensor) -> torch.Tensor:
        """Features from the complex spectrum of :meth:`listening_stft` (only where
        :meth:`shares_stft`)."""
        return self.from_power(self.power_of(spectrum))

    def frame_centres(self, frames: int) -> torch.Tensor:
        """The sample each of ``frames`` feature frames is centred on ``(frames,)``, float64:
        ``hop · (j + frame_offset)`` for a centred STFT, ``hop · (j + frame_offset) +
        (win − 1) / 2`` for Kaldi's snip-edges frames."""
        j = torch.arange(frames, dtype=torch.float64) + self.frame_offset
        start = 0.0 if self.kind == "stft" else (self.win_length - 1) / 2
        return j * self.hop_length + start

    def frames(self, samples: int) -> int:
        """Feature frames of a clip of ``samples`` samples (before padding to max_frames)."""
        if self.kind == "stft":
            spectrum = 1 + samples // self.hop_length
        else:
            spectrum = 1 + (samples - self.win_length) // self.hop_length
        return spectrum - 2 * self.frame_offset

    def row_response(self, frequencies: torch.Tensor) -> torch.Tensor:
        """Each feature row's response at ``frequencies`` (hertz) ``(n_mels, n)``, float64:
        the filterbank interpolated linearly between its own bins (exact on them)."""
        fb = self._filterbank64  # (n_mels, bins)
        own = bin_frequencies(self.sample_rate, self.n_fft)
        f = torch.as_tensor(frequencies, dtype=torch.float64).clamp(0, own[-1])
        right = torch.searchsorted(own, f).clamp(1, len(own) - 1)
        left = right - 1
        frac = (f - own[left]) / (own[right] - own[left])
        return fb[:, left] * (1 - frac) + fb[:, right] * frac

    def row_centres(self) -> torch.Tensor:
        """Centre frequency of each feature row in hertz ``(n_mels,)``, float64 (the peak of
        its triangle)."""
        if self.kind == "stft":
            return mel_centres(self.n_mels, self.f_min, self.f_max, self.mel_scale)[1:-1]
        lo, hi = (1127.0 * math.log1p(f / 700.0) for f in (self.f_min, self.f_max))
        mels = torch.linspace(lo, hi, self.n_mels + 2, dtype=torch.float64)[1:-1]
        return 700.0 * torch.expm1(mels / 1127.0)  # Kaldi's mel scale, 1127 ln(1 + f / 700)

    def min_samples(self) -> int:
        """The shortest clip the front end computes features of."""
        frames = 1 + 2 * self.frame_offset
        if self.kind == "stft":
            return max(1, (frames - 1) * self.hop_length)
        return self.win_length + (frames - 1) * self.hop_length

    def _check_channels(self, waveform: torch.Tensor) -> None:
        if waveform.ndim != 3 or waveform.shape[1] != self.channels:
            raise ValueError(
                f"the front end reads (batch, {self.channels}, samples) waveforms, got shape "
                f"{tuple(waveform.shape)}"
            )

    def extra_repr(self) -> str:
        return (
            f"kind={self.kind}, sample_rate={self.sample_rate}, n_fft={self.n_fft}, "
            f"hop_length={self.hop_length}, n_mels={self.n_mels}, channels={self.channels}, "
            f"layout={self.layout}"
        )


def _check(s: dict) -> None:
    """Bounded, finite, consistent settings, or a ``ValueError`` naming the setting."""
    for key, (lo, hi) in _LIMITS.items():
        v = s[key]
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise ValueError(f"front-end setting {key}={v!r} must be an integer in [{lo}, {hi}]")
    for key in ("win_length", "hop_length"):
        v = s[key]
        if isinstance(v, bool) or not isinstance(v, int) or not 0 < v <= s["n_fft"]:
            raise ValueError(f"front-end setting {key}={v!r} must be an integer in [1, n_fft]")
    numbers = ("f_min", "f_max", "power", "eps", "ref", "amin", "waveform_scale", "shift", "scale")
    for key in numbers:
        v = s[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"front-end setting {key}={v!r} must be a finite number")
    if not 0 <= s["f_min"] < s["f_max"] <= s["sample_rate"] / 2:
        raise ValueError(
            f"front-end needs 0 <= f_min < f_max <= sample_rate / 2; got f_min={s['f_min']}, "
            f"f_max={s['f_max']}, sample_rate={s['sample_rate']}"
        )
    if s["power"] not in (1.0, 2.0) or not s["scale"] > 0 or not s["eps"] > 0:
        raise ValueError("front end needs power 1 or 2, scale > 0 and eps > 0")
    if not s["amin"] > 0 or not s["ref"] > 0:
        raise ValueError(f"front end needs amin > 0 and ref > 0; got {s['amin']}, {s['ref']}")
    for key in ("deltas", "delta_width", "channels"):  # 5.0 would pass the checks below
        if isinstance(s[key], bool) or not isinstance(s[key], int):
            raise ValueError(f"front-end setting {key}={s[key]!r} must be an integer")
    if not isinstance(s["center"], bool):
        raise ValueError(f"front-end setting center={s['center']!r} must be true or false")
    if s["norm"] not in (None, "slaney"):
        raise ValueError(f"front-end setting norm={s['norm']!r} must be None or 'slaney'")
    if s["kind"] not in KINDS:
        raise ValueError(f"unknown front-end kind {s['kind']!r}; choose from {KINDS}")
    if s["kind"] == "stft" and s["mel_scale"] not in MEL_SCALES:
        raise ValueError(f"unknown mel_scale {s['mel_scale']!r}; choose from {MEL_SCALES}")
    if s["compression"] not in COMPRESSIONS:
        raise ValueError(f"unknown compression {s['compression']!r}; choose from {COMPRESSIONS}")
    if s["eps_mode"] not in ("add", "clamp"):
        raise ValueError(f"eps_mode must be 'add' or 'clamp', got {s['eps_mode']!r}")
    if s["channels"] not in (1, 2) or isinstance(s["channels"], bool):
        raise ValueError(f"channels must be 1 (mono) or 2 (stereo), got {s['channels']!r}")
    if s["layout"] not in LAYOUTS:
        raise ValueError(f"unknown layout {s['layout']!r}; choose from {LAYOUTS}")
    if s["deltas"] not in (0, 1, 2) or s["delta_width"] not in (3, 5, 7, 9):
        raise ValueError("deltas must be 0, 1 or 2 and delta_width odd in 3..9")
    if s["layout"] in ("btf", "bft") and s["channels"] * (1 + s["deltas"]) != 1:
        raise ValueError(f"layout {s['layout']!r} holds one feature channel (mono, no deltas)")
    if s["max_frames"] is not None and not (
        isinstance(s["max_frames"], int)
        and not isinstance(s["max_frames"], bool)
        and 0 < s["max_frames"] <= 1_000_000
    ):
        raise ValueError(f"max_frames must be a positive integer, got {s['max_frames']!r}")
    if not s["center"] and s["kind"] == "stft":
        raise ValueError("an STFT front end is centred (center=True)")
    if s["pad_mode"] not in ("reflect", "constant"):
        raise ValueError(f"pad_mode must be 'reflect' or 'constant', got {s['pad_mode']!r}")
    if s["top_db"] is not None and not (
        isinstance(s["top_db"], (int, float)) and math.isfinite(s["top_db"]) and s["top_db"] > 0
    ):
        raise ValueError(f"top_db must be a positive number or None, got {s['top_db']!r}")
    if s["preemphasis"] is not None and not (
        isinstance(s["preemphasis"], (int, float)) and 0 <= s["preemphasis"] < 1
    ):
        raise ValueError(f"preemphasis must be in [0, 1), got {s['preemphasis']!r}")
