"""Reports: figures (matplotlib, headless) and a static, listenable web gallery.

:func:`build_gallery` turns an ``analyze`` folder into pages (see
:mod:`listenable.report.gallery`). What it reads, all optional unless marked:

**A manifest row** (``manifest.jsonl``, one JSON object per clip)::

    clip_id, status ("ok"), selected, predicted | target   required to list a clip
    label, correct, confidence, mask_area, empty_mask      shown, sorted and filtered on
    method        the method of files.listenable (default: summary settings.method)
    scores        {name: number} about that method, shown in the comparison
    stft          {"n_fft", "hop_length"} for the gallery's own spectrograms
                  (else the summary's ``stft`` or ``settings.stft``, else ~43 ms / 50 %)
    files         paths relative to the folder:
        original, listenable, residual   audio, any rate, channels and format soundfile
                                         reads (each file's own rate is used)
        view, outline                    the spectrogram view and its mask outline, as
                                         :func:`listenable.report.views.write_view` draws
                                         them (used when they have one panel per track;
                                         else the gallery draws them from the audio)
        figure, json                     linked as they are
    methods       further methods computed for the clip, in the order to show them:
                  {"<name>": {"files": {"listenable": path, "residual": path},
                              "mask_area": number, "scores": {name: number}}}
                  each adds a track ("listenable · <name>", key 4, 5...) and a card in
                  the side-by-side comparison; at most 12

**summary.json**: ``class_names``, ``classes`` (per class ``clips``, ``selected``,
``accuracy``), ``totals``, ``settings`` (``min_confidence``, ``method``), ``checkpoint``,
``clips_per_s``, and ``class_profiles``: what the model listens to per class, the mean
mask over frequency::

    {"<class>": {"frequencies_hz": [increasing, Hz], "mean_mask": [same length, 0..1]}}

(a class without one shows a placeholder saying so).

Audio for the gallery is written by :func:`listenable.report.audio.write_track`:
``ogg`` (Vorbis, the default), ``mp3``, ``flac`` or ``wav``.
"""

from listenable.report.gallery import (
    build_gallery,
    class_page_name,
    page_slug,
    read_manifest_rows,
)

__all__ = ["build_gallery", "class_page_name", "page_slug", "read_manifest_rows"]
