"""`aigc runs plot` and the curves.png training writes: real PNGs, series that match metrics.jsonl."""

import io
import json

import numpy as np
import pytest
from PIL import Image


@pytest.fixture
def two_runs(aigc_home, cli, tiny_npz, tiny_gan):
    for seed in ("0", "1"):
        code, _, err = cli("train", "gan", "--dataset", tiny_npz, *tiny_gan, "--epochs", "2", "--seed", seed)
        assert code == 0, err
    return aigc_home / "runs"


def _png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def test_training_writes_curves_png_each_epoch(two_runs):
    pixels = _png((two_runs / "run1" / "curves.png").read_bytes())
    # Two quantities (d_loss, g_loss): two panels side by side, a legend strip on top.
    assert pixels.shape == (20 + 240, 2 * 420, 3)
    assert (pixels != 255).any(axis=2).mean() > 0.01  # frames, text and lines drawn
    assert [p.name for p in two_runs.glob("run1/.*")] == [".lock"]  # written atomically, no tmp left


def test_plot_json_series_match_metrics(two_runs, cli):
    code, out, err = cli("runs", "plot", "run1", "run2", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert list(data) == ["run1", "run2"]
    rows = [json.loads(line) for line in (two_runs / "run1" / "metrics.jsonl").read_text().splitlines()]
    assert data["run1"]["d_loss"] == [[r["step"], r["d_loss"]] for r in rows]
    assert set(data["run1"]) == {"d_loss", "g_loss"}  # step, epoch and images/s are not curves


def test_plot_draws_several_runs_in_their_own_colours(two_runs, cli, tmp_path):
    target = tmp_path / "out" / "curves.png"
    code, out, err = cli("runs", "plot", "run1", "run2", "-o", str(target))
    assert code == 0, err
    assert out == b"" and str(target) in err.replace("\n", "")  # rich may wrap a long path
    pixels = _png(target.read_bytes())
    assert pixels.shape == (260, 840, 3)
    blue, orange = (31, 119, 180), (255, 127, 14)  # the first two series colours
    for colour in (blue, orange):
        assert (pixels == colour).all(axis=2).sum() > 50, colour
    code, out, err = cli("runs", "plot", "run1", "-o", "-")
    assert code == 0, err
    assert _png(out).shape == (260, 840, 3)


def test_an_eval_metric_gets_its_own_panel(two_runs, cli):
    with open(two_runs / "run1" / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": 32, "epoch": 2, "fid": 123.4}) + "\n")
    code, out, err = cli("runs", "plot", "run1", "--json")
    assert json.loads(out)["run1"]["fid"] == [[32, 123.4]]
    code, out, err = cli("runs", "plot", "run1", "-o", "-")
    assert _png(out).shape == (20 + 2 * 240, 840, 3)  # three panels: two rows of two


def test_plot_errors_are_one_line(two_runs, cli, clean_error):
    code, _, err = cli("runs", "plot", "nope", "-o", "x.png")
    clean_error(code, err, "nope")
    code, _, err = cli("runs", "plot", "run1")
    clean_error(code, err, "-o")
    (two_runs / "run2" / "metrics.jsonl").write_text("")
    code, _, err = cli("runs", "plot", "run1", "run2", "-o", "x.png")
    clean_error(code, err, "run2", "no metrics")
