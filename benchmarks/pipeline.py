"""Throughput of the listenable pipeline against its limit and against the usual way.

Four variants, each on 10 s stereo 48 kHz clips with the full McDonnell & Gao model
(random weights, fixed seed; the BN statistics are made non-trivial so BN is not the
identity):

p  plain      features + model forward under ``torch.inference_mode``, default (NCHW)
              memory format: what a user's own inference loop runs
a  limit      the same in the channels-last format the pipeline runs the model in (the
              fastest forward found: the target b/a ≥ 0.8 is measured against it)
b  pipeline   ``Explainer(model)(waves)`` in memory: STFT → features → Grad-CAM → mapping
              → mask → ISTFT (listenable and residual audio)
c  analyze    ``listenable.analyze.analyze`` on WAV files: decoding in DataLoader workers,
              explaining, writing original/listenable/residual WAVs + JSON per clip and the
              manifest (figures off; ``min_confidence=0`` so every clip's outputs are written)
d  peer       the usual way, clip by clip: librosa STFT / mel (htk, norm None) / delta per
              channel, numpy stacking, a forward for the predicted class, Captum
              ``LayerGradCam(model, model.fusion)`` with the parameters requiring grad,
              numpy/scipy mapping (interpolation in time, filterbank weights in frequency),
              numpy percentile + sigmoid, librosa ISTFT per channel

The machine is noisy (shared CPU), so every number comes from ONE run in which the
variants are interleaved round by round (the order rotates each round); a ratio is taken
within each round and the median over rounds is printed. Peak memory: CUDA
``max_memory_allocated``; CPU peak RSS of this process (the kernel's high-water mark, which
``resource.getrusage`` reports as ``ru_maxrss``, reset before each measurement through
``/proc/self/clear_refs``; analyze's decoding workers are separate processes and not
counted).

    python benchmarks/pipeline.py                        # CPU defaults: batch 1,8; 8 clips
    python benchmarks/pipeline.py --device cuda --batch-sizes 32,128,256 --dtype fp32,bf16
    python benchmarks/pipeline.py --json bench.json --rss-clips 100,2000

``--rss-clips`` checks that analyze's peak RSS does not grow with the number of clips: each
count runs in a fresh process (so ``ru_maxrss`` starts clean) over short clips
(``--rss-seconds``, 1 s by default, to keep it fast: the per-clip state analyze could
accumulate — manifest rows, ids, caches — does not depend on the clip length, while the
per-batch working set does, and stays the same for every count).

``c`` runs analyze with ``audio_format="wav"`` (16-bit WAV outputs, as in the recorded
history; analyze's own default is now Ogg Vorbis, whose encoder costs more per clip).

``--families reference,small,cnn14,ast`` runs, instead of p–d, one row per model family,
each against its own limit: a = ``Explainer(model).logits(waves)`` (the family's front end +
forward under ``torch.inference_mode``, channels-last where the pipeline uses it), b =
``Explainer(model)(waves)`` (Grad-CAM on the family's default layer, projection, mask,
ISTFT), on ``--seconds`` clips at the family's own rate and channel count, random weights
under a fixed seed. The layer geometry each family's first explanation needs is derived
(probed) once, before any timing, and reported; a and b of one family and batch size run
back to back, in alternating order, and the pairs rotate round by round::

    python benchmarks/pipeline.py --families reference,small,cnn14,ast --batch-sizes 1,2
    python benchmarks/pipeline.py --families ast --profile ast     # where b's time goes
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from listenable.data.scenes import CLASSES as SCENE_CLASSES

SR = 48_000
#: The method b and c run: Grad-CAM, whatever the library's default, so that b is timed
#: against the same computation as d (Captum's ``LayerGradCam``) and the recorded history.
BENCHMARKED_METHOD = "gradcam"
NAMES = {
    "p": "p plain forward (NCHW)",
    "a": "a limit (feat+forward)",
    "b": "b pipeline (Explainer)",
    "c": "c analyze (files)",
    "d": "d peer (librosa+Captum)",
}
CLASSES = list(SCENE_CLASSES)  # mutable: a --checkpoint replaces them with its own


# --------------------------------------------------------------------------- set-up
def make_model(device: torch.device):
    from listenable.models import McDonnellGao

    torch.manual_seed(0)
    model = McDonnellGao(n_classes=len(CLASSES)).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    model.class_names = list(CLASSES)
    return model.to(device)


def make_clips(
    n: int, seconds: float, seed: int = 0, sample_rate: int = SR, channels: int = 2
) -> torch.Tensor:
    """``(n, channels, samples)`` scene-like audio: pink-ish noise, a tone that comes and
    goes (louder in the first channel)."""
    rng = np.random.default_rng(seed)
    samples = int(seconds * sample_rate)
    t = np.arange(samples) / sample_rate
    freqs = np.fft.rfftfreq(samples, 1 / sample_rate)
    gains = np.array([[1.0], [0.6]]) if channels == 2 else np.linspace(1.0, 0.6, channels)[:, None]
    out = np.empty((n, channels, samples), np.float32)
    for i in range(n):
        spec = np.fft.rfft(rng.standard_normal((channels, samples)), axis=1)
        pink = np.fft.irfft(spec / np.sqrt(np.maximum(freqs, 20.0)), samples, axis=1)
        pink /= np.abs(pink).max()
        f0 = rng.uniform(100, min(2000, sample_rate / 4))
        on = (np.sin(2 * np.pi * rng.uniform(0.2, 1.0) * t + rng.uniform(0, 6)) > 0).astype(float)
        tone = np.sin(2 * np.pi * f0 * t) * on
        out[i] = 0.3 * pink + 0.2 * tone * gains
    return torch.from_numpy(out)


def write_tree(root: Path, clips: torch.Tensor, sample_rate: int = SR) -> Path:
    """A class-folder data set of the clips (24-bit WAV, as TAU)."""
    import soundfile as sf

    for i, wave in enumerate(clips):
        folder = root / CLASSES[i % len(CLASSES)]
        folder.mkdir(parents=True, exist_ok=True)
        sf.write(folder / f"clip{i:05d}.wav", wave.numpy().T, sample_rate, subtype="PCM_24")
    return root


class PeakMemory:
    """Peak memory of what runs inside: CUDA allocator peak, or this process's peak RSS."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.mib = float("nan")

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            _reset_rss_peak()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.mib = torch.cuda.max_memory_allocated(self.device) / 2**20
        else:
            self.mib = _rss_peak_mib()
        return False


def _reset_rss_peak() -> bool:
    try:  # Linux ≥ 4.0: "5" resets the peak RSS (VmHWM, what getrusage reports)
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def _rss_peak_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_seconds() -> float:
    """CPU seconds of this process and of its waited-for children (analyze's workers)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --------------------------------------------------------------------------- variants
def run_limit(explainer, waves, batch: int) -> None:
    """Features + forward under ``torch.inference_mode``, in the precision and memory format
    the explainer runs the model in (:meth:`Explainer.logits`)."""
    for i in range(0, len(waves), batch):
        explainer.logits(waves[i : i + batch])
    sync(waves.device)


def run_pipeline(explainer, waves, batch: int, keep: bool = False) -> list:
    """``Explainer(model)(batch)`` over the clips; the masks are kept only for the checks."""
    masks = []
    for i in range(0, len(waves), batch):
        mask = explainer(waves[i : i + batch]).mask
        if keep:
            masks.append(mask)
    sync(waves.device)
    return masks


def analyze_config(batch: int, workers: int):
    """analyze's settings here: every clip's outputs written, no figures, and 16-bit WAV
    audio (``audio_format="wav"``; analyze's default is Ogg, but the recorded c rows and the
    RSS history were measured with WAV outputs, so the benchmark keeps them comparable)."""
    from listenable.analyze import AnalyzeConfig

    return AnalyzeConfig(
        split="all",
        min_confidence=0.0,
        batch_size=batch,
        workers=workers,
        figures=False,
        audio_format="wav",
        method=BENCHMARKED_METHOD,
    )


def run_analyze(model, data_root: Path, batch: int, workers: int, work: Path) -> None:
    import shutil

    from listenable.analyze import analyze
    from listenable.data import folder_dataset

    out = Path(tempfile.mkdtemp(prefix="analyze-", dir=work))
    cfg = analyze_config(batch, workers)
    meta = getattr(model, "checkpoint_meta", None) or {"class_names": CLASSES}
    try:
        analyze(folder_dataset(data_root), out, model, meta, cfg)
        sync(next(model.parameters()).device)
    finally:
        shutil.rmtree(out, ignore_errors=True)


class Peer:
    """The usual way, one clip at a time, as a user would script it with librosa + Captum."""

    def __init__(self, model, device: torch.device) -> None:
        import librosa
        from captum.attr import LayerGradCam

        self.librosa = librosa
        self.model = model
        self.device = device
        self.gradcam = LayerGradCam(model, model.fusion)
        fb = librosa.filters.mel(
            sr=SR, n_fft=2048, n_mels=128, fmin=0.0, fmax=SR / 2, htk=True, norm=None
        )
        cover = fb.sum(axis=0)
        fmat = (fb / np.maximum(cover, 1e-30)).T  # (bins, mels): weighted mean of the bands
        centres = librosa.mel_frequencies(n_mels=130, fmin=0.0, fmax=SR / 2, htk=True)[1:-1]
        freqs = librosa.fft_frequencies(sr=SR, n_fft=2048)
        for k in np.flatnonzero(cover <= 0):  # bins no band covers: the nearest band
            fmat[k] = 0.0
            fmat[k, np.argmin(np.abs(centres - freqs[k]))] = 1.0
        self.fmat = fmat

    def features(self, wave: np.ndarray):
        lr = self.librosa
        stfts, logmels, d1s, d2s = [], [], [], []
        for channel in wave:
            spec = lr.stft(
                channel, n_fft=2048, hop_length=1024, window="hann", center=True, pad_mode="reflect"
            )
            mel = lr.feature.melspectrogram(
                S=np.abs(spec) ** 2, sr=SR, n_mels=128, htk=True, norm=None
            )
            logmel = np.log(mel + 1e-8)
            d1 = lr.feature.delta(logmel, width=5)[:, 2:-2]  # interior = valid delta
            d2 = lr.feature.delta(d1, width=5)[:, 2:-2]
            stfts.append(spec)
            logmels.append(logmel[:, 4:-4])
            d1s.append(d1[:, 2:-2])
            d2s.append(d2)
        x = np.stack(logmels + d1s + d2s)[None].astype(np.float32)  # (1, 6, 128, frames)
        return stfts, x

    def __call__(self, wave: np.ndarray) -> np.ndarray:
        stfts, x = self.features(wave)
        x = torch.from_numpy(x).to(self.device)
        with torch.no_grad():
            target = int(self.model(x).argmax(dim=1))
        cam = self.gradcam.attribute(x, target=target, relu_attributions=True)
        cam = cam[0, 0].detach().float().cpu().numpy()  # (128, cam_frames)
        frames = stfts[0].shape[1]
        stride = 16
        centres = 4 + stride * np.arange(cam.shape[1])
        cam_t = np.stack([np.interp(np.arange(frames), centres, row) for row in cam])
        grid = self.fmat @ cam_t  # (bins, frames)
        span = grid.max() - grid.min()
        grid = (grid - grid.min()) / span if span > 0 else np.zeros_like(grid)
        theta = np.percentile(grid, 75)
        mask = 1.0 / (1.0 + np.exp(-100.0 * (grid - theta)))
        self.listenable = np.stack(
            [
                self.librosa.istft(
                    spec * mask, hop_length=1024, window="hann", center=True, length=wave.shape[-1]
                )
                for spec in stfts
            ]
        )
        return mask


def run_peer(peer: Peer, waves_np: np.ndarray) -> list:
    peer.model.requires_grad_(True)  # as a user leaves them
    masks = [peer(w) for w in waves_np]
    sync(peer.device)
    return masks


# --------------------------------------------------------------------------- RSS check
def rss_probe(data_root: Path, count: int, batch: int, workers: int, work: Path) -> dict:
    """Run analyze on the first ``count`` clips of ``data_root``; report peak RSS."""
    from listenable.analyze import analyze
    from listenable.data import AudioDataset, folder_dataset

    full = folder_dataset(data_root)
    data = AudioDataset(full.items[:count], full.class_names, full.root)
    model = make_model(torch.device("cpu"))
    cfg = analyze_config(batch, workers)
    out = Path(tempfile.mkdtemp(prefix=f"rss{count}-", dir=work))
    t0 = time.perf_counter()
    summary = analyze(data, out, model, {"class_names": CLASSES}, cfg)
    seconds = time.perf_counter() - t0
    self_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    child_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {
        "clips": count,
        "done": summary["totals"]["clips"],
        "seconds": seconds,
        "peak_rss_mib": self_kib / 1024,
        "worker_peak_rss_mib": child_kib / 1024,
    }


def rss_check(args, work: Path) -> dict:
    counts = [int(c) for c in args.rss_clips.split(",")]
    root = work / "rss-data"
    n = max(counts)
    print(f"\nRSS check: analyze on {counts} clips of {args.rss_seconds:g} s (fresh process each)")
    chunk = 200
    for start in range(0, n, chunk):
        write_tree_offset(
            root, make_clips(min(chunk, n - start), args.rss_seconds, seed=start), start
        )
    results = []
    for count in counts:
        cmd = [
            sys.executable,
            __file__,
            "--rss-probe",
            str(count),
            "--rss-data",
            str(root),
            "--rss-batch",
            str(args.rss_batch),
            "--workers",
            str(args.workers),
            "--work",
            str(work),
        ]
        res = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if res.returncode != 0:
            raise SystemExit(f"RSS probe failed:\n{res.stderr}")
        row = json.loads(res.stdout.strip().splitlines()[-1])
        results.append(row)
        print(
            f"  {row['clips']:6d} clips: peak RSS {row['peak_rss_mib']:7.1f} MiB "
            f"(workers {row['worker_peak_rss_mib']:.1f} MiB), {row['done'] / row['seconds']:.1f} clips/s"
        )
    growth = results[-1]["peak_rss_mib"] / results[0]["peak_rss_mib"]
    print(f"  peak RSS {counts[-1]} vs {counts[0]} clips: x{growth:.3f} (target ≤ 1.10)")
    return {"runs": results, "growth": growth}


def write_tree_offset(root: Path, clips: torch.Tensor, offset: int) -> None:
    import soundfile as sf

    for i, wave in enumerate(clips):
        folder = root / CLASSES[(offset + i) % len(CLASSES)]
        folder.mkdir(parents=True, exist_ok=True)
        sf.write(folder / f"clip{offset + i:05d}.wav", wave.numpy().T, SR, subtype="PCM_16")


# --------------------------------------------------------------------------- families
FAMILIES = ("reference", "small", "cnn14", "ast")
#: clips per job per round: the fast families get more, so that a job is not a few ms long
FAMILY_CLIPS = {"reference": 8, "small": 8, "cnn14": 2, "ast": 2}
#: on the CPU the two big families (80 M and 87 M parameters) run at batch 1 and 2 only
CPU_MAX_BATCH = {"cnn14": 2, "ast": 2}
#: b/a: the reference model's target; another family below the floor is the next target
REFERENCE_TARGET, FAMILY_FLOOR = 0.8, 0.7


def build_family(name: str, device: torch.device):
    """``(explainable, description)``: the family's model, random weights under seed 0."""
    from listenable.models import SmallCNN, as_explainable

    if name == "reference":
        em = as_explainable(make_model(device))
        what = "McDonnellGao(n_classes=10), seed 0, BN statistics made non-trivial"
    elif name == "small":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = SmallCNN(n_classes=len(CLASSES)).eval()
        model.class_names = list(CLASSES)
        em = as_explainable(model.to(device))
        what = "SmallCNN(n_classes=10), seed 0"
    elif name == "cnn14":
        from listenable.models import cnn14

        em = cnn14.explainable(cnn14.build_cnn14(classes_num=527, seed=0).to(device))
        what = "PANNs Cnn14 (the released settings, 527 tags), build_cnn14(seed=0)"
    elif name == "ast":
        from transformers import ASTConfig, ASTForAudioClassification

        from listenable.models import ast

        config = ASTConfig(num_labels=527)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = ASTForAudioClassification(config).eval()
        em = ast.explainable(model.to(device))
        attention = getattr(model.config, "_attn_implementation", None) or "default"
        what = (
            f"ASTForAudioClassification(ASTConfig(num_labels=527)): transformers' default "
            f"sizes ({config.num_hidden_layers} layers, hidden {config.hidden_size}, patch "
            f"{config.patch_size}, strides {config.frequency_stride}/{config.time_stride}, "
            f"max_length {config.max_length}), seed 0, attention {attention}"
        )
    else:
        raise SystemExit(f"unknown family {name!r}; choose from {','.join(FAMILIES)}")
    return em, what


def family_timings(args) -> dict:
    """a (limit) and b (pipeline) per family and batch size, interleaved; prints the table."""
    from listenable.explain import Explainer

    cuda = args.device == "cuda"
    device = torch.device("cuda" if cuda else "cpu")
    names = [f.strip() for f in args.families.split(",") if f.strip()]
    for name in names:
        if name not in FAMILIES:
            raise SystemExit(f"unknown family {name!r}; choose from {','.join(FAMILIES)}")
    batch_sizes = [
        int(b) for b in (args.batch_sizes or ("32,128,256" if cuda else "1,2")).split(",")
    ]
    info = {
        "device": torch.cuda.get_device_name(device) if cuda else cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "load_average_start": os.getloadavg(),
        "clip_seconds": args.seconds,
        "rounds": args.rounds,
    }
    print(
        f"families on {info['device']} ({'cuda' if cuda else 'cpu'}), {info['cpu_count']} CPUs, "
        f"torch {info['torch']} with {info['torch_threads']} threads, load average "
        f"{info['load_average_start'][0]:.2f}; {args.seconds:g} s clips"
    )
    setups, runs = {}, {}
    for name in names:
        t = time.perf_counter()
        em, what = build_family(name, device)
        build_s = time.perf_counter() - t
        fe = em.front_end
        t = time.perf_counter()
        layer = em.default_layer  # "auto": found by a forward pass with hooks
        auto_s = time.perf_counter() - t
        t = time.perf_counter()
        geometry = em.layer(layer).geometry  # derived by probing, once, cached
        probe_s = time.perf_counter() - t
        t = time.perf_counter()
        explainer = Explainer(em, method=BENCHMARKED_METHOD)
        init_s = time.perf_counter() - t
        sizes = [b for b in batch_sizes if cuda or b <= CPU_MAX_BATCH.get(name, b)]
        if not sizes:
            sizes = [CPU_MAX_BATCH[name]]
        if sizes != batch_sizes:
            print(f"  {name}: batch sizes {sizes} on the CPU (of {batch_sizes})")
        n = max(args.family_clips or FAMILY_CLIPS[name], max(sizes))
        waves = make_clips(n, args.seconds, sample_rate=fe.sample_rate, channels=fe.channels).to(
            device
        )
        with torch.no_grad():
            input_shape = tuple(em.inputs(waves[:1]).shape)
        t = time.perf_counter()
        run_limit(explainer, waves[:1], 1)
        first_a = time.perf_counter() - t
        t = time.perf_counter()
        run_pipeline(explainer, waves[:1], 1)
        first_b = time.perf_counter() - t
        for bs in sizes:  # warm-up at every batch size (allocator, kernels' first calls)
            run_limit(explainer, waves[:bs], bs)
            run_pipeline(explainer, waves[:bs], bs)
        params = sum(p.numel() for p in em.parameters())
        setups[name] = {
            "model": what,
            "parameters": params,
            "sample_rate": fe.sample_rate,
            "channels": fe.channels,
            "model_input_shape": list(input_shape),
            "layer": layer,
            "geometry": geometry.describe(),
            "build_s": build_s,
            "auto_layer_s": auto_s,
            "probe_s": probe_s,
            "explainer_init_s": init_s,
            "first_limit_call_s": first_a,
            "first_pipeline_call_s": first_b,
            "batch_sizes": sizes,
            "clips_per_job": n,
        }
        runs[name] = (explainer, waves, sizes)
        print(
            f"  {name}: {what}\n"
            f"    {params / 1e6:.2f} M parameters; {fe.sample_rate} Hz x {fe.channels} ch; "
            f"model input {input_shape}; layer {layer}\n"
            f"    set-up, not timed: build {build_s:.1f} s, layer search {auto_s:.2f} s, "
            f"probe {probe_s:.2f} s, Explainer() {init_s:.2f} s, first a {first_a:.2f} s, "
            f"first b {first_b:.2f} s (batch 1)",
            flush=True,
        )

    pairs = [(name, bs) for name in names for bs in runs[name][2]]
    wall: dict[tuple, list[float]] = {}
    cpu: dict[tuple, list[float]] = {}
    t_start = time.perf_counter()
    for r in range(args.rounds):
        shift = r % len(pairs)
        order = "ab" if r % 2 == 0 else "ba"  # within a pair, alternate who goes first
        for name, bs in pairs[shift:] + pairs[:shift]:
            explainer, waves, _ = runs[name]
            for variant in order:
                t0, c0 = time.perf_counter(), cpu_seconds()
                if variant == "a":
                    run_limit(explainer, waves, bs)
                else:
                    run_pipeline(explainer, waves, bs)
                seconds, cpu_s = time.perf_counter() - t0, cpu_seconds() - c0
                wall.setdefault((name, variant, bs), []).append(len(waves) / seconds)
                cpu.setdefault((name, variant, bs), []).append(len(waves) / cpu_s)
        print(
            f"round {r + 1}/{args.rounds} done ({time.perf_counter() - t_start:.0f} s)", flush=True
        )

    rows = []
    width = max(len(s["layer"]) for s in setups.values())
    print(
        f"\n{'family':9s} | {'layer':{width}s} | batch | a clips/s | b clips/s |   b/a | "
        f"b/a cpu-time | b/a per round"
    )
    for name, bs in pairs:
        a, b = wall[(name, "a", bs)], wall[(name, "b", bs)]
        per_round = [x / y for x, y in zip(b, a)]
        per_round_cpu = [x / y for x, y in zip(cpu[(name, "b", bs)], cpu[(name, "a", bs)])]
        ratio, ratio_cpu = median(per_round), median(per_round_cpu)
        target = REFERENCE_TARGET if name == "reference" else FAMILY_FLOOR
        rows.append(
            {
                "family": name,
                "layer": setups[name]["layer"],
                "batch_size": bs,
                "a_clips_per_s": median(a),
                "b_clips_per_s": median(b),
                "a_clips_per_s_rounds": a,
                "b_clips_per_s_rounds": b,
                "b_over_a": ratio,
                "b_over_a_rounds": per_round,
                "b_over_a_cpu_time": ratio_cpu,
                "b_over_a_cpu_time_rounds": per_round_cpu,
                "target": target,
                "meets": ratio >= target,
            }
        )
        print(
            f"{name:9s} | {setups[name]['layer']:{width}s} | {bs:5d} | {median(a):9.3f} | "
            f"{median(b):9.3f} | {ratio:5.3f} | {ratio_cpu:12.3f} | "
            f"{', '.join(f'{v:.2f}' for v in per_round)}"
        )
    print(
        f"\nb/a: median over rounds of the ratio within a round; target: the reference model "
        f"≥ {REFERENCE_TARGET}, the others reported, below {FAMILY_FLOOR} the next target"
    )
    for row in rows:
        if row["family"] == "reference":
            verdict = "ok" if row["meets"] else f"below the target {REFERENCE_TARGET}"
        elif not row["meets"]:
            verdict = f"below {FAMILY_FLOOR}: next target"
        else:
            continue
        print(f"  {row['family']} batch {row['batch_size']}: {row['b_over_a']:.3f} {verdict}")
    info["load_average_end"] = os.getloadavg()
    info["seconds"] = time.perf_counter() - t_start
    print(
        f"load average at the end {info['load_average_end'][0]:.2f}; timed part "
        f"{info['seconds']:.0f} s"
    )
    result = {"info": info, "setup": setups, "rows": rows}
    if args.profile:
        result["profiles"] = {}
        for name in [f.strip() for f in args.profile.split(",") if f.strip()]:
            if name not in runs:
                raise SystemExit(f"--profile {name}: not among --families")
            explainer, waves, _ = runs[name]
            result["profiles"][name] = profile_family(name, explainer, waves[:1])
    return result


class _Staged:
    """Forwards every attribute to ``obj``; calls of it (and of ``methods``) run inside a
    ``torch.profiler.record_function`` named after the stage."""

    def __init__(self, obj, label: str, methods: dict | None = None) -> None:
        self._obj, self._label, self._methods = obj, label, methods or {}

    def __call__(self, *args, **kwargs):
        from torch.profiler import record_function

        with record_function(self._label):
            return self._obj(*args, **kwargs)

    def __getattr__(self, name):
        attr = getattr(self._obj, name)
        if name in self._methods:
            return _Staged(attr, self._methods[name])
        return attr


STAGES = {
    "stage: listening STFT": "the listening STFT of the waveform",
    "stage: features": "the front end (from the shared spectrum where it can)",
    "stage: CAM": "forward with the hook, target, backward to the layer, weighted sum",
    "stage: projection": "the layer map onto the listening STFT's grid",
    "stage: mask": "normalise, percentile threshold, sigmoid",
    "stage: ISTFT": "masked inverse STFT (listenable audio)",
}


def profile_family(
    name: str, explainer, wave: torch.Tensor, top: int = 12, repeats: int = 3
) -> dict:
    """Pipeline calls (b) and limit calls (a) on ``wave`` under ``torch.profiler`` (the
    mean of ``repeats`` calls each): the time of each stage of b (its CAM split into the
    backward pass and the rest) against a's total, and the operators b spends the most time
    in."""
    from torch.profiler import ProfilerActivity, profile

    # the module (``listenable.explain`` the attribute is the function of that name)
    explain_module = importlib.import_module("listenable.explain")

    activities = [ProfilerActivity.CPU]
    if wave.device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    em = explainer.model
    saved = (
        explainer.listening,
        explainer.cam,
        explainer.projection,
        explain_module.heatmap_to_mask,
    )
    explainer.listening = _Staged(saved[0], "stage: listening STFT", {"istft": "stage: ISTFT"})
    explainer.cam = _Staged(saved[1], "stage: CAM")
    explainer.projection = _Staged(saved[2], "stage: projection")
    explain_module.heatmap_to_mask = _Staged(saved[3], "stage: mask")
    em.inputs = _Staged(type(em).inputs.__get__(em), "stage: features")
    try:
        run_limit(explainer, wave, 1)  # warm (the wrappers, the profiler's first call)
        run_pipeline(explainer, wave, 1)
        t = time.perf_counter()
        run_limit(explainer, wave, 1)
        a_s = time.perf_counter() - t
        with profile(activities=activities) as prof_b:
            t = time.perf_counter()
            for _ in range(repeats):
                run_pipeline(explainer, wave, 1)
            b_s = (time.perf_counter() - t) / repeats
        with profile(activities=activities) as prof_a:
            t = time.perf_counter()
            for _ in range(repeats):
                run_limit(explainer, wave, 1)
            a_prof_s = (time.perf_counter() - t) / repeats
    finally:
        (explainer.listening, explainer.cam, explainer.projection) = saved[:3]
        explain_module.heatmap_to_mask = saved[3]
        del em.inputs
    scale = 1e6 * repeats  # µs over the calls → s per call
    events_b = prof_b.key_averages()
    events_a = prof_a.key_averages()

    def total(events, key) -> float:
        return sum(e.cpu_time_total for e in events if e.key == key) / scale

    stages = {key[len("stage: ") :]: total(events_b, key) for key in STAGES}
    backward = (
        sum(e.cpu_time_total for e in events_b if e.key.startswith("autograd::engine")) / scale
    )
    a_total = sum(e.self_cpu_time_total for e in events_a) / scale
    b_total = sum(e.self_cpu_time_total for e in events_b) / scale
    stages["CAM: backward"] = backward
    stages["CAM: forward and the rest"] = stages["CAM"] - backward
    a_features = total(events_a, "stage: features")
    print(
        f"\nprofile {name}, batch 1 (torch.profiler, mean of {repeats} calls; time in operators "
        f"on the calling thread): "
        f"b {b_total:.3f} s (wall {b_s:.3f} s), a {a_total:.3f} s (wall {a_prof_s:.3f} s, "
        f"{a_s:.3f} s unprofiled); a's features {a_features:.3f} s, forward "
        f"{a_total - a_features:.3f} s"
    )
    print(f"  {'stage of b':28s} {'s':>7s} {'x a':>6s}")
    for key in (
        "listening STFT",
        "features",
        "CAM",
        "CAM: forward and the rest",
        "CAM: backward",
        "projection",
        "mask",
        "ISTFT",
    ):
        note = ""
        if key == "features" and em.input == "waveform":
            note = "  (a waveform-input model: its features are part of its forward, in CAM)"
        print(f"  {key:28s} {stages[key]:7.3f} {stages[key] / a_total:6.3f}{note}")
    ops = sorted(events_b, key=lambda e: e.self_cpu_time_total, reverse=True)
    ops = [e for e in ops if not e.key.startswith("stage: ")][:top]
    print(f"  top operators of b by self CPU time (of {b_total:.3f} s):")
    for e in ops:
        print(f"    {e.self_cpu_time_total / scale:7.3f} s  {e.count // repeats:5d}x  {e.key}")
    return {
        "b_cpu_s": b_total,
        "b_wall_s": b_s,
        "a_cpu_s": a_total,
        "a_wall_s": a_prof_s,
        "a_wall_unprofiled_s": a_s,
        "a_features_s": a_features,
        "stages_s": stages,
        "top_ops": [
            {"op": e.key, "self_cpu_s": e.self_cpu_time_total / scale, "count": e.count // repeats}
            for e in ops
        ],
    }


# --------------------------------------------------------------------------- main
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument(
        "--batch-sizes", help="comma-separated (default: 1,8 on CPU; 32,128,256 on CUDA)"
    )
    p.add_argument(
        "--clips", type=int, help="clips per variant per round (default: 8 CPU, 512 CUDA)"
    )
    p.add_argument(
        "--peer-clips", type=int, help="clips per round for the peer (default: 4 CPU, 16 CUDA)"
    )
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    p.add_argument(
        "--dtype", default=None, help="fp32,bf16 (default: fp32 on CPU, fp32,bf16 on CUDA)"
    )
    p.add_argument("--workers", type=int, default=None, help="analyze decoding workers")
    p.add_argument(
        "--variants",
        default=None,
        help="subset of p,a,b,c,d, or none (default: all; none when --families is given)",
    )
    p.add_argument(
        "--checkpoint",
        help="a trained checkpoint (listenable.checkpoint.load_explainable) instead of random "
        "weights for p-d (e.g. for the bf16 check); --families always use random weights",
    )
    p.add_argument(
        "--families",
        help=f"comma-separated subset of {','.join(FAMILIES)}: a row per family against its "
        "own forward-pass limit (random weights, fixed seed)",
    )
    p.add_argument(
        "--family-clips",
        type=int,
        help="clips per job per round for --families (default: "
        + ", ".join(f"{k} {v}" for k, v in FAMILY_CLIPS.items())
        + "; at least the largest batch)",
    )
    p.add_argument(
        "--profile",
        help="with --families: comma-separated families to profile after the timing (one "
        "pipeline call and one limit call at batch 1, torch.profiler, by stage and by op)",
    )
    p.add_argument("--seconds", type=float, default=10.0, help="clip length (default 10 s)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--json", help="write the results here")
    p.add_argument("--rss-clips", help="e.g. 100,2000: analyze peak RSS vs number of clips")
    p.add_argument("--rss-seconds", type=float, default=1.0)
    p.add_argument("--rss-batch", type=int, default=8)
    p.add_argument("--work", help="scratch folder (default: a temporary one)")
    p.add_argument("--rss-probe", type=int, help=argparse.SUPPRESS)
    p.add_argument("--rss-data", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def median(values):
    values = [v for v in values if v == v]
    return statistics.median(values) if values else float("nan")


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here")
    if args.workers is None:
        args.workers = min(8, max(1, (os.cpu_count() or 2) // 2))
    if args.rss_probe is not None:  # internal: one fresh-process RSS measurement
        print(
            json.dumps(
                rss_probe(
                    Path(args.rss_data),
                    args.rss_probe,
                    args.rss_batch,
                    args.workers,
                    Path(args.work),
                )
            )
        )
        return 0

    work_ctx = tempfile.TemporaryDirectory(prefix="listenable-bench-") if not args.work else None
    work = Path(args.work or work_ctx.name)
    work.mkdir(parents=True, exist_ok=True)
    if args.variants is None:
        args.variants = "none" if args.families else "p,a,b,c,d"
    result = {}
    try:
        if args.variants != "none":
            result.update(timings(args, work))
        if args.families:
            result["families"] = family_timings(args)
        if args.rss_clips:
            result["rss"] = rss_check(args, work)
    finally:
        if work_ctx is not None:
            work_ctx.cleanup()
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        print(f"written {args.json}")
    return 0


def timings(args, work: Path) -> dict:
    """The interleaved rounds of variants a–d; prints the table and returns it."""
    cuda = args.device == "cuda"
    device = torch.device("cuda" if cuda else "cpu")
    batch_sizes = [
        int(b) for b in (args.batch_sizes or ("32,128,256" if cuda else "1,8")).split(",")
    ]
    n_clips = args.clips or (512 if cuda else 8)
    n_clips = max(n_clips, max(batch_sizes))
    n_peer = args.peer_clips or (16 if cuda else 4)
    dtypes = (args.dtype or ("fp32,bf16" if cuda else "fp32")).split(",")
    variants = args.variants.split(",")

    from listenable.explain import Explainer

    info = {
        "device": torch.cuda.get_device_name(device) if cuda else cpu_name(),
        "model": args.checkpoint or "McDonnellGao, random weights (seed 0)",
        "analyze_audio_format": "wav",
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "load_average_start": os.getloadavg(),
        "clip_seconds": args.seconds,
        "clips_per_round": n_clips,
        "peer_clips_per_round": n_peer,
        "rounds": args.rounds,
        "analyze_workers": args.workers,
    }
    print(
        f"device {info['device']} ({'cuda' if cuda else 'cpu'}), {info['cpu_count']} CPUs, "
        f"torch {info['torch']} with {info['torch_threads']} threads, load average "
        f"{info['load_average_start'][0]:.2f}"
    )
    from listenable.models import McDonnellGao, as_explainable

    if args.checkpoint:
        from listenable.checkpoint import load_explainable

        model = load_explainable(args.checkpoint, device=device)
        CLASSES[:] = list(model.class_names)
    else:
        model = as_explainable(make_model(device))
    fe = model.front_end
    reference = isinstance(model.module, McDonnellGao) and (fe.sample_rate, fe.channels) == (
        SR,
        2,
    )
    if "d" in variants and not reference:
        print("note: the peer (d) scripts the reference model only; d left out")
        variants = [v for v in variants if v != "d"]
    clips = make_clips(n_clips, args.seconds, sample_rate=fe.sample_rate, channels=fe.channels)
    waves = clips.to(device)
    explainers = {dt: Explainer(model, method=BENCHMARKED_METHOD, precision=dt) for dt in dtypes}
    plain = {
        dt: Explainer(model, method=BENCHMARKED_METHOD, precision=dt, channels_last=False)
        for dt in dtypes
    }
    data_root = write_tree(work / "data", clips, fe.sample_rate) if "c" in variants else None
    peer = Peer(model.module, device) if "d" in variants else None
    peer_np = clips[:n_peer].numpy()

    # warm-up (and the correctness cross-checks)
    run_limit(explainers[dtypes[0]], waves[: max(batch_sizes)], max(batch_sizes))
    checks = {}
    fp32 = explainers.get("fp32") or Explainer(model, method=BENCHMARKED_METHOD)
    ref = torch.cat(run_pipeline(fp32, waves[: max(batch_sizes)], max(batch_sizes), True))
    hard = lambda m: torch.as_tensor(m) > 0.5  # noqa: E731
    if peer is not None:
        pm = run_peer(peer, peer_np[:2])
        agree = [float((hard(p) == hard(ref[i].cpu())).float().mean()) for i, p in enumerate(pm)]
        checks["mask_agreement_pipeline_vs_peer"] = min(agree)
    if "bf16" in dtypes and "fp32" in dtypes:
        fp = torch.cat(run_pipeline(explainers["fp32"], waves[:n_clips], max(batch_sizes), True))
        bf = torch.cat(run_pipeline(explainers["bf16"], waves[:n_clips], max(batch_sizes), True))
        same = (hard(fp) == hard(bf)).float()
        checks["mask_agreement_bf16_vs_fp32"] = float(same.mean())
        checks["mask_agreement_bf16_vs_fp32_worst_clip"] = float(same.mean(dim=(1, 2)).min())
    if data_root is not None:
        run_analyze(model, data_root, batch_sizes[0], args.workers, work)
    for name, value in checks.items():
        print(f"check: {name} = {value * 100:.3f} % of bins (binarised at 0.5)")

    # the interleaved rounds
    jobs = []
    for dt in dtypes:
        for bs in batch_sizes:
            if "p" in variants:
                jobs.append(("p", bs, dt))
            if "a" in variants:
                jobs.append(("a", bs, dt))
            if "b" in variants:
                jobs.append(("b", bs, dt))
            if "c" in variants and dt == "fp32":
                jobs.append(("c", bs, dt))
    if "d" in variants:
        jobs.append(("d", 1, "fp32"))
    wall: dict[tuple, list[float]] = {j: [] for j in jobs}
    cpu: dict[tuple, list[float]] = {j: [] for j in jobs}
    memory: dict[tuple, float] = {j: 0.0 for j in jobs}
    t_start = time.perf_counter()
    for r in range(args.rounds):
        shift = r % len(jobs)
        for job in jobs[shift:] + jobs[:shift]:
            variant, bs, dt = job
            with PeakMemory(device) as mem:
                t0, c0 = time.perf_counter(), cpu_seconds()
                if variant == "a":
                    run_limit(explainers[dt], waves, bs)
                    n = len(waves)
                elif variant == "p":
                    run_limit(plain[dt], waves, bs)
                    n = len(waves)
                elif variant == "b":
                    run_pipeline(explainers[dt], waves, bs)
                    n = len(waves)
                elif variant == "c":
                    run_analyze(model, data_root, bs, args.workers, work)
                    n = len(waves)
                else:
                    run_peer(peer, peer_np)
                    n = len(peer_np)
                seconds, cpu_s = time.perf_counter() - t0, cpu_seconds() - c0
            wall[job].append(n / seconds)
            cpu[job].append(n / cpu_s)
            memory[job] = max(memory[job], mem.mib)
        print(
            f"round {r + 1}/{args.rounds} done ({time.perf_counter() - t_start:.0f} s)", flush=True
        )

    mem_label = "peak alloc MiB" if cuda else "peak RSS MiB"
    rows = []
    print(
        f"\n{'variant':26s} {'dtype':5s} {'batch':>5s} {'clips/s':>8s} {'min..max':>12s} "
        f"{'clips/cpu-s':>11s} {mem_label:>14s}"
    )
    for job in jobs:
        variant, bs, dt = job
        rate, rate_cpu = median(wall[job]), median(cpu[job])
        rows.append(
            {
                "variant": variant,
                "name": NAMES[variant],
                "dtype": dt,
                "batch_size": bs,
                "clips_per_s": rate,
                "clips_per_s_rounds": wall[job],
                "clips_per_cpu_s": rate_cpu,
                "clips_per_cpu_s_rounds": cpu[job],
                "peak_mib": memory[job],
            }
        )
        spread = f"{min(wall[job]):.2f}..{max(wall[job]):.2f}"
        print(
            f"{NAMES[variant]:26s} {dt:5s} {bs:5d} {rate:8.2f} {spread:>12s} {rate_cpu:11.2f} "
            f"{memory[job]:14.0f}"
        )

    ratios = []

    def ratio(label, num, den, target=None):
        if num not in wall or den not in wall:
            return
        per_round = [x / y for x, y in zip(wall[num], wall[den])]
        per_round_cpu = [x / y for x, y in zip(cpu[num], cpu[den])]
        value, value_cpu = median(per_round), median(per_round_cpu)
        ratios.append(
            {
                "ratio": label,
                "num": list(num),
                "den": list(den),
                "value": value,
                "rounds": per_round,
                "value_cpu_time": value_cpu,
                "rounds_cpu_time": per_round_cpu,
                "target": target,
            }
        )
        mark = "" if target is None else ("ok" if value >= target else f"< {target}")
        mark_cpu = "" if target is None else ("ok" if value_cpu >= target else f"< {target}")
        print(
            f"  {label:4s} {num[2]:5s} batch {num[1]:4d}:  wall {value:6.3f} {mark:6s} "
            f"cpu-time {value_cpu:6.3f} {mark_cpu:6s} rounds {', '.join(f'{v:.2f}' for v in per_round)}"
        )

    print("\nratios (median over rounds of the ratio within a round; cpu-time = the same from")
    print("this process's CPU seconds, analyze's workers included: steadier on a shared machine)")
    for dt in dtypes:
        for bs in batch_sizes:
            ratio("b/a", ("b", bs, dt), ("a", bs, dt), 0.8)
    for dt in dtypes:
        for bs in batch_sizes:
            ratio("b/p", ("b", bs, dt), ("p", bs, dt))
    for bs in batch_sizes:
        ratio("c/b", ("c", bs, "fp32"), ("b", bs, "fp32"), 0.5 if cuda else None)
    for dt in dtypes:
        for bs in batch_sizes:
            ratio("b/d", ("b", bs, dt), ("d", 1, "fp32"), 2.0)
    for dt in dtypes:
        best = {
            v: max((median(wall[j]), j) for j in jobs if j[0] == v and j[2] == dt)
            for v in "ab"
            if any(j[0] == v and j[2] == dt for j in jobs)
        }
        if len(best) == 2:
            (rb, jb), (ra, ja) = best["b"], best["a"]
            print(
                f"  best b / best a ({dt}): {rb / ra:.3f}  (b at batch {jb[1]}: {rb:.2f} clips/s, "
                f"a at batch {ja[1]}: {ra:.2f} clips/s)"
            )
            ratios.append(
                {"ratio": "best b / best a", "dtype": dt, "value": rb / ra, "target": 0.8}
            )
    info["load_average_end"] = os.getloadavg()
    info["seconds"] = time.perf_counter() - t_start
    print(
        f"load average at the end {info['load_average_end'][0]:.2f}; timed part {info['seconds']:.0f} s"
    )

    return {"info": info, "checks": checks, "rows": rows, "ratios": ratios}


if __name__ == "__main__":
    sys.exit(main())
