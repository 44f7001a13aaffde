"""Hostile datasets (issue 15, defect 4): not-regular files refused unopened, sizes declared by
headers checked (without int64 overflow) before anything is allocated, a .gz bomb stopped
after inflating one byte past its promise, skipped files counted by reason."""

import gzip
import json
import os
import socket
import struct

import numpy as np
import pytest
from PIL import Image

from aigc_cli.core.errors import DatasetError
from aigc_cli.data import load_dataset

needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")


def idx_header(dims, dtype=0x08):
    return bytes([0, 0, dtype, len(dims)]) + struct.pack(f">{len(dims)}I", *dims)


@needs_fifo
@pytest.mark.parametrize("name", ["t10k-images-idx3-ubyte", "digits-images-idx3-ubyte.gz", "d.npz", "d.npy",
                                  "one.png"])
def test_a_fifo_is_refused_before_it_is_opened(tmp_path, name):
    fifo = tmp_path / name
    os.mkfifo(fifo)  # opening it for reading would block forever: the test would hang
    with pytest.raises(DatasetError, match="is a FIFO, not a regular file"):
        load_dataset(str(fifo))


def test_a_character_device_and_a_socket_are_refused(tmp_path):
    with pytest.raises(DatasetError, match="is a character device, not a regular file"):
        load_dataset("/dev/zero")  # reading it would never end
    path = tmp_path / "s.idx"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(path))
        with pytest.raises(DatasetError, match="is a socket, not a regular file"):
            load_dataset(str(path))


def test_idx_dims_whose_product_overflows_int64_are_refused(tmp_path):
    # 4 dims of 2**32-1: the product is about 3.4e38; np.prod wraps it round in int64.
    path = tmp_path / "huge-images-idx3-ubyte"
    path.write_bytes(idx_header([2**32 - 1] * 4) + bytes(64))
    with pytest.raises(DatasetError, match=r"declares 4294967295 x .* bytes, more than the .*-byte limit"):
        load_dataset(str(path))
    gz = tmp_path / "huge-images-idx3-ubyte.gz"
    gz.write_bytes(gzip.compress(idx_header([2**32 - 1] * 4) + bytes(64)))
    with pytest.raises(DatasetError, match="more than the .*-byte limit"):
        load_dataset(str(gz))


def test_a_gz_that_inflates_past_its_header_is_stopped(tmp_path, monkeypatch):
    # 10 images of 4x4 promised, 64 MiB of zeros delivered (a 64 KiB file).
    path = tmp_path / "bomb-images-idx3-ubyte.gz"
    with gzip.open(path, "wb", compresslevel=9) as f:
        f.write(idx_header([10, 4, 4]))
        for _ in range(64):
            f.write(bytes(1 << 20))
    assert path.stat().st_size < 1 << 17
    inflated = []
    import zlib

    real = zlib.decompressobj

    class Counting:
        def __init__(self, *a, **k):
            self.d = real(*a, **k)

        def decompress(self, data, max_length=0):
            out = self.d.decompress(data, max_length)
            inflated.append(len(out))
            return out

        def __getattr__(self, name):
            return getattr(self.d, name)

    monkeypatch.setattr(zlib, "decompressobj", Counting)
    with pytest.raises(DatasetError, match="expected 160 bytes, found more"):
        load_dataset(str(path))
    assert sum(inflated) <= 4 + 12 + 161  # header, dims, the promised bytes and one more


def test_npy_and_npz_headers_that_lie_are_refused_before_allocation(tmp_path, monkeypatch):
    lying = tmp_path / "lying.npy"  # a 10**18-byte promise in a tiny file
    with open(lying, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "|u1", "fortran_order": False,
                                                 "shape": (10**6, 10**6, 10**6)})
        f.write(bytes(64))
    with pytest.raises(DatasetError, match=r"shape \(1000000, 1000000, 1000000\) of uint8 = .* more than the"):
        load_dataset(str(lying))

    short = tmp_path / "short.npy"
    np.save(short, np.zeros((200, 8, 8), np.uint8))
    short.write_bytes(short.read_bytes()[:-100])
    with pytest.raises(DatasetError, match="truncated .*declares 12,800 bytes of pixels, the file holds 12,700"):
        load_dataset(str(short))

    big = tmp_path / "big.npz"
    np.savez_compressed(big, images=np.zeros((64, 32, 32), np.uint8))  # 64 KiB inflated, tiny on disk
    import aigc_cli.data.arrays as arrays

    monkeypatch.setattr(arrays, "MAX_BYTES", 10_000)
    with pytest.raises(DatasetError, match=r"images.npy inflates to 65,664 bytes, more than the 10,000-byte limit"):
        load_dataset(str(big))


def _folder(tmp_path):
    root = tmp_path / "imgs"
    root.mkdir()
    for i in range(5):
        Image.fromarray(np.full((8, 8), i * 40, np.uint8)).save(root / f"{i}.png")
    (root / "notes.txt").write_text("not an image")
    os.mkfifo(root / "pipe.png")  # Image.open on it would block
    return root


@needs_fifo
def test_image_folder_skips_a_fifo_and_says_why(tmp_path, cli):
    ds = load_dataset(str(_folder(tmp_path)))
    assert len(ds) == 5 and ds.skipped == 2
    assert ds.skip_summary() == "imgs: skipped 2 of 7 files: 1 not a regular file, 1 unreadable"
    code, out, err = cli("datasets", "info", str(tmp_path / "imgs"), "--json")
    assert code == 0 and json.loads(out)["skipped_why"] == {"not a regular file": 1, "unreadable": 1}


@needs_fifo
@pytest.mark.parametrize("quiet", [False, True])
def test_train_reports_skipped_files_on_stderr_unless_quiet(tmp_path, quiet, tiny_gan, run_aigc):
    root = _folder(tmp_path)
    args = ["train", "gan", "--dataset", str(root), *tiny_gan[:-2], "--batch-size", "5", "--epochs", "1"]
    result = run_aigc(tmp_path / "home", *(["-q"] if quiet else []), *args)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "run1"
    if quiet:
        assert result.stderr == ""
    else:
        assert "imgs: skipped 2 of 7 files: 1 not a regular file, 1 unreadable" in result.stderr


@pytest.mark.parametrize("quiet", [False, True])
def test_pil_warnings_are_one_line_and_silenced_by_quiet(tmp_path, cli, monkeypatch, quiet):
    root = tmp_path / "imgs"
    root.mkdir()
    for i in range(3):
        Image.fromarray(np.full((8, 8), i * 40, np.uint8)).save(root / f"{i}.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 50)  # 64 pixels: a DecompressionBombWarning each
    import warnings

    warnings.simplefilter("always")
    code, out, err = cli(*(["-q"] if quiet else []), "datasets", "info", root, "--json")
    assert code == 0, err
    if quiet:
        assert err == ""
    else:
        lines = [line for line in err.splitlines() if "DecompressionBombWarning" in line]
        assert lines and all(line.startswith("warning: Image size (64 pixels) exceeds") for line in lines), err
