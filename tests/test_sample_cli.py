"""`aigc sample`, `aigc runs`, `aigc info`, global CLI behaviour."""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny conditional GAN run shared by the tests here: (AIGC_HOME, run path)."""
    from aigc_cli.training import train

    home = tmp_path_factory.mktemp("home")
    rng = np.random.default_rng(0)
    data = home / "bars.npz"
    np.savez(data, images=rng.integers(0, 255, (64, 8, 8)).astype(np.uint8), labels=rng.integers(0, 4, 64))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AIGC_HOME", str(home))
        run = train("gan", str(data), arch="mlp", width=4, latent_dim=8, batch_size=16, epochs=1,
                    conditional=True, name="tiny")
    return home, run.path


@pytest.fixture
def home(trained, monkeypatch):
    monkeypatch.setenv("AIGC_HOME", str(trained[0]))
    return trained[0]


def test_grid_file_with_text_chunks(home, cli, tmp_path):
    code, out, err = cli("sample", "tiny", "-n", "6", "-o", tmp_path / "g.png", "--seed", "3", "--nrow", "3")
    assert code == 0, err
    assert out == b""  # results as files; stdout stays quiet without --json
    img = Image.open(tmp_path / "g.png")
    assert img.size == (3 * 10 + 2, 2 * 10 + 2) and img.mode == "L"  # 8x8 images, 2px padding
    assert img.text["aigc:run"] == "run1" and img.text["aigc:seed"] == "3" and img.text["aigc:index"] == "0-5"


def test_same_seed_same_bytes_stdout(home, cli):
    a = cli("sample", "last", "-n", "4", "-o", "-", "--seed", "7")
    b = cli("sample", "last", "-n", "4", "-o", "-", "--seed", "7")
    c = cli("sample", "last", "-n", "4", "-o", "-", "--seed", "8")
    assert a[0] == b[0] == 0
    assert a[1].startswith(b"\x89PNG") and a[1] == b[1] and a[1] != c[1]


def test_png_to_a_closed_pipe_ends_quietly(home):
    """`aigc sample RUN -o - | cmd` where cmd has gone: exit 141 (128 + SIGPIPE, docs/cli.md) and
    nothing on stderr, no "Exception ignored ... BrokenPipeError" at exit (before: exit 1)."""
    import os

    read, write = os.pipe()
    os.close(read)  # the reader is gone before the PNG is written
    try:
        result = subprocess.run([sys.executable, "-m", "aigc_cli", "sample", "last", "-n", "4", "-o", "-"],
                                stdout=write, stderr=subprocess.PIPE, timeout=120,
                                env={**os.environ, "AIGC_HOME": str(home), "OMP_NUM_THREADS": "1"})
    finally:
        os.close(write)
    assert result.returncode == 141 and result.stderr == b"", result.stderr


def test_folder_output_and_json(home, cli, tmp_path):
    code, out, err = cli("sample", "run1", "-n", "5", "-o", f"{tmp_path}/imgs/", "--seed", "1", "--json", "--label", "2")
    assert code == 0, err
    report = json.loads(out)
    assert report["seed"] == 1 and report["label"] == 2 and len(report["outputs"]) == 5
    files = sorted((tmp_path / "imgs").iterdir())
    assert [f.name for f in files] == [f"{i:05d}.png" for i in range(5)]
    first = Image.open(files[0])
    assert first.size == (8, 8) and first.text["aigc:index"] == "0"


def test_latents_file_decides_the_images(home, cli, tmp_path):
    z = np.random.default_rng(0).standard_normal((3, 8)).astype(np.float32)
    np.save(tmp_path / "z.npy", z)
    code, out, err = cli("sample", "tiny", "--latents", tmp_path / "z.npy", "-o", f"{tmp_path}/d/", "--label", "1")
    assert code == 0, err
    got = np.stack([np.asarray(Image.open(p)) for p in sorted((tmp_path / "d").iterdir())])

    import torch

    from aigc_cli.core.images import to_uint8
    from aigc_cli.generation import load_generator

    gen = load_generator("tiny")
    want = to_uint8(gen.generate(torch.from_numpy(z), gen.conditioning(3, label=1))).numpy()[:, 0]
    assert np.array_equal(got, want)


def test_truncation_changes_latents_within_bounds(home):
    from aigc_cli.generation import load_generator

    gen = load_generator("tiny")
    z = gen.latents(200, seed=0, truncation=0.5)
    assert z.abs().max() <= 0.5 and z.std() > 0.1
    assert not np.array_equal(z.numpy(), gen.latents(200, seed=0).numpy())


@pytest.mark.parametrize(
    "args,needle",
    [
        (["sample", "nope", "-o", "x.png"], "no run 'nope'"),
        (["sample", "tiny", "-o", "x.png", "--label", "9"], "--label must be in 0..3"),
        (["sample", "tiny", "-o", "x.jpg"], "use a .png name"),
        (["sample", "tiny", "-o", "x.png", "-n", "0"], "-n must be at least 1"),
    ],
)
def test_sample_errors(home, cli, tmp_path, monkeypatch, args, needle):
    monkeypatch.chdir(tmp_path)
    code, out, err = cli(*args)
    assert code == 1 and needle in err and len(err.strip().splitlines()) == 1


def test_bad_latents(home, cli, tmp_path):
    np.save(tmp_path / "z.npy", np.zeros((2, 5), np.float32))
    code, _, err = cli("sample", "tiny", "--latents", tmp_path / "z.npy", "-o", tmp_path / "a.png")
    assert code == 1 and "(N, 8)" in err


def test_corrupt_or_mismatched_weights(cli, tmp_path, trained, monkeypatch):
    import shutil

    # Damage a copy of the shared AIGC_HOME, never the module's run itself.
    home = tmp_path / "home"
    shutil.copytree(trained[0], home)
    monkeypatch.setenv("AIGC_HOME", str(home))
    run = home / trained[1].relative_to(trained[0])
    weights = run / "model.safetensors"
    weights.write_bytes(b"\x00" * 100)
    code, _, err = cli("sample", "tiny", "-o", tmp_path / "a.png")
    assert code == 1 and "not a readable safetensors" in err
    # Weights of another architecture: the config now says width 8; the weights are width 4.
    config = json.loads((run / "config.json").read_text())
    config["model"]["width"] = 8
    (run / "config.json").write_text(json.dumps(config))
    shutil.copy(trained[1] / "model.safetensors", weights)
    code, _, err = cli("sample", "tiny", "-o", tmp_path / "a.png")
    assert code == 1 and "do not fit" in err and "Traceback" not in err


def test_runs_commands(home, cli):
    code, out, _ = cli("runs", "list", "--json")
    rows = json.loads(out)
    assert code == 0 and rows[0]["id"] == "run1" and rows[0]["name"] == "tiny"
    assert {"id", "name", "family", "status", "epoch", "step", "created"} <= rows[0].keys()
    code, out, _ = cli("runs", "show", "tiny", "--json")
    shown = json.loads(out)
    assert shown["status"] == "completed" and shown["config"]["family"] == "gan"
    assert shown["last_metrics"]["step"] == 4
    code, out, _ = cli("runs", "path", "last")
    assert out.decode().strip() == str(home / "runs" / "run1")
    code, _, err = cli("runs", "rm", "run5")
    assert code == 1 and "no run 'run5'" in err


def test_runs_rm(aigc_home, cli, tiny_npz, tiny_gan):
    assert cli("train", "gan", "--dataset", tiny_npz, *tiny_gan, "--epochs", "1")[0] == 0
    code, _, err = cli("runs", "rm", "run1")
    assert code == 0 and not (aigc_home / "runs/run1").exists()


def test_info_json(cli):
    code, out, _ = cli("info", "--json")
    data = json.loads(out)
    assert code == 0 and data["device"] == "cpu" and data["threads"] >= 1 and "torch" in data
    assert data["cpu_allocator"].startswith(("glibc", "system default"))


def test_usage_errors_exit_2(cli):
    assert cli("train", "gan", "--epochs", "many")[0] == 2
    assert cli("frobnicate")[0] == 2


def test_help_and_version_do_not_import_torch():
    code = (
        "import sys; from aigc_cli.cli.app import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit as e:\n    assert e.code == 0\n"
        "try:\n    main(['train', 'gan', '--help'])\nexcept SystemExit as e:\n    assert e.code == 0\n"
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "False"
    version = subprocess.run([sys.executable, "-m", "aigc_cli", "--version"], capture_output=True, text=True)
    from aigc_cli import __version__

    assert version.returncode == 0 and version.stdout.strip() == f"aigc {__version__}"
