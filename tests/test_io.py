import os
import stat

import numpy as np
import pytest
import soundfile as sf
import torch

from listenable.errors import AudioError
from listenable.io import MIN_SAMPLES, load_audio, write_audio


@pytest.mark.parametrize("subtype", ["PCM_16", "PCM_24", "FLOAT"])
def test_wav_subtypes(tmp_path, clip, subtype):
    path = tmp_path / f"x_{subtype}.wav"
    sf.write(path, clip.T, 48_000, subtype=subtype)
    wave, notes = load_audio(path)
    assert wave.shape == clip.shape and wave.dtype == torch.float32
    np.testing.assert_allclose(wave.numpy(), clip, atol=1e-4)
    assert notes == []


@pytest.mark.parametrize("fmt", ["flac", "ogg"])
def test_other_formats(tmp_path, clip, fmt):
    path = tmp_path / f"x.{fmt}"
    sf.write(path, clip.T, 48_000)
    wave, _ = load_audio(path)
    assert wave.shape[0] == 2 and abs(wave.shape[1] - clip.shape[1]) < 2048


@pytest.mark.parametrize("rate", [8_000, 22_050, 44_100, 96_000])
def test_resampled_to_48k(tmp_path, rate):
    t = np.arange(rate * 1) / rate
    x = np.sin(2 * np.pi * 1000 * t).astype(np.float32) * 0.5
    path = tmp_path / f"x{rate}.wav"
    sf.write(path, np.stack([x, x], 1), rate)
    wave, notes = load_audio(path)
    assert abs(wave.shape[1] - 48_000) <= 1
    assert f"resampled from {rate} Hz" in notes[0]
    # the 1 kHz tone stays at 1 kHz
    spec = np.abs(np.fft.rfft(wave[0].numpy()))
    assert abs(np.argmax(spec) * 48_000 / wave.shape[1] - 1000) < 2


def test_mono_duplicated_with_warning(tmp_path, clip):
    path = tmp_path / "mono.wav"
    sf.write(path, clip[0], 48_000)
    with pytest.warns(UserWarning, match="mono"):
        wave, notes = load_audio(path)
    assert torch.equal(wave[0], wave[1])


@pytest.mark.parametrize(
    "case, message",
    [
        ("empty", "empty file"),
        ("garbage", "not a readable audio file"),
        ("six", "6 channels"),
        ("nan", "NaN or Inf"),
        ("short", "too short"),
        ("missing", "not found"),
    ],
)
def test_bad_files_name_the_file(tmp_path, case, message):
    path = tmp_path / f"bad {case}.wav"
    if case == "empty":
        path.write_bytes(b"")
    elif case == "garbage":
        path.write_bytes(np.random.default_rng(0).bytes(5000))
    elif case == "six":
        sf.write(path, np.zeros((48_000, 6), np.float32), 48_000)
    elif case == "nan":
        x = np.zeros((48_000, 2), np.float32)
        x[100, 1] = np.nan
        sf.write(path, x, 48_000, subtype="FLOAT")
    elif case == "short":
        sf.write(path, np.zeros((MIN_SAMPLES - 1, 2), np.float32), 48_000)
    with pytest.raises(AudioError) as info:
        load_audio(path)
    text = str(info.value)
    assert str(path) in text and message in text and "\n" not in text


def test_write_audio_is_atomic_and_round_trips(tmp_path, clip):
    path = tmp_path / "out.wav"
    write_audio(path, torch.from_numpy(clip))
    assert [p.name for p in tmp_path.iterdir()] == ["out.wav"]
    back, _ = load_audio(path)
    np.testing.assert_array_equal(back.numpy(), clip)


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_outputs_get_the_mode_of_a_plain_open(tmp_path, clip, umask):
    """Atomic writes go through a private temporary file (0600); the output itself must be
    as readable as any file the user creates (a gallery is served by another user)."""
    from listenable.atomic import write_json

    old = os.umask(umask)
    try:
        write_audio(tmp_path / "out.wav", torch.from_numpy(clip))
        write_json(tmp_path / "out.json", {"a": 1})
        (tmp_path / "plain").write_text("x")
    finally:
        os.umask(old)
    expected = stat.S_IMODE((tmp_path / "plain").stat().st_mode)
    assert expected == 0o666 & ~umask
    for name in ("out.wav", "out.json"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == expected
