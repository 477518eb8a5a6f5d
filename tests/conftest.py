import numpy as np
import pytest
import soundfile as sf
import torch


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def scene_like(rng, seconds=2.0, sr=48_000, channels=2):
    """Real-looking audio: pink-ish noise, a harmonic tone that comes and goes, a chirp."""
    n = int(seconds * sr)
    t = np.arange(n) / sr
    white = rng.standard_normal((channels, n))
    spec = np.fft.rfft(white, axis=1)
    freqs = np.fft.rfftfreq(n, 1 / sr)
    spec /= np.sqrt(np.maximum(freqs, 20.0))
    pink = np.fft.irfft(spec, n, axis=1)
    pink /= np.abs(pink).max()
    tone = sum(np.sin(2 * np.pi * 220 * k * t) / k for k in range(1, 6))
    env = (np.sin(2 * np.pi * 0.7 * t) > 0.3).astype(float)
    chirp = np.sin(2 * np.pi * (2000 * t + 1500 * t**2)) * np.exp(-((t - seconds / 2) ** 2) / 0.05)
    x = 0.2 * pink + 0.3 * (tone * env) / 3 + 0.2 * chirp
    x = x * np.array([1.0, 0.7])[:channels, None]
    return x.astype(np.float32)


@pytest.fixture
def clip(rng):
    return scene_like(rng)


@pytest.fixture(scope="session")
def model10():
    from listenable.models import McDonnellGao

    torch.manual_seed(0)
    model = McDonnellGao(n_classes=10).eval()
    # non-trivial running statistics so that BN is not the identity
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    model.class_names = [f"class{i}" for i in range(10)]
    return model


@pytest.fixture
def wav_file(tmp_path, clip):
    path = tmp_path / "clip.wav"
    sf.write(path, clip.T, 48_000, subtype="PCM_24")
    return path


def explainable(net, *, n_mels, channels=1, layers=None, probe_seconds=2.0):
    """A hand-built test model as an Explainable over a plain log-mel front end of
    ``n_mels`` rows and ``channels`` channels (``layers``: declared Layer objects for models
    whose grid cannot be probed, e.g. a fixed 2 x 2 input)."""
    from listenable.frontends import FrontEnd
    from listenable.models import Explainable

    fe = FrontEnd(sample_rate=16_000, n_fft=512, hop_length=256, n_mels=n_mels, channels=channels)
    return Explainable(net.eval(), fe, layers=layers, probe_seconds=probe_seconds)
