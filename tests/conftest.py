"""Fixtures every test module may use; no test module imports another (or this one).

Suite: about 6 minutes (424 tests, 2026-12-04, on the Intel Xeon with AMX of docs/benchmarks/README.md; tests/test_distributed.py is about 2.5 minutes of test time, spread over the two workers) with ``pytest -n 2`` on that 2-core machine.
Since every test process runs torch on one thread (one_torch_thread): 4 min 40 s (2026-12-07, a
shared 2-core AMD EPYC at a load average of about 2).

``pytest -n 2`` runs every test; ``pytest -n 2 -m "not slow"`` leaves out the 16 marked
``@pytest.mark.slow`` for a quick check while working: those over about 10 s each (the launches
of tests/test_distributed.py, the text and GAN signal-and-resume runs, pytorch-fid's whole FID).
The times in their comments: ``pytest -n 2`` on a shared 2-core AMD EPYC while other jobs ran
(2026-12-07).

Helpers are fixtures that return a function (``cli``, ``run_aigc``, ``paused``,
``assert_same_tensors`` ...), so that test modules share them without importing each other.
"""

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
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


@pytest.fixture(autouse=True)
def dataset_cache_in_tmp(tmp_path_factory, monkeypatch):
    """Folders loaded in-process by a test without AIGC_HOME write their decoded cache
    (aigc_cli.data.cache) under a session temporary folder, never into the user's cache."""
    from aigc_cli.data import cache

    fallback = tmp_path_factory.getbasetemp() / "dataset_cache"
    real = cache.root
    monkeypatch.setattr(cache, "root", lambda: real() if os.environ.get("AIGC_HOME") else fallback)


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


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A text family's tiny dataset: the first 20,000 characters of the built-in corpus (bard) as
    a file (35 steps an epoch at batch 32 and context 16)."""
    from aigc_cli.data.text import CORPORA

    path = tmp_path_factory.mktemp("corpus") / "plays.txt"
    path.write_text(CORPORA.get("bard").read(None)[:20_000], encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_gan():
    """Flags of a GAN that trains in a second: ``aigc train gan *tiny_gan``."""
    return ["--arch", "mlp", "--width", "4", "--latent-dim", "8", "--batch-size", "16"]


@pytest.fixture(scope="session")
def tiny_vae():
    """The same for a VAE, as flags (``args``) and as keywords of ``train()`` (``kw``)."""
    return {"args": ["--width", "4", "--latent-dim", "4", "--batch-size", "32"],
            "kw": dict(width=4, latent_dim=4, batch_size=32)}


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """Tests check numbers, not speed: one thread per test process (pytest -n 2 uses both cores),
    as aigc_env gives each child. Two threads a process on two busy cores made a tiny in-process
    training 25 times slower: 104 s against 3.9 s for the 1,024 steps of test_train_gan's signal
    test, on a shared 2-core AMD EPYC while other jobs ran (2026-12-07)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# -- runs on disk ------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def two_epoch_gan(tiny_gan):
    """``tiny_gan`` for 2 epochs, seed 3: on make_bars's 256 images, 16 steps an epoch and a save
    at the end of each (the crash and signal tests' kill and pause points count on that)."""
    return [*tiny_gan, "--epochs", "2", "--seed", "3"]


@pytest.fixture(scope="session")
def run_meta():
    """``run_meta(home, run="run1")``: the run's run.json."""
    return lambda home, run="run1": json.loads((Path(home) / "runs" / run / "run.json").read_text())


@pytest.fixture(scope="session")
def run_rows():
    """``run_rows(home, run="run1", drop=())``: the rows of the run's metrics.jsonl, less the keys
    in ``drop`` (throughputs, which no two runs share)."""

    def rows(home, run="run1", drop=()):
        lines = (Path(home) / "runs" / run / "metrics.jsonl").read_text().splitlines()
        return [{k: v for k, v in json.loads(line).items() if k not in drop} for line in lines]

    return rows


@pytest.fixture(scope="session")
def assert_same_tensors():
    """``assert_same_tensors(a, b)``: safetensors files a and b hold the same names and
    bit-identical tensors (a resumed run against one never stopped)."""
    import torch
    from safetensors.torch import load_file

    def check(a, b):
        ta, tb = load_file(str(a)), load_file(str(b))
        assert ta.keys() == tb.keys(), (str(a), str(b), sorted(ta.keys() ^ tb.keys()))
        for k in ta:
            assert torch.equal(ta[k], tb[k]), (str(a), str(b), k)

    return check


# -- aigc in a child process -------------------------------------------------------------------
# What this process may carry and a child must not inherit: the test hooks of
# aigc_cli/core/faults.py, and torchrun's variables (a child would think it is a rank).
NOT_INHERITED = ("AIGC_TEST_FAULT", "AIGC_TEST_PAUSE", "AIGC_TEST_PAUSE_DIR", "AIGC_TEST_RANK",
                 "WORLD_SIZE", "RANK", "LOCAL_RANK")


def child_env(home, **extra):
    env = {k: v for k, v in os.environ.items() if k not in NOT_INHERITED}
    env.update(AIGC_HOME=str(home), OMP_NUM_THREADS="1")
    return {**env, **{k: str(v) for k, v in extra.items() if v is not None}}


@pytest.fixture(scope="session")
def aigc_env():
    """``aigc_env(home, **extra)``: the environment of an aigc child process: AIGC_HOME=home, one
    OpenMP thread (as this process, see one_torch_thread: a child's weights can be compared with
    ones trained in-process), no test hook or torchrun variable of this process, then ``extra``
    (e.g. AIGC_TEST_PAUSE=...; a None value is left out)."""
    return child_env


@pytest.fixture(scope="session")
def run_aigc():
    """``run_aigc(home, *args, timeout=300, **env)``: ``python -m aigc_cli ARGS`` run to its end
    in ``aigc_env(home, **env)``; a CompletedProcess with text stdout and stderr."""

    def run(home, *args, timeout=300, **env):
        return subprocess.run([sys.executable, "-m", "aigc_cli", *map(str, args)], env=child_env(home, **env),
                              capture_output=True, text=True, timeout=timeout)

    return run


@pytest.fixture
def start_aigc():
    """``start_aigc(home, *args, **env)``: ``python -m aigc_cli ARGS`` started in
    ``aigc_env(home, **env)``, a Popen with text pipes; one still running when the test ends
    (after a failed check) is killed."""
    procs = []

    def start(home, *args, **env):
        procs.append(subprocess.Popen([sys.executable, "-m", "aigc_cli", *map(str, args)], env=child_env(home, **env),
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        return procs[-1]

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def wait_until(ready, timeout, failure, every=0.02):
    """Call ``ready()`` every ``every`` s until it is true; after ``timeout`` s fail with
    ``failure()`` (which says what did not happen, with the process output)."""
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise AssertionError(failure())
        time.sleep(every)


@pytest.fixture(scope="session")
def wait_for():
    """``wait_for(ready, timeout, failure, every=0.02)``: the one bounded wait on another process
    (see wait_until); the tests use pause points (``paused``) wherever aigc can say it is there."""
    return wait_until


@pytest.fixture(scope="session")
def paused():
    """``paused(proc, marker, timeout=120)``: wait until ``proc``, started with AIGC_TEST_PAUSE
    (aigc_cli/core/faults.py), waits at its pause point: ``marker`` ($AIGC_TEST_PAUSE_DIR/paused-<k>)
    names the point and the pid waiting there. Returns that pid (a rank's, under --nproc). Fails
    with the process's stderr if it ends first or is not there after ``timeout`` s."""

    def wait(proc, marker, timeout=120):
        def there():
            if proc.poll() is not None:
                raise AssertionError(f"never reached {marker.name} (exit {proc.returncode}): {proc.communicate()[1]}")
            return marker.is_file() and marker.read_text().count("\n") == 2  # "<point>\n<pid>\n", whole

        def stuck():
            proc.kill()
            return f"not at {marker.name} after {timeout} s: {proc.communicate()[1]}"

        wait_until(there, timeout, stuck)
        return int(marker.read_text().split()[1])

    return wait


@pytest.fixture
def interrupted(start_aigc, paused):
    """``interrupted(home, args, step, run="run1")``: ``aigc *args`` in ``home``, stopped by a
    SIGINT while it waits inside training step ``step`` (a pause point); asserts the exit code 130
    and the line naming ``--resume RUN``: what a user's Ctrl-C leaves, ready to resume."""

    def stop(home, args, step, run="run1"):
        home.mkdir(parents=True, exist_ok=True)
        proc = start_aigc(home, *args, AIGC_TEST_PAUSE=f"step:{step}", AIGC_TEST_PAUSE_DIR=home)
        paused(proc, home / "paused-1")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 130 and f"--resume {run}" in err, err

    return stop


@pytest.fixture
def resumes_bit_identically(tmp_path, run_aigc, interrupted, assert_same_tensors, run_rows):
    """``check(args, step, resume, drop=())``: ``aigc *args`` run straight (in tmp_path/a), and run
    again (in tmp_path/b) stopped by Ctrl-C inside ``step`` then continued by ``aigc *resume``,
    end with the same weights and the same metrics.jsonl rows, less the keys in ``drop``
    (throughputs, which no two runs share)."""

    def check(args, step, resume, drop=()):
        straight = run_aigc(tmp_path / "a", *args)
        assert straight.returncode == 0, straight.stderr
        home = tmp_path / "b"
        interrupted(home, args, step)
        resumed = run_aigc(home, *resume)
        assert resumed.returncode == 0, resumed.stderr
        assert_same_tensors(tmp_path / "a/runs/run1/model.safetensors", home / "runs/run1/model.safetensors")
        assert run_rows(tmp_path / "a", drop=drop) == run_rows(home, drop=drop)

    return check


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


@pytest.fixture(scope="session")
def run_config():
    """``run_config(home, run)``: the config.json of ``run`` in the store at ``home``."""
    return lambda home, run: json.loads((Path(home) / "runs" / run / "config.json").read_text())


@pytest.fixture(scope="session")
def run_ids():
    """``run_ids(home)``: the ids of the runs in the store at ``home``, sorted."""
    return lambda home: sorted(p.name for p in (Path(home) / "runs").iterdir() if p.name.startswith("run"))


# -- a tiny CLIP, built and saved with transformers (tests/test_clip_import.py, test_text_to_image.py)
CLIP_LENGTH = 16
CLIP_BOS, CLIP_EOS = "<|startoftext|>", "<|endoftext|>"
CLIP_TEXT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                 max_position_embeddings=CLIP_LENGTH, layer_norm_eps=1e-5)
CLIP_VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=32,
                   patch_size=8)
CLIP_CORPUS = ("a photo of a cat . a photo of a dog ! the red bus parked near the old station in the rain , "
          "what's this ? it's 3 cats and 5 dogs . grüße café ") * 20


def _clip_bpe(folder):
    """vocab.json + merges.txt of a CLIP-style BPE (``</w>`` word ends, byte-level alphabet)."""
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(end_of_word_suffix="</w>", unk_token=CLIP_EOS))
    tok.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "),
                                           normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""),
                             behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False)])
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    tok.train_from_iterator([CLIP_CORPUS], trainers.BpeTrainer(
        vocab_size=300 + 2 * len(alphabet), special_tokens=[CLIP_BOS, CLIP_EOS], show_progress=False,
        initial_alphabet=alphabet, end_of_word_suffix="</w>"))
    tok.model.save(str(folder))
    vocab = json.loads((folder / "vocab.json").read_text())
    for c in alphabet:  # CLIP's vocabulary has every byte alone and as a word end
        vocab.setdefault(c + "</w>", len(vocab))
    (folder / "vocab.json").write_text(json.dumps(vocab))
    return len(vocab)


def _clip_perturb(model):
    import torch

    with torch.no_grad():  # biases, LayerNorms and the class embedding away from their 0/1 start
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name or "class_embedding" in name:
                p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


@pytest.fixture(scope="session")
def clip_saves(tmp_path_factory):
    """{kind: (folder, transformers model)} for 'full' (CLIPModel), 'text' (CLIPTextModel),
    'proj' (CLIPTextModelWithProjection, GELU), plus the tokenizer."""
    import torch

    pytest.importorskip("transformers")
    from transformers import (CLIPConfig, CLIPModel, CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection,
                              CLIPTokenizer)

    root = tmp_path_factory.mktemp("clip")
    (root / "bpe").mkdir()
    vocab_size = _clip_bpe(root / "bpe")
    hf_tok = CLIPTokenizer.from_pretrained(root / "bpe", model_max_length=CLIP_LENGTH)
    ids = dict(bos_token_id=hf_tok.bos_token_id, eos_token_id=hf_tok.eos_token_id, pad_token_id=hf_tok.pad_token_id)
    torch.manual_seed(0)
    out = {}
    for kind, make in [
        ("full", lambda: CLIPModel(CLIPConfig(text_config={**CLIP_TEXT, **ids, "vocab_size": vocab_size},
                                              vision_config=CLIP_VISION, projection_dim=24))),
        ("text", lambda: CLIPTextModel(CLIPTextConfig(**CLIP_TEXT, **ids, vocab_size=vocab_size))),
        ("proj", lambda: CLIPTextModelWithProjection(CLIPTextConfig(**CLIP_TEXT, **ids, vocab_size=vocab_size,
                                                                    projection_dim=20, hidden_act="gelu"))),
    ]:
        model = _clip_perturb(make())
        model.save_pretrained(root / kind, safe_serialization=True)
        hf_tok.save_pretrained(root / kind)
        out[kind] = (root / kind, model)
    out["tokenizer"], out["bpe"] = hf_tok, root / "bpe"
    return out
