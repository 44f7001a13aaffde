"""`aigc train ... --time`: a wall-clock budget that stops at a clean, resumable checkpoint."""

import json

import pytest
from safetensors.torch import load_file

from aigc_cli.core.errors import OptionError
from aigc_cli.core.options import format_duration, parse_duration

# A budget shorter than any training step: the loop stops after exactly one step, mid-epoch.
ONE_STEP = "1e-6"


@pytest.mark.parametrize("text,seconds", [("90s", 90), ("10m", 600), ("1h", 3600), ("1h30m", 5400),
                                          ("2.5", 2.5), ("1.5h", 5400), ("1m30s", 90)])
def test_durations_are_parsed(text, seconds):
    assert parse_duration("time", text) == seconds


@pytest.mark.parametrize("text", ["10x", "0s", "-1m", "", "m", "1h 30m", "inf", "nan"])
def test_bad_durations_are_refused(text):
    with pytest.raises(OptionError, match="time must be a"):
        parse_duration("time", text)


@pytest.mark.parametrize("text", ["99999999999999999999h", "1e9s", "1e9", "8785h", "527041m", "1e400s", "inf"])
def test_durations_past_a_year_are_refused_however_spelt(text):
    # Before: 99999999999999999999h was taken (a deadline in 10**16 years) while 1e9s was not a duration.
    with pytest.raises(OptionError, match=r"^time must be at most a year \(8784h\), got "):
        parse_duration("time", text)
    assert parse_duration("time", "8784h") == 366 * 24 * 3600 and parse_duration("time", "1e3s") == 1000


def test_durations_are_shown_compactly():
    assert [format_duration(s) for s in (5, 754.2, 4000)] == ["5s", "12m34s", "1h06m40s"]


def test_time_budget_stops_at_a_checkpoint_and_resume_matches_a_straight_run(aigc_home, cli, tiny_npz, tiny_gan, run_meta,
                                                                            assert_same_tensors):
    args = ["train", "gan", "--dataset", tiny_npz, *tiny_gan]
    code, out, err = cli(*args, "--epochs", "2", "--time", ONE_STEP, "--json")
    assert code == 0, err
    result = json.loads(out)
    assert (result["status"], result["step"], result["epoch"]) == ("completed", 1, 0)
    assert "budget ran out at step 1" in err
    meta = run_meta(aigc_home)
    assert meta["stopped"] == "time" and meta["status"] == "completed" and result["stopped"] == "time"
    code, out, _ = cli("runs", "show", "run1", "--json")
    assert json.loads(out)["stopped"] == "time"
    run = aigc_home / "runs" / "run1"
    assert load_file(str(run / "checkpoint.safetensors")) and load_file(str(run / "model.safetensors"))
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1]  # the last step is logged even mid-epoch
    code, _, err = cli("sample", "run1", "-n", "4", "-o", str(aigc_home / "grid.png"))
    assert code == 0, err

    # A new budget on resume: exactly one more step.
    code, out, err = cli(*["train", "gan", "--resume", "run1", "--time", ONE_STEP, "--json"])
    assert code == 0, err
    assert json.loads(out)["step"] == 2

    # Without --time it trains on to --epochs, and ends where a run never stopped ends.
    code, out, err = cli("train", "gan", "--resume", "run1", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert (result["status"], result["step"]) == ("completed", 32)
    assert run_meta(aigc_home)["stopped"] is None
    code, _, err = cli(*args, "--epochs", "2")
    assert code == 0, err
    assert_same_tensors(run / "model.safetensors", aigc_home / "runs/run2/model.safetensors")


def test_epochs_end_first_when_the_budget_is_long(aigc_home, cli, tiny_npz, tiny_gan, run_meta):
    code, out, err = cli("train", "gan", "--dataset", tiny_npz, *tiny_gan, "--epochs", "1", "--time", "1h", "--json")
    assert code == 0, err
    assert json.loads(out)["step"] == 16
    assert run_meta(aigc_home)["stopped"] is None


@pytest.mark.parametrize("value", ["10x", "0s", "-1m"])
def test_a_bad_budget_is_one_line_and_creates_no_run(aigc_home, cli, clean_error, tiny_npz, tiny_gan, value):
    code, _, err = cli("train", "gan", "--dataset", tiny_npz, *tiny_gan, "--time", value)
    clean_error(code, err, "--time", value)
    assert not (aigc_home / "runs").exists() or not any((aigc_home / "runs").glob("run*"))


def test_the_python_api_takes_a_budget(aigc_home, tiny_npz):
    from aigc_cli.training import resume, train

    run = train("gan", str(tiny_npz), arch="mlp", width=4, latent_dim=8, batch_size=16, time=ONE_STEP)
    assert run.read_meta()["step"] == 1
    assert resume(run.id, time=ONE_STEP).read_meta()["step"] == 2
    with pytest.raises(OptionError):
        resume(run.id, time="soon")
