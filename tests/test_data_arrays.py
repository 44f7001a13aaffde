import numpy as np
import pytest
import torch

from aigc_cli.core.errors import DatasetError
from aigc_cli.data import load_dataset


def npy(tmp_path, arr, name="a.npy"):
    np.save(tmp_path / name, arr)
    return str(tmp_path / name)


@pytest.mark.parametrize(
    "shape, expected",
    [
        ((4, 5, 6), (4, 1, 5, 6)),  # N, H, W
        ((4, 5, 6, 3), (4, 3, 5, 6)),  # N, H, W, C
        ((4, 5, 6, 1), (4, 1, 5, 6)),
        ((4, 3, 5, 6), (4, 3, 5, 6)),  # N, C, H, W
        ((4, 1, 5, 6), (4, 1, 5, 6)),
        ((4, 5, 6, 4), (4, 3, 5, 6)),  # RGBA, composited
    ],
)
def test_npy_layouts(tmp_path, shape, expected):
    arr = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    ds = load_dataset(npy(tmp_path, arr))
    assert tuple(ds.images.shape) == expected and ds.images.dtype == torch.uint8
    if shape[-1] == 3:
        assert np.array_equal(ds.images.numpy(), arr.transpose(0, 3, 1, 2))


def test_bad_layout(tmp_path):
    with pytest.raises(DatasetError, match="channel axis"):
        load_dataset(npy(tmp_path, np.zeros((2, 5, 6, 7), np.uint8)))
    with pytest.raises(DatasetError, match="expected images shaped"):
        load_dataset(npy(tmp_path, np.zeros((2, 5), np.uint8)))


def test_float_arrays(tmp_path):
    unit = np.array([[[0.0, 0.5, 1.0]]], np.float32)  # (1, 1, 3) in [0, 1]
    assert load_dataset(npy(tmp_path, unit)).images.flatten().tolist() == [0, 128, 255]
    byte = np.array([[[0.0, 2.0, 254.6]]], np.float64)  # max > 1: already 0-255
    assert load_dataset(npy(tmp_path, byte)).images.flatten().tolist() == [0, 2, 255]
    for bad in ([[[-0.5, 1.0]]], [[[0.0, 300.0]]], [[[np.nan, 1.0]]]):
        with pytest.raises(DatasetError, match=r"\[0, 1\] or \[0, 255\]"):
            load_dataset(npy(tmp_path, np.array(bad, np.float32)))
    ints = np.array([[[0, 7, 255]]], np.int64)
    assert load_dataset(npy(tmp_path, ints)).images.flatten().tolist() == [0, 7, 255]


def test_object_array_rejected(tmp_path):
    arr = np.empty((2,), dtype=object)
    arr[:] = [np.zeros((2, 2)), "x"]
    np.save(tmp_path / "obj.npy", arr, allow_pickle=True)
    with pytest.raises(DatasetError, match="cannot read"):
        load_dataset(str(tmp_path / "obj.npy"))
    np.savez(tmp_path / "obj.npz", images=np.zeros((2, 3, 3), np.uint8), labels=arr)
    with pytest.raises(DatasetError, match="cannot read"):
        load_dataset(str(tmp_path / "obj.npz"))


@pytest.mark.parametrize("ikey, lkey", [("images", "labels"), ("x", "y"), ("x_train", "y_train"), ("arr_0", None)])
def test_npz_keys(tmp_path, ikey, lkey):
    arrays = {ikey: np.zeros((3, 4, 4, 3), np.uint8)}
    if lkey:
        arrays[lkey] = np.array([0, 2, 1])
    np.savez(tmp_path / "d.npz", **arrays)
    ds = load_dataset(str(tmp_path / "d.npz"))
    assert tuple(ds.images.shape) == (3, 3, 4, 4)
    assert (ds.labels.tolist() if lkey else None) == ([0, 2, 1] if lkey else None)


def test_npz_errors(tmp_path):
    np.savez(tmp_path / "d.npz", pixels=np.zeros((3, 4, 4), np.uint8))
    with pytest.raises(DatasetError, match="no images array.*pixels"):
        load_dataset(str(tmp_path / "d.npz"))
    np.savez(tmp_path / "e.npz", x=np.zeros((3, 4, 4), np.uint8), y=np.zeros(2, np.int64))
    with pytest.raises(DatasetError, match=r"labels must have shape \(3,\)"):
        load_dataset(str(tmp_path / "e.npz"))
    (tmp_path / "f.npy").write_bytes(b"garbage")
    with pytest.raises(DatasetError, match="cannot read"):
        load_dataset(str(tmp_path / "f.npy"))
