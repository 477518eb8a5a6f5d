"""What a listenable output contains, by event label: the paper's per-class table, computed.

For a clip of a scenes data set (synthetic or real-recording: both store exact stems,
``mixture == background + events + distractors``), every part ``p`` — the clip's
signature events (one label: its class's event type), its distractor (another label), and
the background — is put through the listening STFT ``S_p``; the mask ``M`` of the
listenable output then keeps ``E_p = Σ M² |S_p|²`` of it (both channels, every bin; the
one-sided bins between DC and Nyquist count twice, as Parseval has it). Per
label:

* ``kept``  — ``E_p / Σ |S_p|²``: how much of that part the listenable output keeps;
* ``share`` — ``E_p / Σ_q E_q``: how much of the listenable output's energy is that part
  (the parts' energies add up to the output's energy up to their cross terms, which
  average out for independent sources; the shares add up to 1 by construction).

:func:`class_content` averages clips per predicted class (``summary.json``'s
``class_content``, the gallery index's "what the model listens to").
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import numpy as np
import torch

__all__ = ["BACKGROUND", "listened_content", "class_content"]

#: The label of the background part.
BACKGROUND = "background"


def _stems(root, filename: str, sample_rate: int, channels: int, length: int):
    """``{label: (channels, length) float32}`` of the clip's parts at the model's rate."""
    from listenable.data.scenes import render_scene_file

    clip = render_scene_file(root, filename)
    labels = {
        "signature": sorted({e.label for e in clip.events if e.role == "signature"}),
        "distractor": sorted({e.label for e in clip.events if e.role == "distractor"}),
    }
    parts = {BACKGROUND: clip.background}
    if labels["signature"]:
        parts[" + ".join(labels["signature"])] = clip.event_audio
    if labels["distractor"]:
        name = " + ".join(labels["distractor"])
        parts[name if name not in parts else f"{name} (distractor)"] = clip.distractor_audio
    out = {}
    for name, audio in parts.items():
        audio = np.asarray(audio, dtype=np.float32)
        if channels == 1 and audio.shape[0] == 2:
            audio = audio.mean(axis=0, keepdims=True)
        elif channels == 2 and audio.shape[0] == 1:
            audio = np.repeat(audio, 2, axis=0)
        if clip.sample_rate != sample_rate:
            import soxr

            audio = soxr.resample(audio.T, clip.sample_rate, sample_rate, quality="HQ").T
        audio = np.ascontiguousarray(audio[:, :length], dtype=np.float32)
        if audio.shape[-1] < length:
            audio = np.pad(audio, ((0, 0), (0, length - audio.shape[-1])))
        out[name] = audio
    return out


def listened_content(
    root: str | os.PathLike,
    filename: str,
    mask: torch.Tensor,
    listening,
    *,
    channels: int,
    length: int,
) -> dict[str, dict[str, float]]:
    """``{label: {"kept": ..., "share": ...}}`` of the listenable output with ``mask``
    ``(bins, frames)`` on the ``listening`` STFT, for clip ``filename`` of the scenes data
    set in ``root`` (``length`` samples at the listening STFT's rate, ``channels`` as the
    model read them). Raises :class:`~listenable.errors.DatasetError` when the clip is not
    in the data set."""
    stems = _stems(root, filename, listening.sample_rate, channels, length)
    names = list(stems)
    wave = torch.from_numpy(np.stack([stems[n] for n in names])).to(listening.window.device)
    with torch.no_grad():
        power = listening(wave).abs().square().double().sum(dim=1)  # (parts, bins, frames)
        # a one-sided spectrum: every bin but DC and Nyquist stands for two (Parseval)
        twice = torch.full((power.shape[1], 1), 2.0, dtype=power.dtype, device=power.device)
        twice[0] = 1.0
        if listening.n_fft % 2 == 0:
            twice[-1] = 1.0
        power = power * twice
        m2 = mask.to(power.device).double().square()
        if m2.shape != power.shape[1:]:
            raise ValueError(
                f"mask {tuple(mask.shape)} is not on the STFT {tuple(power.shape[1:])}"
            )
        total = power.flatten(1).sum(dim=1)
        kept = (power * m2).flatten(1).sum(dim=1)
    out_energy = float(kept.sum())
    return {
        name: {
            "kept": round(float(kept[i] / total[i]), 4) if float(total[i]) > 0 else 0.0,
            "share": round(float(kept[i]) / out_energy, 4) if out_energy > 0 else 0.0,
        }
        for i, name in enumerate(names)
    }


def class_content(rows: Iterable[dict]) -> dict[str, dict]:
    """Per predicted class, the mean ``content`` of its explained clips:
    ``{class: {"clips": n, "labels": {label: {"kept", "share", "clips"}}}}``, labels sorted
    by mean share (a label absent from a clip counts as share 0 there)."""
    per: dict[str, list[dict]] = {}
    for row in rows:
        content = row.get("content")
        name = row.get("predicted")
        if row.get("status") != "ok" or not isinstance(content, dict) or not content:
            continue
        if not isinstance(name, str):
            continue
        per.setdefault(name, []).append(content)
    out = {}
    for name, contents in per.items():
        n = len(contents)
        labels: dict[str, dict] = {}
        for content in contents:
            for label, v in content.items():
                if not isinstance(v, dict):
                    continue
                entry = labels.setdefault(label, {"kept": 0.0, "share": 0.0, "clips": 0})
                entry["kept"] += float(v.get("kept", 0.0))
                entry["share"] += float(v.get("share", 0.0))
                entry["clips"] += 1
        table = {
            label: {
                "share": round(e["share"] / n, 4),
                "kept": round(e["kept"] / e["clips"], 4),
                "clips": e["clips"],
            }
            for label, e in labels.items()
        }
        out[name] = {
            "clips": n,
            "labels": dict(sorted(table.items(), key=lambda kv: -kv[1]["share"])),
        }
    return out
