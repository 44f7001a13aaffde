"""The diffusion family: schedule and sampler mathematics, and a tiny U-Net through every command."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from aigc_cli.models.diffusion.sampling import DdimInverter, DiffusionDecoder, timesteps
from aigc_cli.models.diffusion.schedule import alpha_bar, loss_weight, target, to_x0_eps
from aigc_cli.models.diffusion.unet import UNet, timestep_embedding

TINY = ["--width", "8", "--channel-mult", "1,2", "--batch-size", "32"]


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_alpha_bar_falls_from_one_towards_zero(schedule):
    ab = alpha_bar(schedule)
    assert ab.shape == (1000,)
    assert (ab[1:] < ab[:-1]).all() and 0.99 < ab[0] < 1 and 0 < ab[-1] < 0.01


@pytest.mark.parametrize("prediction", ["eps", "v", "x0"])
def test_predictions_convert_back_to_x0_and_eps(prediction):
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(4, 1, 5, 5, generator=g), torch.randn(4, 1, 5, 5, generator=g)
    ab = alpha_bar("cosine")[torch.tensor([10, 200, 600, 950])].float()
    x_t = ab.sqrt().view(-1, 1, 1, 1) * x0 + (1 - ab).sqrt().view(-1, 1, 1, 1) * eps
    got_x0, got_eps = to_x0_eps(prediction, target(prediction, x0, eps, ab), x_t, ab)
    assert torch.allclose(got_x0, x0, atol=1e-3) and torch.allclose(got_eps, eps, atol=1e-3)


def test_min_snr_weights_cap_the_x0_weight_at_gamma():
    ab = alpha_bar("cosine")[torch.tensor([0, 500, 999])].float()
    snr = ab / (1 - ab)
    for prediction, scale in (("eps", snr), ("v", snr + 1), ("x0", torch.ones_like(snr))):
        x0_weight = loss_weight("min-snr", prediction, ab) * scale  # every form weighs x0 errors by min(snr, 5)
        assert torch.allclose(x0_weight, snr.clamp(max=5), rtol=1e-4)
    assert (loss_weight("none", "v", ab) == 1).all()


def test_timesteps_run_down_to_zero_without_repeats():
    assert timesteps(1000, 4) == [999, 666, 333, 0]
    assert timesteps(10, 50) == list(range(9, -1, -1))


class GaussianOracle(torch.nn.Module):
    """The exact noise prediction for data x0 ~ N(0, s^2 I): a smooth denoiser whose DDIM path is
    well defined, so inversion can be checked without training a network."""

    null_label = None

    def __init__(self, ab, s=0.5):
        super().__init__()
        self.ab, self.s = ab.float(), s

    def forward(self, x, t, labels=None):
        ab = self.ab[t].view(-1, 1, 1, 1)
        return (1 - ab).sqrt() * x / (ab * self.s**2 + 1 - ab)


def test_unet_keeps_odd_sizes():
    torch.manual_seed(0)
    net = UNet(1, 8, (1, 2), num_classes=3).eval()
    x = torch.randn(3, 1, 7, 9)
    assert net(x, torch.tensor([0, 5, 999]), torch.tensor([0, 3, 1])).shape == (3, 1, 7, 9)  # padded, cropped back


@pytest.mark.parametrize("sampler", ["ddim", "dpm++"])
def test_samplers_agree_and_ddim_inversion_recovers_the_noise(sampler):
    ab = alpha_bar("cosine")
    oracle = GaussianOracle(ab)
    z = torch.randn(4, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        images = DiffusionDecoder(oracle, ab, "eps", (1, 8, 8), steps=100, sampler=sampler)(z)
        reference = DiffusionDecoder(oracle, ab, "eps", (1, 8, 8), steps=500, sampler="ddim")(z)
        back = DdimInverter(oracle, ab, "eps", (1, 8, 8), steps=500)(reference)
    # The probability-flow ODE of N(0, s^2) data scales x_T by s: x0 = s * x_T.
    assert torch.allclose(reference, ((0.5 * z.view(4, 1, 8, 8)).clamp(-1, 1) + 1) / 2, atol=0.02)
    assert torch.allclose(images, reference, atol=0.02)
    inside = (0.5 * z).abs() < 0.95  # where the [0, 1] clamp of the image lost nothing
    assert torch.allclose(back[inside], z[inside], atol=0.05)


@pytest.fixture
def trained(aigc_home, cli, tiny_npz):
    code, out, err = cli("train", "diffusion", "--dataset", tiny_npz, *TINY, "--epochs", "2", "--json")
    assert code == 0, err
    return json.loads(out)


def test_training_writes_a_diffusion_run(trained, aigc_home):
    assert (trained["status"], trained["step"]) == ("completed", 16)
    run = aigc_home / "runs" / "run1"
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["channel_mult"] == [1, 2] and config["model"]["conditional"] is True
    assert config["model"]["weighting"] == "min-snr"  # class-conditional runs (captioned ones: none)
    keys = set(load_file(str(run / "checkpoint.safetensors")))
    assert any(k.endswith("unet.conv_in.weight") for k in keys) and any(k.endswith("unet_ema.conv_in.weight") for k in keys)
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["samples_epoch001.png", "samples_epoch002.png"]
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["loss"]) for r in rows)


def test_sampling_is_seeded_and_takes_the_sampler_options(trained, cli, tmp_path):
    def sample(name, *args):
        code, _, err = cli("sample", "run1", "-n", "8", "--seed", "3", "-o", str(tmp_path / name), *args)
        assert code == 0, err
        return np.asarray(Image.open(tmp_path / name))

    a, b = sample("a.png", "--steps", "3"), sample("b.png", "--steps", "3")
    assert (a == b).all()
    assert not (sample("c.png", "--steps", "3", "--sampler", "ddim") == a).all()
    assert not (sample("d.png", "--steps", "3", "--guidance", "1") == a).all()
    ddpm = sample("e.png", "--steps", "3", "--sampler", "ddpm")
    assert (ddpm == sample("f.png", "--steps", "3", "--sampler", "ddpm")).all()
    sample("g.png", "--steps", "2", "--sampler", "ddim", "--eta", "0.5")
    code, out, err = cli("sample", "run1", "-n", "4", "--steps", "2", "-o", str(tmp_path / "h.png"), "--json")
    summary = json.loads(out)
    assert summary["steps"] == 2 and summary["images_per_s"] > 0 and summary["seconds"] > 0  # the cost at these steps


@pytest.mark.parametrize("args,words", [
    (["--steps", "0"], ["--steps"]),
    (["--sampler", "euler"], ["--sampler", "ddim"]),
    (["--eta", "0.5"], ["--eta", "ddim"]),
    (["--sampler", "ddim", "--eta", "2"], ["--eta must be in [0, 1], got 2"]),
    (["--truncation", "0.5"], ["--truncation", "diffusion"]),
])
def test_bad_sampling_options_are_one_line(trained, cli, clean_error, tmp_path, args, words):
    code, _, err = cli("sample", "run1", "-o", str(tmp_path / "x.png"), *args)
    clean_error(code, err, *words)


def test_interpolate_reconstruct_and_export(trained, cli, tmp_path):
    code, _, err = cli("interpolate", "run1", "--from-seed", "1", "--to-seed", "2", "-n", "4", "--steps", "2",
                       "-o", str(tmp_path / "i.png"))
    assert code == 0, err
    code, _, err = cli("sample", "run1", "-n", "2", "--label", "1", "--steps", "4", "-o", str(tmp_path / "s") + "/")
    assert code == 0, err
    images = sorted(str(p) for p in (tmp_path / "s").iterdir())
    code, _, err = cli("reconstruct", "run1", *images, "--label", "1", "--steps", "4", "-o", str(tmp_path / "r.png"))
    assert code == 0, err
    assert "MSE" in err
    code, _, err = cli("export", "onnx", "run1", "--steps", "2", "-o", str(tmp_path / "d.onnx"))
    assert code == 0, err
    assert "ONNX Runtime matches PyTorch" in err


def test_generation_reports_progress_over_the_denoising_steps(trained):
    from aigc_cli.generation import load_generator

    gen = load_generator("run1")
    calls = []
    z = torch.randn(5, 64, generator=torch.Generator().manual_seed(0))
    images = gen.generate(z, None, batch_size=2, progress=lambda done, total: calls.append((done, total)),
                          steps=4, sampler="ddim")
    assert images.shape == (5, 1, 8, 8)
    assert calls == [(i, 12) for i in range(1, 13)]  # 3 batches x 4 steps, in order
    again = gen.generate(z, None, batch_size=2, steps=4, sampler="ddim")  # the hook is gone afterwards
    assert torch.equal(images, again)


def test_denoiser_export_drives_a_users_own_sampler_loop(trained, cli, clean_error, tmp_path):
    """--format denoiser: the U-Net alone, checked in ORT; its metadata is enough to write DDIM by
    hand, and that loop, run in ONNX Runtime, gives the images aigc's own DDIM sampler gives."""
    import onnxruntime as ort

    from aigc_cli.export.onnx import read_metadata
    from aigc_cli.generation import load_generator

    path = tmp_path / "unet.onnx"
    code, out, err = cli("--quiet", "export", "onnx", "run1", "--format", "denoiser", "-o", str(path), "--json")
    assert code == 0, err
    report = json.loads(out)
    assert [(i["name"], i["dtype"], i["shape"]) for i in report["inputs"]] == [
        ("x", "float32", ["N", 1, 8, 8]), ("t", "int64", ["N"]), ("label", "int64", ["N"])]
    assert report["inputs"][2]["null_label"] == 4 and report["outputs"][0]["name"] == "prediction"
    assert report["verification"]["ok"] and report["max_abs_diff"] < 1e-4
    meta = read_metadata(path)
    assert (meta["aigc.prediction"], meta["aigc.schedule"], meta["aigc.null_label"]) == ("v", "cosine", "4")
    ab = np.array(json.loads(meta["aigc.alphas_cumprod"]))
    np.testing.assert_array_equal(ab.astype(np.float32), alpha_bar("cosine").float().numpy())

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    z = torch.randn(5, 64, generator=torch.Generator().manual_seed(3))
    labels = np.array([0, 1, 2, 3, 1])
    x = z.numpy().reshape(5, 1, 8, 8).astype(np.float32)
    ts = [999, 666, 333, 0]  # what --steps 4 runs: T-1 down to 0, evenly spaced
    for i, t in enumerate(ts):
        v = session.run(["prediction"], {"x": x, "t": np.full(5, t, np.int64), "label": labels})[0]
        a, a_next = ab[t], (ab[ts[i + 1]] if i + 1 < len(ts) else 1.0)
        x0 = np.clip(np.sqrt(a) * x - np.sqrt(1 - a) * v, -1, 1)  # v-prediction -> x0, clipped as aigc does
        eps = (x - np.sqrt(a) * x0) / np.sqrt(1 - a)
        x = (np.sqrt(a_next) * x0 + np.sqrt(1 - a_next) * eps).astype(np.float32)
    mine = np.clip((x + 1) / 2, 0, 1)
    gen = load_generator("run1")
    from aigc_cli.models.conditions import Conditioning

    theirs = gen.generate(z, Conditioning(5, labels=torch.from_numpy(labels)), steps=4, sampler="ddim",
                          guidance=1.0).numpy()
    np.testing.assert_allclose(mine, theirs, atol=1e-4)

    code, _, err = cli("export", "onnx", "run1", "--format", "denoiser", "--steps", "4", "-o", str(tmp_path / "b.onnx"))
    clean_error(code, err, "--steps sets up the sampler", "--format denoiser exports the network alone")
    assert not (tmp_path / "b.onnx").exists()


@pytest.mark.parametrize("precision", ["auto", "fp16"])
def test_resume_is_bit_identical(aigc_home, cli, tiny_npz, precision, assert_same_tensors):
    """Also under fp16 autocast (on the CPU here; CUDA is where auto picks it): the loss scale is
    part of the checkpoint, so a resumed run scales its loss as the unbroken one does."""
    from safetensors import safe_open

    args = ["train", "diffusion", "--dataset", tiny_npz, *TINY, "--precision", precision]
    assert cli(*args, "--epochs", "1")[0] == 0
    with safe_open(str(aigc_home / "runs/run1/checkpoint.safetensors"), "pt") as f:
        state = json.loads(f.metadata()["state"])
    assert ("scaler" in state["optim"]["unet"]) == (precision == "fp16")  # the optimizer's loss scale
    if precision == "fp16":
        assert state["optim"]["unet"]["scaler"]["scale"] > 0
    assert cli("train", "diffusion", "--resume", "run1", "--epochs", "2")[0] == 0
    assert cli(*args, "--epochs", "2")[0] == 0
    assert_same_tensors(aigc_home / "runs/run1/model.safetensors", aigc_home / "runs/run2/model.safetensors")


def test_bf16_autocast_trains_and_differs_from_fp32(aigc_home, cli, tiny_npz):
    for precision in ("fp32", "bf16"):
        code, out, err = cli("train", "diffusion", "--dataset", tiny_npz, *TINY, "--epochs", "1",
                             "--precision", precision, "--json")
        assert code == 0, err
    rows = [json.loads(line) for line in (aigc_home / "runs/run2/metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["loss"]) for r in rows if "loss" in r)
    assert json.loads((aigc_home / "runs/run2/config.json").read_text())["train"]["precision"] == "bf16"
    a = load_file(str(aigc_home / "runs/run1/model.safetensors"))
    b = load_file(str(aigc_home / "runs/run2/model.safetensors"))
    assert any(not torch.equal(a[k], b[k]) for k in a)  # the autocast really ran in bf16


def _old_unet_forward(net, x, t, labels):
    """The compact U-Net as it was written before the layouts (one block per level, one skip per
    level), run on ``net``'s own weights: the default layout must still be that function."""
    h = net.conv_in(x)
    emb = net.time_mlp(timestep_embedding(t, net.width)) + net.label_emb(labels)
    skips = []
    for i, block in enumerate(net.down):
        h = block(h, emb)
        skips.append(h)
        if i < net.levels - 1:
            h = net.downsample[i](h)
    h = net.mid2(net.attn(net.mid1(h, emb)), emb)
    for j, block in enumerate(net.up):
        h = block(torch.cat([h, skips.pop()], dim=1), emb)
        if j < net.levels - 1:
            h = net.upsample[j](torch.nn.functional.interpolate(h, scale_factor=2.0, mode="nearest"))
    return net.conv_out(torch.nn.functional.silu(net.norm_out(h)))


def test_the_default_layout_is_the_unet_runs_were_trained_with():
    torch.manual_seed(0)
    net = UNet(1, 8, (1, 2, 2), num_classes=3).eval()
    keys = {k.split(".")[0] + "." + k.split(".")[1] for k in net.state_dict() if k.startswith(("down.", "up."))}
    assert keys == {"down.0", "down.1", "down.2", "up.0", "up.1", "up.2"}  # old runs' weights load
    x, t, y = torch.randn(4, 1, 16, 16), torch.tensor([0, 10, 500, 999]), torch.tensor([0, 1, 2, 3])
    with torch.no_grad():
        assert torch.allclose(net(x, t, y), _old_unet_forward(net, x, t, y), atol=1e-5)


@pytest.mark.parametrize("layout,blocks", [("compact", 2), ("ddpm", 1), ("ddpm", 2)])
def test_layouts_build_train_and_sample(layout, blocks, aigc_home, cli, tiny_npz, tmp_path):
    """The ddpm layout with one block is diffusers' UNet2DModel(layers_per_block=1), weight for
    weight in count (benches/bench_diffusion.py prints both)."""
    code, out, err = cli("train", "diffusion", "--dataset", tiny_npz, *TINY, "--layout", layout,
                         "--blocks", blocks, "--epochs", "1", "--json")
    assert code == 0, err
    run = json.loads(out)["id"]
    from aigc_cli.generation import load_generator

    unet = load_generator(run).sampler.unet  # the saved weights loaded strictly into the layout
    levels = 2  # TINY's --channel-mult 1,2
    assert len(unet.down) == levels * blocks
    assert len(unet.up) == levels * (blocks + (layout == "ddpm"))
    assert sum(unet.up_skips) == (len(unet.up) if layout == "ddpm" else levels)
    code, _, err = cli("sample", run, "-n", "4", "--steps", "3", "-o", tmp_path / "g.png", "--seed", "1")
    assert code == 0, err


@pytest.mark.parametrize("args,words", [
    (["--layout", "flat"], ["--layout"]),
    (["--blocks", "0"], ["--blocks"]),
    (["--channel-mult", "1,x"], ["--channel-mult"]),
    (["--cond-drop", "1"], ["--cond-drop must be in [0, 1), got 1"]),
    (["--schedule", "sqrt"], ["--schedule"]),
    (["--precision", "fp8"], ["--precision"]),
])
def test_bad_training_options_are_one_line(aigc_home, cli, clean_error, tiny_npz, args, words):
    code, _, err = cli("train", "diffusion", "--dataset", tiny_npz, *TINY, *args)
    clean_error(code, err, *words)
