"""``aigc import``: local folders and the hub path (against a stand-in hub on 127.0.0.1, through
huggingface_hub itself), its cache and offline mode, and the errors; issue 29. The formats'
parity with transformers and diffusers is tested in test_import_gpt2.py and test_import_diffusers.py."""

import json

import pytest

from hub_server import HubServer

diffusers = pytest.importorskip("diffusers")


def _tiny_unet(folder):
    """A tiny random diffusers UNet2DModel with its DDPM scheduler, saved as the hub holds it."""
    import torch

    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(sample_size=8, in_channels=1, out_channels=1, layers_per_block=1,
                                 block_out_channels=(8, 16), norm_num_groups=4,
                                 down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                                 up_block_types=("AttnUpBlock2D", "UpBlock2D"))
    unet.save_pretrained(folder, safe_serialization=True)
    diffusers.DDPMScheduler(num_train_timesteps=1000).save_config(folder)
    return folder


@pytest.fixture
def hub(tmp_path):
    repo = _tiny_unet(tmp_path / "repo")
    (repo / "notes").mkdir()
    (repo / "notes/big.bin").write_bytes(b"\0" * 4096)  # not the format's: never fetched
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text((repo / "config.json").read_text())
    (pickled / "diffusion_pytorch_model.bin").write_bytes(b"\0" * 64)
    server = HubServer({"tiny/ddpm": repo, "tiny/pickled": pickled})
    yield server
    server.close()


def _env(tmp_path, hub, **extra):
    return {"HF_ENDPOINT": hub.url, "HF_HOME": tmp_path / "hf", "HF_HUB_DISABLE_TELEMETRY": "1", **extra}


def test_import_from_the_hub_fetches_only_the_formats_files_then_works_offline(tmp_path, hub, run_aigc, clean_error):
    home = tmp_path / "home"
    done = run_aigc(home, "import", "tiny/ddpm", "--name", "ddpm", "--json", **_env(tmp_path, hub))
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["family"] == "diffusion" and report["source"]["hub_id"] == "tiny/ddpm"
    assert report["source"]["revision"] == hub.commit
    assert "notes/big.bin" not in hub.downloaded()
    assert {"config.json", "diffusion_pytorch_model.safetensors", "scheduler_config.json"} <= set(hub.downloaded())
    sample = run_aigc(home, "sample", "ddpm", "-n", "2", "--steps", "2", "-o", tmp_path / "s.png")
    assert sample.returncode == 0, sample.stderr
    # Offline: the cache serves it again; a repository never fetched is one line saying where to put it.
    again = run_aigc(home, "import", "tiny/ddpm", "--name", "again", **_env(tmp_path, hub, HF_HUB_OFFLINE="1"))
    assert again.returncode == 0, again.stderr
    missing = run_aigc(home, "import", "tiny/other", **_env(tmp_path, hub, HF_HUB_OFFLINE="1"))
    clean_error(missing.returncode, missing.stderr, "tiny/other is not in the Hugging Face cache", "HF_HUB_OFFLINE",
                "local folder")
    # A resume of an imported run: nothing to resume, --init is the way.
    resume = run_aigc(home, "train", "diffusion", "--resume", "ddpm")
    clean_error(resume.returncode, resume.stderr, "was imported, not trained here", "--init")


def test_hub_errors_are_one_line_and_write_nothing(tmp_path, hub, run_aigc, clean_error):
    home = tmp_path / "home"
    cases = [
        (["import", "tiny/nothing"], ["no model 'tiny/nothing' on the hub"]),
        (["import", "tiny/pickled"], ["only pickled weights", "diffusion_pytorch_model.bin", "safetensors"]),
        (["import", "./no/such/folder"], ["no such folder: ./no/such/folder"]),
        (["import", "tiny/ddpm", "--name", "bad name"], ["name"]),
    ]
    for args, words in cases:
        done = run_aigc(home, *args, **_env(tmp_path, hub))
        clean_error(done.returncode, done.stderr, *words)
    assert not (home / "runs").exists() or not any(p.name.startswith("run") for p in (home / "runs").iterdir())


def test_local_folders_that_are_no_model(tmp_path, cli, aigc_home, clean_error):
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = cli("import", empty)
    clean_error(code, err, "is in no format aigc imports", "UNet2DModel")
    repo = _tiny_unet(tmp_path / "repo")
    code, _, err = cli("import", repo / "config.json")
    clean_error(code, err, "is a file; give aigc import the folder")
    # A truncated weights file.
    weights = repo / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    code, _, err = cli("import", repo)
    clean_error(code, err, "diffusion_pytorch_model.safetensors is not a readable safetensors file")
    assert not (aigc_home / "runs").exists() or not any(p.name.startswith("run") for p in (aigc_home / "runs").iterdir())


def test_init_from_a_folder_imports_it_first(tmp_path, cli, aigc_home, make_bars):
    repo = _tiny_unet(tmp_path / "repo")
    data = make_bars(tmp_path / "bars.npz", size=8)
    # A contradiction is found before the folder becomes a run: nothing is written.
    code, _, err = cli("train", "diffusion", "--dataset", data, "--init", repo, "--width", "64")
    assert code == 1 and f"--init {repo} takes the architecture" in err and "--width" in err
    assert not (aigc_home / "runs").exists() or not any(p.name.startswith("run") for p in (aigc_home / "runs").iterdir())
    code, _, err = cli("-q", "train", "diffusion", "--dataset", data, "--init", repo, "--lora", "2",
                       "--batch-size", "32", "--epochs", "1", "--unconditional")
    assert code == 0, err
    runs = sorted(p.name for p in (aigc_home / "runs").iterdir() if p.name.startswith("run"))
    assert runs == ["run1", "run2"]  # the import, then the adapters on it
    config = json.loads((aigc_home / "runs/run2/config.json").read_text())
    assert config["parent"]["run"] == "run1" and config["adapters"]["rank"] == 2
