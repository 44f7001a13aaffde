"""Every file the tool reads back from a run is checked: a bad one affects only its own run, with
a one-line error naming the file (issue 15)."""

import json
import re

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file


@pytest.fixture
def trained(aigc_home, cli, tiny_npz, tiny_gan):
    """run1: a tiny GAN trained one epoch (completed, with a checkpoint)."""
    code, _, err = cli("train", "gan", "--dataset", tiny_npz, *tiny_gan, "--epochs", "1", "--seed", "0")
    assert code == 0, err
    return aigc_home / "runs" / "run1"


def _rewrite(path, change_tensors=None, change_meta=None):
    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata())
    tensors = load_file(str(path))
    if change_tensors:
        change_tensors(tensors)
    if change_meta:
        change_meta(meta)
    save_file(tensors, str(path), metadata=meta)


def _first_float(tensors, prefix):
    return next(v for k, v in tensors.items() if k.startswith(prefix) and v.is_floating_point())


def _status(run):
    return json.loads((run / "run.json").read_text())["status"]


def test_damaged_metrics_lines_are_skipped(trained, cli):
    with open(trained / "metrics.jsonl", "ab") as f:
        f.write(b"\xff\xfe\x00binary\n[1, 2]\n{\"step\": \"7\"}\n")
    code, out, err = cli("runs", "show", "run1", "--json")
    assert code == 0, err
    assert json.loads(out)["last_metrics"]["step"] == 16
    code, _, err = cli("train", "gan", "--resume", "run1", "--epochs", "2")
    assert code == 0, err
    rows = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [16, 20, 32]  # the damage is gone, the good rows stayed


@pytest.mark.parametrize("damage,words", [
    (dict(change_meta=lambda m: m.pop("optim")), ["checkpoint.safetensors", "lacks 'optim'"]),
    (dict(change_meta=lambda m: m.update(state="[1]")), ["checkpoint.safetensors", "'state'", "not an object"]),
    (dict(change_meta=lambda m: m.update(state='{"epoch": -1, "step": 0, "step_in_epoch": 0}')),
     ["checkpoint.safetensors", "bad 'epoch'"]),
    (dict(change_tensors=lambda t: _first_float(t, "model.G.").fill_(float("nan"))),
     ["checkpoint.safetensors", "non-finite"]),
    (dict(change_tensors=lambda t: _first_float(t, "optim.").fill_(float("inf"))),
     ["checkpoint.safetensors", "optimizer", "non-finite"]),
    (dict(change_tensors=lambda t: t.update({k: v.to(torch.float64) for k, v in t.items()
                                                         if k.startswith("model.D.") and v.is_floating_point()})),
     ["checkpoint.safetensors", "float64, expected float32"]),
])
def test_a_bad_checkpoint_is_refused_and_changes_nothing(trained, cli, clean_error, damage, words):
    _rewrite(trained / "checkpoint.safetensors", **damage)
    config_before = (trained / "config.json").read_bytes()
    meta_before = json.loads((trained / "run.json").read_text())
    code, _, err = cli("train", "gan", "--resume", "run1", "--epochs", "3")
    clean_error(code, err, *words)
    assert (trained / "config.json").read_bytes() == config_before  # a failed resume rewrites nothing
    meta = json.loads((trained / "run.json").read_text())
    assert meta["status"] == meta_before["status"] == "completed" and meta["epochs"] == 1


@pytest.mark.parametrize("damage,words", [
    (lambda t: _first_float(t, "").fill_(float("nan")), ["model.safetensors", "non-finite"]),
    (lambda t: t.update({k: (v * 100).to(torch.int8) for k, v in t.items()}), ["model.safetensors", "int8, expected float32"]),
])
def test_bad_weights_are_refused_not_drawn(trained, cli, clean_error, tmp_path, damage, words):
    _rewrite(trained / "model.safetensors", change_tensors=damage)
    code, _, err = cli("sample", "run1", "-n", "4", "-o", tmp_path / "grid.png")
    clean_error(code, err, *words)
    assert not (tmp_path / "grid.png").exists()


def test_a_run_with_a_corrupt_config_is_shown_and_removable(trained, cli, clean_error, tiny_npz, tiny_gan):
    assert cli("train", "gan", "--dataset", tiny_npz, *tiny_gan, "--epochs", "1", "--name", "ok")[0] == 0
    good_config = (trained / "config.json").read_bytes()
    (trained / "config.json").write_bytes(b"\x00\x01 not json")
    code, out, err = cli("runs", "show", "run1", "--json")
    assert code == 0, err
    assert "config.json is corrupt" in json.loads(out)["error"]
    code, _, err = cli("sample", "run1", "-n", "2", "-o", str(trained.parent / "x.png"))
    clean_error(code, err, "run1: config.json is corrupt")
    (trained / "config.json").write_bytes(good_config)
    (trained / "run.json").write_bytes(b"null")
    code, out, _ = cli("runs", "list", "--json")
    assert code == 0 and [r["status"] for r in json.loads(out)] == ["broken", "completed"]
    code, _, err = cli("train", "gan", "--resume", "run1")
    clean_error(code, err, "run1 is broken", "aigc runs rm run1")
    assert cli("sample", "ok", "-n", "2", "-o", str(trained.parent / "ok.png"))[0] == 0  # others unaffected
    assert cli("runs", "rm", "run1")[0] == 0
    assert not trained.exists()


def test_killed_after_its_last_save_reads_as_completed(trained, cli):
    meta = json.loads((trained / "run.json").read_text())
    meta["status"] = "running"  # what a SIGKILL between the last save and 'completed' leaves
    (trained / "run.json").write_text(json.dumps(meta))
    code, out, _ = cli("runs", "list", "--json")
    assert json.loads(out)[0]["status"] == "completed"
    code, out, err = cli("train", "gan", "--resume", "run1", "--json")
    assert code == 0, err
    assert _status(trained) == "completed" and json.loads(out)["step"] == 16


def _saved_epoch(run):
    with safe_open(str(run / "checkpoint.safetensors"), framework="pt") as f:
        return json.loads(f.metadata()["state"])["epoch"]


def _warnings(err):
    """Each preview warning in ``err`` as one line (rich wraps long lines at the console's 80 columns)."""
    return re.findall(r"warning: .*?training goes on", " ".join(err.split()))


def test_a_samples_file_is_a_warning_and_every_epoch_is_kept(trained, cli):
    # Before: the resume trained to the end of the epoch, failed on the preview, and lost the epoch.
    (trained / "samples").rename(trained / "old-samples")
    (trained / "samples").write_bytes(b"not a folder")
    code, out, err = cli("train", "gan", "--resume", "run1", "--epochs", "2", "--json")
    assert code == 0, err
    assert _warnings(err) == ["warning: run1: samples_epoch002.png was not written: run1/samples is a file, not a "
                              "folder (move it away to get previews again); training goes on"], err
    assert _status(trained) == "completed" and json.loads(out)["step"] == 32
    assert _saved_epoch(trained) == 2  # the epoch whose preview failed is saved
    assert (trained / "samples").read_bytes() == b"not a folder"  # left as it was


def test_a_full_disk_costs_the_preview_not_the_epoch(trained, cli, monkeypatch):
    import errno

    from aigc_cli.training import loop

    def full(path, data, parents=False):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(loop, "atomic_write_bytes", full)  # the previews' writes, not the checkpoint's
    code, _, err = cli("train", "gan", "--resume", "run1", "--epochs", "2")
    assert code == 0, err
    assert _warnings(err) == ["warning: run1: samples_epoch002.png was not written: No space left on device; "
                              "training goes on"]
    assert _status(trained) == "completed" and _saved_epoch(trained) == 2
    assert json.loads((trained / "run.json").read_text())["step"] == 32


def test_a_lock_folder_is_named_and_the_run_stays_removable(trained, cli, clean_error):
    # Before: a raw IsADirectoryError.
    (trained / ".lock").unlink()
    (trained / ".lock").mkdir()
    code, _, err = cli("train", "gan", "--resume", "run1")
    clean_error(code, err, "run1/.lock is a folder, not a lock file: remove it (rm -r ", ".lock) and try again")
    code, out, _ = cli("runs", "list", "--json")
    assert code == 0 and json.loads(out)[0]["status"] == "completed"
    assert cli("runs", "rm", "run1")[0] == 0  # nobody can hold a folder as a lock: nothing to wait for
    assert not trained.exists()


def test_a_store_lock_folder_is_named(aigc_home, cli, clean_error, tiny_npz, tiny_gan):
    (aigc_home / "runs").mkdir(parents=True)
    (aigc_home / "runs" / ".store.lock").mkdir()
    code, _, err = cli("train", "gan", "--dataset", tiny_npz, *tiny_gan, "--epochs", "1")
    clean_error(code, err, "runs/.store.lock is a folder, not a lock file: remove it")
    assert not list((aigc_home / "runs").glob("run*"))


def test_the_checkpoint_is_saved_before_the_previews(trained, cli, monkeypatch):
    from aigc_cli.models.gan.family import GanTask

    def broken(self):
        raise RuntimeError("a preview that fails for a reason other than the disk")

    monkeypatch.setattr(GanTask, "previews", broken)
    code, _, err = cli("train", "gan", "--resume", "run1", "--epochs", "2")
    assert code == 1 and "a preview that fails" in err
    assert _saved_epoch(trained) == 2  # before: 1, the second epoch lost with its preview
