"""``pdn-eval``: every mode scored on held-out scenes in one run, the report's schema, the plot,
and clear errors for bad arguments (the shipped model on two full-size frames: a real run)."""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path

import cv2
import pytest

from pdn_perception.cli.evaluate import main
from pdn_perception.train.evaluate import DEFAULT_SPECS

MODES = [s.name for s in DEFAULT_SPECS]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str, Path]:
    d = tmp_path_factory.mktemp("eval")
    argv = ["--frames", "2", "--size", "2048", "2048", "--no-progress"]
    argv += ["--json", str(d / "eval.json"), "--plot", str(d / "eval.png")]
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(argv)
    assert rc == 0, buf.getvalue()
    return json.loads((d / "eval.json").read_text()), buf.getvalue(), d / "eval.png"


def test_report_has_every_mode_with_accuracy_and_time(report: tuple[dict, str, Path]) -> None:
    rep, _, _ = report
    assert rep["frames"] == 2 and rep["objects"] > 0
    assert list(rep["modes"]) == MODES
    for name, m in rep["modes"].items():
        for key in ("AP50", "AP", "recall50", "AP50_small", "recall50_small"):
            assert math.isnan(m[key]) or 0.0 <= m[key] <= 1.0, (name, key)
        assert m["ms_per_frame"] > 0 and m["ms_per_frame_p50"] > 0, name
    crops = {n: rep["modes"][n]["crops_per_frame"] for n in MODES}
    assert crops["topk K=1"] == 1 and crops["topk K=2"] == 2
    assert crops["tiles ov=0"] == 16  # a 2048² frame holds sixteen 512² tiles
    assert crops["global"] == 0
    # The shipped model finds most objects when it looks everywhere at full resolution, and
    # far fewer in one pass over the frame downscaled 4x (objects of 6-48 px become 1.5-12 px).
    assert rep["modes"]["tiles ov=0"]["recall50"] > 0.5
    assert rep["modes"]["global"]["recall50"] < rep["modes"]["tiles ov=0"]["recall50"]


def test_targets_are_computed_from_the_same_run(report: tuple[dict, str, Path]) -> None:
    rep, out, _ = report
    t, k4, tiles = rep["targets"], rep["modes"]["topk K=4"], rep["modes"]["tiles ov=0"]
    assert t["time_ratio_k4_vs_tiles"] == pytest.approx(k4["ms_per_frame"] / tiles["ms_per_frame"])
    assert t["time_ratio_k4_vs_tiles_p50"] == pytest.approx(
        k4["ms_per_frame_p50"] / tiles["ms_per_frame_p50"]
    )
    assert t["recall_ratio_k4_vs_tiles"] == pytest.approx(k4["recall50"] / tiles["recall50"])
    assert t["time_ratio_ok"] == (t["time_ratio_k4_vs_tiles"] <= 0.35)
    assert "| topk K=4 |" in out and "topk K=4 vs tiles: recall ratio" in out


def test_topk_modes_report_how_many_objects_their_crops_hold(
    report: tuple[dict, str, Path],
) -> None:
    rep, out, _ = report
    for name, m in rep["modes"].items():
        if name.startswith("topk"):
            assert 0.0 <= m["crop_recall"] <= 1.0 and 0.0 <= m["oracle_crop_recall"] <= 1.0
        else:
            assert "crop_recall" not in m, name  # tiles and global look everywhere or nowhere
    # Crops are picked greedily, so K=8's crops include K=4's: what they hold never shrinks.
    for key in ("crop_recall", "oracle_crop_recall"):
        held = [rep["modes"][f"topk K={k}"][key] for k in (1, 2, 4, 8)]
        assert held == sorted(held), (key, held)
    assert rep["modes"]["topk K=8"]["oracle_crop_recall"] > 0.5
    assert "objects entirely inside a crop: topk K=1" in out


def test_plot_is_a_readable_image(report: tuple[dict, str, Path]) -> None:
    img = cv2.imread(str(report[2]))
    assert img is not None and img.shape[0] > 100 and img.shape[1] > 100


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--frames", "0"], "--frames must be >= 1"),
        (["--frames", "1", "--first-seed", "5"], "held out"),
        (["--frames", "1", "--domains", "mars"], "unknown domain"),
        (["--frames", "1", "--model", "/nonexistent/model.safetensors"], "nonexistent"),
    ],
)
def test_bad_arguments_fail_with_a_clear_message(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*argv, "--no-progress"]) == 2
    assert message in capsys.readouterr().err
