import gzip
import shutil
import struct

import numpy as np
import pytest

from aigc_cli.core.errors import DatasetError
from aigc_cli.data import load_dataset
from aigc_cli.data.idx import read_idx


def idx_bytes(arr: np.ndarray) -> bytes:
    """IDX encoding of a uint8 array: magic 00 00 08 <ndim>, big-endian dims, payload."""
    return bytes([0, 0, 8, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()


def test_real_mnist_test_split(mnist_dir):
    ds = load_dataset(str(mnist_dir / "t10k-images-idx3-ubyte.gz"), split="test")
    assert tuple(ds.images.shape) == (10000, 1, 28, 28)
    assert ds.labels is not None and ds.num_classes == 10
    counts = np.bincount(ds.labels.numpy()).tolist()
    assert counts == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    # split is ignored for paths: same content either way
    assert load_dataset(str(mnist_dir / "t10k-images-idx3-ubyte.gz")).fingerprint == ds.fingerprint


def test_truncated_gz_idx(mnist_dir, tmp_path):
    data = gzip.decompress((mnist_dir / "t10k-images-idx3-ubyte.gz").read_bytes())
    bad = tmp_path / "t10k-images-idx3-ubyte.gz"
    bad.write_bytes(gzip.compress(data[:-1000], compresslevel=1))
    with pytest.raises(DatasetError, match=r"truncated IDX file .*expected 7840000 bytes, found 7839000"):
        load_dataset(str(bad))
    cut = tmp_path / "cut-images-idx3-ubyte.gz"  # the compressed stream itself cut short
    raw = (mnist_dir / "t10k-images-idx3-ubyte.gz").read_bytes()
    cut.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DatasetError, match="truncated IDX file"):
        load_dataset(str(cut))


def test_raw_idx_with_labels_beside(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 7, 6), dtype=np.uint8)
    labels = np.array([3, 1, 4, 1, 5], np.uint8)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(idx_bytes(images))
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(labels))
    ds = load_dataset(str(tmp_path / "train-images-idx3-ubyte"))
    assert tuple(ds.images.shape) == (5, 1, 7, 6)
    assert np.array_equal(ds.images[:, 0].numpy(), images)
    assert ds.labels.tolist() == [3, 1, 4, 1, 5]
    # detected by magic number whatever the name; no labels file beside it
    (tmp_path / "digits.bin").write_bytes(idx_bytes(images))
    ds2 = load_dataset(str(tmp_path / "digits.bin"))
    assert ds2.labels is None and np.array_equal(ds2.images.numpy(), ds.images.numpy())


def test_truncated_raw_idx_and_labels_file(tmp_path):
    arr = np.zeros((4, 3, 3), np.uint8)
    (tmp_path / "x.idx").write_bytes(idx_bytes(arr)[:-5])
    with pytest.raises(DatasetError, match="expected 36 bytes, found 31"):
        read_idx(tmp_path / "x.idx")
    (tmp_path / "y-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(4, np.uint8)))
    with pytest.raises(DatasetError, match="holds labels"):
        load_dataset(str(tmp_path / "y-labels-idx1-ubyte"))
    (tmp_path / "z.gz").write_bytes(gzip.compress(b"hello world"))
    with pytest.raises(DatasetError, match="not an IDX file"):
        load_dataset(str(tmp_path / "z.gz"))


def test_labels_with_other_count_are_ignored(tmp_path, mnist_dir):
    shutil.copy(mnist_dir / "t10k-images-idx3-ubyte.gz", tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(3, np.uint8)))
    assert load_dataset(str(tmp_path / "t10k-images-idx3-ubyte.gz")).labels is None
