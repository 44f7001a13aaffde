"""Fixtures every test module may use; no test module imports another (or this one).

Suite: about 6 minutes (424 tests, 2026-12-04, on the Intel Xeon with AMX of docs/benchmarks/README.md; tests/test_distributed.py is about 2.5 minutes of test time, spread over the two workers) with ``pytest -n 2`` on that 2-core machine.
"""

import contextlib
import io
from pathlib import Path

import numpy as np
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


def _exit_code(exc: SystemExit) -> int:
    return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)


@pytest.fixture
def cli(capsysbinary):
    """Run ``aigc ARGS`` in-process: returns (exit code, stdout bytes, stderr text)."""
    from aigc_cli.cli.app import main

    def run(*args):
        capsysbinary.readouterr()
        with pytest.raises(SystemExit) as exc:
            main([str(a) for a in args])
        out, err = capsysbinary.readouterr()
        return _exit_code(exc.value), out, err.decode(errors="replace")

    return run


@pytest.fixture(scope="session")
def cli_captured():
    """``cli`` for module-scoped fixtures, where capsys is not available: (exit code, stdout text,
    stderr text)."""
    from aigc_cli.cli.app import main

    def run(*args):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), pytest.raises(SystemExit) as exc:
            main([str(a) for a in args])
        return _exit_code(exc.value), out.getvalue(), err.getvalue()

    return run


@pytest.fixture(scope="session")
def clean_error():
    """``check(code, err, *words)``: exit code 1 and one ``aigc: error:`` line holding ``words``."""

    def check(code, err, *words):
        assert code == 1, err
        assert "Traceback" not in err
        assert err.startswith("aigc: error:"), err
        assert len(err.strip().splitlines()) == 1, err
        for w in words:
            assert w in err, err

    return check


def write_bars(path, n=256, size=8, channels=1, seed=0):
    """n noisy size x size 'bars' in 4 classes: class k has a bright band at rows 2k, 2k+1."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, n)
    images = rng.integers(0, 40, (n, size, size)).astype(np.uint8)
    for i, k in enumerate(labels):
        images[i, 2 * k : 2 * k + 2, :] = 255
    if channels == 3:
        images = np.repeat(images[..., None], 3, axis=3)
        images[..., 0] //= 2  # some colour
    np.savez(path, images=images, labels=labels)
    return path


@pytest.fixture(scope="session")
def make_bars():
    """``make_bars(path, n=256, size=8, channels=1, seed=0)`` writes a labelled .npz of bars."""
    return write_bars


@pytest.fixture
def tiny_npz(tmp_path):
    """A small labelled array dataset: 256 noisy 1x8x8 'bars' in 4 classes (fast to train on)."""
    return write_bars(tmp_path / "bars.npz")


@pytest.fixture(scope="session")
def tiny_gan():
    """Flags of a GAN that trains in a second: ``aigc train gan *tiny_gan``."""
    return ["--arch", "mlp", "--width", "4", "--latent-dim", "8", "--batch-size", "16"]


@pytest.fixture(scope="session")
def tiny_vae():
    """The same for a VAE, as flags (``args``) and as keywords of ``train()`` (``kw``)."""
    return {"args": ["--width", "4", "--latent-dim", "4", "--batch-size", "32"],
            "kw": dict(width=4, latent_dim=4, batch_size=32)}


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tests check numbers, not speed: one thread per test process (pytest -n 2 uses both cores)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class FakeExtractor:
    """A cheap deterministic stand-in for the FID Inception network: 64-d features from pooled
    pixels, 1008 logits from them; ``calls`` records the batch sizes it was asked for."""

    DIM = 64

    def __init__(self):
        import torch

        self.device = torch.device("cpu")
        self.batch_size = 64
        self.on_batch_halved = None
        self.calls: list[int] = []
        g = torch.Generator().manual_seed(0)
        self.proj = torch.randn(3 * 4 * 4, self.DIM, generator=g)
        self.cls = torch.randn(self.DIM, 1008, generator=g) * 0.5

    def _features(self, images):
        import torch
        import torch.nn.functional as F

        from aigc_cli.metrics.features import to_rgb

        x = F.adaptive_avg_pool2d(to_rgb(images).float() / 255, 4).flatten(1)
        return torch.relu(x @ self.proj)

    def extract(self, batches, total=None, advance=None):
        import torch

        from aigc_cli.metrics.features import FeatureSet

        feats = torch.cat([self._features(b) for b in batches])
        self.calls.append(len(feats))
        return FeatureSet(feats.numpy(), (feats @ self.cls).numpy())

    def extract_tensor(self, images, advance=None):
        return self.extract([images])


@pytest.fixture
def fake_inception(tmp_path, monkeypatch):
    """Metrics computed on FakeExtractor instead of the Inception network (its weights are not on
    this machine): the plumbing tested in milliseconds. ``.weights``: a dummy file to name."""
    from aigc_cli.metrics import evaluate

    ex = FakeExtractor()
    monkeypatch.setattr(evaluate, "get_extractor", lambda *a, **k: ex)
    monkeypatch.setattr(evaluate, "FEATURE_DIM", FakeExtractor.DIM)
    weights = tmp_path / "dummy.pth"
    weights.write_bytes(b"dummy weights")
    ex.weights = str(weights)
    return ex
