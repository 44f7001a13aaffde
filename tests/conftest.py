from pathlib import Path

import pytest

MNIST_DIR = Path(__file__).resolve().parents[2] / "shared/data/mnist"


@pytest.fixture
def aigc_home(tmp_path, monkeypatch):
    """A fresh AIGC_HOME (runs, cache) per test."""
    home = tmp_path / "aigc_home"
    monkeypatch.setenv("AIGC_HOME", str(home))
    return home


@pytest.fixture
def mnist_dir():
    """The real MNIST test split (IDX .gz files), when this machine has it."""
    if not (MNIST_DIR / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"no MNIST files in {MNIST_DIR}")
    return MNIST_DIR


def _run_main(args, capsysbinary):
    from aigc_cli.cli.app import main

    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    out, err = capsysbinary.readouterr()
    code = exc.value.code if isinstance(exc.value.code, int) else (0 if exc.value.code is None else 1)
    return code, out, err.decode(errors="replace")


@pytest.fixture
def cli(capsysbinary):
    """Run ``aigc ARGS`` in-process: returns (exit code, stdout bytes, stderr text)."""
    return lambda *args: _run_main(args, capsysbinary)


@pytest.fixture
def tiny_npz(tmp_path):
    """A small labelled array dataset: 256 noisy 1x8x8 'bars' in 4 classes (fast to train on)."""
    import numpy as np

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 256)
    images = rng.integers(0, 40, (256, 8, 8)).astype(np.uint8)
    for i, k in enumerate(labels):
        images[i, 2 * k : 2 * k + 2, :] = 255  # class k: a bright horizontal bar at rows 2k, 2k+1
    path = tmp_path / "bars.npz"
    np.savez(path, images=images, labels=labels)
    return path


TINY_GAN = ["--arch", "mlp", "--width", "4", "--latent-dim", "8", "--batch-size", "16"]


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tests check numbers, not speed: one thread per test process (pytest -n 2 uses both cores)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
