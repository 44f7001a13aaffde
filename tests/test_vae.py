"""The VAE family: training through the CLI and the core, metrics, previews, sampling, resume,
reconstruction and bad input. Tiny models on an 8x8 array dataset, so the file runs in seconds."""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

@pytest.fixture(scope="module")
def trained(tmp_path_factory, make_bars, tiny_vae):
    """One tiny unconditional VAE run (1 epoch) shared by the read-only tests of this file."""
    from aigc_cli import training

    root = tmp_path_factory.mktemp("vae")
    data = make_bars(root / "bars.npz")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AIGC_HOME", str(root / "home"))
        run = training.train("vae", dataset=str(data), epochs=1, name="tiny", **tiny_vae["kw"])
        yield run, root, mp


@pytest.fixture
def home(trained, monkeypatch):
    run, root, _ = trained
    monkeypatch.setenv("AIGC_HOME", str(root / "home"))
    return run, root


# -- units ----------------------------------------------------------------------------------------

def test_likelihoods_and_kl():
    import torch.nn.functional as F

    from aigc_cli.models.vae.likelihoods import LIKELIHOODS, gaussian_kl

    torch.manual_seed(0)
    out = torch.randn(5, 3, 4, 4)
    x = torch.rand(5, 3, 4, 4)
    bern = LIKELIHOODS.get("bernoulli").nll(out, x)
    assert bern.shape == (5,)
    assert torch.allclose(bern.sum(), F.binary_cross_entropy_with_logits(out, x, reduction="sum"))
    gauss = LIKELIHOODS.get("gaussian").nll(out, x)
    assert gauss.shape == (5,) and (gauss > 0).all()
    # A perfect mean still costs at least the one-grey-level floor: always positive.
    perfect = LIKELIHOODS.get("gaussian").nll(torch.logit(x.clamp(0.01, 0.99)), x.clamp(0.01, 0.99))
    assert (perfect > 0).all()
    assert torch.allclose(gaussian_kl(torch.zeros(2, 3), torch.zeros(2, 3)), torch.zeros(2))
    assert torch.allclose(gaussian_kl(torch.ones(1, 2), torch.zeros(1, 2)), torch.tensor([1.0]))
    assert torch.allclose(LIKELIHOODS.get("bernoulli").mean(torch.zeros(1)), torch.tensor([0.5]))


@pytest.mark.parametrize("arch", ["mlp", "conv"])
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (1, 8, 8)])
@pytest.mark.parametrize("classes", [None, 10])
def test_nets_shapes(arch, shape, classes):
    from aigc_cli.models.vae.nets import VaeSpec, build_nets

    enc, dec = build_nets(arch, VaeSpec(shape, 6, classes, 4))
    x = torch.rand(3, *shape)
    y = torch.tensor([0, 1, 2]) if classes else None
    mu, logvar = enc(x, y)
    assert mu.shape == logvar.shape == (3, 6)
    assert dec(mu, y).shape == (3, *shape)


def test_make_config_defaults_and_likelihood_choice():
    from aigc_cli.core.errors import ConfigError
    from aigc_cli.models.registry import get_family

    fam = get_family("vae")
    info = {"shape": [1, 28, 28], "classes": 10, "spec": {"spec": "x.gz", "split": "train"}}
    model, train = fam.make_config({}, info)
    assert model["arch"] == "conv" and model["likelihood"] == "bernoulli" and model["beta"] == 1.0
    assert not model["conditional"] and train["kl_warmup"] == 0.0
    assert fam.make_config({}, {**info, "shape": [3, 32, 32]})[0]["likelihood"] == "gaussian"
    shapes = {"shape": [3, 32, 32], "classes": 3, "spec": {"spec": "shapes", "split": "train"}}
    assert fam.make_config({}, shapes)[0]["likelihood"] == "bernoulli"
    assert fam.make_config({"likelihood": "gaussian", "beta": 4}, info)[0]["beta"] == 4.0
    for bad in ({"beta": -1}, {"beta": math.nan}, {"likelihood": "poisson"}, {"arch": "resnet"}, {"latent_dim": 0},
                {"lr": 0}, {"kl_warmup": -1}):
        with pytest.raises(ConfigError):
            fam.make_config(bad, info)
    with pytest.raises(ConfigError, match="labels"):
        fam.make_config({"conditional": True}, {**info, "classes": None})
    with pytest.raises(ConfigError, match="square"):
        fam.make_config({"arch": "conv"}, {**info, "shape": [1, 8, 12]})
    assert fam.make_config({"arch": "mlp"}, {**info, "shape": [1, 8, 12]})[0]["arch"] == "mlp"


def test_kl_warmup_ramps_to_beta():
    from aigc_cli.models.vae.family import VaeTask

    config = {
        "model": {"arch": "mlp", "likelihood": "bernoulli", "latent_dim": 2, "width": 1, "beta": 2.0,
                  "image_shape": [1, 4, 4], "num_classes": None, "conditional": False, "prior": "standard",
                  "prior_components": 0},
        "train": {"lr": 1e-3, "betas": [0.9, 0.999], "kl_warmup": 1.0, "batch_size": 10},
        "dataset": {"size": 100}, "seed": 0,
    }
    task = VaeTask(config, torch.device("cpu"))
    assert task.warmup_steps == 10
    assert task.kl_weight(0) == pytest.approx(0.2) and task.kl_weight(9) == 2.0 and task.kl_weight(50) == 2.0


# -- training through the CLI ------------------------------------------------------------------------

def test_train_vae_cli(cli, aigc_home, tmp_path, make_bars, clean_error, tiny_vae):
    data = make_bars(tmp_path / "bars.npz")
    code, out, err = cli("-q", "train", "vae", "-d", data, "-e", "1", *tiny_vae["args"], "--json", "--name", "v1")
    assert code == 0, err
    result = json.loads(out)
    assert result["status"] == "completed" and result["epoch"] == 1
    run_dir = aigc_home / "runs" / result["id"]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert rows and [r["step"] for r in rows] == [8]  # 256 // 32 steps, logged at the epoch's end
    for r in rows:
        assert {"recon", "kl", "loss", "images_per_s", "epoch"} <= set(r)
        assert r["loss"] == pytest.approx(r["recon"] + r["kl"], rel=1e-5)  # the negative ELBO
        assert r["kl"] >= 0
    samples = sorted(p.name for p in (run_dir / "samples").iterdir())
    assert samples == ["reconstructions_epoch001.png", "samples_epoch001.png"]
    grid = Image.open(run_dir / "samples" / "reconstructions_epoch001.png")
    assert grid.size == (8 * 10 + 2, 8 * 10 + 2)  # 32 originals and 32 reconstructions, 8 per row
    config = json.loads((run_dir / "config.json").read_text())
    assert config["family"] == "vae" and config["model"]["likelihood"] == "bernoulli"
    assert json.loads((run_dir / "run.json").read_text())["status"] == "completed"

    code, _, err = cli("train", "vae", "--resume", "v1", "--beta", "2")
    clean_error(code, err, "--beta")
    code, _, err = cli("train", "vae", "-d", data, "--beta", "-1", *tiny_vae["args"])
    clean_error(code, err, "--beta")
    code, _, err = cli("train", "vae", "-d", data, "--likelihood", "poisson", *tiny_vae["args"])
    clean_error(code, err, "likelihood")
    code, _, err = cli("train", "gan", "--resume", "v1")
    clean_error(code, err, "vae run")


def test_batch_size_one(cli, aigc_home, tmp_path, make_bars):
    data = make_bars(tmp_path / "bars.npz", n=4)
    code, out, err = cli("-q", "train", "vae", "-d", data, "-e", "1", "--width", "2", "--latent-dim", "2",
                         "-b", "1", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["status"] == "completed" and result["step"] == 4
    grid = Image.open(aigc_home / "runs" / result["id"] / "samples" / "reconstructions_epoch001.png")
    assert grid.size == (2 * 10 + 2, 10 + 2)  # the one kept image beside its reconstruction


@pytest.mark.parametrize("family", ["vae", "gan"])
def test_dataset_smaller_than_batch_creates_no_run(cli, aigc_home, tmp_path, make_bars, clean_error, tiny_vae, family):
    extra = {"vae": tiny_vae["args"][:4], "gan": ["--arch", "mlp", "--width", "4"]}[family]
    data = make_bars(tmp_path / "small.npz", n=8)
    code, _, err = cli("train", family, "-d", data, "-e", "1", *extra, "-b", "16")
    clean_error(code, err, "8 images", "--batch-size 16")
    code, out, err = cli("runs", "list", "--json")
    assert code == 0 and json.loads(out) == [], out


def test_conditional_gaussian_colour(cli, aigc_home, tmp_path, make_bars, clean_error):
    data = make_bars(tmp_path / "colour.npz", n=64, channels=3)
    code, out, err = cli("-q", "train", "vae", "-d", data, "-e", "1", "--conditional", "--arch", "mlp",
                         "--width", "2", "--latent-dim", "3", "-b", "16", "--json")
    assert code == 0, err
    run_id = json.loads(out)["id"]
    config = json.loads((aigc_home / "runs" / run_id / "config.json").read_text())
    assert config["model"]["likelihood"] == "gaussian" and config["model"]["conditional"]
    code, png, err = cli("sample", run_id, "-n", "4", "--label", "2", "--seed", "1", "-o", "-")
    assert code == 0, err
    assert Image.open(io.BytesIO(png)).mode == "RGB"
    code, _, err = cli("sample", run_id, "-n", "4", "--label", "9", "-o", tmp_path / "x.png")
    clean_error(code, err, "--label")
    code, _, err = cli("reconstruct", run_id, tmp_path / "x.png", "-o", tmp_path / "r.png")
    assert code == 1  # no such file or no --label: a clean error either way
    Image.new("RGB", (8, 8), (200, 10, 10)).save(tmp_path / "red.png")
    code, _, err = cli("reconstruct", run_id, tmp_path / "red.png", "-o", tmp_path / "r.png")
    clean_error(code, err, "--label")
    code, _, err = cli("reconstruct", run_id, tmp_path / "red.png", "--label", "1", "-o", tmp_path / "r.png")
    assert code == 0, err
    code, _, err = cli("reconstruct", run_id, tmp_path / "red.png", "--label", "4", "-o", tmp_path / "r4.png")
    clean_error(code, err, "--label must be in 0..3")
    assert not (tmp_path / "r4.png").exists()


# -- resume -------------------------------------------------------------------------------------------

def test_resume_equals_straight_run(aigc_home, tmp_path, make_bars, tiny_vae, assert_same_tensors):
    from aigc_cli import training

    data = make_bars(tmp_path / "bars.npz", n=128)
    straight = training.train("vae", dataset=str(data), epochs=2, name="straight", **tiny_vae["kw"])
    first = training.train("vae", dataset=str(data), epochs=1, name="resumed", **tiny_vae["kw"])
    resumed = training.resume("resumed", epochs=2)
    assert first.id == resumed.id
    assert_same_tensors(straight.weights_path, resumed.weights_path)
    rows_a, rows_b = straight.read_metrics(), resumed.read_metrics()
    assert [r["step"] for r in rows_a] == [r["step"] for r in rows_b]
    assert [r["loss"] for r in rows_a] == [r["loss"] for r in rows_b]
    # The same previews too (compared as pixels: the PNG text names the run).
    pa = np.asarray(Image.open(straight.samples_dir / "reconstructions_epoch002.png"))
    pb = np.asarray(Image.open(resumed.samples_dir / "reconstructions_epoch002.png"))
    assert np.array_equal(pa, pb)


# -- sample and reconstruct on a trained run ----------------------------------------------------------

def test_sample_vae_run(cli, home, tmp_path, clean_error):
    run, _ = home
    code, out, err = cli("sample", run.id, "-n", "6", "--seed", "3", "-o", tmp_path / "a.png", "--json")
    assert code == 0, err
    assert json.loads(out)["n"] == 6
    code, png, err = cli("sample", "tiny", "-n", "6", "--seed", "3", "-o", "-")
    assert code == 0 and png.startswith(b"\x89PNG")
    assert np.array_equal(np.asarray(Image.open(tmp_path / "a.png")), np.asarray(Image.open(io.BytesIO(png))))
    np.save(tmp_path / "z.npy", np.zeros((3, 4), np.float32))
    code, _, err = cli("sample", "tiny", "--latents", tmp_path / "z.npy", "-o", tmp_path / "z.png")
    assert code == 0, err
    code, _, err = cli("sample", "tiny", "--label", "1", "-o", tmp_path / "l.png")
    clean_error(code, err, "not class-conditional")


def test_reconstruct(cli, home, tmp_path, clean_error):
    run, root = home
    ds = np.load(root / "bars.npz")["images"]
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for i in range(3):
        Image.fromarray(ds[i]).save(imgs / f"d{i}.png")
    Image.fromarray(np.repeat(ds[3][:, :, None], 3, axis=2)).resize((20, 12)).save(imgs / "big.jpg")
    code, out, err = cli("reconstruct", run.id, imgs / "d0.png", imgs / "d1.png", imgs / "d2.png",
                         imgs / "big.jpg", "-o", tmp_path / "r.png", "--json")
    assert code == 0, err
    info = json.loads(out)
    assert info["n"] == 4 and info["converted"] == ["big.jpg: 20x12 -> 8x8"]
    assert "converted big.jpg" in err
    grid = Image.open(tmp_path / "r.png")
    assert grid.size == (4 * 10 + 2, 2 * 10 + 2)  # a row of 4 originals over their reconstructions
    top = np.asarray(grid)[2:10, 2:10]
    assert np.array_equal(top, ds[0])  # the originals are shown as they are

    # A folder: its images in order, other files skipped; --nrow 2 gives 2 pairs of rows.
    (imgs / "notes.txt").write_text("not an image")
    code, out, err = cli("reconstruct", run.id, imgs, "--nrow", "2", "-o", tmp_path / "sub" / "f.png", "--json")
    assert code == 0, err
    assert json.loads(out)["n"] == 4
    assert Image.open(tmp_path / "sub" / "f.png").size == (2 * 10 + 2, 4 * 10 + 2)

    code, png, err = cli("reconstruct", run.id, imgs / "d0.png", "-o", "-")
    assert code == 0 and png.startswith(b"\x89PNG")

    code, _, err = cli("reconstruct", run.id, imgs / "notes.txt", "-o", tmp_path / "bad.png")
    clean_error(code, err, "not an image")
    code, _, err = cli("reconstruct", run.id, tmp_path / "missing.png", "-o", tmp_path / "bad.png")
    clean_error(code, err, "no such file")
    code, _, err = cli("reconstruct", run.id, imgs / "d0.png", "-o", tmp_path / "bad.gif")
    clean_error(code, err, ".png")
    code, _, err = cli("reconstruct", run.id, imgs / "d0.png", "--label", "1", "-o", tmp_path / "bad.png")
    clean_error(code, err, "not class-conditional", "drop --label")  # as sample words it
    assert not (tmp_path / "bad.png").exists()


def test_quiet_hides_conversion_warnings(cli, home, tmp_path):
    run, root = home
    Image.fromarray(np.load(root / "bars.npz")["images"][0]).resize((16, 16)).save(tmp_path / "big.png")
    code, out, err = cli("-q", "reconstruct", run.id, tmp_path / "big.png", "-o", tmp_path / "r.png", "--json")
    assert code == 0 and err == "", err
    assert json.loads(out)["converted"] == ["big.png: 16x16 -> 8x8"]  # still reported, on stdout
    code, _, err = cli("reconstruct", run.id, tmp_path / "big.png", "-o", tmp_path / "r.png")
    assert code == 0 and "warning: converted big.png" in err
