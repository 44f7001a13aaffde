"""Run store: ids, names, 'last', concurrency, status, removal; atomic writes."""

import json
import multiprocessing as mp
import os
import signal
import time

import pytest

from aigc_cli.core.errors import RunError
from aigc_cli.core.io import atomic_write_bytes, atomic_write_json
from aigc_cli.core.paths import runs_root
from aigc_cli.runs.store import create_run, list_runs, lock_run, remove_run, resolve_run


def test_sequential_ids_names_and_last(aigc_home):
    a = create_run("gan")
    b = create_run("gan", name="cats")
    a.release(), b.release()
    assert (a.id, b.id) == ("run1", "run2")
    assert a.path == aigc_home / "runs" / "run1"
    assert resolve_run("last") == b
    assert resolve_run("cats") == b
    assert resolve_run("1") == a
    assert resolve_run("run1") == a
    meta = b.read_meta()
    assert meta["name"] == "cats" and meta["family"] == "gan"
    with pytest.raises(RunError, match="exists already"):
        create_run("gan", name="cats")
    with pytest.raises(RunError, match="no run 'dogs'"):
        resolve_run("dogs")


@pytest.mark.parametrize("bad", ["last", "run7", "a b", "", "-x", "x" * 65])
def test_invalid_names(aigc_home, bad):
    with pytest.raises(RunError):
        create_run("gan", name=bad)


def test_last_without_runs(aigc_home):
    with pytest.raises(RunError, match="no runs yet"):
        resolve_run("last")


def _make_runs(home, count, queue):
    os.environ["AIGC_HOME"] = str(home)
    ids = []
    for _ in range(count):
        run = create_run("gan")
        run.release()
        ids.append(run.id)
    queue.put(ids)


def test_concurrent_creation_never_shares_a_folder(aigc_home):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_make_runs, args=(aigc_home, 6, queue)) for _ in range(3)]
    for p in procs:
        p.start()
    ids = [i for _ in procs for i in queue.get(timeout=60)]
    for p in procs:
        p.join()
    assert len(ids) == 18 and len(set(ids)) == 18
    assert len(list_runs()) == 18


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "a.json"
    atomic_write_json(target, {"v": 1})

    class Boom(Exception):
        pass

    from aigc_cli.core.io import atomic_path

    with pytest.raises(Boom):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise Boom
    assert json.loads(target.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]  # no temp file left behind
    atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"new"
    assert oct(target.stat().st_mode & 0o777) != oct(0o600)  # follows the umask like a normal file


# -- one writer per run, ids never reused (issue 15) ---------------------------------------------
def _hold_run_then_die(home, ready, how):
    """A child process: create a run (its lock held), say so, then die without a word."""
    os.environ["AIGC_HOME"] = str(home)
    run = create_run("gan", epochs=2)
    if how == "finished":  # killed after its last save, before it could say 'completed'
        run.update_meta(epoch=2)
    ready.set()
    time.sleep(60)


def _child(home, how):
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    proc = ctx.Process(target=_hold_run_then_die, args=(home, ready, how))
    proc.start()
    assert ready.wait(60)
    return proc


@pytest.mark.parametrize("how,status", [("midway", "interrupted"), ("finished", "completed")])
def test_status_running_means_the_lock_is_held(aigc_home, how, status):
    proc = _child(aigc_home, how)
    run = resolve_run("run1")
    assert run.read_meta()["status"] == "running"
    assert run.writer()["pid"] == proc.pid
    with pytest.raises(RunError, match=f"run1 is being written by pid {proc.pid} on "):
        lock_run(run, wait=0.1)
    with pytest.raises(RunError, match="being written by pid"):
        remove_run(run)
    os.kill(proc.pid, signal.SIGKILL)  # the kernel frees the lock: no stale 'running'
    proc.join()
    assert run.read_meta()["status"] == status and run.writer() is None
    held = lock_run(run)
    assert held.writer()["pid"] == os.getpid()
    held.release()


def _new(**kw):
    run = create_run("gan", **kw)
    run.release()
    return run


def test_ids_are_never_reused(aigc_home):
    for _ in range(3):
        _new()
    remove_run(resolve_run("run3"))
    remove_run(resolve_run("run2"))
    assert _new().id == "run4"
    for run in list_runs():
        remove_run(run)
    assert _new().id == "run5"
    (runs_root() / ".next-id").write_text("garbage")  # a damaged counter: the folders still tell
    assert _new().id == "run6"


def _start_named(home, barrier, queue):
    os.environ["AIGC_HOME"] = str(home)
    barrier.wait()
    try:
        queue.put(create_run("gan", name="twin").id)
    except RunError as e:
        queue.put(str(e))


def test_same_name_at_the_same_instant_goes_to_one_run(aigc_home):
    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(4), ctx.Queue()
    procs = [ctx.Process(target=_start_named, args=(aigc_home, barrier, queue)) for _ in range(4)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=60) for _ in procs]
    for p in procs:
        p.join()
    assert sum(r.startswith("run") for r in results) == 1, results
    assert sum("exists already" in r for r in results) == 3
    assert [r.read_meta()["name"] for r in list_runs()] == ["twin"]


@pytest.mark.parametrize("content,why", [
    (b"[1, 2]", "holds list"),
    (b"null", "holds NoneType"),
    (b"\xff\xfe{}", "not UTF-8"),
    (b"{\"status\": ", "not valid JSON"),
    (b"{\"status\": \"running\", \"epoch\": \"2\"}", "bad 'epoch'"),
    (b"{\"status\": \"dancing\"}", "unknown status"),
])
def test_a_broken_run_json_breaks_only_its_run(aigc_home, content, why):
    good = create_run("gan", name="good")
    bad = create_run("gan")
    good.release(), bad.release()
    bad.meta_path.write_bytes(content)
    meta = bad.read_meta()
    assert meta["status"] == "broken" and why in meta["error"]
    assert [r.read_meta()["status"] for r in list_runs()] == ["interrupted", "broken"]
    assert resolve_run("good") == good  # name lookups read every run.json
    create_run("gan", name="other").release()
    remove_run(bad)
    assert [r.id for r in list_runs()] == ["run1", "run3"]


def test_bad_names_use_the_whole_string(aigc_home):
    with pytest.raises(RunError, match="invalid run name"):
        create_run("gan", name="cats\n")


def test_atomic_writes_do_not_recreate_a_removed_folder(tmp_path):
    gone = tmp_path / "run1"
    with pytest.raises(FileNotFoundError):
        atomic_write_json(gone / "run.json", {"status": "running"})
    assert not gone.exists()
    atomic_write_json(gone / "x.json", {}, parents=True)  # only when asked
    assert (gone / "x.json").exists()


def test_atomic_writes_follow_the_umask_without_touching_it(tmp_path, monkeypatch):
    import torch

    from aigc_cli.runs.checkpoint import save_weights

    monkeypatch.setattr(os, "umask", lambda *a: pytest.fail("os.umask called: racy with other threads"))
    atomic_write_bytes(tmp_path / "a.bin", b"x")
    save_weights(tmp_path / "model.safetensors", {"m": torch.nn.Linear(2, 2)})
    mask = _current_umask()
    for name in ("a.bin", "model.safetensors"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~mask, name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "model.safetensors"]


def _current_umask():
    with open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith("Umask:")).split()[1], 8)


def test_crash_leftovers_are_cleaned_by_the_next_create(aigc_home):
    run = create_run("gan")
    run.release()
    leftovers = [run.path / ".checkpoint.safetensors.1234abcd.tmp", run.path / ".tmpAb12Cd",
                 run.samples_dir / ".samples_epoch001.png.deadbeef.tmp", runs_root() / ".next-id.0000aaaa.tmp"]
    for p in leftovers:
        p.write_bytes(b"half")
    (runs_root() / ".trash-run9-1").mkdir()
    (runs_root() / ".trash-run9-1" / "model.safetensors").write_bytes(b"x")
    (runs_root() / ".creating-abc").mkdir()
    busy = create_run("gan")  # held: its temp files belong to a live write
    busy_tmp = busy.path / ".run.json.0badc0de.tmp"
    busy_tmp.write_bytes(b"in progress")
    _new()
    assert not any(p.exists() for p in leftovers)
    assert sorted(p.name for p in runs_root().iterdir() if p.name.startswith(".") and p.is_dir()) == []
    assert busy_tmp.exists()
    busy.release()
    assert busy.id == "run10"  # run9 was used once (its trash said so): never again


def test_a_broken_run_lists_without_none(aigc_home, cli):
    create_run("gan", epochs=3).release()
    broken = create_run("gan")
    broken.release()
    broken.meta_path.write_bytes(b"null")
    code, out, _ = cli("runs", "list")  # the table is the result: on stdout
    out = out.decode()
    assert code == 0
    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[1:-1]] for line in out.splitlines()
            if line.startswith("│")}
    assert rows["run1"][4] == "0/3" and rows["run2"][3:5] == ["broken", "-"]  # was "None/None"
    assert "None" not in out
