"""The decoded cache of image folders, and prepared datasets (aigc datasets prepare/list/info/rm)."""

import errno
import json
import os
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from aigc_cli.data import cache, folder, load_dataset


def make_folder(path, n=4, size=(20, 14)):
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (path / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path / c / f"{i}.png")
    return path


@pytest.fixture
def decodes(monkeypatch):
    """How many times a folder was decoded (load_folder called)."""
    calls = []
    real = folder.load_folder

    def counting(*a, **kw):
        calls.append(a[0])
        return real(*a, **kw)

    monkeypatch.setattr(folder, "load_folder", counting)
    return calls


def entries():
    return sorted(p.name for p in cache.root().glob("*")) if cache.root().exists() else []


def test_second_load_maps_the_cache(tmp_path, aigc_home, decodes):
    photos = make_folder(tmp_path / "photos")
    first = load_dataset(str(photos), resolution=8)
    assert len(decodes) == 1 and len([e for e in entries() if e.endswith(".npy")]) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a read-only memmap given to torch would warn here
        second = load_dataset(str(photos), resolution=8)
        batch = second.images[torch.tensor([3, 0, 5])]  # how DatasetEpochs takes a batch: a copy of rows
    assert len(decodes) == 1  # not decoded again
    assert torch.equal(first.images, second.images) and torch.equal(first.labels, second.labels)
    assert torch.equal(batch, first.images[[3, 0, 5]])
    assert second.classes == ["a", "b"] and second.resolution == 8 and second.spec == first.spec
    # the fingerprint is today's: the same as a decode with no cache at all, and recomputed alike
    plain = folder.load_folder(photos, resolution=8)
    assert second.fingerprint == first.fingerprint == plain.fingerprint
    second._fingerprint = None
    assert second.fingerprint == plain.fingerprint
    # memory-mapped, copy-on-write: writing to the tensor never reaches the file
    second.images[0] = 0
    assert torch.equal(load_dataset(str(photos), resolution=8).images, first.images)
    # another resolution is another entry
    load_dataset(str(photos), resolution=4)
    assert len(decodes) == 3  # the first load, the plain decode above, and this one


@pytest.mark.parametrize("change", ["touch", "add", "remove", "rewrite"])
def test_a_changed_folder_is_decoded_again(tmp_path, aigc_home, decodes, change):
    photos = make_folder(tmp_path / "photos")
    before = load_dataset(str(photos))
    target = photos / "a" / "0.png"
    if change == "touch":
        st = target.stat()
        os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    elif change == "add":
        Image.new("RGB", (20, 14), (9, 9, 9)).save(photos / "b" / "new.png")
    elif change == "remove":
        target.unlink()
    else:
        Image.new("RGB", (20, 14), (1, 2, 3)).save(target)
    after = load_dataset(str(photos))
    assert len(decodes) == 2
    if change != "touch":
        assert after.fingerprint != before.fingerprint
    load_dataset(str(photos))
    assert len(decodes) == 2  # and cached again
    assert len([e for e in entries() if e.endswith(".npy")]) == 1  # the old listing's entry is gone
    assert after.mapped and torch.equal(after.images, folder.load_folder(photos).images)  # trains from the map


def test_prune_keeps_prepared_entries_and_young_temporary_files(tmp_path, aigc_home, cli):
    import time

    prepared, loose = make_folder(tmp_path / "kept"), make_folder(tmp_path / "loose", size=(10, 10))
    assert cli("datasets", "prepare", prepared, "--name", "kept")[0] == 0
    load_dataset(str(loose))
    load_dataset(str(loose), resolution=4)
    old, young = cache.root() / ".x.npy.0a1b2c3d.tmp", cache.root() / ".y.npy.0a1b2c3d.tmp"
    old.write_bytes(b"0" * 100)
    young.write_bytes(b"0" * 100)
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    assert len([e for e in entries() if e.endswith(".npy")]) == 3
    code, out, err = cli("datasets", "prune", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["entries"] == 2 and result["bytes"] > 100
    assert not old.exists() and young.exists()
    assert len([e for e in entries() if e.endswith(".npy")]) == 1
    assert cli("datasets", "info", "kept")[0] == 0  # the prepared one still loads, not decoded again
    assert cli("datasets", "prune", "--json")[1] and json.loads(cli("datasets", "prune", "--json")[1])["entries"] == 0


def _npy():
    return next(cache.root().glob("*.npy"))


@pytest.mark.parametrize("damage", ["truncate", "grow", "header", "pixel", "no-header"])
def test_a_damaged_entry_is_decoded_again(tmp_path, aigc_home, decodes, damage):
    photos = make_folder(tmp_path / "photos")
    first = load_dataset(str(photos))
    pixels = first.images.clone()  # ``first`` maps the entry this test damages: its pixels as decoded
    npy = _npy()
    head = npy.with_suffix(".json")
    if damage == "truncate":
        os.truncate(npy, npy.stat().st_size - 7)
    elif damage == "grow":
        with open(npy, "ab") as f:
            f.write(b"\0")
    elif damage == "header":  # edited by hand: the header's checksum no longer matches
        h = json.loads(head.read_text())
        h["shape"][0] -= 1
        head.write_text(json.dumps(h))
    elif damage == "pixel":  # the same size, one byte changed: caught by the pixel hash (small entries)
        with open(npy, "r+b") as f:
            f.seek(-1, 2)
            b = f.read(1)
            f.seek(-1, 2)
            f.write(bytes([b[0] ^ 0xFF]))
    else:
        head.unlink()
    again = load_dataset(str(photos))
    assert len(decodes) == 2
    assert torch.equal(again.images, pixels) and again.fingerprint == first.fingerprint
    load_dataset(str(photos))
    assert len(decodes) == 2  # the entry was written anew


def test_prepare_list_info_train_rm(tmp_path, aigc_home, cli, clean_error):
    photos = make_folder(tmp_path / "photos")
    code, out, err = cli("datasets", "prepare", photos, "--resolution", "8", "--name", "cats", "--json")
    assert code == 0, err
    prepared = json.loads(out)
    assert prepared["size"] == 8 and prepared["shape"] == [3, 8, 8] and prepared["cache"].endswith(".npy")
    code, out, _ = cli("datasets", "list", "--json")
    rows = {r["name"]: r for r in json.loads(out)}
    assert rows["cats"]["status"] == "prepared" and rows["cats"]["resolution"] == 8 and "mnist" in rows
    code, out, _ = cli("datasets", "info", "cats", "--json")
    info = json.loads(out)
    assert code == 0 and info["fingerprint"] == prepared["fingerprint"] and info["cache"] == prepared["cache"]
    assert info["spec"] == {"spec": "cats", "split": "train", "resolution": 8}
    code, out, _ = cli("info", "--json")
    assert json.loads(out)["dataset_cache_bytes"] >= os.path.getsize(prepared["cache"])
    code, _, err = cli("train", "gan", "--dataset", "cats", "--epochs", "1", "--batch-size", "4")
    assert code == 0, err
    code, _, err = cli("datasets", "info", "cats", "--resolution", "16")
    clean_error(code, err, "prepared at --resolution 8")
    code, _, err = cli("datasets", "rm", "cats")
    assert code == 0 and not os.path.exists(prepared["cache"])
    code, _, err = cli("datasets", "rm", "cats")
    clean_error(code, err, "no prepared dataset 'cats'")
    code, _, err = cli("datasets", "info", "cats")
    clean_error(code, err, "no dataset 'cats'")


def test_preparing_a_name_again_replaces_its_entry(tmp_path, aigc_home, cli):
    photos = make_folder(tmp_path / "photos")
    assert cli("-q", "datasets", "prepare", photos, "--name", "cats", "--resolution", "8")[0] == 0
    first = {p.name for p in cache.root().glob("*.npy")}
    assert cli("-q", "datasets", "prepare", photos, "--name", "cats", "--resolution", "4")[0] == 0
    now = {p.name for p in cache.root().glob("*.npy")}
    assert len(now) == 1 and now != first and load_dataset("cats").shape == (3, 4, 4)


def test_a_prepared_dataset_whose_cache_is_damaged_is_decoded_again(tmp_path, aigc_home, cli, decodes):
    photos = make_folder(tmp_path / "photos")
    assert cli("datasets", "prepare", photos, "--name", "cats")[0] == 0
    os.truncate(_npy(), 100)
    ds = load_dataset("cats")
    assert len(decodes) == 2 and len(ds) == 8


@pytest.mark.parametrize("name, words", [("mnist", "built-in dataset name"), ("shapes", "built-in"),
                                         ("../x", "bad dataset name")])
def test_a_name_that_shadows_or_is_not_a_name_is_refused(tmp_path, aigc_home, cli, clean_error, name, words):
    photos = make_folder(tmp_path / "photos", n=1)
    code, _, err = cli("-q", "datasets", "prepare", photos, "--name", name)
    clean_error(code, err, words)
    assert entries() == []


def test_prepare_a_missing_folder(tmp_path, aigc_home, cli, clean_error):
    code, _, err = cli("datasets", "prepare", tmp_path / "nothing", "--name", "cats")
    clean_error(code, err, "prepare takes a folder")


def test_disk_full_during_prepare_leaves_nothing(tmp_path, aigc_home, cli, clean_error, monkeypatch):
    photos = make_folder(tmp_path / "photos")

    def full(f, flat):
        f.write(flat[: flat.size // 2].tobytes())
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(cache, "_write_pixels", full)
    code, _, err = cli("-q", "datasets", "prepare", photos, "--name", "cats")
    clean_error(code, err, "No space left on device", "free space")
    assert entries() == []  # no .npy, no temporary file, no header, no registry
    assert cache.registry() == {}
    # an ordinary load in the same state still gets its (decoded) pixels: the cache is only a cache
    assert len(load_dataset(str(photos))) == 8


def test_eval_and_preflight_take_a_prepared_name(tmp_path, aigc_home, cli):
    from aigc_cli.metrics.sides import resolve_side
    from aigc_cli.training.preflight import check_dataset

    photos = make_folder(tmp_path / "photos")
    assert cli("-q", "datasets", "prepare", photos, "--name", "cats", "--resolution", "8")[0] == 0
    side = resolve_side("cats")
    assert side.kind == "dataset" and side.n == 8 and side.fingerprint == load_dataset("cats").fingerprint
    check_dataset("images", "cats", "train")  # no error


def test_a_run_resumes_on_the_mapped_cache(tmp_path, aigc_home, cli, decodes):
    """The first invocation decodes the folder; the resume maps the cache, and its fingerprint
    check (the run's dataset has not changed) passes."""
    photos = make_folder(tmp_path / "photos")
    args = ("-q", "train", "gan", "--dataset", photos, "--resolution", "8", "--batch-size", "4")
    code, _, err = cli(*args, "--epochs", "1")
    assert code == 0, err
    code, _, err = cli("-q", "train", "gan", "--resume", "last", "--epochs", "2")
    assert code == 0, err
    assert len(decodes) == 1


def test_a_gray_folder_with_holes_maps_what_memory_decodes(tmp_path, aigc_home):
    photos = tmp_path / "gray"
    photos.mkdir()
    rng = np.random.default_rng(3)
    for i in range(9):
        Image.fromarray(rng.integers(0, 255, (12, 10), dtype=np.uint8)).save(photos / f"{i}.png")
    (photos / "4.png").write_bytes((photos / "4.png").read_bytes()[:40])  # truncated: skipped, a hole in the rows
    mapped, plain = load_dataset(str(photos)), folder.load_folder(photos)
    assert mapped.mapped and mapped.shape == (1, 12, 10) and len(mapped) == 8 and mapped.skipped == 1
    assert torch.equal(mapped.images, plain.images) and mapped.fingerprint == plain.fingerprint


def _peak_rss(env, *args) -> int:
    """Peak resident bytes of ``aigc ARGS`` alone: a fresh parent's RUSAGE_CHILDREN has one child."""
    import subprocess
    import sys

    measure = ("import resource, subprocess, sys; done = subprocess.run(sys.argv[1:]); "
               "print(done.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)")
    out = subprocess.run([sys.executable, "-c", measure, sys.executable, "-m", "aigc_cli", "-q", *map(str, args)],
                         env=env, capture_output=True, text=True, timeout=300)
    code, peak = out.stdout.split()
    assert code == "0", out.stderr
    return int(peak)


@pytest.mark.slow  # 1,200 images decoded in a process (10-20 s on 2 busy cores)
def test_prepare_decodes_a_folder_in_constant_memory(tmp_path, aigc_env):
    def folder_of(path, n):
        path.mkdir()
        for i in range(n):  # 512 px solid colours: tiny files, 192 KB each once decoded at 256
            Image.new("RGB", (512, 512), (i % 256, (7 * i) % 256, 99)).save(path / f"{i:04d}.png")
        return path

    small, big = folder_of(tmp_path / "small", 8), folder_of(tmp_path / "big", 1200)
    env = aigc_env(tmp_path / "home")
    base = _peak_rss(env, "datasets", "prepare", small, "--name", "small", "--resolution", "256")
    peak = _peak_rss(env, "datasets", "prepare", big, "--name", "big", "--resolution", "256")
    pixels = 1200 * 3 * 256 * 256  # 236 MB: held whole in memory (twice, before the rows were streamed)
    assert peak - base < 0.4 * pixels, (base, peak, pixels)


def test_the_map_is_advised_random(tmp_path, aigc_home):
    """Batches are random rows: the kernel's read-around would read megabytes for each
    (docs/benchmarks/datasets.md); smaps' VmFlags say 'rr' for a mapping advised MADV_RANDOM."""
    from pathlib import Path

    photos = make_folder(tmp_path / "photos")
    ds = load_dataset(str(photos))
    assert ds.mapped
    name = _npy().name
    flags, inside = [], False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()
        if head and "-" in head[0] and len(head) >= 5:
            inside = line.rstrip().endswith(name)
        elif inside and head[:1] == ["VmFlags:"]:
            flags.append(head[1:])
    assert flags and all("rr" in f for f in flags), flags
