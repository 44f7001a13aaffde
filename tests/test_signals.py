"""Exit codes after SIGINT/SIGTERM at every phase of every long command (issue 15, defect 2).

Real ``aigc`` processes; a phase is reached exactly through AIGC_TEST_PAUSE (core/faults.py):
the process writes ``paused-<k>`` at the k-th pause point reached and waits there for a signal.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from safetensors.torch import load_file

# 256 images, batch 16: 16 steps an epoch.
ARGS = ["--arch", "mlp", "--width", "4", "--latent-dim", "8", "--batch-size", "16", "--epochs", "2", "--seed", "3"]
CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}
NAMES = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated"}


def _start(home, args, pause, markers=None):
    """``aigc ARGS`` with AIGC_HOME=home, pausing at ``pause``; markers go to ``markers`` (home)."""
    markers = markers or home
    env = {**os.environ, "AIGC_HOME": str(home), "OMP_NUM_THREADS": "1",
           "AIGC_TEST_PAUSE": pause, "AIGC_TEST_PAUSE_DIR": str(markers)}
    env.pop("AIGC_TEST_FAULT", None)
    markers.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen([sys.executable, "-m", "aigc_cli", *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _signal_at(proc, marker, signum, timeout=120):
    """Wait until the process is paused at ``marker``, then send ``signum``."""
    deadline = time.time() + timeout
    while not marker.exists():
        if proc.poll() is not None or time.time() > deadline:
            out, err = proc.communicate()
            raise AssertionError(f"never reached {marker.name} (exit {proc.returncode}): {err}")
        time.sleep(0.02)
    proc.send_signal(signum)


def _finish(proc, code, *words):
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == code, (proc.returncode, err)
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("aigc: "), err
    for w in words:
        assert w in lines[0], err
    return out


def _resume_completes(home):
    result = subprocess.run([sys.executable, "-m", "aigc_cli", "-q", "train", "gan", "--resume", "run1"],
                            env={**os.environ, "AIGC_HOME": str(home), "OMP_NUM_THREADS": "1"},
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    run = home / "runs" / "run1"
    assert json.loads((run / "run.json").read_text())["status"] == "completed"
    for path in run.glob("*.safetensors"):
        load_file(str(path))


@pytest.fixture(scope="module")
def data(tmp_path_factory, make_bars):
    return make_bars(tmp_path_factory.mktemp("signals") / "bars.npz")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data):
    """A finished one-epoch run to sample, interpolate, export and evaluate."""
    home = tmp_path_factory.mktemp("trained")
    result = subprocess.run([sys.executable, "-m", "aigc_cli", "-q", "train", "gan", "--dataset", str(data),
                             *ARGS[:-4], "--epochs", "1"], env={**os.environ, "AIGC_HOME": str(home)},
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return home


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_while_the_program_loads(tmp_path, signum):
    """Before the CLI has loaded (``start``: the first line of python -m aigc_cli, what every rank
    of a launch runs): Python's own handling printed a KeyboardInterrupt traceback for SIGINT,
    and ended without a word for SIGTERM."""
    proc = _start(tmp_path, ["runs", "list"], "start:1")
    _signal_at(proc, tmp_path / "paused-1", signum)
    _finish(proc, CODES[signum], f"aigc: aborted: {NAMES[signum]} (signal {int(signum)})")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_while_the_dataset_loads(tmp_path, data, signum):
    proc = _start(tmp_path, ["-q", "train", "gan", "--dataset", data, *ARGS], "dataset:load:1")
    _signal_at(proc, tmp_path / "paused-1", signum)
    _finish(proc, CODES[signum], f"aigc: aborted: {NAMES[signum]} (signal {int(signum)})")
    assert not [p for p in (tmp_path / "runs").glob("run*")]  # no run was created


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_mid_training_saves_and_resumes(tmp_path, data, signum):
    proc = _start(tmp_path, ["-q", "train", "gan", "--dataset", data, *ARGS], "step:3")
    _signal_at(proc, tmp_path / "paused-1", signum)
    _finish(proc, CODES[signum], "aigc: interrupted: run1 stopped at step 3;", "--resume run1")
    assert json.loads((tmp_path / "runs/run1/run.json").read_text())["status"] == "interrupted"
    _resume_completes(tmp_path)


@pytest.mark.parametrize("second", [signal.SIGINT, signal.SIGTERM])
def test_a_second_signal_during_the_save_finishes_the_save(tmp_path, data, second):
    # The first Ctrl-C asks for a stop after step 3; the second lands inside the checkpoint write.
    pause = "step:3,write:checkpoint.safetensors:written:1"
    proc = _start(tmp_path, ["-q", "train", "gan", "--dataset", data, *ARGS], pause)
    _signal_at(proc, tmp_path / "paused-1", signal.SIGINT)
    _signal_at(proc, tmp_path / "paused-2", second)
    _finish(proc, 130, "run1 stopped at step 3;")
    run = tmp_path / "runs" / "run1"
    assert json.loads((run / "run.json").read_text())["step"] == 3  # the save was finished
    assert not [p for p in run.rglob(".*") if p.name != ".lock"]  # no temp file left
    _resume_completes(tmp_path)


def test_a_signal_during_an_epoch_save_stops_after_it(tmp_path, data):
    # No stop asked before: the save of epoch 1 is finished, then the training stops at once.
    proc = _start(tmp_path, ["-q", "train", "gan", "--dataset", data, *ARGS], "write:checkpoint.safetensors:written:1")
    _signal_at(proc, tmp_path / "paused-1", signal.SIGTERM)
    _finish(proc, 143, "run1 stopped at step 17;")  # the first step after the save of epoch 1
    _resume_completes(tmp_path)


COMMANDS = {
    "sample": ["sample", "run1", "-n", "4", "-o", "{out}/grid.png"],
    "interpolate": ["interpolate", "run1", "--from-seed", "1", "--to-seed", "2", "--frames", "3", "-o", "{out}/i.png"],
    "export": ["export", "onnx", "run1", "-o", "{out}/m.onnx"],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_in_commands_that_use_a_run(tmp_path, trained, command, signum):
    markers = tmp_path / "markers"
    args = [a.replace("{out}", str(tmp_path)) for a in COMMANDS[command]]
    proc = _start(trained, ["-q", *args], "generator:loaded:1", markers)
    _signal_at(proc, markers / "paused-1", signum)
    _finish(proc, CODES[signum], "aborted")
    assert not [p for p in tmp_path.iterdir() if p.is_file()]  # nothing written, not even half


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_in_eval(tmp_path, data, signum):
    weights = tmp_path / "dummy.pth"
    weights.write_bytes(b"never read")
    proc = _start(tmp_path / "home", ["eval", "fid", data, data, "--inception-weights", weights], "dataset:load:1")
    _signal_at(proc, tmp_path / "home" / "paused-1", signum)
    _finish(proc, CODES[signum], "aborted")
