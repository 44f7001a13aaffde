import numpy as np
import pytest
from PIL import Image

from aigc_cli.core.errors import DatasetError
from aigc_cli.data import load_dataset


def save(path, arr, mode=None, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr, mode).save(path, **kw)


def test_mixed_modes_and_sizes(tmp_path):
    rng = np.random.default_rng(0)
    save(tmp_path / "a.png", rng.integers(0, 256, (8, 8), dtype=np.uint8))  # L
    save(tmp_path / "b.png", rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))  # RGB
    rgba = rng.integers(0, 256, (8, 8, 4), dtype=np.uint8)
    rgba[..., 3] = 0  # fully transparent: composited on black
    save(tmp_path / "sub" / "c.png", rgba)
    save(tmp_path / "d.bmp", rng.integers(0, 256, (16, 12, 3), dtype=np.uint8))  # other size: resized
    Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).convert("P").save(tmp_path / "e.gif")
    save(tmp_path / "f.jpg", rng.integers(0, 256, (8, 8, 3), dtype=np.uint8), quality=90)
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    (tmp_path / ".DS_Store").write_bytes(b"hidden files are ignored")

    ds = load_dataset(str(tmp_path))
    assert tuple(ds.images.shape) == (6, 3, 8, 8)  # most common size wins; colour present -> RGB
    assert ds.skipped == 2 and ds.labels is None
    assert ds.images.dtype.is_floating_point is False
    names = sorted(["a.png", "b.png", "d.bmp", "e.gif", "f.jpg", "sub/c.png"])  # path order
    gray = ds.images[names.index("a.png")]
    assert (gray[0] == gray[1]).all() and (gray[1] == gray[2]).all()  # gray copied to 3 channels
    assert (ds.images[names.index("sub/c.png")] == 0).all()


def test_gray_folder_stays_one_channel(tmp_path):
    save(tmp_path / "a.png", np.full((5, 5), 7, np.uint8))
    save(tmp_path / "b.png", np.full((5, 5, 3), 9, np.uint8))  # gray content stored as RGB
    ds = load_dataset(str(tmp_path))
    assert tuple(ds.images.shape) == (2, 1, 5, 5)
    assert ds.images[1].unique().tolist() == [9]


def test_class_subfolders(tmp_path):
    for cls, n in [("dog", 2), ("cat", 3)]:
        for i in range(n):
            save(tmp_path / cls / f"{i}.png", np.full((4, 4), i, np.uint8))
    (tmp_path / "cat" / "readme.txt").write_text("skipped")
    ds = load_dataset(str(tmp_path))
    assert ds.classes == ["cat", "dog"]
    assert ds.labels.tolist() == [0, 0, 0, 1, 1]
    assert ds.num_classes == 2 and ds.skipped == 1
    # an image at the top level: no longer classes
    save(tmp_path / "top.png", np.zeros((4, 4), np.uint8))
    assert load_dataset(str(tmp_path)).labels is None


def test_empty_folder_and_non_images(tmp_path):
    with pytest.raises(DatasetError, match="no readable images"):
        load_dataset(str(tmp_path))
    (tmp_path / "a.txt").write_text("hi")
    with pytest.raises(DatasetError, match="no readable images.*1 files skipped"):
        load_dataset(str(tmp_path))
    with pytest.raises(DatasetError, match="not a dataset"):
        load_dataset(str(tmp_path / "a.txt"))


def test_single_image_file(tmp_path):
    save(tmp_path / "one.png", (np.zeros((6, 4, 3)) + [10, 20, 30]).astype(np.uint8))
    ds = load_dataset(str(tmp_path / "one.png"))
    assert tuple(ds.images.shape) == (1, 3, 6, 4)


def test_fingerprint_equal_for_equal_content(tmp_path):
    rng = np.random.default_rng(1)
    imgs = rng.integers(0, 256, (3, 6, 6, 3), dtype=np.uint8)
    for folder in ("one", "two"):
        for i, a in enumerate(imgs):
            save(tmp_path / folder / f"{i}.png", a)
    np.save(tmp_path / "three.npy", imgs)
    fps = {load_dataset(str(tmp_path / p)).fingerprint for p in ("one", "two", "three.npy")}
    assert len(fps) == 1
    np.save(tmp_path / "four.npy", imgs[::-1])
    assert load_dataset(str(tmp_path / "four.npy")).fingerprint not in fps


def test_progress_callback(tmp_path):
    for i in range(3):
        save(tmp_path / f"{i}.png", np.zeros((4, 4), np.uint8))
    calls = []
    load_dataset(str(tmp_path), progress=lambda d, done, total: calls.append((done, total)))
    assert calls[-1] == (3, 3)
