"""``benchmarks/threshold_rules.py --bars``: issue 12's bars on hand-made results, each
bar failing exactly when its inequality does; and one default method for every entry point."""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location(
        "threshold_rules", ROOT / "benchmarks" / "threshold_rules.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(tmp_path, name, methods):
    folder = tmp_path / name
    folder.mkdir()
    (folder / "results.json").write_text(json.dumps({"methods": methods}), encoding="utf-8")
    return str(folder)


def _m(precision, shuffled, fid_in):
    return {"event_precision": precision, "event_precision_shuffled": shuffled, "fid_in": fid_in}


HEATMAP = {"gradcam": _m(0.60, 0.55, 0.40), "layercam": _m(0.75, 0.55, 0.80)}


@pytest.mark.parametrize(
    "layercam_heatmap, layercam_stft, sharper, passed",
    [
        (_m(0.75, 0.55, 0.80), _m(0.70, 0.55, 0.80), "layercam", [True, True, True]),
        (_m(0.64, 0.55, 0.80), _m(0.60, 0.55, 0.80), "layercam", [False, True, True]),  # +0.09
        (_m(0.75, 0.55, 0.59), _m(0.70, 0.55, 0.80), "layercam", [False, True, True]),  # Fid-In
        (_m(0.75, 0.55, 0.80), _m(0.76, 0.55, 0.80), "layercam", [True, False, True]),  # stft
        (_m(0.59, 0.40, 0.80), _m(0.50, 0.40, 0.80), "layercam", [True, True, False]),  # < gradcam
        (_m(0.75, 0.55, 0.30), _m(0.70, 0.55, 0.80), "layercam", [False, True, False]),  # fid < gc
    ],
)
def test_each_bar_fails_with_its_inequality(
    tmp_path, capsys, layercam_heatmap, layercam_stft, sharper, passed
):
    tr = _script()
    heatmap = dict(HEATMAP, layercam=layercam_heatmap)
    stft = {"gradcam": HEATMAP["gradcam"], "layercam": layercam_stft}
    results = tr.bars({"methods": heatmap}, {"methods": stft}, "layercam", [sharper])
    assert [ok for ok, _ in results] == passed
    code = tr.main(
        [_run(tmp_path, "h", heatmap), _run(tmp_path, "s", stft), "--bars", f"layercam,{sharper}"]
    )
    out = capsys.readouterr().out
    assert code == (0 if all(passed) else 1)
    assert out.count("PASS") == sum(passed) and out.count("FAIL") == len(passed) - sum(passed)
    assert "| layercam |" in out  # the table is printed before the bars


def test_a_method_missing_from_a_run_fails_its_bars():
    tr = _script()
    results = tr.bars({"methods": HEATMAP}, {"methods": {}}, "layercam", ["optimised"])
    assert [ok for ok, _ in results] == [True, False, False]


def test_every_entry_point_takes_the_models_default_method(model10):
    """No entry point fixes a method: each leaves it to ``default_method(model)``, which
    is ``optimised`` where the adapter names the multi-scale start's ``fine_layers`` and
    LayerCAM where it names none (AST, a user's module)."""
    from listenable.analyze import AnalyzeConfig
    from listenable.cams import DEFAULT_METHOD, FALLBACK_METHOD, METHODS, default_method
    from listenable.cli.common import add_mask_options
    from listenable.explain import Explainer, explain
    from listenable.models import Explainable, as_explainable

    assert {DEFAULT_METHOD, FALLBACK_METHOD} <= set(METHODS)
    parser = argparse.ArgumentParser()
    add_mask_options(parser)
    assert parser.parse_args([]).method is None
    assert AnalyzeConfig().method is None
    for function in (Explainer.__init__, explain):
        assert inspect.signature(function).parameters["method"].default is None
    reference = as_explainable(model10)
    assert reference.fine_layers and default_method(reference) == "optimised"
    assert Explainer(reference).method == "optimised"
    assert default_method(reference, "fusion") == "optimised"  # its own layer, named
    assert default_method(reference, "low.stage3") == "layercam"  # another layer's map
    plain = Explainable(model10, front_end=reference.front_end, layer="fusion")
    assert plain.fine_layers is None and default_method(plain) == "layercam"
    assert Explainer(plain).method == "layercam"


def _with_clips(methods, per_clip, names):
    return {
        "methods": methods,
        "per_clip": per_clip,
        "settings": {"clip_list": [{"name": n} for n in names]},
    }


def test_paired_difference_is_the_mean_of_the_per_clip_differences():
    """A constant difference has a zero-width interval; clips scored by one method only are
    left out; runs of other clips are not compared."""
    tr = _script()
    a = _with_clips({}, {"x": {"event_precision": [0.5, 0.7, None, 0.9]}}, "abcd")
    b = _with_clips({}, {"y": {"event_precision": [0.4, 0.6, 0.3, 0.8]}}, "abcd")
    mean, low, high, n = tr.paired(a, "x", b, "y")
    assert n == 3 and mean == pytest.approx(0.1) and low == pytest.approx(0.1)
    assert high == pytest.approx(0.1)
    spread = _with_clips({}, {"y": {"event_precision": [0.0, 0.7, 0.3, 0.9]}}, "abcd")
    mean, low, high, n = tr.paired(a, "x", spread, "y")  # differences 0.5, 0, 0
    assert mean == pytest.approx(0.5 / 3) and 0.0 <= low < mean < high <= 0.5
    other = _with_clips({}, {"y": {"event_precision": [0.4, 0.6, 0.3, 0.8]}}, "abce")
    assert tr.paired(a, "x", other, "y") is None
    assert tr.paired({"methods": {}}, "x", b, "y") is None  # an older run: no per-clip values


def test_stft_runs_split_over_folders_are_merged(tmp_path, capsys):
    tr = _script()
    h = _run(tmp_path, "h", HEATMAP)
    s1 = _run(tmp_path, "s1", {"gradcam": HEATMAP["gradcam"]})
    s2 = _run(tmp_path, "s2", {"layercam": _m(0.70, 0.55, 0.80)})
    assert tr.main([h, s1, s2, "--bars", "layercam"]) == 0
    assert "stft 0.700" in capsys.readouterr().out
