"""--resolution, --flip and the images a folder meets in the wild (issue 30): real files written
with Pillow (EXIF-rotated phone JPEG, RGBA, palette, 16-bit, CMYK, truncated, too small, a
decompression bomb), each decoded right at --resolution 32."""

import io
import json
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from aigc_cli.core.errors import DatasetError, OptionError
from aigc_cli.core.images import BOMB
from aigc_cli.data import load_dataset

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


def _phone_jpeg(path, w=400, h=300):
    """A w x h (400x300) landscape JPEG as a phone stores a portrait shot: EXIF orientation 6 (turn it a
    quarter clockwise to show it). Stored: left half red, right half blue; shown upright (300x400):
    top half red, bottom half blue."""
    a = np.zeros((h, w, 3), np.uint8)
    a[:, : w // 2] = RED
    a[:, w // 2 :] = BLUE
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(a).save(path, quality=95, exif=exif.tobytes())


def _bomb_png(path, side=30000):
    """A PNG whose header says side x side (900 Mpixels): Pillow refuses it at open, before any
    pixel is read (its decompression-bomb limit), so the file itself stays tiny."""
    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    data[16:24] = struct.pack(">II", side, side)  # IHDR width, height
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))


@pytest.fixture
def wild(tmp_path):
    """A folder of the files users have: every mode and its expected 32x32 pixel somewhere."""
    root = tmp_path / "wild"
    root.mkdir()
    _phone_jpeg(root / "a_phone.jpg")
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[:, 20:] = (0, 255, 0, 255)  # left half fully transparent (composited on black), right half green
    Image.fromarray(rgba, "RGBA").save(root / "b_rgba.png")
    Image.new("RGB", (48, 40), BLUE).convert("P").save(root / "c_palette.gif")
    pal = Image.new("P", (40, 40), 1)
    pal.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    pal.save(root / "d_palette.png", transparency=0)  # a palette PNG with a transparent index
    Image.fromarray(np.full((40, 40), 0x8000, np.uint16)).save(root / "e_gray16.png")  # mid gray, 16-bit
    Image.fromarray(np.full((40, 40), 200, np.uint16)).save(root / "f_dark16.png")  # almost black, 16-bit
    Image.new("RGB", (40, 40), RED).convert("CMYK").save(root / "g_cmyk.jpg", quality=95)
    Image.new("RGB", (10, 12), GREEN).save(root / "h_small.png")  # smaller than 32: upscaled, counted
    full = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8)).save(full, "JPEG")
    (root / "i_truncated.jpg").write_bytes(full.getvalue()[: len(full.getvalue()) // 2])
    _bomb_png(root / "j_bomb.png")
    return root


def test_every_mode_decodes_right_at_a_resolution(wild):
    for f in ("e_gray16.png", "f_dark16.png"):
        assert Image.open(wild / f).mode.startswith("I")  # real 16-bit files
    assert Image.open(wild / "g_cmyk.jpg").mode == "CMYK"
    ds = load_dataset(str(wild), resolution=32)
    assert tuple(ds.images.shape) == (8, 3, 32, 32)
    assert ds.skipped == 2 and ds.skipped_why == {"unreadable": 1, BOMB: 1}
    assert ds.upscaled == 1 and ds.resolution == 32
    assert "upscaled 1 image smaller than 32 px" in ds.skip_summary()
    img = {name: ds.images[i].permute(1, 2, 0).int() for i, name in enumerate(
        ["phone", "rgba", "gif", "palette", "gray16", "dark16", "cmyk", "small"])}

    def near(pixel, rgb, tol=12):
        return (pixel - torch.tensor(rgb)).abs().max() <= tol

    assert near(img["phone"][3, 16], RED) and near(img["phone"][28, 16], BLUE)  # upright: EXIF honoured
    assert near(img["rgba"][16, 3], (0, 0, 0)) and near(img["rgba"][16, 28], GREEN)
    assert near(img["gif"][16, 16], BLUE)
    assert near(img["palette"][16, 16], RED)
    assert near(img["gray16"][16, 16], (128, 128, 128), 0)  # the top 8 of 16 bits
    assert near(img["dark16"][16, 16], (0, 0, 0), 0)  # 200/65535 is black, not 200/255
    assert near(img["cmyk"][16, 16], RED, 16)
    assert (img["small"] == torch.tensor(GREEN)).all()


def test_exif_orientation_without_a_resolution(tmp_path):
    _phone_jpeg(tmp_path / "p.jpg", 200, 150)
    ds = load_dataset(str(tmp_path / "p.jpg"))
    assert ds.shape == (3, 200, 150)  # shown upright: portrait
    assert ds.images[0, 0, 10, 75] > 200 and ds.images[0, 2, 190, 75] > 200  # red on top, blue below
    assert load_dataset(str(tmp_path)).shape == (3, 200, 150)  # a folder's size read upright from the header


def test_a_single_large_or_bomb_image_is_one_line(tmp_path, cli, clean_error):
    _phone_jpeg(tmp_path / "big.jpg")
    code, _, err = cli("datasets", "info", tmp_path / "big.jpg")
    clean_error(code, err, "big.jpg: it is 300x400", "--resolution 64", "scale it down")
    code, out, err = cli("datasets", "info", tmp_path / "big.jpg", "--resolution", "32", "--json")
    assert code == 0 and json.loads(out)["shape"] == [3, 32, 32], err
    _bomb_png(tmp_path / "bomb.png")
    code, _, err = cli("datasets", "info", tmp_path / "bomb.png", "--resolution", "32")
    clean_error(code, err, "bomb.png: too large (Pillow's decompression-bomb limit)")


def test_a_folder_of_large_images_needs_a_resolution(tmp_path, cli, clean_error, aigc_home):
    for i in range(2):
        Image.new("RGB", (400, 300), (i * 50, 0, 0)).save(tmp_path / f"{i}.jpg")
    with pytest.raises(DatasetError, match="larger than 256 px"):
        load_dataset(str(tmp_path))
    code, _, err = cli("datasets", "info", tmp_path)
    clean_error(code, err, "400x300", "--resolution 64")
    code, _, err = cli("train", "gan", "--dataset", tmp_path, "--arch", "mlp")
    clean_error(code, err, "--resolution 64")
    assert not (aigc_home / "runs" / "run1").exists()
    code, out, err = cli("datasets", "info", tmp_path, "--resolution", "64", "--json")
    assert code == 0, err
    info = json.loads(out)
    assert info["shape"] == [3, 64, 64] and info["resolution"] == 64 and info["upscaled"] == 0


def test_arrays_and_named_datasets_at_a_resolution(tmp_path, make_bars):
    path = make_bars(tmp_path / "bars.npz", n=32, size=8)
    ds = load_dataset(str(path), resolution=16)
    assert ds.shape == (1, 16, 16) and ds.upscaled == 32 and ds.spec["resolution"] == 16
    flat = np.full((4, 12, 20), 77, np.uint8)  # not square: the middle 12x12, scaled down
    flat[:, :, :4] = 0  # outside the middle square: cropped away
    np.save(tmp_path / "flat.npy", flat)
    ds = load_dataset(str(tmp_path / "flat.npy"), resolution=6)
    assert ds.shape == (1, 6, 6) and (ds.images == 77).all() and ds.upscaled == 0
    ds = load_dataset("digits", resolution=16)
    assert ds.shape == (1, 16, 16) and ds.upscaled == 0 and ds.fingerprint != load_dataset("digits").fingerprint
    with pytest.raises(OptionError, match="from 4 to 4096"):
        load_dataset("digits", resolution=2)
    from aigc_cli.data.load import RESOLUTIONS
    from aigc_cli.training.options import DATA_OPTIONS

    option = next(o for o in DATA_OPTIONS if o.name == "resolution")  # the flag's bounds are the engine's
    assert (option.minimum, option.maximum) == RESOLUTIONS


def test_train_and_sample_at_a_resolution(tmp_path, aigc_home, cli, tiny_gan):
    root = tmp_path / "pics"
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(16):
        Image.fromarray(rng.integers(0, 256, (48 + i, 40, 3), np.uint8)).save(root / f"{i:02d}.png")
    Image.new("RGB", (20, 20)).save(root / "small.png")
    code, _, err = cli("train", "gan", "--dataset", root, "--resolution", "32", *tiny_gan, "--epochs", "1")
    assert code == 0, err
    assert "upscaled 1 image smaller than 32 px" in err
    config = json.loads((aigc_home / "runs/run1/config.json").read_text())
    assert config["dataset"]["spec"]["resolution"] == 32 and config["dataset"]["shape"] == [3, 32, 32]
    assert config["model"]["image_shape"] == [3, 32, 32] and config["train"]["flip"] is False
    code, _, err = cli("sample", "run1", "-n", "2", "-o", tmp_path / "s.png")
    assert code == 0, err
    assert Image.open(tmp_path / "s.png").size[0] == 2 * 32 + 3 * 2  # two 32-px images and padding
    # --resume reloads the folder at the recorded resolution (same fingerprint, or it would refuse)
    code, _, err = cli("train", "gan", "--resume", "run1", "--epochs", "2")
    assert code == 0, err


def _source(items, batch, rank=0, world=1, flip=True, seed=5):
    from aigc_cli.models.protocol import TrainingData
    from aigc_cli.training.loop import DatasetEpochs, LoopConfig

    loop = LoopConfig(epochs=1, batch_size=batch, seed=seed, flip=flip)
    return DatasetEpochs(TrainingData(items), loop, torch.device("cpu"), rank, batch // world)


def test_flip_mirrors_a_random_half_the_same_on_any_number_of_ranks():
    items = torch.randint(0, 256, (64, 3, 4, 5), dtype=torch.uint8)
    plain, _ = _source(items, 32, flip=False).batch(0, 1, 1)
    flipped, _ = _source(items, 32).batch(0, 1, 1)
    mirrored = (flipped == plain.flip(-1)).flatten(1).all(1)
    same = (flipped == plain).flatten(1).all(1)
    assert (mirrored | same).all()  # each image is itself or its mirror image
    assert 4 <= int(mirrored.sum()) <= 28  # and both happen
    from aigc_cli.training.loop import flip_mask

    masks = [flip_mask(32, 5, e, i) for e, i in ((0, 1), (0, 0), (1, 1))]
    assert torch.equal(masks[0], mirrored)
    assert not torch.equal(masks[0], masks[1]) and not torch.equal(masks[0], masks[2])  # other batches, other draws
    again, _ = _source(items, 32).batch(0, 1, 1)
    assert torch.equal(flipped, again)  # a pure function of (seed, epoch, batch): resume needs no state
    ranks = torch.cat([_source(items, 32, rank=r, world=4).batch(0, 1, 1)[0] for r in range(4)])
    assert torch.equal(ranks, flipped)  # 4 ranks' slices make the one-process batch
    assert not torch.equal(_source(items, 32, seed=6).batch(0, 1, 1)[0], flipped)


def test_flip_is_reproducible_recorded_and_resumes_exactly(aigc_home, cli, tiny_npz, tiny_gan, assert_same_tensors):
    base = ["train", "gan", "--dataset", tiny_npz, *tiny_gan, "--flip"]
    assert cli(*base, "--epochs", "2")[0] == 0
    assert cli(*base, "--epochs", "2")[0] == 0
    runs = aigc_home / "runs"
    assert_same_tensors(runs / "run1/model.safetensors", runs / "run2/model.safetensors")  # same seed, same weights
    assert json.loads((runs / "run1/config.json").read_text())["train"]["flip"] is True
    assert cli(*base, "--epochs", "1")[0] == 0
    code, _, err = cli("train", "gan", "--resume", "run3", "--epochs", "2")  # keeps --flip from its config
    assert code == 0, err
    assert_same_tensors(runs / "run1/model.safetensors", runs / "run3/model.safetensors")
    assert_same_tensors(runs / "run1/checkpoint.safetensors", runs / "run3/checkpoint.safetensors")
    assert cli("train", "gan", "--dataset", tiny_npz, *tiny_gan, "--epochs", "2")[0] == 0  # without --flip
    with pytest.raises(AssertionError):
        assert_same_tensors(runs / "run1/model.safetensors", runs / "run4/model.safetensors")


@pytest.mark.slow  # two trainings, one on 2 launched ranks (20-35 s on 2 busy cores)
def test_flip_on_two_ranks_computes_what_one_process_does(tmp_path, make_bars, run_aigc, run_rows):
    data = make_bars(tmp_path / "bars.npz", channels=3)
    args = ["train", "gan", "--dataset", data, "--arch", "dcgan", "--width", "4", "--latent-dim", "8",
            "--batch-size", "16", "--seed", "3", "--log-every", "1", "--epochs", "1", "--resolution", "16", "--flip"]
    one = run_aigc(tmp_path / "one", "-q", *args, timeout=240)
    assert one.returncode == 0, one.stderr
    two = run_aigc(tmp_path / "two", "-q", *args, "--nproc", "2", timeout=240)
    assert two.returncode == 0, two.stderr
    a, b = run_rows(tmp_path / "one"), run_rows(tmp_path / "two")
    assert [r["step"] for r in a] == [r["step"] for r in b] and len(a) == 16
    for x, y in zip(a, b):  # float32 sums in another order (tests/test_distributed.py): 1e-5
        for key in ("d_loss", "g_loss"):
            assert y[key] == pytest.approx(x[key], rel=1e-5, abs=1e-6), (x["step"], key)


@pytest.mark.slow  # 1,024 steps, part of them in a process, stopped by Ctrl-C (20-35 s on 2 busy cores)
def test_flip_run_stopped_by_ctrl_c_resumes_bit_identically(tmp_path, aigc_home, cli, start_aigc, paused,
                                                            assert_same_tensors):
    import signal

    rng = np.random.default_rng(1)
    data = tmp_path / "big.npz"
    np.savez(data, images=rng.integers(0, 255, (4096, 8, 8)).astype(np.uint8))
    args = ["train", "gan", "--dataset", str(data), "--arch", "mlp", "--width", "4", "--latent-dim", "8",
            "--batch-size", "8", "--epochs", "2", "--flip"]
    proc = start_aigc(aigc_home, "-q", *args, AIGC_TEST_PAUSE="step:40", AIGC_TEST_PAUSE_DIR=tmp_path)
    paused(proc, tmp_path / "paused-1")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "--resume run1" in err, err
    assert cli("train", "gan", "--resume", "run1")[0] == 0
    assert cli(*args)[0] == 0  # the same run, never stopped
    runs = aigc_home / "runs"
    assert_same_tensors(runs / "run1/model.safetensors", runs / "run2/model.safetensors")
