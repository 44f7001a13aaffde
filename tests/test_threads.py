"""CPU threads chosen by the size of the work (core/threads.py, issue 27): small steps run on one
thread, --threads / AIGC_THREADS / OMP_NUM_THREADS win, and a seed gives the same text on any
count. The counts are read inside the work (a hook on the token choice, on the scoring), not
timed: the speed is benches/bench_threads.py's business."""

import json
import os
import subprocess
import sys

import pytest
import torch

from aigc_cli.core import threads
from aigc_cli.core.errors import OptionError
from aigc_cli.models.text import sampling
from aigc_cli.models.text.family import DEFAULT_LAYERS, DEFAULT_WIDTH, GPT_DEFAULTS, build_model

TINY = dict(epochs=1, layers=1, width=16, heads=2, context=16, batch_size=64, seed=1)
DEFAULT = 2  # torch's count here, whatever the machine: the automatic choice must differ from it


@pytest.fixture(autouse=True)
def automatic(monkeypatch):
    """The automatic choice on a DEFAULT-thread torch: no user setting, not a rank of several."""
    for name in ("OMP_NUM_THREADS", "AIGC_THREADS", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    before = torch.get_num_threads()
    threads.set_threads(None)
    torch.set_num_threads(DEFAULT)
    yield
    threads.set_threads(None)
    torch.set_num_threads(before)


def default_model(arch: str):
    """The text family's default sizes (a 65-character alphabet), random weights: speed and thread
    counts do not depend on training."""
    torch.manual_seed(0)
    return build_model({"arch": arch, "vocab_size": 65, "width": DEFAULT_WIDTH[arch], "layers": DEFAULT_LAYERS[arch],
                        "heads": 4, "context": 64, "dropout": 0.0, **GPT_DEFAULTS}).eval()


def generate_counting(model, n=1, length=20, seed=0):
    """(ids, the thread count at every token) of a seeded generation."""
    seen = []
    ids = sampling.generate(model, torch.tensor([1, 2, 3]), n, length, torch.Generator().manual_seed(seed),
                            on_tokens=lambda _: seen.append(torch.get_num_threads()))
    return ids, seen


def test_a_region_runs_small_steps_on_one_thread_and_restores_the_count():
    with threads.cpu_threads(threads.SMALL_STEP / 10) as n:
        assert n == 1 and torch.get_num_threads() == 1
    assert torch.get_num_threads() == DEFAULT
    with threads.cpu_threads(threads.SMALL_STEP) as n:  # large steps keep torch's count
        assert n == DEFAULT and torch.get_num_threads() == DEFAULT
    with pytest.raises(RuntimeError), threads.cpu_threads(1.0):
        raise RuntimeError("the count comes back after an error too")
    assert torch.get_num_threads() == DEFAULT
    with threads.cpu_threads(1.0, device="meta") as n:  # work on another device leaves the CPU count alone
        assert n == DEFAULT and torch.get_num_threads() == DEFAULT


@pytest.mark.parametrize("setting", ["--threads", "OMP_NUM_THREADS", "torchrun"])
def test_a_count_the_user_or_a_launcher_set_is_never_changed(setting, monkeypatch):
    if setting == "--threads":
        threads.set_threads(3)
    elif setting == "OMP_NUM_THREADS":
        monkeypatch.setenv("OMP_NUM_THREADS", str(DEFAULT))
    else:
        monkeypatch.setenv("WORLD_SIZE", "2")
    fixed = 3 if setting == "--threads" else DEFAULT
    assert threads.chosen_by() == setting
    with threads.cpu_threads(1.0) as n:
        assert n == fixed and torch.get_num_threads() == fixed
    threads.set_threads(None)  # back to automatic: torch's own count again
    assert torch.get_num_threads() == DEFAULT


@pytest.mark.parametrize("arch", ["gpt", "gru"])
def test_token_by_token_generation_of_a_default_size_model_runs_on_one_thread(arch):
    model = default_model(arch)
    assert threads.step_flops(model, 1) < threads.SMALL_STEP
    _, seen = generate_counting(model, n=4)
    assert seen == [1] * 20
    assert torch.get_num_threads() == DEFAULT  # restored after it


def test_scoring_a_default_size_gru_runs_on_one_thread():
    model = default_model("gru")  # a step of a 64-row batch is one time step: small
    seen = []
    model.register_forward_pre_hook(lambda *_: seen.append(torch.get_num_threads()))
    sampling.token_losses(model, torch.randint(0, 65, (3000,), generator=torch.Generator().manual_seed(0)), 64)
    assert seen and set(seen) == {1}
    assert torch.get_num_threads() == DEFAULT


@pytest.mark.parametrize("arch", ["gpt", "gru", "lstm"])
def test_a_seed_gives_the_same_text_on_any_thread_count(arch):
    """Checked, not assumed: the matmuls of these sizes split over threads without changing a bit."""
    model = default_model(arch)
    ids = []
    for fixed in (1, 2, None):
        threads.set_threads(fixed)
        ids.append(generate_counting(model, n=2, length=20, seed=5)[0])
    assert torch.equal(ids[0], ids[1]) and torch.equal(ids[0], ids[2])


# -- the command line ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def text_home(tmp_path_factory):
    """A store with one tiny GPT run (run1, trained on one thread on 20,000 characters) and a
    text to score (held.txt)."""
    from aigc_cli.data.text import load_corpus
    from aigc_cli.training import train

    home = tmp_path_factory.mktemp("home")
    bard = load_corpus("bard")
    (home / "plays.txt").write_text(bard.text[:20_000], encoding="utf-8")
    (home / "held.txt").write_text(bard.text[:2000], encoding="utf-8")  # within the run's alphabet
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AIGC_HOME", str(home))
        assert train("text", str(home / "plays.txt"), **TINY).id == "run1"
    torch.set_num_threads(before)
    return home


@pytest.fixture
def counting(monkeypatch):
    """The thread counts seen inside the work: at each token choice and each scoring batch."""
    seen = []

    def spy(real):
        def wrapper(*args, **kwargs):
            seen.append(torch.get_num_threads())
            return real(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(sampling, "pick", spy(sampling.pick))
    monkeypatch.setattr(sampling, "rows_loss", spy(sampling.rows_loss))
    return seen


SAMPLE = ["sample", "run1", "--prompt", "ROMEO:", "--length", "30", "--seed", "2", "-n", "2", "--json"]


@pytest.mark.parametrize("given", [None, "--threads", "AIGC_THREADS"])
def test_sample_and_eval_ppl_use_the_count_given_and_report_it(given, text_home, cli, counting, monkeypatch):
    monkeypatch.setenv("AIGC_HOME", str(text_home))
    pre = ["--threads", "2"] if given == "--threads" else []
    if given == "AIGC_THREADS":
        monkeypatch.setenv("AIGC_THREADS", "2")
    want = 1 if given is None else 2  # automatic: one thread for this tiny model
    code, out, err = cli(*pre, *SAMPLE)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["threads"] == want and set(counting) == {want}, (summary["threads"], counting)
    counting.clear()
    code, out, err = cli(*pre, "eval", "ppl", "run1", text_home / "held.txt", "--json")
    assert code == 0, err
    assert json.loads(out)["threads"] == want and set(counting) == {want}
    # The same text whatever the count (test_a_seed_gives_the_same_text_on_any_thread_count).
    assert summary["continuations"] == json.loads(cli(*SAMPLE)[1])["continuations"]


def test_omp_num_threads_wins_over_the_automatic_choice(text_home):
    """torch reads OMP_NUM_THREADS when it loads: a fresh process. Without it this tiny model
    samples on 1 thread (the test above)."""
    env = {k: v for k, v in os.environ.items() if k not in ("AIGC_THREADS", "WORLD_SIZE")}
    env.update(AIGC_HOME=str(text_home), OMP_NUM_THREADS="2")
    out = subprocess.run([sys.executable, "-m", "aigc_cli", *SAMPLE], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["threads"] == 2


def test_a_bad_count_is_a_usage_error(cli):
    for bad in ("0", "two"):
        code, _, err = cli("--threads", bad, "info")
        assert code == 2 and "--threads" in err
    with pytest.raises(OptionError, match="at least 1"):
        threads.set_threads(0)  # the Python API's own check


def test_info_says_who_chose_the_count(cli):
    code, out, err = cli("--threads", "1", "info", "--json")
    assert code == 0, err
    info = json.loads(out)
    assert info["threads"] == 1 and info["threads_policy"] == "set by --threads"
    code, out, err = cli("info", "--json")  # without it: automatic again, torch's count back
    info = json.loads(out)
    assert info["threads"] == DEFAULT and info["threads_policy"].startswith("automatic")
