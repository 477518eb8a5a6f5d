"""Deprecated: the reference front end now lives in :mod:`listenable.frontends`
(``FrontEnd.preset("mcdonnell_gao")``). Kept only so that old imports keep working."""

from __future__ import annotations

from listenable.frontends import FrontEnd, delta, mel_filterbank

__all__ = ["LogMelDeltas", "delta", "mel_filterbank"]


class LogMelDeltas(FrontEnd):
    """``FrontEnd.preset("mcdonnell_gao")`` with the old keyword names and the STFT methods
    of the old module (``stft``, ``istft``, ``window``)."""

    def __init__(self, sample_rate=48_000, n_fft=2048, hop_length=1024, n_mels=128, fmin=0.0,
                 fmax=None) -> None:  # fmt: skip
        from listenable.frontends.frontend import PRESETS

        settings = dict(PRESETS["mcdonnell_gao"])
        settings.update(sample_rate=sample_rate, n_fft=n_fft, hop_length=hop_length,
                        n_mels=n_mels, f_min=fmin, f_max=fmax or sample_rate / 2)  # fmt: skip
        super().__init__(**settings)
        self.fmin, self.fmax = self.f_min, self.f_max

    @property
    def window(self):
        return self.spectrum_stft.window

    def stft(self, waveform):
        return self.spectrum_stft(waveform)

    def istft(self, spectrum, length, *, mask=None):
        return self.spectrum_stft.istft(spectrum, length, mask=mask)
