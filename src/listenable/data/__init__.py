"""Data sets: the TAU 2019 Task 1A layout, class folders, CSV lists, synthetic scenes."""

from listenable.data.datasets import (
    AudioDataset,
    collate_clips,
    csv_dataset,
    folder_dataset,
    open_dataset,
    tau_dataset,
)
from listenable.data.scenes import (
    CLASSES,
    EVENT_TYPES,
    Event,
    SceneClip,
    load_events,
    read_manifest,
    render_clip,
    render_scene_file,
    write_scenes,
)

__all__ = [
    "AudioDataset",
    "collate_clips",
    "csv_dataset",
    "folder_dataset",
    "open_dataset",
    "tau_dataset",
    "CLASSES",
    "EVENT_TYPES",
    "Event",
    "SceneClip",
    "load_events",
    "read_manifest",
    "render_clip",
    "render_scene_file",
    "write_scenes",
]
