"""diffusers' UNet2DModel into the diffusion family (aigc_cli/hub/diffusers_unet.py), against
diffusers itself: tiny random U-Nets of several shapes saved with save_pretrained (safetensors)
and a scheduler config; the imported U-Net's outputs and its DDIM images from the same noise
must equal diffusers' (its DDIMPipeline's loop). No network: diffusers is the reference only."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

diffusers = pytest.importorskip("diffusers")

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# (UNet2DModel options, scheduler class, scheduler options): every field the import maps, both ways.
CASES = {
    "attn-down1-leading": (
        {"block_out_channels": (8, 16), "layers_per_block": 1, "down_block_types": ("DownBlock2D", "AttnDownBlock2D"),
         "up_block_types": ("AttnUpBlock2D", "UpBlock2D"), "attention_head_dim": 4, "sample_size": 8,
         "downsample_padding": 1, "flip_sin_to_cos": True, "freq_shift": 0},
        "DDIMScheduler", {"steps_offset": 1, "clip_sample": True}),
    "ddpm-cifar-like": (  # google/ddpm-cifar10-32's options at a tiny size: no head dim, padding 0, shift 1
        {"block_out_channels": (8, 16, 16), "layers_per_block": 2,
         "down_block_types": ("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
         "up_block_types": ("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"), "attention_head_dim": None, "sample_size": 16,
         "downsample_padding": 0, "flip_sin_to_cos": False, "freq_shift": 1, "norm_eps": 1e-6},
        "DDPMScheduler", {"beta_schedule": "linear", "clip_sample": True}),
    "cos-v-linspace": (
        {"block_out_channels": (8, 16), "layers_per_block": 2, "down_block_types": ("AttnDownBlock2D", "DownBlock2D"),
         "up_block_types": ("UpBlock2D", "AttnUpBlock2D"), "attention_head_dim": 8, "sample_size": 8,
         "downsample_padding": 0, "flip_sin_to_cos": True, "freq_shift": 1, "mid_block_scale_factor": 1.5,
         "center_input_sample": True},
        "DDIMScheduler", {"beta_schedule": "squaredcos_cap_v2", "prediction_type": "v_prediction",
                          "timestep_spacing": "linspace", "clip_sample": False, "set_alpha_to_one": False}),
    "scaled-x0-trailing": (
        {"block_out_channels": (8, 8), "layers_per_block": 1, "down_block_types": ("DownBlock2D", "DownBlock2D"),
         "up_block_types": ("UpBlock2D", "UpBlock2D"), "attention_head_dim": None, "sample_size": (8, 16),
         "add_attention": False, "flip_sin_to_cos": False, "freq_shift": 0},
        "DDIMScheduler", {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012,
                          "prediction_type": "sample", "timestep_spacing": "trailing", "num_train_timesteps": 500,
                          "clip_sample_range": 0.8}),
}


def save_tiny(folder, unet_options, scheduler, scheduler_options, pipeline=False, seed=0):
    """A random UNet2DModel (weights moved off their init, so no layer is zero) saved as diffusers
    does, alone with its scheduler config beside it, or as a pipeline folder."""
    torch.manual_seed(seed)
    unet = diffusers.UNet2DModel(in_channels=3, out_channels=3, norm_num_groups=4, **unet_options).eval()
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    sched = getattr(diffusers, scheduler)(**scheduler_options)
    if pipeline:
        diffusers.DDIMPipeline(unet=unet, scheduler=sched).save_pretrained(folder, safe_serialization=True)
    else:
        unet.save_pretrained(folder, safe_serialization=True)
        sched.save_config(folder)
    return unet


def diffusers_ddim(unet, folder, noise, steps):
    """DDIMPipeline's loop, from its scheduler config: set_timesteps, step(...).prev_sample, then to [0, 1]."""
    config = json.loads((folder / "scheduler_config.json").read_text())
    sched = diffusers.DDIMScheduler.from_config(config)
    sched.set_timesteps(steps)
    x = noise
    with torch.no_grad():
        for t in sched.timesteps:
            x = sched.step(unet(x, t).sample, t, x, eta=0.0).prev_sample
    return (x / 2 + 0.5).clamp(0, 1), sched


def convert(folder):
    from aigc_cli.hub.diffusers_unet import DiffusersUnet
    from aigc_cli.hub.importer import _filled, run_config

    converted = DiffusersUnet().convert(folder)
    config = run_config(converted, {})
    return config, _filled(converted, config, str(folder))["unet"].eval()


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_imported_unet_and_its_ddim_images_equal_diffusers(tmp_path, case):
    from aigc_cli.models.diffusion.family import DiffusionSampler

    unet_options, scheduler, scheduler_options = CASES[case]
    unet = save_tiny(tmp_path, unet_options, scheduler, scheduler_options)
    config, net = convert(tmp_path)
    c, h, w = config["model"]["image_shape"]
    x = torch.randn(3, c, h, w, generator=torch.Generator().manual_seed(1))
    total = config["model"]["timesteps"]
    for t in (0, 1, total // 2, total - 1):
        with torch.no_grad():
            theirs, mine = unet(x, torch.full((3,), t)).sample, net(x, torch.full((3,), t))
        assert (mine - theirs).abs().max() < 1e-4, (t, (mine - theirs).abs().max())

    sampler = DiffusionSampler(net, config, torch.device("cpu"))
    for steps in (1, 7, 10):
        images, sched = diffusers_ddim(unet, tmp_path, x, steps)
        decoder = sampler.decoder(steps=steps, sampler="ddim", eta=0.0, guidance=None)
        assert decoder.ts == sched.timesteps.tolist()  # the same timesteps, in the same order
        with torch.no_grad():
            mine = decoder(x.flatten(1))
        assert (mine - images).abs().max() < 1e-3, (steps, (mine - images).abs().max())
    # alpha-bar: float64 and rounded once here, float32 products in diffusers
    ab = sampler.ab.double()
    assert ((ab - sched.alphas_cumprod.double()).abs() / ab).max() < 1e-4  # 1.3e-5 at worst (cosine's tail)


def test_a_pipeline_folder_imports_from_its_unet_and_scheduler_folders(tmp_path):
    unet_options, scheduler, scheduler_options = CASES["attn-down1-leading"]
    unet = save_tiny(tmp_path, unet_options, scheduler, scheduler_options, pipeline=True)
    assert (tmp_path / "model_index.json").is_file() and (tmp_path / "unet" / "config.json").is_file()
    config, net = convert(tmp_path)
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert (net(x, torch.tensor([3, 700])) - unet(x, torch.tensor([3, 700])).sample).abs().max() < 1e-4
    assert config["source"] == {} and config["model"]["steps_offset"] == 1 and config["model"]["layout"] == "ddpm"


def test_checkpoints_with_the_deprecated_attention_names_import_the_same(tmp_path):
    """Checkpoints saved before diffusers 0.13 (google/ddpm-*) name the attention's layers query,
    key, value and proj_attn; diffusers renames them on load, and so does the import."""
    from safetensors.torch import load_file, save_file

    unet_options, scheduler, scheduler_options = CASES["ddpm-cifar-like"]
    save_tiny(tmp_path / "new", unet_options, scheduler, scheduler_options)
    path = tmp_path / "new" / "diffusion_pytorch_model.safetensors"
    old = {k.replace("to_q.", "query.").replace("to_k.", "key.").replace("to_v.", "value.")
           .replace("to_out.0.", "proj_attn."): v for k, v in load_file(str(path)).items()}
    assert any(".proj_attn." in k for k in old)
    (tmp_path / "old").mkdir()
    for name in ("config.json", "scheduler_config.json"):
        (tmp_path / "old" / name).write_text((tmp_path / "new" / name).read_text())
    save_file(old, str(tmp_path / "old" / path.name))
    _, new_net = convert(tmp_path / "new")
    _, old_net = convert(tmp_path / "old")
    for a, b in zip(new_net.state_dict().values(), old_net.state_dict().values()):
        assert torch.equal(a, b)


@pytest.fixture
def tiny_folder(tmp_path):
    folder = tmp_path / "tiny-ddpm"
    unet_options, scheduler, scheduler_options = CASES["attn-down1-leading"]
    unet = save_tiny(folder, unet_options, scheduler, scheduler_options)
    return folder, unet


@pytest.fixture
def imported(tiny_folder, aigc_home, cli):
    """``aigc import`` of the tiny folder as run 'd'."""
    code, out, err = cli("import", tiny_folder[0], "--name", "d", "--json")
    assert code == 0, err
    assert json.loads(out)["family"] == "diffusion"
    return tiny_folder


def test_cli_import_samples_diffusers_images_and_reconstructs(imported, cli, tmp_path):
    from PIL import Image

    folder, unet = imported
    # --latents: the very noise diffusers starts from, as (N, C*H*W) rows
    noise = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(5))
    np.save(tmp_path / "z.npy", noise.flatten(1).numpy())
    code, _, err = cli("sample", "d", "--sampler", "ddim", "--eta", "0", "--steps", "10", "--latents",
                       tmp_path / "z.npy", "-o", str(tmp_path / "s") + "/")
    assert code == 0, err
    theirs, _ = diffusers_ddim(unet, folder, noise, 10)
    paths = sorted((tmp_path / "s").iterdir())
    for i, path in enumerate(paths):
        mine = torch.from_numpy(np.asarray(Image.open(path), dtype=np.float32) / 255).permute(2, 0, 1)
        assert (mine - theirs[i]).abs().max() <= 1 / 255 + 1e-3  # 8-bit PNGs of the same images
    code, _, err = cli("reconstruct", "d", paths[0], "--steps", "5", "-o", tmp_path / "r.png")
    assert code == 0 and "MSE" in err, err


@pytest.mark.slow  # about 15 s: the export and its check in ONNX Runtime at three batch sizes
def test_an_imported_unet_exports_to_onnx(imported, cli, tmp_path):
    code, _, err = cli("export", "onnx", "d", "--format", "denoiser", "-o", tmp_path / "u.onnx")
    assert code == 0 and "ONNX Runtime matches PyTorch" in err, err


def test_an_imported_run_fine_tunes_with_init(imported, cli, tmp_path, make_bars):
    bars = make_bars(tmp_path / "bars.npz", n=64, size=8, channels=3)
    code, out, err = cli("-q", "train", "diffusion", "--init", "d", "--dataset", bars, "--epochs", "1",
                         "--batch-size", "32", "--unconditional", "--json")
    assert code == 0, err
    assert json.loads(out)["status"] == "completed"


def _edit(path, **fields):
    config = json.loads(path.read_text())
    config.update(fields)
    path.write_text(json.dumps(config))


@pytest.mark.parametrize("edit, words", [
    (lambda f: _edit(f / "config.json", down_block_types=["DownBlock2D", "CrossAttnDownBlock2D"]),
     ["config.json field 'down_block_types' has 'CrossAttnDownBlock2D'", "DownBlock2D and AttnDownBlock2D"]),
    (lambda f: _edit(f / "config.json", up_block_types=["SkipUpBlock2D", "UpBlock2D"]),
     ["config.json field 'up_block_types' has 'SkipUpBlock2D'"]),
    (lambda f: _edit(f / "config.json", act_fn="gelu"), ["config.json field 'act_fn' is 'gelu'", "'silu'"]),
    (lambda f: _edit(f / "config.json", resnet_time_scale_shift="scale_shift"),
     ["field 'resnet_time_scale_shift' is 'scale_shift'"]),
    (lambda f: _edit(f / "config.json", time_embedding_type="fourier"), ["field 'time_embedding_type' is 'fourier'"]),
    (lambda f: _edit(f / "config.json", num_class_embeds=10), ["field 'num_class_embeds' is 10", "class-conditional"]),
    (lambda f: _edit(f / "config.json", out_channels=6), ["field 'out_channels' is 6", "differs from in_channels"]),
    (lambda f: _edit(f / "config.json", _class_name="UNet2DConditionModel"), ["'UNet2DConditionModel'"]),
    (lambda f: _edit(f / "scheduler_config.json", thresholding=True), ["scheduler_config.json field 'thresholding'"]),
    (lambda f: _edit(f / "scheduler_config.json", beta_schedule="sigmoid"),
     ["scheduler_config.json field 'beta_schedule' is 'sigmoid'", "'squaredcos_cap_v2'"]),
    (lambda f: _edit(f / "scheduler_config.json", trained_betas=[0.1] * 1000), ["field 'trained_betas'"]),
    (lambda f: (f / "scheduler_config.json").unlink(), ["has no scheduler_config.json"]),
    (lambda f: (f / "diffusion_pytorch_model.safetensors").write_bytes(
        (f / "diffusion_pytorch_model.safetensors").read_bytes()[:500]), ["not a readable safetensors file"]),
    (lambda f: (f / "diffusion_pytorch_model.safetensors").rename(f / "diffusion_pytorch_model.bin"),
     ["only pickled weights", "diffusion_pytorch_model.bin"]),
])
def test_what_cannot_be_built_is_one_line_and_leaves_no_run(tiny_folder, aigc_home, cli, clean_error, edit, words):
    folder, _ = tiny_folder
    edit(folder)
    code, _, err = cli("import", folder, "--name", "d")
    clean_error(code, err, *words)
    runs = aigc_home / "runs"
    assert not runs.exists() or not any(runs.iterdir())


def test_old_runs_keep_aigc_sampling_rules():
    """The rules a run of format 1 or 2 gets are aigc's own: its spacing (T-1 down to 0) and the
    clipped eps; diffusers' spacings step as DDIMScheduler does (t - T // steps)."""
    from aigc_cli.models.diffusion.sampling import SamplingRules

    assert SamplingRules().steps(1000, 4) == [(999, 666), (666, 333), (333, 0), (0, -1)]
    sched = diffusers.DDIMScheduler(timestep_spacing="linspace")
    sched.set_timesteps(4)
    steps = SamplingRules(spacing="linspace").steps(1000, 4)
    assert [t for t, _ in steps] == sched.timesteps.tolist() == [999, 666, 333, 0]
    assert [p for _, p in steps] == [749, 416, 83, -1]  # DDIMScheduler.step's prev_timestep: t - 250
