"""The family protocol's shared mechanisms (issue 28): conditioning, optimization owned by the
loop (parameter groups, frozen parameters, EMA copies, schedules spanning a --time budget),
modules loaded by name, lineage, config.json checked against each family's declared fields
(issue 27), and runs of the first run format still loading as they did.
"""

from __future__ import annotations

import json

import pytest
import torch
from aigc_cli.models.registry import RUN_FORMAT

TEXT = ["--layers", "1", "--width", "16", "--heads", "2", "--context", "16", "--batch-size", "32", "--seed", "1",
        "--arch", "gpt"]


def _config(home, run):
    return json.loads((home / "runs" / run / "config.json").read_text())


def _write_config(home, run, config):
    (home / "runs" / run / "config.json").write_text(json.dumps(config))


# -- conditioning ----------------------------------------------------------------------------


def test_conditioning_rows_travel_together():
    from aigc_cli.models.conditions import Conditioning

    c = Conditioning(4, labels=torch.tensor([0, 1, 2, 3]), prompts=("a", "b", "c", "d"))
    part = c.rows(1, 3)
    assert part.n == 2 and part.labels.tolist() == [1, 2] and part.prompts == ("b", "c")
    assert c.rows(3, 10).n == 1  # past the end: what is there
    two = Conditioning(2, labels=torch.tensor([5, 6])).repeat(3)
    assert two.n == 6 and two.labels.tolist() == [5, 5, 5, 6, 6, 6]
    assert Conditioning(3).rows(0, 2).n == 2 and Conditioning(3).labels is None  # no condition: rows alone


def test_conditions_a_run_does_not_take_are_one_line_errors(aigc_home, tiny_npz, tiny_gan, cli, clean_error):
    from aigc_cli.generation import load_generator

    assert cli("-q", "train", "gan", "--dataset", tiny_npz, "--epochs", "1", *tiny_gan)[0] == 0  # conditional: 4 classes
    assert cli("-q", "train", "gan", "--dataset", tiny_npz, "--epochs", "1", "--unconditional", *tiny_gan)[0] == 0
    gen = load_generator("run1")
    assert gen.conditions == {"label": 4}
    assert gen.conditioning(6).labels.tolist() == [0, 1, 2, 3, 0, 1]  # every class in turn
    assert gen.conditioning(3, single=True).labels.tolist() == [0, 0, 0]
    assert gen.conditioning(2, label=3).labels.tolist() == [3, 3]
    code, _, err = cli("sample", "run1", "--label", "4", "-o", aigc_home / "x.png")
    clean_error(code, err, "--label must be in 0..3 for run1")
    code, _, err = cli("sample", "run2", "--label", "1", "-o", aigc_home / "x.png")
    clean_error(code, err, "run2 is not class-conditional; drop --label")
    code, _, err = cli("sample", "run1", "--prompt", "hello", "-o", aigc_home / "x.png")
    clean_error(code, err, "--prompt does not apply to run1, a gan run (it does to diffusion, text runs)")
    assert not (aigc_home / "x.png").exists()


# -- optimization owned by the loop ------------------------------------------------------------


def _gan_task(aigc_home, tiny_npz, tiny_gan, cli):
    from aigc_cli.models.registry import get_family, load_config
    from aigc_cli.runs.store import resolve_run

    if not (aigc_home / "runs" / "run1").exists():
        assert cli("-q", "train", "gan", "--dataset", tiny_npz, "--epochs", "1", *tiny_gan)[0] == 0
    config = load_config(resolve_run("run1"))
    return get_family("gan").impl.make_task(config, torch.device("cpu")), config


def test_the_loop_builds_optimizers_and_weight_averages(aigc_home, tiny_npz, tiny_gan, cli):
    from aigc_cli.models.optim import attach

    task, _ = _gan_task(aigc_home, tiny_npz, tiny_gan, cli)
    assert set(task.modules) == {"G", "D"}  # the task declares; the loop adds the averages
    optim = attach(task, torch.device("cpu"))
    assert set(optim) == {"G", "D"} and set(task.modules) == {"G", "D", "G_ema"}
    assert task.inference_modules()["G"] is task.modules["G_ema"]
    # Two Adam groups per network: the per-class tables learn at 100x (class_lr_scale).
    groups = optim["G"].optimizer.param_groups
    assert len(groups) == 2 and groups[1]["lr"] == pytest.approx(100 * groups[0]["lr"])


def test_frozen_parameters_stay_and_leave_the_optimizers(aigc_home, tiny_npz, tiny_gan, cli):
    from aigc_cli.core.errors import ConfigError
    from aigc_cli.models.optim import attach, build_optimizers

    task, _ = _gan_task(aigc_home, tiny_npz, tiny_gan, cli)
    first = next(name for name, _ in task.G.named_parameters())
    optim = attach(task, torch.device("cpu"), frozen=lambda name: name == f"G.{first}")
    frozen = dict(task.G.named_parameters())[first]
    trained = [p for n, p in task.G.named_parameters() if n != first]
    before, others = frozen.detach().clone(), [p.detach().clone() for p in trained]
    assert not frozen.requires_grad
    assert all(p is not frozen for g in optim["G"].optimizer.param_groups for p in g["params"])
    torch.manual_seed(0)
    images = torch.randint(0, 255, (16, 1, 8, 8), dtype=torch.uint8)
    for step in range(3):
        task.train_step(images, torch.arange(16) % 4, step)
    assert torch.equal(frozen, before)
    assert any(not torch.equal(p, q) for p, q in zip(trained, others))  # the rest did train
    task2, _ = _gan_task(aigc_home, tiny_npz, tiny_gan, cli)
    with pytest.raises(ConfigError, match="optimizer 'G' has nothing left to train"):
        build_optimizers(task2.modules, task2.param_groups(), torch.device("cpu"), frozen=lambda n: n.startswith("G."))


def test_a_time_budget_ends_the_learning_rate_schedule(aigc_home, corpus, cli):
    """Text's warm-up + cosine spans the steps the --time budget is expected to allow, not the
    1,000 epochs asked for: the rate has come most of the way down when the budget runs out."""
    code, _, err = cli("-q", "train", "text", "--dataset", corpus, *TEXT, "--warmup", "5", "--lr", "1e-2",
                       "--epochs", "1000", "--time", "6s", "--log-every", "5")
    assert code == 0, err
    rows = [json.loads(line) for line in (aigc_home / "runs/run1/metrics.jsonl").read_text().splitlines()]
    rates = [r["lr"] for r in rows if "lr" in r]
    assert rates and max(rates) == pytest.approx(1e-2, rel=0.05)
    assert rates[-1] < 0.6e-2, rates[-5:]  # at the 1,000-epoch horizon it would still be ~1e-2
    assert any("val_loss" in r for r in rows)  # a --time stop scores the held-out text too
    assert json.loads((aigc_home / "runs/run1/run.json").read_text())["stopped"] == "time"


# -- modules by name, lineage ------------------------------------------------------------------


def test_modules_load_by_name_from_the_weights(aigc_home, tiny_npz, tiny_gan, cli):
    from aigc_cli.core.errors import RunError
    from aigc_cli.generation import load_modules
    from aigc_cli.runs.store import resolve_run

    assert cli("-q", "train", "gan", "--dataset", tiny_npz, "--epochs", "1", *tiny_gan)[0] == 0
    run = resolve_run("run1")
    modules = load_modules(run, ["G"])
    assert set(modules) == {"G"}
    assert all(torch.isfinite(p).all() for p in modules["G"].parameters())
    with pytest.raises(RunError, match="run1 has no module 'D'; it has G"):
        load_modules(run, ["D"])  # the discriminator lives in the checkpoint, not the weights


def test_lineage_is_recorded_shown_and_checked(aigc_home, tiny_npz, tiny_gan, cli, clean_error):
    from aigc_cli.runs.lineage import weights_digest
    from aigc_cli.runs.store import resolve_run
    from aigc_cli.training import train

    assert cli("-q", "train", "gan", "--dataset", tiny_npz, "--epochs", "1", *tiny_gan)[0] == 0
    parent = resolve_run("run1")
    digest = weights_digest(parent.weights_path)
    train("gan", str(tiny_npz), arch="mlp", width=4, latent_dim=8, batch_size=16, epochs=1, parent=parent)
    assert _config(aigc_home, "run2")["parent"] == {"run": "run1", "weights_sha256": digest}
    code, out, _ = cli("runs", "show", "run2", "--json")
    assert code == 0 and json.loads(out)["parent"] == {"run": "run1", "weights_sha256": digest, "state": "unchanged"}
    code, out, _ = cli("runs", "show", "run2")
    assert f"run1 (weights sha256 {digest[:12]}...; unchanged)" in " ".join(out.decode().split())
    # The parent's weights change (run1 trained on): its child says so and will not resume blind.
    assert cli("-q", "train", "gan", "--resume", "run1", "--epochs", "2")[0] == 0
    code, out, _ = cli("runs", "show", "run2", "--json")
    assert json.loads(out)["parent"]["state"] == "its weights have changed since"
    code, _, err = cli("train", "gan", "--resume", "run2", "--epochs", "2")
    clean_error(code, err, "run2's config.json descends from run1", "its weights have changed since")


# -- config.json checked against the families' declarations (issue 27) -------------------------


@pytest.fixture
def text_run(aigc_home, corpus, cli):
    code, _, err = cli("-q", "train", "text", "--dataset", corpus, *TEXT, "--epochs", "1")
    assert code == 0, err
    return _config(aigc_home, "run1")


@pytest.mark.parametrize("edit, words", [
    (lambda m: m.update(alphabet=12345), ["'model' field 'alphabet' must be a string, got 12345"]),
    (lambda m: m.update(context="eight"), ["'model' field 'context' must be a whole number, got 'eight'"]),
    (lambda m: m.update(alphabet=m["alphabet"][:-10]), ["field 'alphabet' has", "but 'vocab_size' is"]),
    (lambda m: m.update(alphabet=m["alphabet"][:-1] + m["alphabet"][0]), ["field 'alphabet' holds", "twice"]),
    (lambda m: m.update(arch="transformer"), ["field 'arch' must be one of gru, lstm, gpt, got 'transformer'"]),
    (lambda m: m.pop("layers"), ["field 'layers' is missing"]),
])
def test_a_damaged_config_is_one_line_for_every_command(aigc_home, text_run, corpus, cli, clean_error, edit, words,
                                                         tmp_path):
    model = dict(text_run["model"])
    edit(model)
    _write_config(aigc_home, "run1", {**text_run, "model": model})
    for args in (["sample", "run1", "--length", "5"], ["eval", "ppl", "run1", corpus],
                 ["export", "onnx", "run1", "-o", tmp_path / "m.onnx"], ["train", "text", "--resume", "run1", "--epochs", "2"]):
        code, out, err = cli(*args)
        clean_error(code, err, "run1's config.json", *words)
        assert out == b""  # nothing written before the error (a sample's first bytes)
    assert not (tmp_path / "m.onnx").exists()


def test_a_config_from_a_newer_aigc_is_refused(aigc_home, text_run, cli, clean_error):
    _write_config(aigc_home, "run1", {**text_run, "format": "aigc-run/9"})
    code, _, err = cli("sample", "run1", "--length", "5")
    clean_error(code, err, "run1's config.json was written by a newer aigc (run format 9")


# -- runs of the first format -----------------------------------------------------------------


@pytest.mark.parametrize("family, args, dropped", [
    ("diffusion", ["--width", "8", "--channel-mult", "1,2", "--batch-size", "32"],
     {"model": ["layout", "blocks"], "train": ["precision"]}),
    # Runs before format 3 had none of the fields diffusers' U-Nets brought (models/diffusion/family.py).
    ("diffusion", ["--width", "8", "--channel-mult", "1,2", "--batch-size", "32", "--layout", "ddpm",
                   "--schedule", "linear", "--prediction", "eps"],
     {"model": ["norm_groups", "norm_eps", "flip_sin_to_cos", "freq_shift", "time_act", "down_attention",
                "up_attention", "mid_attention", "head_dim", "mid_scale", "down_padding", "center_input",
                "beta_start", "beta_end", "spacing", "steps_offset", "final_alpha_one", "clip_x0", "clipped_eps"]}),
    ("vae", ["--width", "4", "--latent-dim", "4", "--batch-size", "32", "--prior", "standard"],
     {"model": ["prior", "prior_components"]}),
    ("gan", ["--arch", "mlp", "--width", "4", "--latent-dim", "8", "--batch-size", "16", "--updates", "alternating"],
     {"train": ["updates"]}),
])
def test_format_1_runs_load_and_sample_as_they_did(aigc_home, tiny_npz, cli, family, args, dropped, tmp_path):
    """A run written before the fields existed (run format 1) samples the same images: its
    family's upgrade_config fills in what such runs did, in one place."""
    assert cli("-q", "train", family, "--dataset", tiny_npz, "--epochs", "1", *args)[0] == 0
    code, now, err = cli("sample", "run1", "-n", "8", "--seed", "3", "-o", "-")
    assert code == 0, err
    config = _config(aigc_home, "run1")
    assert config["format"] == f"aigc-run/{RUN_FORMAT}"
    old = {**config, "format": "aigc-run/1"}
    for section, keys in dropped.items():
        old[section] = {k: v for k, v in config[section].items() if k not in keys}
    _write_config(aigc_home, "run1", old)
    code, then, err = cli("sample", "run1", "-n", "8", "--seed", "3", "-o", "-")
    assert code == 0 and then == now, err
    code, _, err = cli("-q", "train", family, "--resume", "run1", "--epochs", "2")
    assert code == 0, err
