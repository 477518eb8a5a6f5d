"""Figure functions write a valid, compressed PNG (or WebP), atomically (no temporary file
left behind); spectrograms on a log axis in Hz, masked ones on the original's scale."""

import struct

import numpy as np
import pytest
import torch

from listenable.report import figures as fg

PNG = b"\x89PNG\r\n\x1a\n"


def _png_size(path):
    """(width, height) from the IHDR chunk of a PNG file."""
    data = path.read_bytes()
    assert data[:8] == PNG, path
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def _no_temp_files(folder):
    return not [p.name for p in folder.iterdir() if ".tmp-" in p.name]


NAMES = ["airport", "$\\frac{x$", "<img src=x onerror=alert(1)>", "駅 ü"]


def test_confusion_figure(tmp_path):
    matrix = np.array([[5, 1, 0, 0], [0, 3, 2, 0], [0, 0, 4, 0], [1, 0, 0, 0]])
    path = tmp_path / "confusion.png"
    fg.confusion_figure(path, matrix, NAMES, title="accuracy $0.7 (50%)")
    width, height = _png_size(path)
    assert width > 100 and height > 100
    assert _no_temp_files(tmp_path)
    with pytest.raises(ValueError, match="shape"):
        fg.confusion_figure(tmp_path / "bad.png", matrix[:2], NAMES)
    assert not (tmp_path / "bad.png").exists() and _no_temp_files(tmp_path)


def test_confusion_figure_all_zero(tmp_path):
    fg.confusion_figure(tmp_path / "zero.png", np.zeros((2, 2)), ["a", "b"])
    assert _png_size(tmp_path / "zero.png")[0] > 50


@pytest.mark.parametrize("threshold", [0.8, None])
def test_confidence_histogram(tmp_path, threshold):
    path = tmp_path / "confidence.png"
    fg.confidence_histogram(path, [0.1, 0.5, 0.81, 0.99, 1.0], threshold)
    width, height = _png_size(path)
    assert width > 100 and height > 100
    assert _no_temp_files(tmp_path)


def test_confidence_histogram_empty(tmp_path):
    fg.confidence_histogram(tmp_path / "empty.png", [], 0.8)
    assert _png_size(tmp_path / "empty.png")[0] > 50


@pytest.mark.parametrize("n", [0, 1, 5])
def test_class_sheet(tmp_path, n, rng):
    images = [fg.db_spectrogram(rng.random((1025, 47)) + 1e-3) for _ in range(n)]
    path = tmp_path / f"sheet-{n}.png"
    fg.class_sheet(path, images, [f"clip $ {i} 0.9" for i in range(n)], NAMES[2])
    width, height = _png_size(path)
    assert width > 100 and height > 100
    assert _no_temp_files(tmp_path)


def test_class_sheet_of_view_panels_at_any_rate(tmp_path, rng):
    """Panels cut from the gallery's views (RGB), each with its own rate and duration."""
    from PIL import Image

    panels = [rng.integers(0, 255, (128, 640, 3), dtype=np.uint8) for _ in range(3)]
    path = tmp_path / "sheet.png"
    fg.class_sheet(
        path, panels, ["a", "b", "c"], "park", rates=[16_000, 32_000, 48_000], durations=[2, 5, 10]
    )
    assert _png_size(path)[0] > 300
    with Image.open(path) as image:
        assert image.mode == "P" and len(image.getcolors()) <= fg.PNG_COLOURS  # compressed


def test_profile_figure(tmp_path):
    freqs = np.geomspace(20, 8000, 50)
    path = tmp_path / "profile.png"
    fg.profile_figure(path, freqs.tolist(), np.exp(-(np.log(freqs / 1000) ** 2)).tolist(), NAMES[1])
    width, height = _png_size(path)
    assert width > 200 and height > 100 and _no_temp_files(tmp_path)


def test_log_frequency_keeps_a_band_where_it_is():
    """A power image hot in one linear bin at 1 kHz lands on the row of 1 kHz."""
    from listenable.report.views import freq_position

    rate, bins = 16_000, 257
    image = np.zeros((bins, 3))
    image[round(1000 / (rate / 2) * (bins - 1))] = 1.0
    rows = fg.log_frequency(image, rate, rows=200)
    assert abs(int(rows[:, 0].argmax()) - freq_position(1000, rate) * 200) <= 2


@pytest.mark.parametrize(("rate", "bins", "channels"), [(48_000, 1025, 2), (16_000, 257, 1)])
def test_explanation_figure(tmp_path, rate, bins, channels):
    torch.manual_seed(0)
    spectrum = torch.randn(channels, bins, 20, dtype=torch.complex64)
    heat = torch.rand(bins, 20)
    path = tmp_path / "clip.png"
    fg.explanation_figure(
        path, spectrum, heat, (heat > 0.75).float(), title="a$b", sample_rate=rate, hop_length=256
    )
    assert _png_size(path)[1] > 300
    assert path.stat().st_size < 150_000  # a palette PNG, not 400 kB of RGBA
    assert _no_temp_files(tmp_path)
    fg.explanation_figure(tmp_path / "clip.webp", spectrum, heat, heat, sample_rate=rate)
    assert (tmp_path / "clip.webp").read_bytes()[8:12] == b"WEBP"


def test_db_spectrogram():
    power = np.array([[1.0, 0.1], [0.0, 0.01]])
    db = fg.db_spectrogram(power, floor_db=-60)
    np.testing.assert_allclose(db, [[0.0, -10.0], [-60.0, -20.0]], atol=1e-9)
    spec = torch.tensor([[1 + 0j, 0.1j]])
    np.testing.assert_allclose(fg.db_spectrogram(spec), [[0.0, -20.0]], atol=1e-6)


def test_failed_save_leaves_no_file(tmp_path, monkeypatch):
    """A figure that fails while being written leaves neither a partial file nor a temp."""
    import matplotlib.figure

    def boom(self, *args, **kwargs):
        with open(args[0], "wb") as handle:
            handle.write(b"\x89PNG partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        fg.confidence_histogram(tmp_path / "c.png", [0.5], 0.8)
    assert list(tmp_path.iterdir()) == []
