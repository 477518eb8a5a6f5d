"""Real scenes (listenable.data.scenes.real) on a tiny fake tree of extracted packages.

The fake recordings are pure tones whose frequency names the file they come from, so the
audio itself tells which recording (and which part of it) an event was cut from.
"""

import gzip
import io
import json
import shutil
import struct
import subprocess

import numpy as np
import pytest
import soundfile as sf

from listenable.cli import main
from listenable.data import scenes, tau_dataset
from listenable.data.scenes import real, recordings, render_scene_file
from listenable.data.scenes.real import Package, SourceFile, SourceTable
from listenable.errors import DatasetError

SR = 48_000
DURATION = 3.0
SEED = 2
CLIPS = 3  # clip 1 of each class is the evaluate one (0.3 of 3 rounds to 1)
HORNS = {"horn-1": 300.0, "horn-2": 400.0, "horn-3": 500.0}  # horn-3 held out for evaluate
CHIRP_TRAIN, CHIRP_EVALUATE = 2000.0, 3000.0  # one recording: its first 70 % and the rest
CAT = "usr/share/games/fake/sounds.cat"
CAT_DESCRIPTION = '"Horn two". By Jane Doe. License: Creative Commons Zero 1.0.'


def _tone(freq, seconds, rate):
    t = np.arange(int(seconds * rate)) / rate
    return 0.3 * np.sin(2 * np.pi * freq * t)


def _wav_bytes(x, rate):
    buf = io.BytesIO()
    sf.write(buf, x, rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def _write_cat(path, samples):
    """An OpenTTD .cat container: (offset | 0x80000000, size) pairs, then per sample a
    length byte, the NUL-terminated description and the RIFF WAVE bytes."""
    table, body = b"", b""
    start = 8 * len(samples)
    for description, wav in samples:
        name = description.encode() + b"\0"
        table += struct.pack("<II", (start + len(body)) | 0x80000000, len(wav))
        body += bytes([len(name)]) + name + wav
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(table + body)


def _fake_tree(root):
    """Two packages under ``root/<package>/``; returns the table that describes them."""
    a, b = root / "pkg-a", root / "pkg-b"
    sounds = a / "usr/share/sounds"
    sounds.mkdir(parents=True)
    sf.write(sounds / "horn-1.wav", _tone(HORNS["horn-1"], 1.5, 22_050), 22_050)
    sf.write(sounds / "horn-3.flac", _tone(HORNS["horn-3"], 1.5, 16_000), 16_000)
    # one recording, 3 s at 16 kHz: the train part (first 70 %) and the evaluate part differ
    n = 3 * 16_000
    cut = int(recordings.SEGMENT_SPLIT * n)
    chirp = np.concatenate(
        [_tone(CHIRP_TRAIN, 3, 16_000)[:cut], _tone(CHIRP_EVALUATE, 3, 16_000)[: n - cut]]
    )
    sf.write(sounds / "chirp.ogg", chirp, 16_000, format="OGG", subtype="VORBIS")
    doc = a / "usr/share/doc/pkg-a"
    doc.mkdir(parents=True)
    with gzip.open(doc / "changelog.Debian.gz", "wt") as f:
        f.write("pkg-a (1.2-3) unstable; urgency=medium\n\n  * Fake.\n")
    rng = np.random.default_rng(0)
    noise = rng.standard_normal(int(2.5 * 44_100)) * 0.05
    ambience = b / "usr/share/ambience"
    ambience.mkdir(parents=True)
    sf.write(ambience / "noise.wav", np.stack([noise, np.roll(noise, 99)], axis=1), 44_100)
    sf.write(ambience / "hum.wav", 0.02 * np.sin(np.arange(3 * 8000) * 0.3) + 0.01, 8000)
    _write_cat(
        b / CAT,
        [
            ("Unused", _wav_bytes(_tone(100.0, 0.5, 44_100), 44_100)),
            (CAT_DESCRIPTION, _wav_bytes(_tone(HORNS["horn-2"], 1.5, 44_100), 44_100)),
        ],
    )
    return SourceTable(
        name="fake-1",
        classes=("quay", "meadow"),
        event_types={"quay": "horn", "meadow": "chirp"},
        durations={"horn": (0.4, 0.9), "chirp": (0.3, 0.6)},
        packages=(
            Package("pkg-a", "2024 Alice", "CC0-1.0"),
            Package("pkg-b", "2024 Bob", "CC-BY-4.0"),
        ),
        files=(
            SourceFile("pkg-a", "usr/share/sounds/horn-1.wav", "horn", credit="Alice, horn one"),
            SourceFile("pkg-b", CAT, "horn", member=1),
            SourceFile("pkg-a", "usr/share/sounds/horn-3.flac", "horn", licence="CC-BY-3.0"),
            SourceFile("pkg-a", "usr/share/sounds/chirp.ogg", "chirp"),
            SourceFile("pkg-b", "usr/share/ambience/noise.wav", "background"),
            SourceFile("pkg-b", "usr/share/ambience/hum.wav", "background"),
        ),
    )


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    root = tmp_path_factory.mktemp("packages")
    return root, _fake_tree(root)


@pytest.fixture(scope="module")
def tree(fake, tmp_path_factory):
    sources, table = fake
    out = tmp_path_factory.mktemp("real") / "scenes"
    calls = []
    result = real.write_real_scenes(
        out,
        clips_per_class=CLIPS,
        seed=SEED,
        sources_dir=sources,
        table=table,
        duration=DURATION,
        progress=lambda done, total: calls.append((done, total)),
    )
    assert result == out and calls == [(k, 6) for k in range(1, 7)]
    return out


@pytest.fixture(scope="module")
def loaded(fake):
    sources, table = fake
    return real.load_sources(sources_dir=sources, table=table)


def _names(table, seed=SEED, clips=CLIPS):
    return [f"audio/{c}-real{seed}-{i}-0-a.wav" for c in table.classes for i in range(clips)]


def _split(i):
    return "evaluate" if i == 1 else "train"


def _read_tsv(path):
    lines = path.read_text().splitlines()
    return lines[0].split("\t"), [line.split("\t") for line in lines[1:]]


def test_layout_is_the_tau_one(tree, fake):
    _, table = fake
    header, meta = _read_tsv(tree / "meta.csv")
    assert header == ["filename", "scene_label", "identifier", "source_label"]
    assert [m[0] for m in meta] == _names(table)
    for filename, label, identifier, device in meta:
        scene, city, location, _, dev = filename[6:-4].split("-")
        assert scene == label and identifier == f"{city}-{location}" and dev == device == "a"
        info = sf.info(str(tree / filename))
        assert (info.samplerate, info.channels, info.frames) == (SR, 2, DURATION * SR)
        assert info.subtype == "PCM_24"
        for stem in real._stem_paths(tree, filename):
            assert sf.info(str(stem)).frames == DURATION * SR
    _, evaluate = _read_tsv(tree / "evaluation_setup/fold1_evaluate.csv")
    _, train = _read_tsv(tree / "evaluation_setup/fold1_train.csv")
    assert [r[0] for r in evaluate] == [f"audio/{c}-real{SEED}-1-0-a.wav" for c in table.classes]
    assert len(train) == 4 and not {r[0] for r in train} & {r[0] for r in evaluate}
    data = tau_dataset(tree, "evaluate")
    assert data.class_names == sorted(table.classes) and len(data) == 2


def test_events_csv_and_audio_match_the_rendering(tree, fake, loaded):
    _, table = fake
    events = real.load_events(tree)
    manifest = json.loads((tree / "scenes.json").read_text())
    assert manifest["sources"] == "real" and manifest["classes"] == list(table.classes)
    for name in _names(table):
        seed, c, i = manifest["clips"][name]
        clip, provenance = real.render_real_clip(
            loaded, seed, c, i, split=_split(i), duration=DURATION
        )
        assert manifest["provenance"][name] == json.loads(json.dumps(provenance))
        wave, _ = sf.read(str(tree / name), dtype="float32", always_2d=True)
        np.testing.assert_allclose(wave.T, clip.mixture, atol=2**-23)  # 24-bit, one step
        assert [(e.label, e.role) for e in events[name]] == [(e.label, e.role) for e in clip.events]
        for got, want in zip(events[name], clip.events):
            for field in ("onset_s", "offset_s", "low_hz", "high_hz", "left_gain", "snr_db"):
                assert getattr(got, field) == pytest.approx(getattr(want, field), abs=1e-3)
        signature = [e for e in clip.events if e.role == "signature"]
        assert 2 <= len(signature) <= 4 and all(
            e.label == table.event_types[clip.label] for e in signature
        )
        lo, hi = scenes.SIGNATURE_SNR_DB
        assert all(lo <= e.snr_db <= hi for e in signature)


def test_exact_stems_without_the_sources(tree, fake, loaded, tmp_path):
    """render_scene_file reads the clip and its stems: mixture == background + events +
    distractors, and the parts are those rendered (to 24-bit quantisation), with the
    source tree gone."""
    _, table = fake
    copy = tmp_path / "copy"
    shutil.copytree(tree, copy)
    manifest = json.loads((copy / "scenes.json").read_text())
    # what the files add to the rendered parts: the 24-bit WAV mixture up to one step
    # (2 * 2^-24, libsndfile's float -> int conversion), each 24-bit FLAC stem half a step;
    # the derived background gathers the three, plus the float32 rounding of the rendered
    # mixture's two sums (2^-25 each for |x| < 1) and its own cast (2^-25)
    bound = {"mixture": 2 * 2**-24, "event_audio": 2**-24, "distractor_audio": 2**-24}
    bound["background"] = sum(bound.values()) + 3 * 2**-25
    for name in _names(table):
        clip = render_scene_file(copy, name)
        seed, c, i = manifest["clips"][name]
        assert clip.spec == (seed, c, i) and clip.label == table.classes[c]
        # float32 sums of three parts below 1: at most 3 roundings of 2^-25
        total = clip.background + clip.event_audio + clip.distractor_audio
        np.testing.assert_allclose(clip.mixture, total, rtol=0, atol=3 * 2**-25)
        want, _ = real.render_real_clip(loaded, seed, c, i, split=_split(i), duration=DURATION)
        for part, atol in bound.items():
            np.testing.assert_allclose(
                getattr(clip, part), getattr(want, part), rtol=0, atol=atol, err_msg=part
            )
        assert clip.events == scenes.load_events(copy)[name]
        has_distractor = any(e.role == "distractor" for e in clip.events)
        assert bool(np.abs(clip.distractor_audio).max() > 0) == has_distractor
        assert np.abs(clip.event_audio).max() > 0


def _peak_hz(x, rate=SR):
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return np.fft.rfftfreq(len(x), 1 / rate)[np.argmax(spectrum)]


def test_train_and_evaluate_use_different_recordings(tree, fake):
    """The provenance and the audio agree: the evaluate clips' horns are horn-3's 500 Hz,
    the train clips' 300/400 Hz; the chirp (one recording) is cut from its first 70 % for
    train (2 kHz) and from the rest for evaluate (3 kHz)."""
    _, table = fake
    manifest = json.loads((tree / "scenes.json").read_text())
    files = manifest["source_files"]
    chirp_id = "pkg-a:usr/share/sounds/chirp.ogg"
    want = {"train": {"horn": {300.0, 400.0}, "chirp": {CHIRP_TRAIN}}}
    want["evaluate"] = {"horn": {500.0}, "chirp": {CHIRP_EVALUATE}}
    for name in _names(table):
        i = manifest["clips"][name][2]
        split = _split(i)
        for file_id, offset, length in manifest["provenance"][name]["events"]:
            assert split in files[file_id]["split"], (name, file_id)
            if file_id == chirp_id:
                seconds = files[file_id]["seconds"]
                lo, hi = files[file_id]["split"][split]
                assert lo * seconds - 1e-3 <= offset and offset + length <= hi * seconds + 1e-3
        clip = render_scene_file(tree, name)
        for e in clip.events:  # each event alone: its part of the stem, in its annotated span
            a, b = int(e.onset_s * SR), int(e.offset_s * SR)
            stem = clip.event_audio if e.role == "signature" else clip.distractor_audio
            peak = _peak_hz(stem[0, a:b].astype(np.float64))
            assert min(abs(peak - f) for f in want[split][e.label]) < 3 * SR / (b - a), (name, e)


def test_deterministic_and_seed_dependent(loaded, fake, tmp_path):
    a, pa = real.render_real_clip(loaded, 4, 1, 7, split="train", duration=DURATION)
    b, pb = real.render_real_clip(loaded, 4, 1, 7, split="train", duration=DURATION)
    assert a.mixture.tobytes() == b.mixture.tobytes() and a.events == b.events and pa == pb
    for other, _ in (
        real.render_real_clip(loaded, 5, 1, 7, split="train", duration=DURATION),
        real.render_real_clip(loaded, 4, 1, 8, split="train", duration=DURATION),
    ):
        assert not np.allclose(a.background, other.background)
    # a clip does not depend on how many clips the data set has
    sources, table = fake
    small = real.write_real_scenes(
        tmp_path / "s",
        clips_per_class=2,
        seed=SEED,
        sources_dir=sources,
        table=table,
        duration=DURATION,
    )
    clip = render_scene_file(small, "audio/meadow-real2-1-0-a.wav")
    again, _ = real.render_real_clip(loaded, SEED, 1, 1, split="evaluate", duration=DURATION)
    np.testing.assert_allclose(clip.mixture, again.mixture, rtol=0, atol=2**-23)  # 24-bit WAV


def test_background_is_cut_from_the_pool(loaded):
    """A one-layer background's left channel, up to the first crossfade, is one recording's
    samples at the recorded offset times one gain."""
    for clip_index in range(40):
        clip, provenance = real.render_real_clip(loaded, 9, 0, clip_index, duration=DURATION)
        if {p[1] for p in provenance["background"]} == {0}:
            break
    else:
        pytest.fail("no one-layer background in 40 clips (60 % chance each)")
    file_id, _, channel, start, offset, length = provenance["background"][0]
    assert (channel, start) == (0, 0.0)
    n = int(round((length - real._CROSSFADE_S) * SR))
    source = loaded.audio[file_id][int(round(offset * SR)) :][:n]
    left = clip.background[0, :n].astype(np.float64)
    gain = left @ source / (source @ source)
    assert gain > 0
    # float32 storage of the background: relative rounding 2^-24
    np.testing.assert_allclose(left, gain * source, rtol=0, atol=4 * 2**-24 * np.abs(left).max())
    level = 10 * np.log10(np.mean(clip.background.astype(np.float64) ** 2))
    if np.abs(clip.mixture).max() < scenes.PEAK_LIMIT - 1e-3:  # not scaled down
        assert scenes.BACKGROUND_DBFS[0] - 0.01 <= level <= scenes.BACKGROUND_DBFS[1] + 0.01


def test_manifest_and_credits_list_packages_and_recordings(tree, fake):
    _, table = fake
    manifest = json.loads((tree / "scenes.json").read_text())
    assert {k: v["version"] for k, v in manifest["packages"].items()} == {
        "pkg-a": "1.2-3",  # from its changelog.Debian.gz
        "pkg-b": "unknown",
    }
    used = {p[0] for prov in manifest["provenance"].values() for k in prov.values() for p in k}
    assert set(manifest["source_files"]) == used
    credits = (tree / "CREDITS.md").read_text()
    for name, package in manifest["packages"].items():
        assert f"### {name} {package['version']}" in credits
        assert package["copyright"] in credits and package["licence"] in credits
    for file_id, f in manifest["source_files"].items():
        row = next(line for line in credits.splitlines() if line.startswith(f"| {file_id} |"))
        assert f["licence"] in row and f["credit"] in row
    cat_id = f"pkg-b:{CAT}#1"
    assert manifest["source_files"][cat_id]["credit"] == CAT_DESCRIPTION
    assert manifest["source_files"]["pkg-a:usr/share/sounds/horn-3.flac"]["licence"] == "CC-BY-3.0"
    assert manifest["source_files"]["pkg-a:usr/share/sounds/horn-1.wav"]["licence"] == "CC0-1.0"


def _snapshot(root):
    return {
        p.relative_to(root).as_posix(): (p.stat().st_mtime_ns, p.read_bytes())
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_rerun_needs_no_sources_and_resumes(tree, fake, tmp_path):
    sources, table = fake
    out = tmp_path / "copy"
    shutil.copytree(tree, out)
    before = _snapshot(out)
    options = dict(clips_per_class=CLIPS, seed=SEED, table=table, duration=DURATION)
    real.write_real_scenes(out, sources_dir=tmp_path / "gone", **options)  # nothing to render
    assert _snapshot(out) == before

    victim, unlisted = "audio/quay-real2-2-0-a.wav", "audio/meadow-real2-0-0-a.wav"
    (out / victim).unlink()
    real._stem_paths(out, unlisted)[0].unlink()
    lines = (out / "events.csv").read_text().splitlines(keepends=True)
    (out / "events.csv").write_text("".join(x for x in lines if not x.startswith(unlisted)))
    with pytest.raises(DatasetError, match="gone: not a folder"):
        real.write_real_scenes(out, sources_dir=tmp_path / "gone", **options)
    real.write_real_scenes(out, sources_dir=sources, **options)
    after = _snapshot(out)
    assert after.keys() == before.keys()
    for name, (mtime, data) in before.items():
        assert after[name][1] == data, name
        if name.startswith("audio/") and name != victim:
            assert after[name][0] == mtime, name  # kept audio is not rewritten

    with pytest.raises(DatasetError, match="other settings .*seed"):
        real.write_real_scenes(out, sources_dir=sources, **{**options, "seed": 3})


def test_a_synthetic_folder_is_not_resumed_as_real(tmp_path, fake):
    from listenable.data.scenes import write_scenes

    sources, table = fake
    out = write_scenes(tmp_path / "s", clips_per_class=1, seed=1, duration=1.0)
    with pytest.raises(DatasetError, match="other settings"):
        real.write_real_scenes(out, clips_per_class=1, seed=1, sources_dir=sources, table=table)


def test_missing_or_bad_source_is_one_clear_line(fake, tmp_path):
    sources, table = fake
    broken = tmp_path / "packages"
    shutil.copytree(sources, broken)
    horn = broken / "pkg-a/usr/share/sounds/horn-1.wav"
    horn.unlink()
    with pytest.raises(DatasetError) as err:
        real.write_real_scenes(
            tmp_path / "out", clips_per_class=1, sources_dir=broken, table=table, duration=DURATION
        )
    message = str(err.value)
    assert "horn-1.wav: missing (package pkg-a)" in message and "\n" not in message
    horn.write_bytes(b"not audio")
    with pytest.raises(DatasetError, match="horn-1.wav: unreadable audio"):
        real.load_sources(sources_dir=broken, table=table)
    shutil.copy(sources / "pkg-a/usr/share/sounds/horn-1.wav", horn)
    (broken / "pkg-b" / CAT).write_bytes(b"\x10\x00\x00\x80")  # a table of 2, cut short
    with pytest.raises(DatasetError, match="sounds.cat: not an OpenTTD .cat"):
        real.load_sources(sources_dir=broken, table=table)


@pytest.mark.parametrize(
    "stderr",
    [
        "E: Unable to locate package pkg-a",
        "W: offline\nE: Failed to fetch http://deb.example/pkg-a.deb  Temporary failure resolving",
    ],
)
def test_fetch_failure_names_the_package(fake, tmp_path, monkeypatch, stderr):
    _, table = fake
    monkeypatch.setattr(recordings.shutil, "which", lambda tool: f"/usr/bin/{tool}")
    calls = []

    def fail(cmd, cwd):
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 100, "", stderr)

    monkeypatch.setattr(recordings, "_run", fail)
    with pytest.raises(DatasetError) as err:
        real.write_real_scenes(tmp_path / "out", clips_per_class=1, table=table)
    message = str(err.value)
    assert message.startswith("pkg-a: apt-get download failed (E: ") and "\n" not in message
    assert stderr.splitlines()[-1] in message and "--sources-dir" in message
    assert calls == [["/usr/bin/apt-get", "download", "pkg-a"]]
    assert not (tmp_path / "out/.sources/pkg-a").exists()  # nothing half-extracted


def test_fetch_without_apt_get(fake, tmp_path, monkeypatch):
    _, table = fake
    monkeypatch.setattr(recordings, "APT_GET", "no-such-apt-get-for-listenable")
    with pytest.raises(
        DatasetError, match="pkg-a: cannot fetch .*no-such-apt-get.* not found.*--sources-dir"
    ):
        real.write_real_scenes(tmp_path / "out", clips_per_class=1, table=table)


def test_fetch_once_then_reuse_the_cache(fake, tmp_path, monkeypatch):
    """apt-get download + dpkg-deb -x into the cache the first time; a second data set with
    the same cache runs no program at all."""
    sources, table = fake
    monkeypatch.setattr(recordings.shutil, "which", lambda tool: f"/usr/bin/{tool}")
    calls = []

    def fake_run(cmd, cwd):
        calls.append([cmd[0].rsplit("/", 1)[-1], *cmd[1:2]])
        if cmd[1] == "download":
            (cwd / f"{cmd[2]}_7.0-1_all.deb").write_bytes(b"deb")
            return subprocess.CompletedProcess(cmd, 0, "", "")
        package = cmd[2].rsplit("/", 1)[-1].split("_")[0]
        if cmd[1] == "-x":
            shutil.copytree(sources / package, cmd[3])
            return subprocess.CompletedProcess(cmd, 0, "", "")
        return subprocess.CompletedProcess(cmd, 0, "7.0-1\n", "")  # -f DEB Version

    monkeypatch.setattr(recordings, "_run", fake_run)
    cache = tmp_path / "cache"
    options = dict(clips_per_class=1, sources_cache=cache, table=table, duration=DURATION)
    first = real.write_real_scenes(tmp_path / "one", **options)
    per_package = [["apt-get", "download"], ["dpkg-deb", "-x"], ["dpkg-deb", "-f"]]
    assert calls == per_package * 2
    packages = json.loads((first / "scenes.json").read_text())["packages"]
    assert {k: v["version"] for k, v in packages.items()} == {"pkg-a": "7.0-1", "pkg-b": "7.0-1"}
    assert sorted(p.name for p in cache.iterdir()) == ["pkg-a", "pkg-b"]

    monkeypatch.setattr(recordings, "_run", lambda cmd, cwd: pytest.fail(f"ran {cmd}"))
    second = real.write_real_scenes(tmp_path / "two", **options)
    for name in _names(table, seed=0, clips=1):
        assert (first / name).read_bytes() == (second / name).read_bytes()


def test_default_table_is_consistent():
    table = real.DEBIAN_SOURCES
    table.validate()
    assert table.classes == real.REAL_CLASSES and len(set(table.event_types.values())) == 7
    for kind in table.event_types.values():
        split = recordings._split([f for f in table.files if f.kind == kind])
        train = {f.group or f.id for f, _, _ in split["train"]}
        evaluate = {f.group or f.id for f, _, _ in split["evaluate"]}
        assert train and evaluate and not train & evaluate, kind  # whole recordings apart
    ids = [f.id for f in table.files]
    assert len(ids) == len(set(ids))
    assert sum(f.kind == "background" for f in table.files) >= 10


def test_cli_real_scenes_and_errors(fake, tmp_path, monkeypatch, capsys):
    sources, table = fake
    monkeypatch.setattr(real, "DEBIAN_SOURCES", table)  # the CLI's table, looked up per call
    out = tmp_path / "cli"
    options = ["--sources", "real", "--clips-per-class", "1"]
    code = main(["scenes", str(out), *options, "--sources-dir", str(sources)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "wrote 2 real clips" in printed and "CREDITS.md" in printed
    assert len(list((out / "audio").iterdir())) == 2
    assert sf.info(str(out / "audio/quay-real0-0-0-a.wav")).duration == scenes.DURATION

    code = main(["scenes", str(tmp_path / "x"), *options, "--sources-dir", str(tmp_path / "none")])
    err = capsys.readouterr().err.strip()
    assert (
        code == 1 and err.startswith("error: ") and "none: not a folder" in err and "\n" not in err
    )
    assert main(["scenes", str(tmp_path / "y"), "--sources-dir", str(sources)]) == 2


def test_evaluation_ground_truth_reads_the_stems(tree, fake, loaded):
    """evaluation.groundtruth.scene_truth works on real scenes: the STFT of the stored
    events stem is that of the rendered events (24-bit FLAC: half a step, 2^-24)."""
    import torch

    from listenable.evaluation.groundtruth import scene_truth
    from listenable.frontends import FrontEnd

    _, table = fake
    feats = FrontEnd.preset("mcdonnell_gao").listening_stft()
    name = _names(table)[0]
    spec, frames = scene_truth(tree, name, feats, length=int(DURATION * SR))
    clip, _ = real.render_real_clip(loaded, SEED, 0, 0, duration=DURATION)
    expected = feats(torch.from_numpy(clip.event_audio)[None])
    # the STFT sums at most n_fft windowed samples, each off by <= 2^-24 (Hann weights <= 1)
    torch.testing.assert_close(spec, expected, rtol=0, atol=feats.n_fft * 2**-24)
    assert frames.shape == (1, expected.shape[-1]) and frames.any()
