import json
import math

import numpy as np
import pytest
import soundfile as sf

from listenable.data import scenes, tau_dataset
from listenable.data.scenes import (
    CLASSES,
    EVENT_TYPES,
    load_events,
    read_manifest,
    render_clip,
    render_scene_file,
    write_scenes,
)
from listenable.errors import DatasetError

SR = 48_000
N_FFT, HOP = 2048, 1024


def _power(x):
    """|STFT|² of (channels, samples), centred with reflect padding, summed over channels
    -> (frames, bins); the model's STFT (n_fft 2048, hop 1024, periodic Hann)."""
    x = np.pad(x, [(0, 0), (N_FFT // 2, N_FFT // 2)], mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(x, N_FFT, axis=-1)[:, ::HOP]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)
    return (np.abs(np.fft.rfft(frames * window, axis=-1)) ** 2).sum(axis=0)


def _box(shape, onset, offset, low, high):
    times = np.arange(shape[0]) * HOP / SR
    freqs = np.arange(shape[1]) * SR / N_FFT
    t = (times >= onset) & (times <= offset)
    f = (freqs >= low) & (freqs <= high)
    return np.outer(t, f)


@pytest.fixture(scope="module")
def clips():
    """Clip 0 of every class, and clip 1 (to meet some distractors)."""
    return [render_clip(7, c, i) for c in range(len(CLASSES)) for i in (0, 1)]


def test_classes_and_event_types():
    assert CLASSES == (
        "airport",
        "bus",
        "metro",
        "metro_station",
        "park",
        "public_square",
        "shopping_mall",
        "street_pedestrian",
        "street_traffic",
        "tram",
    )
    assert set(EVENT_TYPES) == set(CLASSES)
    assert len(set(EVENT_TYPES.values())) == len(CLASSES)


def test_deterministic_for_a_seed():
    a = render_clip(3, 4, 11)
    b = render_clip(3, 4, 11)
    assert a.mixture.tobytes() == b.mixture.tobytes()
    assert a.events == b.events
    other_seed = render_clip(4, 4, 11)
    other_clip = render_clip(3, 4, 12)
    for other in (other_seed, other_clip):
        assert not np.allclose(a.mixture, other.mixture)
        assert not np.allclose(a.background, other.background)


def test_parts_sum_to_mixture(clips):
    for clip in clips:
        assert clip.mixture.shape == (2, 10 * SR) and clip.mixture.dtype == np.float32
        for part in (clip.background, clip.event_audio, clip.distractor_audio):
            assert part.shape == (2, 10 * SR) and part.dtype == np.float32
        total = clip.background + clip.event_audio + clip.distractor_audio
        np.testing.assert_allclose(clip.mixture, total, atol=1e-6)
        assert np.abs(clip.mixture).max() <= scenes.PEAK_LIMIT + 1e-6
        has_distractor = any(e.role == "distractor" for e in clip.events)
        assert bool(np.abs(clip.distractor_audio).max() > 0) == has_distractor


def test_event_plan(clips):
    assert any(e.role == "distractor" for clip in clips for e in clip.events)
    for clip in clips:
        signature = [e for e in clip.events if e.role == "signature"]
        distractors = [e for e in clip.events if e.role == "distractor"]
        assert 2 <= len(signature) <= 4 and len(distractors) <= 1
        assert all(e.label == EVENT_TYPES[clip.label] for e in signature)
        assert all(e.label != EVENT_TYPES[clip.label] for e in distractors)
        for e in clip.events:
            assert 0.0 <= e.onset_s < e.offset_s <= 10.0
            assert 0.2 <= e.offset_s - e.onset_s <= 3.0
            assert 0.0 <= e.low_hz < e.high_hz <= SR / 2
            assert e.left_gain**2 + e.right_gain**2 == pytest.approx(1.0)
            lo, hi = scenes.SIGNATURE_SNR_DB if e.role == "signature" else scenes.DISTRACTOR_SNR_DB
            assert lo <= e.snr_db <= hi
        spans = sorted((e.onset_s, e.offset_s) for e in signature)
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:])), "signature events overlap"
        coverage = sum(b - a for a, b in spans) / 10.0
        assert 0.08 <= coverage <= 0.6


def test_events_agree_with_audio(clips):
    """In each event's box the mixture is well above the background, and the event's own
    energy lies mostly inside its box."""
    for clip in clips:
        mix, bg = _power(clip.mixture), _power(clip.background)
        signature = sorted(
            (e for e in clip.events if e.role == "signature"), key=lambda e: e.onset_s
        )
        bounds = [0.0] + [(a.offset_s + b.onset_s) / 2 for a, b in zip(signature, signature[1:])]
        bounds.append(10.0)
        for k, e in enumerate(signature):
            box = _box(mix.shape, e.onset_s, e.offset_s, e.low_hz, e.high_hz)
            ratio = mix[box].sum() / bg[box].sum()
            assert ratio >= 2.0, (clip.label, e, ratio)
            # this event alone: the event audio between the neighbours' boundaries
            alone = np.zeros_like(clip.event_audio)
            a, b = int(bounds[k] * SR), int(bounds[k + 1] * SR)
            alone[:, a:b] = clip.event_audio[:, a:b]
            own = _power(alone)
            inside = own[box].sum() / own.sum()
            assert inside >= 0.8, (clip.label, e, inside)
        for e in clip.events:
            if e.role == "distractor":
                own = _power(clip.distractor_audio)
                box = _box(own.shape, e.onset_s, e.offset_s, e.low_hz, e.high_hz)
                assert own[box].sum() / own.sum() >= 0.8, (clip.label, e)


def test_background_level_does_not_depend_on_the_events(clips):
    lo, hi = scenes.BACKGROUND_DBFS
    for clip in clips:
        if np.abs(clip.mixture).max() < scenes.PEAK_LIMIT - 1e-3:  # not scaled down
            level = 10 * math.log10(np.mean(clip.background.astype(np.float64) ** 2))
            assert lo - 0.01 <= level <= hi + 0.01


def test_render_other_rate_and_bad_arguments():
    clip = render_clip(0, 9, 0, sample_rate=16_000, duration=4.0)
    assert clip.mixture.shape == (2, 64_000)
    assert all(e.high_hz <= 8_000 for e in clip.events)
    with pytest.raises(DatasetError):
        render_clip(0, 10, 0)
    with pytest.raises(DatasetError):
        render_clip(-1, 0, 0)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "scenes"
    calls = []
    result = write_scenes(
        out, clips_per_class=2, seed=5, progress=lambda done, total: calls.append((done, total))
    )
    assert result == out
    assert calls[-1] == (20, 20) and len(calls) == 20
    return out


def _read_tsv(path):
    lines = path.read_text().splitlines()
    return lines[0].split("\t"), [line.split("\t") for line in lines[1:]]


def test_written_tree_has_the_tau_layout(tree):
    header, meta = _read_tsv(tree / "meta.csv")
    assert header == ["filename", "scene_label", "identifier", "source_label"]
    assert len(meta) == 20
    for filename, label, identifier, device in meta:
        assert filename.startswith("audio/") and filename.endswith(".wav")
        scene, city, location, segment, dev = filename[6:-4].split("-")
        assert scene == label and label in CLASSES and dev == device == "a"
        assert identifier == f"{city}-{location}" and city == "synth5"
        assert segment.isdigit()
        info = sf.info(str(tree / filename))
        assert (info.samplerate, info.channels, info.frames) == (SR, 2, 10 * SR)
        assert info.subtype == "PCM_24"
    assert sorted(p.name for p in (tree / "audio").iterdir()) == sorted(m[0][6:] for m in meta)

    setup = tree / "evaluation_setup"
    h_train, train = _read_tsv(setup / "fold1_train.csv")
    h_eval, evaluate = _read_tsv(setup / "fold1_evaluate.csv")
    h_test, test = _read_tsv(setup / "fold1_test.csv")
    assert h_train == h_eval == ["filename", "scene_label"] and h_test == ["filename"]
    assert len(train) == len(evaluate) == 10  # 0.3 of 2 clips per class rounds to 1
    assert [r[0] for r in test] == [r[0] for r in evaluate]
    assert not {r[0] for r in train} & {r[0] for r in evaluate}
    assert sorted(map(tuple, train + evaluate)) == sorted((m[0], m[1]) for m in meta)

    data = tau_dataset(tree, "train")
    assert data.class_names == list(CLASSES)
    assert len(data) == 10 and sorted(data.labels) == list(range(10))
    wave, label, path = data[0]
    assert wave.shape == (2, 10 * SR) and CLASSES[label] in path


def test_events_csv_and_manifest_match_rendering(tree):
    header = (tree / "events.csv").read_text().splitlines()[0].split("\t")
    assert header[:9] == [
        "filename",
        "event_label",
        "onset_s",
        "offset_s",
        "low_hz",
        "high_hz",
        "left_gain",
        "right_gain",
        "role",
    ]
    events = load_events(tree)
    manifest = read_manifest(tree)
    assert manifest["seed"] == 5 and manifest["sample_rate"] == SR
    assert manifest["clips_per_class"] == 2 and manifest["version"] == scenes.GENERATOR_VERSION
    assert set(manifest["clips"]) == set(events) and len(events) == 20
    name = "audio/metro_station-synth5-1-0-a.wav"
    assert manifest["clips"][name] == [5, 3, 1]
    clip = render_scene_file(tree, name)
    wave, _ = sf.read(str(tree / name), dtype="float32", always_2d=True)
    np.testing.assert_allclose(wave.T, clip.mixture, atol=2e-7)  # 24-bit quantisation
    assert len(events[name]) == len(clip.events)
    for got, want in zip(events[name], clip.events):
        assert (got.label, got.role) == (want.label, want.role)
        for field in ("onset_s", "offset_s", "low_hz", "high_hz", "left_gain", "right_gain"):
            assert getattr(got, field) == pytest.approx(getattr(want, field), abs=1e-3)


def _snapshot(root):
    return {
        p.relative_to(root).as_posix(): (p.stat().st_mtime_ns, p.read_bytes())
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_rerun_changes_nothing_and_resumes(tree):
    before = _snapshot(tree)
    assert not any(".tmp-" in name for name in before)
    write_scenes(tree, clips_per_class=2, seed=5)
    assert _snapshot(tree) == before

    # a run killed before the end: one clip not written, another written but its events not
    # yet in the checkpointed events.csv
    victim, unlisted = "audio/park-synth5-0-0-a.wav", "audio/tram-synth5-1-0-a.wav"
    (tree / victim).unlink()
    events = tree / "events.csv"
    lines = events.read_text().splitlines(keepends=True)
    events.write_text("".join(x for x in lines if not x.startswith((victim, unlisted))))
    write_scenes(tree, clips_per_class=2, seed=5)
    after = _snapshot(tree)
    assert after.keys() == before.keys()
    for name, (mtime, data) in before.items():
        assert after[name][1] == data, name  # identical bytes, the missing clip re-rendered
        if name.startswith("audio/") and name != victim:
            assert after[name][0] == mtime, name  # existing audio not rewritten


def test_other_settings_in_the_same_folder_refused(tree):
    with pytest.raises(DatasetError, match="other settings .*seed"):
        write_scenes(tree, clips_per_class=2, seed=6)
    manifest = json.loads((tree / "scenes.json").read_text())
    assert manifest["seed"] == 5
