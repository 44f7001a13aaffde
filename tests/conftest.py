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
