"""`aigc train gan` end to end on tiny data: files, losses, resume, signals, divergence, bad input."""

import json
import signal

import numpy as np
import torch
import pytest
from aigc_cli.models.registry import RUN_FORMAT


def test_train_writes_a_complete_run(aigc_home, cli, tiny_npz, tiny_gan):
    code, out, err = cli("train", "gan", "--dataset", tiny_npz, *tiny_gan, "--epochs", "2", "--name", "bars", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["id"] == "run1" and result["status"] == "completed" and result["step"] == 32
    run = aigc_home / "runs" / "run1"
    config = json.loads((run / "config.json").read_text())
    assert config["family"] == "gan" and config["seed"] == 0
    assert config["model"] == {"arch": "mlp", "loss": "hinge", "latent_dim": 8, "width": 4,
                               "image_shape": [1, 8, 8], "num_classes": 4, "conditional": True}
    assert config["dataset"]["size"] == 256 and len(config["dataset"]["fingerprint"]) == 64
    assert set(config["versions"]) == {"aigc", "torch", "python"}
    meta = json.loads((run / "run.json").read_text())
    assert (meta["status"], meta["epoch"], meta["step"], meta["name"]) == ("completed", 2, 32, "bars")
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [16, 20, 32]  # every 20 steps and at each epoch end
    assert all({"d_loss", "g_loss", "images_per_s", "epoch"} <= r.keys() for r in rows)
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["samples_epoch001.png", "samples_epoch002.png"]
    assert (run / "model.safetensors").stat().st_size > 0
    assert [p.name for p in run.glob(".*")] == [".lock"]  # no temp file left, only the (free) lock
    assert all(not p.name.endswith((".pt", ".pth", ".pkl")) for p in run.rglob("*"))


def test_gan_is_conditional_exactly_when_the_data_has_labels(aigc_home, cli, tiny_npz, tmp_path, tiny_gan):
    """Default: conditional on labelled data (said on stderr), unconditional on unlabelled data;
    --unconditional turns it off, --conditional without labels is an error; a resumed run keeps
    its choice and refuses a new one."""
    args = ["train", "gan", "--dataset", tiny_npz, *tiny_gan, "--epochs", "1"]
    code, _, err = cli(*args)
    assert code == 0, err
    assert "class-conditional on 4 classes" in err
    code, _, err = cli(*args, "--unconditional")
    assert code == 0, err
    assert "class-conditional" not in err
    models = [json.loads((aigc_home / f"runs/run{i}/config.json").read_text())["model"] for i in (1, 2)]
    assert [m["conditional"] for m in models] == [True, False]

    unlabelled = tmp_path / "unlabelled.npy"
    np.save(unlabelled, np.load(tiny_npz)["images"])
    code, _, err = cli("train", "gan", "--dataset", str(unlabelled), *tiny_gan, "--epochs", "1")
    assert code == 0, err
    assert json.loads((aigc_home / "runs/run3/config.json").read_text())["model"]["conditional"] is False
    code, _, err = cli("train", "gan", "--dataset", str(unlabelled), *tiny_gan, "--conditional")
    assert code == 1 and "--conditional needs a dataset with labels" in err

    code, _, err = cli("train", "gan", "--resume", "run1", "--epochs", "2", "--unconditional")
    assert code == 1 and "drop --unconditional" in err, err


@pytest.mark.parametrize(
    "arch,loss,extra",
    [("mlp", "bce", ["--unconditional"]), ("mlp", "wgan-gp", ["--conditional"]), ("dcgan", "hinge", []),
     ("dcgan", "wgan-gp", ["--unconditional"]), ("dcgan", "bce", ["--unconditional"])],
)
def test_every_arch_and_loss_trains(aigc_home, cli, tiny_npz, arch, loss, extra):
    code, out, err = cli("train", "gan", "--dataset", tiny_npz, "--arch", arch, "--loss", loss, "--width", "4",
                         "--latent-dim", "8", "--batch-size", "32", "--epochs", "1", "--json", *extra)
    assert code == 0, err
    rows = [json.loads(line) for line in (aigc_home / "runs/run1/metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["d_loss"]) and np.isfinite(r["g_loss"]) for r in rows)
    if loss == "wgan-gp":
        assert "gp" in rows[-1]


@pytest.mark.parametrize("updates", ["alternating", "simultaneous"])
def test_resume_continues_exactly(aigc_home, cli, tiny_npz, tiny_gan, updates, assert_same_tensors):
    base = ["train", "gan", "--dataset", tiny_npz, *tiny_gan, "--updates", updates]
    assert cli(*base, "--epochs", "2")[0] == 0
    assert cli(*base, "--epochs", "1")[0] == 0
    code, out, err = cli("train", "gan", "--resume", "last", "--epochs", "2")
    assert code == 0, err
    runs = aigc_home / "runs"
    assert_same_tensors(runs / "run1/model.safetensors", runs / "run2/model.safetensors")
    assert_same_tensors(runs / "run1/checkpoint.safetensors", runs / "run2/checkpoint.safetensors")
    steps = [json.loads(line)["step"] for line in (runs / "run2/metrics.jsonl").read_text().splitlines()]
    assert steps == [16, 20, 32]
    # Already done: asking for no more epochs is an error, not a silent no-op.
    code, _, err = cli("train", "gan", "--resume", "run2")
    assert code == 1 and "already trained 2 epochs" in err
    code, _, err = cli("train", "gan", "--resume", "run2", "--lr", "0.1", "--epochs", "3")
    assert code == 1 and "drop --lr" in err


def _big_npz(tmp_path):
    rng = np.random.default_rng(1)
    path = tmp_path / "big.npz"
    np.savez(path, images=rng.integers(0, 255, (4096, 8, 8)).astype(np.uint8))
    return path


@pytest.mark.slow  # each: 2,048 steps of training, part of them in a process (12-22 s)
@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_leaves_a_resumable_run(aigc_home, cli, tmp_path, sig, code, start_aigc, paused, assert_same_tensors):
    data = _big_npz(tmp_path)
    args = ["train", "gan", "--dataset", str(data), "--arch", "mlp", "--width", "4", "--latent-dim", "8",
            "--batch-size", "8", "--epochs", "2"]
    # Paused after step 40, when metrics.jsonl has its second row.
    proc = start_aigc(aigc_home, "-q", *args, AIGC_TEST_PAUSE="step:40", AIGC_TEST_PAUSE_DIR=tmp_path)
    paused(proc, tmp_path / "paused-1")
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert "Traceback" not in err and "--resume run1" in err
    meta = json.loads((aigc_home / "runs/run1/run.json").read_text())
    assert meta["status"] == "interrupted" and meta["step"] == 40

    assert cli("train", "gan", "--resume", "run1")[0] == 0
    assert cli(*args)[0] == 0  # the same run, never stopped
    runs = aigc_home / "runs"
    assert_same_tensors(runs / "run1/model.safetensors", runs / "run2/model.safetensors")
    assert json.loads((runs / "run1/run.json").read_text())["status"] == "completed"


def test_non_finite_loss_stops_and_keeps_good_weights(aigc_home, cli, tiny_npz, monkeypatch, tiny_gan,
                                                     assert_same_tensors):
    import torch

    from aigc_cli.core.errors import TrainingDiverged
    from aigc_cli.models.gan.family import GanTask
    from aigc_cli.training import train

    assert cli("train", "gan", "--dataset", tiny_npz, *tiny_gan, "--epochs", "1")[0] == 0
    good = aigc_home / "runs/run1/model.safetensors"

    original = GanTask.train_step

    def poisoned(self, batch, labels, step):
        out = original(self, batch, labels, step)
        if step >= 19:  # in the second epoch
            out["d_loss"] = torch.tensor(float("nan"))
        return out

    monkeypatch.setattr(GanTask, "train_step", poisoned)
    with pytest.raises(TrainingDiverged, match="diverged at step 20.*weights of epoch 1 are kept"):
        train("gan", str(tiny_npz), arch="mlp", width=4, latent_dim=8, batch_size=16, epochs=2)
    run2 = aigc_home / "runs/run2"
    assert json.loads((run2 / "run.json").read_text())["status"] == "failed"
    assert_same_tensors(good, run2 / "model.safetensors")


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    "case",
    ["missing", "truncated-idx", "empty-folder", "not-an-image", "bad-arch", "bad-loss", "negative-epochs",
     "conditional-unlabelled", "bad-split", "bad-device"],
)
def test_bad_input_is_one_line_exit_1(aigc_home, cli, tmp_path, tiny_npz, mnist_dir, tiny_gan, case):
    import gzip

    dataset = str(tiny_npz)
    extra = []
    if case == "missing":
        dataset = str(tmp_path / "nope")
    elif case == "truncated-idx":
        raw = gzip.decompress((mnist_dir / "t10k-images-idx3-ubyte.gz").read_bytes())
        dataset = str(_write(tmp_path / "cut-images-idx3-ubyte", raw[: 16 + 784 * 3 + 100]))
    elif case == "empty-folder":
        (tmp_path / "empty").mkdir()
        dataset = str(tmp_path / "empty")
    elif case == "not-an-image":
        dataset = str(_write(tmp_path / "notes.txt", b"hello, not pixels"))
    elif case == "bad-arch":
        extra = ["--arch", "resnet9000"]
    elif case == "bad-loss":
        extra = ["--loss", "l2"]
    elif case == "negative-epochs":
        extra = ["--epochs", "-3"]
    elif case == "conditional-unlabelled":
        np.savez(tmp_path / "nolabels.npz", images=np.zeros((64, 8, 8), np.uint8))
        dataset, extra = str(tmp_path / "nolabels.npz"), ["--conditional"]
    elif case == "bad-split":
        dataset, extra = "shapes", ["--split", "validation"]
    pre = ["--device", "tpu"] if case == "bad-device" else []
    code, out, err = cli(*pre, "train", "gan", "--dataset", dataset, *tiny_gan, "--epochs", "1", *extra)
    assert code == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("aigc: error: "), err
    assert "Traceback" not in err and out == b""
    if case == "bad-arch":
        assert "dcgan" in err and "mlp" in err  # the error lists the choices


def test_conditional_dcgan_takes_the_class_through_its_batchnorms():
    """The conditional generator has no label input beside z: each BatchNorm's scale and shift
    are looked up per class (identity at the start), and both z and the label change the image."""
    from aigc_cli.models.gan.nets import ConditionalBatchNorm2d, ConditionalDCGANGenerator, build_nets
    from aigc_cli.models.common import NetSpec

    torch.manual_seed(0)
    spec = NetSpec(image_shape=(1, 8, 8), latent_dim=8, width=4, num_classes=3)
    g, _ = build_nets("dcgan", spec, spectral=True)
    assert isinstance(g, ConditionalDCGANGenerator)
    assert g.project[0].in_features == 8  # z only
    norms = [m for m in g.modules() if isinstance(m, ConditionalBatchNorm2d)]
    assert len(norms) == 2  # one at the start, one after the single upsampling of an 8x8 model

    h = torch.randn(6, 16, 4, 4)
    plain = torch.nn.functional.batch_norm(h, None, None, training=True)
    assert torch.allclose(norms[0](h, torch.tensor([0, 1, 2, 0, 1, 2])), plain, atol=1e-5)

    g.eval()
    z = torch.randn(2, 8)
    same_z = g(z[:1].expand(3, -1), torch.tensor([0, 1, 2]))
    with torch.no_grad():
        norms[1].shift.weight[1] += 1.0  # class 1 only
    changed = g(z[:1].expand(3, -1), torch.tensor([0, 1, 2]))
    assert torch.equal(changed[0], same_z[0]) and torch.equal(changed[2], same_z[2])
    assert not torch.allclose(changed[1], same_z[1])
    assert not torch.allclose(g(z[:1], torch.tensor([0])), g(z[1:], torch.tensor([0])))


def _tiny_task(updates, loss):
    from aigc_cli.models.registry import get_family

    gan = get_family("gan")
    model, train = gan.make_config({"updates": updates, "loss": loss, "width": 4, "latent_dim": 8},
                                   {"shape": [1, 8, 8], "classes": 3})
    torch.manual_seed(0)
    return gan.training_task({"model": model, "train": train, "seed": 0}, torch.device("cpu"))


@pytest.mark.parametrize("loss", ["hinge", "bce", "wgan-gp"])
def test_simultaneous_updates_score_the_fakes_once_for_both_nets(loss):
    """--updates simultaneous: D takes the very step alternating updates take (same real and fake
    batch, same loss), and G's gradient is g_loss's through the D *before* that step, where
    alternating updates go through the updated D."""
    import copy

    alt, sim = _tiny_task("alternating", loss), _tiny_task("simultaneous", loss)
    g0, d0 = copy.deepcopy(sim.G), copy.deepcopy(sim.D)
    x = torch.randint(0, 256, (6, 1, 8, 8), dtype=torch.uint8)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    step = sim.n_critic - 1  # a step on which G is updated too (wgan-gp: every 5th)
    for task in (alt, sim):
        torch.manual_seed(1)
        out = task.train_step(x, y, step)
        assert set(out) >= {"d_loss", "g_loss"} and all(torch.isfinite(v) for v in out.values())
    for a, s in zip(alt.D.parameters(), sim.D.parameters()):
        assert torch.allclose(a.grad, s.grad, rtol=1e-4, atol=1e-6)

    torch.manual_seed(1)
    z = torch.randn(6, 8)
    g_loss = sim.loss.g_loss(d0(g0(z, y), y))
    expected = torch.autograd.grad(g_loss, list(g0.parameters()))
    for e, s, a in zip(expected, sim.G.parameters(), alt.G.parameters()):
        assert torch.allclose(e, s.grad, rtol=1e-4, atol=1e-6)
    assert not all(torch.allclose(e, a.grad, rtol=1e-4, atol=1e-6) for e, a in zip(expected, alt.G.parameters()))


def test_updates_option_is_recorded_and_old_runs_resume_alternating(aigc_home, cli, tiny_npz, tiny_gan,
                                                                   assert_same_tensors):
    base = ["train", "gan", "--dataset", tiny_npz, *tiny_gan]
    code, _, err = cli(*base, "--updates", "sideways")
    assert code == 1 and "alternating" in err and "simultaneous" in err and len(err.strip().splitlines()) == 1
    assert cli(*base, "--epochs", "2", "--updates", "alternating")[0] == 0
    assert cli(*base, "--epochs", "1", "--updates", "alternating")[0] == 0
    runs = aigc_home / "runs"
    assert json.loads((runs / "run1/config.json").read_text())["train"]["updates"] == "alternating"
    # A run made before the option has no "updates" in its config: it resumes as it was trained.
    config = json.loads((runs / "run2/config.json").read_text())
    del config["train"]["updates"]
    (runs / "run2/config.json").write_text(json.dumps({**config, "format": "aigc-run/1"}))
    code, _, err = cli("train", "gan", "--resume", "run2", "--epochs", "2")
    assert code == 0, err
    assert_same_tensors(runs / "run1/model.safetensors", runs / "run2/model.safetensors")
    code, _, err = cli("train", "gan", "--resume", "run2", "--epochs", "3", "--updates", "simultaneous")
    assert code == 1 and "drop --updates" in err


def test_per_class_tables_learn_at_their_own_rate():
    """The conditional BatchNorm tables of G and the projection embedding of D form their own
    Adam group at class_lr_scale times the learning rate: Adam moves every weight by about its
    group's rate on its first step, so the tables move that many times further than the rest."""
    from aigc_cli.models.gan.nets import ConditionalBatchNorm2d

    task = _tiny_task("simultaneous", "hinge")
    opt_g, opt_d = task.optim["G"].optimizer, task.optim["D"].optimizer
    scale = opt_g.param_groups[1]["lr"] / opt_g.param_groups[0]["lr"]
    assert scale == pytest.approx(100.0)
    tables = {id(p) for m in task.G.modules() if isinstance(m, ConditionalBatchNorm2d)
              for p in (m.scale.weight, m.shift.weight)}
    assert {id(p) for p in opt_g.param_groups[1]["params"]} == tables
    assert len(opt_d.param_groups[1]["params"]) == 1  # the projection's class embedding
    before = {id(p): p.detach().clone() for p in task.G.parameters()}
    torch.manual_seed(1)
    task.train_step(torch.randint(0, 256, (6, 1, 8, 8), dtype=torch.uint8), torch.tensor([0, 1, 2, 0, 1, 2]), 0)
    moved = {id(p): float((p.detach() - before[id(p)]).abs().max()) for p in task.G.parameters()}
    lr = opt_g.param_groups[0]["lr"]
    assert max(moved[i] for i in tables) == pytest.approx(100 * lr, rel=0.05)
    assert max(v for i, v in moved.items() if i not in tables) == pytest.approx(lr, rel=0.05)


def test_runs_from_before_the_class_rate_resume_with_one_group(aigc_home, cli, tiny_npz, tiny_gan):
    """A run of format 1 without class_lr_scale trained one Adam group per network: its family's
    upgrade_config says so (None), and it trains and resumes that way."""
    from safetensors import safe_open

    assert cli("train", "gan", "--dataset", tiny_npz, *tiny_gan, "--epochs", "1")[0] == 0
    run = aigc_home / "runs/run1"
    config = json.loads((run / "config.json").read_text())
    del config["train"]["class_lr_scale"]
    (run / "config.json").write_text(json.dumps({**config, "format": "aigc-run/1"}))
    (run / "checkpoint.safetensors").unlink()  # as if killed before its first save: it starts over, as such a run
    for epochs in ("2", "3"):  # from step 0, then from its own one-group checkpoint
        code, _, err = cli("train", "gan", "--resume", "run1", "--epochs", epochs)
        assert code == 0, err
        with safe_open(str(run / "checkpoint.safetensors"), "pt") as f:
            optim = json.loads(f.metadata()["optim"])
        assert len(optim["G"]["param_groups"]) == len(optim["D"]["param_groups"]) == 1
    written = json.loads((run / "config.json").read_text())
    assert written["format"] == f"aigc-run/{RUN_FORMAT}" and written["train"]["class_lr_scale"] is None  # said explicitly now
