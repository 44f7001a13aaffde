"""--crop random and memory-mapped batches on several ranks (issue 30)."""

import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image


def _source(windows, batch, rank=0, world=1, seed=5, flip=False):
    from aigc_cli.models.protocol import TrainingData
    from aigc_cli.training.loop import DatasetEpochs, LoopConfig

    n = windows.shape[-1] - 1
    centre = windows[:, :, :n, :n]  # what the loader's centre view would be, for the window size
    loop = LoopConfig(epochs=1, batch_size=batch, seed=seed, flip=flip)
    return DatasetEpochs(TrainingData(centre, windows=windows), loop, torch.device("cpu"), rank, batch // world)


def test_random_windows_are_windows_drawn_alike_on_any_number_of_ranks():
    from aigc_cli.training.loop import crop_windows, epoch_permutation, window_offsets

    windows = torch.randint(0, 256, (64, 3, 10, 10), dtype=torch.uint8)
    batch, _ = _source(windows, 32).batch(0, 1, 1)
    assert batch.shape == (32, 3, 9, 9)
    idx = epoch_permutation(64, 5, 0)[32:64]
    top, left = window_offsets(32, 2, 5, 0, 1)
    for b in range(32):  # image b is its source's window at (top, left)
        t, l = int(top[b]), int(left[b])
        assert torch.equal(batch[b], windows[idx[b], :, t : t + 9, l : l + 9])
    assert 0 < int(top.sum()) < 32 and 0 < int(left.sum()) < 32  # both offsets occur, on both axes
    assert torch.equal(crop_windows(windows[:2], torch.tensor([1, 0]), torch.tensor([0, 1]), 9, 9),
                       torch.stack([windows[0, :, 1:, :9], windows[1, :, :9, 1:]]))
    again, _ = _source(windows, 32).batch(0, 1, 1)
    assert torch.equal(again, batch)  # a pure function of (seed, epoch, batch): resume needs no state
    ranks = torch.cat([_source(windows, 32, rank=r, world=4).batch(0, 1, 1)[0] for r in range(4)])
    assert torch.equal(ranks, batch)  # 4 ranks' slices make the one-process batch
    other = [window_offsets(32, 2, s, e, i)[0] for s, e, i in ((6, 0, 1), (5, 1, 1), (5, 0, 0))]
    assert all(not torch.equal(o, top) for o in other)
    flipped, _ = _source(windows, 32, flip=True).batch(0, 1, 1)  # flips apply to the windows
    assert ((flipped == batch) | (flipped == batch.flip(-1))).flatten(1).all(1).all()


def test_crop_random_loads_a_margin_and_views_its_centre(tmp_path, make_bars):
    from aigc_cli.core.errors import OptionError
    from aigc_cli.data.load import load_dataset, margin

    data = make_bars(tmp_path / "bars.npz", size=16)
    ds = load_dataset(str(data), resolution=8, crop="random")
    assert (margin(8), margin(64), margin(28)) == (9, 72, 32)
    assert ds.windows.shape[1:] == (1, 9, 9) and ds.shape == (1, 8, 8)
    assert torch.equal(ds.images, ds.windows[:, :, :8, :8])  # (9 - 8) // 2 = 0: the centre view
    assert ds.spec["resolution"] == 8 and ds.spec["crop"] == "random"
    assert ds.info()["crop"] == {"kind": "random", "from": [1, 9, 9]}
    centre = load_dataset(str(data), resolution=8)
    assert ds.fingerprint != centre.fingerprint  # other pixels train: a resume can tell
    with pytest.raises(OptionError, match="random needs --resolution"):
        load_dataset(str(data), crop="random")
    with pytest.raises(OptionError, match="not one of: center, random"):
        load_dataset(str(data), resolution=8, crop="sideways")


def test_crop_random_trains_reproducibly_and_resumes_exactly(tmp_path, aigc_home, cli, tiny_npz, tiny_gan,
                                                           assert_same_tensors, clean_error):
    base = ["train", "gan", "--dataset", tiny_npz, *tiny_gan, "--resolution", "8", "--crop", "random"]
    assert cli(*base, "--epochs", "2")[0] == 0
    assert cli(*base, "--epochs", "1")[0] == 0
    code, _, err = cli("train", "gan", "--resume", "run2", "--epochs", "2")  # keeps the crop from its spec
    assert code == 0, err
    runs = aigc_home / "runs"
    assert_same_tensors(runs / "run1/checkpoint.safetensors", runs / "run2/checkpoint.safetensors")
    config = json.loads((runs / "run1/config.json").read_text())
    assert config["dataset"]["spec"]["crop"] == "random" and config["model"]["image_shape"] == [1, 8, 8]
    assert cli("train", "gan", "--dataset", tiny_npz, *tiny_gan, "--resolution", "8", "--epochs", "2")[0] == 0
    with pytest.raises(AssertionError):  # centre crops train other weights
        assert_same_tensors(runs / "run1/model.safetensors", runs / "run3/model.safetensors")
    code, _, err = cli("sample", "run1", "-n", "2", "-o", tmp_path / "s.png")
    assert code == 0, err
    assert Image.open(tmp_path / "s.png").size[0] == 2 * 8 + 3 * 2  # drawn at the resolution, not the margin
    code, _, err = cli("train", "gan", "--dataset", tiny_npz, *tiny_gan, "--crop", "random")
    clean_error(code, err, "--crop random needs --resolution N")


def test_crop_random_on_a_prepared_dataset_takes_windows_of_its_images(tmp_path, aigc_home, cli, clean_error,
                                                                       tiny_gan):
    root = tmp_path / "pics"
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(16):
        Image.fromarray(rng.integers(0, 256, (24, 20, 3), np.uint8)).save(root / f"{i:02d}.png")
    assert cli("datasets", "prepare", root, "--name", "p16", "--resolution", "16")[0] == 0
    code, _, err = cli("train", "gan", "--dataset", "p16", *tiny_gan, "--resolution", "16", "--crop", "random")
    clean_error(code, err, "its images are 16x16", "prepare it at --resolution 18")
    code, _, err = cli("train", "gan", "--dataset", "p16", *tiny_gan, "--resolution", "12", "--crop", "random",
                       "--epochs", "1")
    assert code == 0, err
    config = json.loads((aigc_home / "runs/run1/config.json").read_text())
    assert config["model"]["image_shape"] == [3, 12, 12]
    assert config["dataset"]["spec"] == {"spec": "p16", "split": "train", "resolution": 12, "crop": "random"}
    assert cli("train", "gan", "--resume", "run1", "--epochs", "2")[0] == 0


def _mapped_rss(pid: int, name: str) -> int:
    """Resident bytes of ``pid``'s mappings of the file ``name`` (/proc/PID/smaps)."""
    total, inside = 0, False
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = line.split()
        if head and "-" in head[0] and len(head) >= 5:  # a mapping's first line: range perms offset dev inode [path]
            inside = line.rstrip().endswith(name)
        elif inside and head[:1] == ["Rss:"]:
            total += int(head[1]) * 1024
    return total


def _holders(name: str) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if name in (proc / "maps").read_text():
                    pids.append(int(proc.name))
            except OSError:
                pass
    return pids


@pytest.fixture
def shm_home():
    """An AIGC_HOME on tmpfs (/dev/shm): its pages are mapped one by one (and up to 64 KB around
    a fault), where a disk file system's page cache maps large folios, up to megabytes at a time,
    into whatever process touches one byte of them: cached pages shared by all, counted in each
    process's Rss all the same, so only on tmpfs does Rss say which rows a rank read."""
    import shutil
    import tempfile

    if not Path("/dev/shm").is_dir():
        pytest.skip("no /dev/shm")
    home = Path(tempfile.mkdtemp(dir="/dev/shm", prefix="aigc-test-"))
    yield home
    shutil.rmtree(home, ignore_errors=True)


@pytest.mark.slow  # a prepare and a two-rank launch paused mid-epoch (15-30 s on 2 busy cores)
def test_each_rank_reads_only_its_slices_of_the_mapped_dataset(tmp_path, shm_home, run_aigc, start_aigc, paused):
    root = tmp_path / "noise"
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(128):  # 128 x 3 x 256 x 256: 24 MB of pixels, 48 pages an image
        Image.fromarray(rng.integers(0, 256, (256, 256, 3), np.uint8)).save(root / f"{i:03d}.png", compress_level=0)
    done = run_aigc(shm_home, "datasets", "prepare", root, "--name", "noise", "--resolution", "256")
    assert done.returncode == 0, done.stderr
    npy = json.loads((shm_home / "cache/datasets/prepared.json").read_text())["noise"]["key"] + ".npy"
    size = (shm_home / "cache/datasets" / npy).stat().st_size
    # 4 steps of 8 images a rank: each has read 32 of the 128 images (1/4) when rank 1 pauses
    proc = start_aigc(shm_home, "-q", "train", "gan", "--dataset", "noise", "--arch", "mlp", "--width", "4",
                      "--latent-dim", "8", "--batch-size", "16", "--epochs", "1", "--nproc", "2",
                      AIGC_TEST_PAUSE="step:5", AIGC_TEST_PAUSE_DIR=tmp_path, AIGC_TEST_RANK="1")
    ranks = []
    try:
        paused(proc, tmp_path / "paused-1", timeout=240)
        ranks = _holders(npy)
        assert len(ranks) == 2, ranks  # both ranks map the file (the launcher does not)
        rss = [_mapped_rss(pid, npy) for pid in ranks]
    finally:
        for pid in ranks:
            os.kill(pid, signal.SIGKILL)
        proc.kill()
        proc.communicate(timeout=60)
    for r in rss:  # a quarter, a third with the pages mapped around each fault; whole when a check read it
        assert 0.2 * size < r < 0.45 * size, (rss, size)
