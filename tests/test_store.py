"""Run store: ids, names, 'last', concurrency, status, removal; atomic writes."""

import json
import multiprocessing as mp
import os

import pytest

from aigc_cli.core.errors import RunError
from aigc_cli.core.io import atomic_write_bytes, atomic_write_json
from aigc_cli.core.paths import runs_root
from aigc_cli.runs.store import create_run, list_runs, remove_run, resolve_run


def test_sequential_ids_names_and_last(aigc_home):
    a = create_run("gan")
    b = create_run("gan", name="cats")
    assert (a.id, b.id) == ("run1", "run2")
    assert a.path == aigc_home / "runs" / "run1"
    assert resolve_run("last") == b
    assert resolve_run("cats") == b
    assert resolve_run("1") == a
    assert resolve_run("run1") == a
    meta = b.read_meta()
    assert meta["name"] == "cats" and meta["family"] == "gan" and meta["status"] == "running"
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
    queue.put([create_run("gan").id for _ in range(count)])


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


def test_dead_running_process_reads_as_interrupted(aigc_home):
    run = create_run("gan")
    meta = json.loads(run.meta_path.read_text())
    meta["pid"] = 2**22 + 12345  # no such process
    run.meta_path.write_text(json.dumps(meta))
    assert run.read_meta()["status"] == "interrupted"


def test_remove(aigc_home):
    run = create_run("gan")
    remove_run(run)
    assert not run.path.exists()
    assert list_runs() == []
    assert [p.name for p in runs_root().iterdir()] == []


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
