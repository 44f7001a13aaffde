"""``aigc tune``: GRPO on a reward for text runs (issue 32). Tiny GPTs on the shared corpus."""

import json

import pytest
import torch

TINY = ["--arch", "gpt", "--layers", "1", "--width", "16", "--heads", "2", "--context", "32", "--batch-size", "32",
        "--seed", "1", "--lr", "1e-2", "--warmup", "5"]
QUICK = ["--batch-size", "2", "--group", "2", "--length", "8"]




@pytest.fixture
def parent(aigc_home, corpus, cli):
    code, _, err = cli("-q", "train", "text", "--dataset", corpus, *TINY, "--epochs", "1")
    assert code == 0, err
    return "run1"


def test_tune_makes_a_child_run_that_logs_previews_and_samples(aigc_home, parent, cli, tmp_path, run_config):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("the \n\nand \n")
    code, out, err = cli("tune", parent, "--reward", "avoid:e", "--prompts", prompts, *QUICK, "--epochs", "1",
                         "--log-every", "1", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["id"] == "run2" and result["status"] == "completed" and result["step"] == 1  # 3 prompts // 2
    config = run_config(aigc_home, "run2")
    assert config["family"] == "text" and config["parent"]["run"] == "run1" and config["model"] == run_config(
        aigc_home, "run1")["model"]
    assert config["tune"]["method"] == "grpo" and config["tune"]["prompts"] == ["the ", "", "and "]
    assert config["tune"]["reward"] == {"spec": "avoid:e", "command": None, "timeout": 60.0}
    row = json.loads((aigc_home / "runs/run2/metrics.jsonl").read_text().splitlines()[0])
    for key in ("reward", "reward_min", "reward_max", "kl", "entropy", "samples_per_s"):
        assert key in row, row
    assert 0 <= row["reward_min"] <= row["reward"] <= row["reward_max"] <= 1 and row["kl"] >= 0
    preview = (aigc_home / "runs/run2/samples/samples_epoch001.txt").read_text()
    assert preview.startswith("the ") and preview.count("[reward ") == 3
    code, out, _ = cli("runs", "list", "--json")
    assert json.loads(out)[1]["tuned"] == "run1"
    code, out, err = cli("sample", "run2", "-n", "2", "--length", "10", "--prompt", "and ")
    assert code == 0 and out.decode().count("and ") >= 2, err


def test_tune_is_reproducible_and_resumes_bit_identically(aigc_home, parent, cli, assert_same_tensors, start_aigc,
                                                         paused, tmp_path):
    import signal

    base = ["tune", parent, "--reward", "avoid:e", *QUICK, "--seed", "4"]
    assert cli(*base, "--epochs", "2")[0] == 0
    assert cli(*base, "--epochs", "2")[0] == 0
    runs = aigc_home / "runs"
    assert_same_tensors(runs / "run2/model.safetensors", runs / "run3/model.safetensors")
    proc = start_aigc(aigc_home, "-q", *base, "--epochs", "2", AIGC_TEST_PAUSE="step:32", AIGC_TEST_PAUSE_DIR=tmp_path)
    paused(proc, tmp_path / "paused-1")  # mid-way through the second epoch
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "aigc tune --resume run4" in err, err
    code, _, err = cli("tune", "--resume", "run4")
    assert code == 0, err
    assert_same_tensors(runs / "run2/checkpoint.safetensors", runs / "run4/checkpoint.safetensors")
    assert cli(*base[:-2], "--seed", "5", "--epochs", "2")[0] == 0  # another seed, other samples, other weights
    with pytest.raises(AssertionError):
        assert_same_tensors(runs / "run2/model.safetensors", runs / "run5/model.safetensors")


def _share_of_e(run, n=64):
    from aigc_cli.generation import load_generator

    gen = load_generator(run)
    ids = gen.sampler.generate(gen.sampler.tokenizer.encode(gen.sampler.start), n, 24, torch.Generator().manual_seed(9))
    text = "".join(gen.sampler.tokenizer.decode(row.tolist()) for row in ids).lower()
    return text.count("e") / max(len(text), 1)


def test_tune_lowers_what_the_reward_punishes(aigc_home, parent, cli):
    code, _, err = cli("tune", parent, "--reward", "avoid:e", "--batch-size", "4", "--group", "8", "--length", "16",
                       "--lr", "3e-3", "--kl", "0", "--epochs", "2")
    assert code == 0, err
    before, after = _share_of_e("run1"), _share_of_e("run2")
    assert after < 0.6 * before, (before, after)


@pytest.mark.parametrize("args,words", [
    ([], ["give what the run learns from", "--preferences"]),
    (["--reward", "avoid:e", "--reward-cmd", "cat"], ["give exactly one of", "both given"]),
    (["--reward", "nothing.py:score"], ["nothing.py"]),
    (["--reward", "no-such-reward"], ["unknown reward 'no-such-reward'"]),
    (["--reward", "compressibility"], ["compressibility"]),
    (["--reward", "avoid:e", "--prompts", "latin1.txt"], ["not UTF-8 text"]),
    (["--reward", "avoid:e", "--length", "33"], ["exceed the run's context of 32 tokens"]),
    (["--reward", "avoid:e", "--lora-alpha", "2"], ["--lora-alpha applies to LoRA adapters"]),
])
def test_a_bad_tune_is_one_line_and_makes_no_run(aigc_home, parent, cli, clean_error, tmp_path, monkeypatch, args,
                                                words, run_ids):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "latin1.txt").write_bytes("café\n".encode("latin-1"))
    code, _, err = cli("tune", parent, *args)
    clean_error(code, err, *words)
    assert run_ids(aigc_home) == ["run1"]


def test_what_cannot_be_tuned_or_resumed(aigc_home, parent, cli, clean_error, tiny_npz, tiny_gan):
    code, _, err = cli("tune", parent, "--reward", "avoid:e", "--resume", parent)
    clean_error(code, err, "give the run to tune")
    code, _, err = cli("tune", "--resume", parent)
    clean_error(code, err, "run1 was trained, not tuned", "aigc train text --resume run1")
    assert cli("-q", "tune", parent, "--reward", "avoid:e", *QUICK, "--epochs", "1")[0] == 0
    code, _, err = cli("tune", "--resume", "run2", "--kl", "1")
    clean_error(code, err, "drop --kl")
    assert cli("-q", "train", "gan", "--dataset", tiny_npz, *tiny_gan, "--epochs", "1")[0] == 0
    code, _, err = cli("tune", "run3", "--reward", "avoid:e")
    clean_error(code, err, "no tuning method learns a gan run from a reward yet")


def test_a_reward_that_fails_mid_run_is_one_line_and_the_run_resumes(aigc_home, parent, cli, clean_error, tmp_path):
    trigger = tmp_path / "fail"
    reward = tmp_path / "score.py"
    reward.write_text(f"""
import pathlib
calls = 0
def short(texts):
    global calls
    calls += 1
    if calls == 3 and pathlib.Path({str(trigger)!r}).exists():
        raise ValueError("the judge is out")
    return [-len(t) for t in texts]
""")
    trigger.touch()
    code, _, err = cli("-q", "tune", parent, "--reward", f"{reward}:short", *QUICK, "--epochs", "1")
    clean_error(code, err, "raised ValueError: the judge is out")
    assert json.loads((aigc_home / "runs/run2/run.json").read_text())["status"] == "failed"
    trigger.unlink()
    code, _, err = cli("tune", "--resume", "run2")
    assert code == 0, err
    assert json.loads((aigc_home / "runs/run2/run.json").read_text())["status"] == "completed"


def test_tune_with_lora_holds_only_adapters(aigc_home, parent, cli, run_config):
    code, _, err = cli("-q", "tune", parent, "--reward", "avoid:e", *QUICK, "--epochs", "1", "--lora", "2",
                       "--lr", "1e-3")
    assert code == 0, err
    config = run_config(aigc_home, "run2")
    assert config["adapters"]["rank"] == 2 and config["tune"]["method"] == "grpo"
    from safetensors.torch import load_file

    names = list(load_file(str(aigc_home / "runs/run2/model.safetensors")))
    assert names and all("lora" in n for n in names), names
    code, out, err = cli("sample", "run2", "-n", "1", "--length", "5")
    assert code == 0, err


def _prefs(path, rows):
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


PAIRS = [{"prompt": "th", "chosen": "at was a good day", "rejected": "e end of me"},
         {"chosen": "a man", "rejected": "the end"}] * 4


def test_dpo_learns_the_pairs_and_refuses_a_changed_file(aigc_home, parent, cli, clean_error, tmp_path, run_config):
    prefs = _prefs(tmp_path / "prefs.jsonl", PAIRS)
    code, out, err = cli("tune", parent, "--preferences", prefs, "--batch-size", "4", "--epochs", "6", "--lr", "1e-2",
                         "--log-every", "1", "--json")
    assert code == 0, err
    config = run_config(aigc_home, "run2")
    assert config["tune"]["method"] == "dpo" and config["tune"]["beta"] == 0.1
    assert config["tune"]["preferences"]["pairs"] == 8 and len(config["tune"]["preferences"]["sha256"]) == 64
    rows = [json.loads(line) for line in (aigc_home / "runs/run2/metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 12 and {"reward_chosen", "reward_rejected", "margin", "accuracy"} <= set(rows[0])
    late = sum(r["margin"] for r in rows[-4:]) / 4  # 1.1 on the 2-core EPYC; 0 at the first step
    assert late > rows[0]["margin"] + 0.6 and rows[-1]["accuracy"] == 1.0
    assert rows[-1]["reward_chosen"] > 0 > rows[-1]["reward_rejected"]  # chosen up, rejected down, against the parent
    _prefs(prefs, PAIRS[:6])
    code, _, err = cli("tune", "--resume", "run2", "--epochs", "7")
    clean_error(code, err, "has changed since this run started")


@pytest.mark.parametrize("rows,words", [
    (["{not json"], ["line 1: not JSON"]),
    ([{"prompt": "a", "chosen": "b"}], ["line 1: 'rejected' must be a non-empty string"]),
    ([{"prompt": 3, "chosen": "b", "rejected": "c"}], ["line 1: 'prompt' must be a string"]),
    ([[1, 2]], ["line 1: a JSON object"]),
    ([], ["holds no preference pairs"]),
    ([{"chosen": "the " * 20, "rejected": "a"}], ["pair 1's prompt and chosen are", "more than the run's context"]),
])
def test_a_bad_preference_file_is_one_line(aigc_home, parent, cli, clean_error, tmp_path, rows, words, run_ids):
    prefs = _prefs(tmp_path / "prefs.jsonl", rows)
    code, _, err = cli("tune", parent, "--preferences", prefs)
    clean_error(code, err, *words)
    assert run_ids(aigc_home) == ["run1"]


def test_options_of_the_other_method_are_refused(aigc_home, parent, cli, clean_error, tmp_path, run_ids):
    prefs = _prefs(tmp_path / "prefs.jsonl", PAIRS)
    code, _, err = cli("tune", parent, "--preferences", prefs, "--kl", "1")
    clean_error(code, err, "--kl does not apply to dpo")
    code, _, err = cli("tune", parent, "--reward", "avoid:e", "--beta", "1")
    clean_error(code, err, "--beta does not apply to grpo")
    code, _, err = cli("tune", parent, "--reward", "avoid:e", "--preferences", prefs)
    clean_error(code, err, "or --preferences, not both")
    assert run_ids(aigc_home) == ["run1"]


UNET = ["--width", "8", "--channel-mult", "1,2", "--batch-size", "32", "--epochs", "1"]
CHAINS = ["--batch-size", "2", "--steps", "3", "--epochs", "1", "--log-every", "5"]


@pytest.fixture
def diffusion_parent(aigc_home, cli, make_bars, tmp_path):
    bars = make_bars(tmp_path / "bars.npz", n=64)
    code, _, err = cli("-q", "train", "diffusion", "--dataset", bars, *UNET)
    assert code == 0, err
    return "run1"


@pytest.mark.slow  # 2 x 25 DDPO steps of a tiny U-Net (20-40 s on 2 busy cores)
def test_ddpo_tunes_a_diffusion_run_reproducibly(aigc_home, diffusion_parent, cli, assert_same_tensors, tmp_path,
                                                 run_config):
    base = ["tune", diffusion_parent, "--reward", "compressibility", *CHAINS, "--label", "2"]
    code, _, err = cli(*base)
    assert code == 0, err
    config = run_config(aigc_home, "run2")
    assert config["tune"]["method"] == "ddpo" and config["tune"]["steps"] == 3 and config["tune"]["label"] == 2
    rows = [json.loads(line) for line in (aigc_home / "runs/run2/metrics.jsonl").read_text().splitlines()]
    assert {"reward", "reward_min", "reward_max", "kl", "clipfrac"} <= set(rows[-1]) and rows[-1]["reward"] < 0
    assert (aigc_home / "runs/run2/samples/samples_epoch001.png").exists()
    assert cli(*base)[0] == 0
    assert_same_tensors(aigc_home / "runs/run2/model.safetensors", aigc_home / "runs/run3/model.safetensors")
    code, _, err = cli("sample", "run2", "-n", "2", "--label", "2", "-o", tmp_path / "s.png")
    assert code == 0, err


@pytest.mark.parametrize("args,words", [
    (["--reward", "compressibility", "--label", "1"], ["--label 1: this run is unconditional"]),
    (["--reward", "compressibility", "--batch-size", "3"], ["--batch-size 3 does not split into --minibatches 2"]),
    (["--reward", "compressibility", "--group", "4"], ["--group does not apply to ddpo"]),
    (["--reward", "avoid:e"], ["avoid"]),
    (["--preferences", "prefs.jsonl"], ["no tuning method learns a diffusion run from preferences"]),
])
def test_what_ddpo_refuses(aigc_home, cli, clean_error, make_bars, tmp_path, monkeypatch, args, words, run_ids):
    monkeypatch.chdir(tmp_path)
    _prefs(tmp_path / "prefs.jsonl", PAIRS)
    bars = make_bars(tmp_path / "bars.npz", n=64)
    assert cli("-q", "train", "diffusion", "--dataset", bars, *UNET, "--unconditional")[0] == 0
    code, _, err = cli("tune", "run1", *args)
    clean_error(code, err, *words)
    assert run_ids(aigc_home) == ["run1"]


@pytest.mark.slow  # two tunings, one on 2 launched ranks (20-40 s on 2 busy cores)
def test_tune_on_two_ranks_computes_what_one_process_does(aigc_home, parent, cli, run_aigc, run_rows, tmp_path):
    import shutil

    args = ["tune", parent, "--reward", "avoid:e", "--batch-size", "4", "--group", "2", "--length", "8", "--epochs", "1",
            "--log-every", "1"]
    shutil.copytree(aigc_home, tmp_path / "two")
    one = run_aigc(aigc_home, "-q", *args, timeout=240)
    assert one.returncode == 0, one.stderr
    two = run_aigc(tmp_path / "two", "-q", *args, "--nproc", "2", timeout=240)
    assert two.returncode == 0, two.stderr
    a, b = run_rows(aigc_home, "run2"), run_rows(tmp_path / "two", "run2")
    assert [r["step"] for r in a] == [r["step"] for r in b] and len(a) == 25
    for x, y in zip(a, b):  # the same samples and rewards; float32 sums in another order
        assert y["reward"] == pytest.approx(x["reward"], abs=1e-6), x["step"]
        assert y["loss"] == pytest.approx(x["loss"], rel=1e-4, abs=1e-5), x["step"]
