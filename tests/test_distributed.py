"""Training on several processes (torch.distributed, gloo on CPU): issue 18, docs/distributed.md.

Real launches: ``aigc train ... --nproc N`` (torchrun's launcher through its API) and two
``torchrun --nnodes 2`` invocations on 127.0.0.1. The model is a tiny one on 256 8x8 images,
batch 16: 16 steps an epoch.
"""

import functools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

GAN = ["--arch", "dcgan", "--width", "4", "--latent-dim", "8", "--batch-size", "16", "--seed", "3", "--log-every", "1"]
FAMILIES = {
    "gan": GAN,  # BatchNorm in G: synchronised across the ranks
    "vae": ["--arch", "conv", "--width", "4", "--latent-dim", "4", "--batch-size", "16", "--seed", "3", "--log-every", "1"],
    # t, noise, label drop. In fp32, as text below: bf16 (auto on a CPU with AMX) rounds per rank.
    "diffusion": ["--width", "8", "--batch-size", "16", "--seed", "3", "--log-every", "1", "--precision", "fp32"],
    # Window offsets drawn for the global batch; 2,320 characters: 260 windows of 16, 16 steps. In
    # fp32: bf16 autocast (the default on a CPU with AMX) rounds each rank's slice on its own, and
    # the losses part by about 1e-5 relative after an epoch.
    "text": ["--layers", "1", "--width", "16", "--heads", "2", "--context", "8", "--batch-size", "16", "--seed", "3",
             "--log-every", "1", "--precision", "fp32"],
}
# Losses of N ranks against one process on the same global batch, relative: float32 sums taken
# in another order (per-rank partial sums, then the all-reduce) differ in their last bits, about
# 1e-7 per step here over a whole epoch; 1e-5 leaves room for that and nothing else. Leaving
# BatchNorm unsynchronised already misses by 1e-4 to 1e-1 (measured when the test was written).
RTOL, ATOL = 1e-5, 1e-6
LOSSES = ("d_loss", "g_loss", "recon", "kl", "loss")


@pytest.fixture(scope="module")
def aigc(run_aigc):
    """``run_aigc`` (conftest.py) with a 240 s bound: a launch that hangs fails its test."""
    return functools.partial(run_aigc, timeout=240)


@pytest.fixture(scope="module")
def torchrun(aigc_env):
    """``torchrun(home, nproc, *args)``: ``python -m torch.distributed.run --standalone`` of
    ``aigc ARGS`` on ``nproc`` ranks (torchrun itself: aigc's --nproc refuses more ranks than
    cores), bounded as ``aigc``."""

    def run(home, nproc, *args, **env):
        return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
                               str(nproc), "-m", "aigc_cli", *map(str, args)], env=aigc_env(home, **env),
                              capture_output=True, text=True, timeout=240)

    return run


def _assert_same_losses(one, many):
    assert [r["step"] for r in one] == [r["step"] for r in many]  # rank 0 alone wrote: each step once
    for a, b in zip(one, many):
        for key in LOSSES:
            if key in a:
                assert b[key] == pytest.approx(a[key], rel=RTOL, abs=ATOL), (a["step"], key, a[key], b[key])


@pytest.mark.slow  # each: two trainings, one on 2 launched ranks (12-20 s)
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_two_processes_compute_what_one_does(family, tmp_path, make_bars, aigc, run_rows, run_meta):
    data = make_bars(tmp_path / "bars.npz")
    if family == "text":
        from aigc_cli.data.text import CORPORA

        data = tmp_path / "plays.txt"
        data.write_text(CORPORA.get("bard").read(None)[:2320], encoding="utf-8")
    args = ["train", family, "--dataset", data, *FAMILIES[family], "--epochs", "1"]
    one = aigc(tmp_path / "one", "-q", *args)
    assert one.returncode == 0, one.stderr
    two = aigc(tmp_path / "two", *args, "--nproc", "2")
    assert two.returncode == 0, two.stderr
    assert two.stdout == "run1\n"  # rank 0 prints the result; rank 1 nothing
    assert "Traceback" not in two.stderr
    _assert_same_losses(run_rows(tmp_path / "one"), run_rows(tmp_path / "two"))
    meta = run_meta(tmp_path / "two")
    assert meta["status"] == "completed" and meta["world_size"] == 2 and meta["step"] == 16
    assert [p.name for p in (tmp_path / "two/runs").iterdir() if not p.name.startswith(".")] == ["run1"]


@pytest.mark.slow  # four trainings, two of them launched (37-84 s)
def test_checkpoints_resume_across_world_sizes(tmp_path, make_bars, aigc, run_rows, run_meta, torchrun):
    """1 epoch on 2 ranks, the 2nd on 1 process, the 3rd on 4 ranks: the same run as 3 epochs in
    one process (data order and noise belong to the global batch; the checkpoint holds no rank)."""
    data = make_bars(tmp_path / "bars.npz")
    base = ["train", "gan", "--dataset", data, *GAN]
    whole = aigc(tmp_path / "whole", "-q", *base, "--epochs", "3")
    assert whole.returncode == 0, whole.stderr
    home = tmp_path / "parts"
    first = aigc(home, "-q", *base, "--epochs", "1", "--nproc", "2")
    assert first.returncode == 0, first.stderr
    second = aigc(home, "-q", "train", "gan", "--resume", "run1", "--epochs", "2")
    assert second.returncode == 0, second.stderr
    assert run_meta(home)["world_size"] == 1
    # torchrun itself: `--nproc 4` refuses more ranks than this machine's cores (2 here).
    third = torchrun(home, 4, "-q", "train", "gan", "--resume", "run1", "--epochs", "3")
    assert third.returncode == 0, third.stderr
    assert run_meta(home)["world_size"] == 4 and run_meta(home)["step"] == 48
    _assert_same_losses(run_rows(tmp_path / "whole"), run_rows(home))


@pytest.mark.slow  # a launch and a resume (15-34 s)
@pytest.mark.parametrize("target,signum,code", [("rank 1", signal.SIGTERM, 143), ("launcher", signal.SIGINT, 130)])
def test_a_signal_stops_every_rank_after_the_same_step(target, signum, code, tmp_path, make_bars, aigc, start_aigc,
                                                        paused, run_meta):
    """Rank 1 waits inside step 5 (a test pause point) while rank 0 waits for it in the step's
    all-reduce: a signal to rank 1, or to the launcher (which forwards it to both), stops both
    after step 5; rank 0 saves, the launcher exits 130/143, and --resume trains on."""
    data = make_bars(tmp_path / "bars.npz")
    home = tmp_path / "home"
    proc = start_aigc(home, "train", "gan", "--dataset", data, *GAN, "--epochs", "3", "--nproc", "2",
                      AIGC_TEST_PAUSE="step:5", AIGC_TEST_PAUSE_DIR=tmp_path, AIGC_TEST_RANK="1")
    rank1 = paused(proc, tmp_path / "paused-1")
    os.kill(rank1 if target == "rank 1" else proc.pid, signum)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    lines = [line for line in err.splitlines() if line.startswith("aigc:")]  # not the progress lines
    assert len(lines) == 1 and "continue with 'aigc train gan --resume run1'" in lines[0], err
    meta = run_meta(home)
    assert meta["status"] == "interrupted" and meta["step"] == 5, meta
    assert (home / "runs/run1/checkpoint.safetensors").is_file()
    resumed = aigc(home, "-q", "train", "gan", "--resume", "run1", "--epochs", "1")
    assert resumed.returncode == 0, resumed.stderr
    assert run_meta(home)["status"] == "completed" and run_meta(home)["step"] == 16


@pytest.mark.slow  # a launch that loses a rank, and a resume (16-33 s)
def test_a_killed_rank_ends_the_run_and_leaves_its_checkpoint(tmp_path, make_bars, aigc, run_meta):
    """Rank 1 is SIGKILLed inside step 20, after the first epoch's checkpoint: the launcher exits
    non-zero (rather than waiting on the lost rank: aigc's 240 s bound fails a hang), the run is not
    left 'running', and it resumes."""
    data = make_bars(tmp_path / "bars.npz")
    home = tmp_path / "home"
    result = aigc(home, "train", "gan", "--dataset", data, *GAN, "--epochs", "3", "--nproc", "2",
                  AIGC_TEST_FAULT="step:20", AIGC_TEST_RANK="1", AIGC_DIST_TIMEOUT="20")
    assert result.returncode not in (0, None), result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    # Rank 0's line (what it saw), then the launcher's (what happened to rank 1).
    errors = [line for line in result.stderr.splitlines() if line.startswith("aigc:")]
    # Rank 0 says what it saw: the lost rank, or (if the launcher's SIGTERM reached it first) the
    # signal; then the launcher names rank 1's end (and rank 0's exit code when it ended first).
    assert len(errors) == 2, result.stderr
    assert "lost another rank at step 20" in errors[0] or "terminated" in errors[0], result.stderr
    assert "rank 1: killed by signal 9" in errors[1], result.stderr
    meta = run_meta(home)
    assert meta["status"] in ("interrupted", "failed") and meta["epoch"] == 1, meta
    resumed = aigc(home, "-q", "train", "gan", "--resume", "run1", "--epochs", "2")
    assert resumed.returncode == 0, resumed.stderr
    assert run_meta(home)["step"] == 32


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _children(pid: int) -> list[int]:
    """The live child processes of ``pid`` (torchrun's workers), from /proc."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):  # each thread's children
        try:
            found += [int(c) for c in task.read_text().split()]
        except OSError:
            pass  # the thread or process ended meanwhile
    return found


@pytest.fixture
def two_nodes(aigc_env, wait_for):
    """``two_nodes(homes, data, tmp)``: two torchrun invocations, one per "node" (node i with
    AIGC_HOME homes[i]), meeting at 127.0.0.1 (static rendezvous): [(exit code, stdout, stderr)]
    of each.

    Output goes to files (a pipe nobody reads could block a node) and both are waited for
    together. torchrun's agents wait for each other at exit (its "exit barrier", up to 300 s),
    and that wait can hang after every worker has ended (pytorch/pytorch#69520, seen once under
    a loaded CI). When only the agents are left, with all of our processes gone for 30 s, the
    agents are stopped and the result is judged by what the workers did: exit code None then.
    torchrun says nothing when its workers end, so this one wait watches /proc (bounded: 240 s)."""

    def launch(homes, data, tmp):
        port = _free_port()
        logs = [(open(tmp / f"node{n}.out", "w+"), open(tmp / f"node{n}.err", "w+")) for n in (0, 1)]
        nodes = [
            subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node-rank", str(node),
                              "--nproc-per-node", "1", "--master-addr", "127.0.0.1", "--master-port", str(port),
                              "-m", "aigc_cli", "-q", "train", "gan", "--dataset", str(data), *GAN, "--epochs", "1"],
                             env=aigc_env(homes[node]), stdout=logs[node][0], stderr=logs[node][1], text=True)
            for node in (0, 1)
        ]
        quiet = []  # the moment no worker was left, while only torchrun's agents run

        def settled():
            live = [n for n in nodes if n.poll() is None]
            if any(_children(n.pid) for n in live):
                quiet.clear()
            elif not quiet:
                quiet.append(time.monotonic())
            return not live or (bool(quiet) and time.monotonic() - quiet[0] > 30)  # workers gone 30 s

        def outputs():
            return [(tmp / f"node{n}.err").read_text() for n in (0, 1)]

        try:
            wait_for(settled, 240, lambda: f"a node's workers still ran after 240 s: {outputs()}", every=0.5)
        finally:
            hung = [n for n in nodes if n.poll() is None]
            for n in hung:
                n.kill()
                n.wait()
        results = []
        for n, (out, err) in zip(nodes, logs):
            out.seek(0), err.seek(0)
            results.append((None if n in hung else n.returncode, out.read(), err.read()))
            out.close(), err.close()
        return results

    return launch


@pytest.mark.slow  # two torchrun launches (10-20 s)
def test_two_nodes(tmp_path, make_bars, two_nodes, run_meta):
    """The run store shared by both nodes, as on a cluster's shared filesystem."""
    home = tmp_path / "home"
    results = two_nodes([home, home], make_bars(tmp_path / "bars.npz"), tmp_path)
    for code, out, err in results:
        assert code in (0, None), err  # None: torchrun's agents hung at their exit barrier (see two_nodes)
        assert "aigc:" not in err, err
    assert [out for _, out, _ in results] == ["run1\n", ""]
    meta = run_meta(home)
    assert meta["status"] == "completed" and meta["world_size"] == 2 and meta["step"] == 16


@pytest.mark.slow  # two torchrun launches (10-20 s)
def test_a_node_that_cannot_see_the_run_store_says_so(tmp_path, make_bars, two_nodes):
    (code0, _, err0), (code1, _, err1) = two_nodes([tmp_path / "a", tmp_path / "b"], make_bars(tmp_path / "bars.npz"), tmp_path)
    assert code0 != 0 and code1 != 0
    # One line from aigc on each node (torchrun adds its own report of the failed worker).
    ours1 = [line for line in err1.splitlines() if line.startswith("aigc:")]
    ours0 = [line for line in err0.splitlines() if line.startswith("aigc:")]
    assert len(ours1) == 1 and ours1[0].startswith("aigc: error: rank 1: cannot see run run1 that rank 0 created")
    assert "shared filesystem" in ours1[0]
    assert len(ours0) == 1 and ours0[0].startswith("aigc: error: lost another rank ("), err0
    assert "[rank" not in err0 + err1  # no Python traceback from a rank


@pytest.mark.slow  # the CPU Inception under torchrun (37-69 s)
def test_eval_and_sampling_under_torchrun_give_one_process_results(tmp_path, make_bars, aigc, torchrun):
    """Under torchrun the ranks split the sampling (whole batches of 256) and the Inception
    features (whole batches of --batch-size, a folder's files too) and gather the results: the same images, and the same FID as one process (to 1e-6; here equal)."""
    import shutil

    from aigc_cli.metrics.testing import write_random_weights

    weights = write_random_weights(tmp_path / "random.pth", seed=5)
    data = make_bars(tmp_path / "bars.npz")
    one, two = tmp_path / "one", tmp_path / "two"
    trained = aigc(one, "-q", "train", "gan", "--dataset", data, *GAN, "--epochs", "1")
    assert trained.returncode == 0, trained.stderr
    shutil.copytree(one, two)  # the same run in two stores, so that neither finds the other's feature cache

    sample = ["sample", "run1", "-n", "600", "--seed", "1", "-o"]  # 3 batches: rank 0 draws 1, rank 1 2
    assert aigc(one, "-q", *sample, tmp_path / "one.png").returncode == 0
    result = torchrun(two, 2, "-q", *sample, tmp_path / "two.png")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "one.png").read_bytes() == (tmp_path / "two.png").read_bytes()
    folder = tmp_path / "folder"
    assert aigc(one, "-q", "sample", "run1", "-n", "10", "--seed", "2", "-o", f"{folder}/").returncode == 0

    # 2 batches of 5 on each side (the CPU Inception is slow), one for each rank.
    fid = ["eval", "fid", "run1", folder, "-n", "10", "--batch-size", "5", "--inception-weights", weights, "--json"]
    a = aigc(one, "-q", *fid)
    b = torchrun(two, 2, "-q", *fid)
    assert a.returncode == 0 and b.returncode == 0, (a.stderr, b.stderr)
    fa, fb = json.loads(a.stdout), json.loads(b.stdout)  # rank 0 alone printed: one JSON document
    assert fb["n_a"] == 10 and fb["n_b"] == 10
    assert fb["fid"] == pytest.approx(fa["fid"], rel=1e-6)


# -- without processes -------------------------------------------------------------------------
def test_batch_noise_is_a_slice_of_the_global_batch(monkeypatch):
    import torch

    from aigc_cli.core import distributed

    torch.manual_seed(0)
    whole = torch.randn(8, 3)
    monkeypatch.setattr(distributed, "world", lambda: 4)
    for r in range(4):
        monkeypatch.setattr(distributed, "rank", lambda r=r: r)
        torch.manual_seed(0)
        assert torch.equal(distributed.batch_randn(2, 3), whole[2 * r : 2 * r + 2])


def test_nproc_is_taken_out_of_the_relaunched_command():
    from aigc_cli.cli.train import without_nproc

    assert without_nproc(["train", "gan", "--nproc", "2", "-e", "3"]) == ["train", "gan", "-e", "3"]
    assert without_nproc(["train", "gan", "--nproc=4"]) == ["train", "gan"]


def test_launcher_exit_code_and_message(tmp_path, monkeypatch):
    from aigc_cli.training.launch import SAID_ENV, describe_failures, exit_code, mark_said, not_killed

    assert exit_code([1, 143]) == 143 and exit_code([130]) == 130 and exit_code([-9, 1]) == 1
    assert describe_failures({1: -9, 0: 1}) == "rank 0: exit code 1; rank 1: killed by signal 9"
    assert describe_failures({1: 143, 0: -15}) == "rank 1: stopped by signal 15"  # rank 1 stops quietly
    assert not_killed({0: 1, 1: -15}) and not not_killed({0: 1, 1: -9})
    mark_said()  # outside a launch: nothing
    monkeypatch.setenv(SAID_ENV, str(tmp_path / "said"))
    mark_said()
    assert (tmp_path / "said").exists()


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def _running_run():
    """A run that another process is writing, as the store sees it: created, and its lock held
    by this test process (AIGC_HOME set by the caller)."""
    from aigc_cli.runs.store import create_run

    config = {"family": "gan", "model": {}, "train": {"batch_size": 16}, "dataset": {}}
    return create_run("gan", name="busy", config=config)


@pytest.mark.parametrize("args,words", [
    (["--nproc", "0"], ["--nproc must be at least 1"]),
    (["--batch-size", "15", "--nproc", "2"], ["--batch-size 15 does not split evenly over 2 processes"]),
    # The example: 64 ranks on 2 cores for a batch of 8 started every rank before a check.
    (["--batch-size", "8", "--nproc", "64"], ["--batch-size 8 does not split evenly over 64 processes"]),
    (["--lr", "-1", "--nproc", "2"], ["--lr must be positive"]),
    (["--time", "soon", "--nproc", "2"], ["--time must be a duration"]),
    (["--name", "busy", "--nproc", "2"], ["a run named 'busy' exists already"]),
    (["--dataset", "no-such-set", "--nproc", "2"], ["no dataset 'no-such-set'"]),
    (["--split", "validation", "--nproc", "2"], ["unknown split 'validation'"]),
    (["--batch-size", str(64 * (_cores() + 1)), "--nproc", str(_cores() + 1)],
     [f"--nproc {_cores() + 1} on the CPU needs a core per process", f"may use {_cores()}", "slow"]),
    (["--resume", "busy", "--nproc", "2"], ["run1 is being written by pid"]),
    (["--resume", "nothing", "--nproc", "2"], ["no run 'nothing'"]),
    (["--resume", "busy", "--lr", "1", "--nproc", "2"], ["--resume continues a run as it was configured; drop --lr"]),
])
def test_a_bad_command_is_refused_before_any_rank_starts(args, words, tmp_path, make_bars, clean_error, monkeypatch,
                                                         aigc):
    """One line, and no rank started: a rank that started would be killed where it joins the
    others (AIGC_TEST_FAULT=rank:join:1), and the launcher would say that instead."""
    data = make_bars(tmp_path / "bars.npz")
    home = tmp_path / "home"
    monkeypatch.setenv("AIGC_HOME", str(home))
    busy = _running_run()
    try:
        if args[0].startswith("--resume"):
            command = ["train", "gan", *args]
        else:
            command = ["train", "gan", "--dataset", data, "--arch", "mlp", *args]
        result = aigc(home, "--device", "cpu", *command, AIGC_TEST_FAULT="rank:join:1")
    finally:
        busy.release()
    clean_error(result.returncode, result.stderr, *words)
    assert [p.name for p in (home / "runs").iterdir() if p.name.startswith("run")] == ["run1"]  # only the busy one


@pytest.mark.parametrize("pause,rank,target,signum", [
    # Rank 1 waits before joining, so rank 0 waits for it inside torch's C++ join, where no
    # Python handler runs: a Ctrl-C from the terminal (to every process of the job) ends it there
    # without a word, and the launcher says the line.
    ("rank:join:1", 1, "group", signal.SIGINT),
    # Rank 0 loads the dataset while rank 1 waits for it: SIGTERM to the launcher alone, which
    # forwards it; rank 0 says the line, the launcher nothing.
    ("dataset:load:1", 0, "launcher", signal.SIGTERM),
])
def test_a_signal_while_the_ranks_start_is_one_line(pause, rank, target, signum, tmp_path, make_bars, aigc_env,
                                                     paused):
    data = make_bars(tmp_path / "bars.npz")
    home = tmp_path / "home"
    env = aigc_env(home, AIGC_TEST_PAUSE=pause, AIGC_TEST_PAUSE_DIR=tmp_path, AIGC_TEST_RANK=rank)
    proc = subprocess.Popen([sys.executable, "-m", "aigc_cli", "-q", "train", "gan", "--dataset", str(data), *GAN,
                             "--epochs", "1", "--nproc", "2"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        paused(proc, tmp_path / "paused-1")
        if target == "group":
            os.killpg(proc.pid, signum)
        else:
            os.kill(proc.pid, signum)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    name = "interrupted" if signum == signal.SIGINT else "terminated"
    # Nothing else: no torchrun warning ("Received 2 death signal"), no second rank's line.
    assert err.splitlines() == [f"aigc: aborted: {name} (signal {int(signum)})"], err
    assert proc.returncode == 128 + signum and out == ""
    assert not (home / "runs").exists() or not list((home / "runs").glob("run*"))


def test_nproc_under_torchrun_and_bad_timeout_are_refused(cli, clean_error, monkeypatch, tiny_npz, aigc_home):
    monkeypatch.setenv("WORLD_SIZE", "2")
    code, _, err = cli("train", "gan", "--dataset", tiny_npz, "--nproc", "2")
    clean_error(code, err, "under torchrun, leave it out")
    monkeypatch.setenv("AIGC_DIST_TIMEOUT", "soon")
    for name in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.setenv(name, "0" if "RANK" in name else ("127.0.0.1" if "ADDR" in name else "1"))
    code, _, err = cli("train", "gan", "--dataset", tiny_npz)
    clean_error(code, err, "AIGC_DIST_TIMEOUT must be a number of seconds")


@pytest.mark.slow  # three trainings, one on 2 launched ranks
def test_lora_on_two_processes_computes_what_one_does(tmp_path, aigc, run_rows):
    """A LoRA run on a parent's frozen GPT (issue 29): the adapters' gradients are averaged over
    the ranks, the base is loaded by each; the losses are one process's."""
    from aigc_cli.data.text import CORPORA

    data = tmp_path / "plays.txt"
    data.write_text(CORPORA.get("bard").read(None)[:2320], encoding="utf-8")
    text = FAMILIES["text"] + ["--arch", "gpt"]
    homes = tmp_path / "one", tmp_path / "two"
    for home in homes:
        parent = aigc(home, "-q", "train", "text", "--dataset", data, *text, "--epochs", "1")
        assert parent.returncode == 0, parent.stderr
    args = ["train", "text", "--dataset", data, "--init", "run1", "--lora", "2", "--batch-size", "16", "--seed", "4",
            "--log-every", "1", "--precision", "fp32", "--epochs", "1"]
    one = aigc(homes[0], "-q", *args)
    assert one.returncode == 0, one.stderr
    two = aigc(homes[1], *args, "--nproc", "2")
    assert two.returncode == 0 and two.stdout == "run2\n", two.stderr
    _assert_same_losses(run_rows(homes[0], "run2"), run_rows(homes[1], "run2"))
