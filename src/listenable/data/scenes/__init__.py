"""Synthetic acoustic scenes with planted events: the embedded data set and its ground truth.

Every clip is 10 s of 48 kHz stereo made of two parts:

* a **background** drawn independently of the class (coloured noise with a random spectral
  tilt and stereo correlation, mains hum with harmonics at 50 or 60 Hz, babble-like
  amplitude-modulated speech-band noise) at a random level, so that the background alone
  carries no class information;
* 2-4 **signature events** of the clip's class (each class has one event type with its own
  time-frequency pattern, see :data:`EVENT_TYPES`), non-overlapping, 0.3-3 s each, covering
  roughly 15-50 % of the clip, at an event-to-background SNR drawn from
  :data:`SIGNATURE_SNR_DB` and a random constant-power stereo position; with probability
  :data:`DISTRACTOR_PROBABILITY`, one **distractor** event of another class at a lower SNR
  (:data:`DISTRACTOR_SNR_DB`), anywhere in the clip.

The SNR of an event is measured over its annotated box: the STFT bins (n_fft 2048,
hop 1024, Hann, as the model's front end) between ``low_hz`` and ``high_hz`` and the frames
between ``onset_s`` and ``offset_s``, event energy over background energy, both channels
summed. ``low_hz``/``high_hz`` bound the central 95 % of the event's STFT energy;
``onset_s``/``offset_s`` are the first and last 10 ms blocks within 30 dB of its loudest.

Clip ``i`` of class ``c`` depends only on ``(seed, c, i)``, so any clip, its background
and its isolated events can be rendered again (:func:`render_clip`,
:func:`render_scene_file`). No peak normalisation depends on the events (it would make the
background's level depend on the class): the background gets a random level and the whole
clip is scaled down only in the rare case its peak would pass :data:`PEAK_LIMIT`, with one
gain for all parts, so ``mixture == background + event_audio + distractor_audio``.

Real scenes (:mod:`listenable.data.scenes.real`, ``listenable scenes --sources real``)
follow the same design with events and backgrounds cut from recordings that Debian
packages ship, and store each clip's exact stems.

Modules: :mod:`~listenable.data.scenes.events` (classes, :class:`Event`, the event
generators), :mod:`~listenable.data.scenes.backgrounds`, :mod:`~listenable.data.scenes.rendering`
(:func:`render_clip`, SNR over the box, annotation), :mod:`~listenable.data.scenes.layout`
(the TAU layout: writing and reading), :mod:`~listenable.data.scenes.real`, and
:mod:`~listenable.data.scenes.signals` (noise, envelopes, fades).

Shapes: audio arrays are ``(channels, samples)`` = ``(2, N)`` numpy float32.
"""

from listenable.data.scenes.backgrounds import BACKGROUND_DBFS
from listenable.data.scenes.events import CLASSES, EVENT_TYPES, Event
from listenable.data.scenes.layout import (
    GENERATOR_VERSION,
    load_events,
    read_manifest,
    render_scene_file,
    write_scenes,
)
from listenable.data.scenes.real import (
    REAL_CLASSES,
    REAL_EVENT_TYPES,
    read_real_clip,
    write_real_scenes,
)
from listenable.data.scenes.rendering import (
    DISTRACTOR_PROBABILITY,
    DISTRACTOR_SNR_DB,
    DURATION,
    PEAK_LIMIT,
    SAMPLE_RATE,
    SIGNATURE_SNR_DB,
    SceneClip,
    render_clip,
)

__all__ = [
    "CLASSES",
    "EVENT_TYPES",
    "GENERATOR_VERSION",
    "SIGNATURE_SNR_DB",
    "DISTRACTOR_SNR_DB",
    "DISTRACTOR_PROBABILITY",
    "PEAK_LIMIT",
    "Event",
    "SceneClip",
    "render_clip",
    "render_scene_file",
    "write_scenes",
    "load_events",
    "read_manifest",
    "BACKGROUND_DBFS",
    "SAMPLE_RATE",
    "DURATION",
    "REAL_CLASSES",
    "REAL_EVENT_TYPES",
    "read_real_clip",
    "write_real_scenes",
]
