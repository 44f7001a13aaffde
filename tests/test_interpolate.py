"""``aigc interpolate``: latent paths (lerp/slerp), traversals, PNG/GIF output, GAN and VAE runs."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image


@pytest.fixture(scope="module")
def runs(tmp_path_factory, make_bars, tiny_vae):
    """A tiny VAE run ('v'), a tiny MLP GAN run ('g') and a tiny conditional VAE ('c'), 1 epoch each
    on 8x8 bars."""
    from aigc_cli import training

    root = tmp_path_factory.mktemp("interp")
    data = make_bars(root / "bars.npz", n=128)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AIGC_HOME", str(root / "home"))
        training.train("vae", dataset=str(data), epochs=1, name="v", **tiny_vae["kw"])
        training.train("gan", dataset=str(data), epochs=1, name="g", arch="mlp", width=4, latent_dim=8, batch_size=16)
        training.train("vae", dataset=str(data), epochs=1, name="c", arch="mlp", conditional=True, **tiny_vae["kw"])
        images = np.load(data)["images"]
        Image.fromarray(images[0]).save(root / "a.png")
        Image.fromarray(np.repeat(images[1][:, :, None], 3, axis=2)).resize((16, 16)).save(root / "b.png")
        (root / "notes.txt").write_text("not an image")
        yield root


@pytest.fixture
def home(runs, monkeypatch):
    monkeypatch.setenv("AIGC_HOME", str(runs / "home"))
    return runs


def gif_frames(data: bytes) -> list[np.ndarray]:
    im = Image.open(io.BytesIO(data))
    frames = []
    for i in range(im.n_frames):
        im.seek(i)
        frames.append(np.asarray(im.convert("RGB")))
    return frames


# -- core -------------------------------------------------------------------------------------------

def test_slerp_and_lerp():
    from aigc_cli.models.latent import lerp, slerp

    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(16, generator=g), torch.randn(16, generator=g)
    t = torch.linspace(0, 1, 7)
    for fn in (lerp, slerp):
        path = fn(a, b, t)
        assert path.shape == (7, 16)
        assert torch.allclose(path[0], a, atol=1e-6) and torch.allclose(path[-1], b, atol=1e-6)
    assert torch.allclose(lerp(a, b, torch.tensor([0.5]))[0], (a + b) / 2)
    # slerp between equal-norm vectors keeps the norm; lerp shrinks it in the middle.
    b2 = b / b.norm() * a.norm()
    mid = slerp(a, b2, torch.tensor([0.5]))[0]
    assert mid.norm() == pytest.approx(float(a.norm()), rel=1e-5)
    assert lerp(a, b2, torch.tensor([0.5]))[0].norm() < a.norm()
    # Parallel and zero vectors fall back to lerp.
    assert torch.allclose(slerp(a, 2 * a, torch.tensor([0.5]))[0], 1.5 * a)
    assert torch.allclose(slerp(torch.zeros(16), a, torch.tensor([0.25]))[0], 0.25 * a)


def test_latent_path_endpoints_and_knots():
    from aigc_cli.core.errors import ConfigError
    from aigc_cli.models.latent import latent_path

    points = torch.randn(3, 5, generator=torch.Generator().manual_seed(1))
    for mode in ("slerp", "lerp"):
        path = latent_path(points, 5, mode)
        assert path.shape == (5, 5)
        assert torch.equal(path[0], points[0]) and torch.equal(path[2], points[1]) and torch.equal(path[4], points[2])
    assert latent_path(points[:2], 2).tolist() == points[:2].tolist()
    with pytest.raises(ConfigError, match="at least 2"):
        latent_path(points, 1)
    with pytest.raises(ConfigError, match="2 latents"):
        latent_path(points[:1], 4)
    with pytest.raises(ConfigError, match="mode"):
        latent_path(points, 4, "cubic")


def test_traversal_and_dims():
    from aigc_cli.core.errors import ConfigError
    from aigc_cli.models.latent import parse_dims, traversal

    base = torch.arange(4, dtype=torch.float32)
    t = traversal(base, [1, 3], 5, 2.0)
    assert t.shape == (2, 5, 4)
    assert t[0, :, 1].tolist() == [-2, -1, 0, 1, 2] and t[1, :, 3].tolist() == [-2, -1, 0, 1, 2]
    assert (t[0, :, [0, 2, 3]] == base[[0, 2, 3]]).all() and (t[1, :, :3] == base[:3]).all()
    assert parse_dims("all", 3) == [0, 1, 2]
    assert parse_dims("2", 4) == [2] and parse_dims("3, 0", 4) == [0, 3] and parse_dims("1-3", 5) == [1, 2, 3]
    for bad in ("x", "5", "-1", "", "1-9"):
        with pytest.raises(ConfigError):
            parse_dims(bad, 5)
    with pytest.raises(ConfigError):
        traversal(base, [0], 1, 2.0)
    with pytest.raises(ConfigError):
        traversal(base, [0], 3, 0.0)


def test_render_png_and_gif_exact_frames():
    from aigc_cli.cli.interpolate import output_format
    from aigc_cli.core.images import render

    frames = torch.zeros(1, 6, 1, 4, 4)
    frames[0, 3:] = 1.0  # three equal frames, then three others: still six GIF frames
    gif = render(frames, "gif", fps=5)
    got = gif_frames(gif)
    assert len(got) == 6 and got[0].max() == 0 and got[5].min() == 255
    assert Image.open(io.BytesIO(gif)).info["duration"] == 200
    png = Image.open(io.BytesIO(render(frames, "png")))
    assert png.size == (6 * 6 + 2, 6 + 2)
    two_rows = render(torch.rand(3, 4, 3, 4, 4), "gif", fps=10)
    assert len(gif_frames(two_rows)) == 4
    colour = torch.rand(1, 3, 3, 4, 4)
    first = gif_frames(render(colour, "gif"))[0]
    assert np.abs(first.astype(int) - (colour[0, 0].permute(1, 2, 0).numpy() * 255).round()).max() <= 1
    assert output_format("x.gif", None) == "gif" and output_format("-", None) == "png"
    assert output_format("-", "gif") == "gif" and output_format("x.PNG", None) == "png"


# -- the command ------------------------------------------------------------------------------------

def test_interpolate_seeds_png_and_gif(cli, home, tmp_path):
    code, out, err = cli("interpolate", "v", "--from-seed", "1", "--to-seed", "2", "--frames", "5",
                         "-o", tmp_path / "i.png", "--json")
    assert code == 0, err
    info = json.loads(out)
    assert info["frames"] == 5 and info["from_seed"] == 1 and info["mode"] == "slerp"
    assert Image.open(tmp_path / "i.png").size == (5 * 10 + 2, 10 + 2)  # one strip of 5 frames

    code, _, err = cli("interpolate", "v", "--from-seed", "1", "--to-seed", "2", "--frames", "7", "--fps", "4",
                       "--mode", "lerp", "-o", tmp_path / "i.gif")
    assert code == 0, err
    frames = gif_frames((tmp_path / "i.gif").read_bytes())
    assert len(frames) == 7
    assert Image.open(tmp_path / "i.gif").info["duration"] == 250
    # The strip's first frame is the sample of seed 1, as `aigc sample` draws it.
    code, _, err = cli("sample", "v", "-n", "1", "--seed", "1", "-o", tmp_path / "s.png")
    strip = np.asarray(Image.open(tmp_path / "i.png"))[2:10, 2:10]
    assert np.array_equal(strip, np.asarray(Image.open(tmp_path / "s.png"))[2:10, 2:10])

    # Same seed at both ends: all frames equal, still exactly N GIF frames.
    code, _, err = cli("interpolate", "v", "--from-seed", "3", "--to-seed", "3", "--frames", "4", "-o", tmp_path / "same.gif")
    assert code == 0 and len(gif_frames((tmp_path / "same.gif").read_bytes())) == 4

    code, png, err = cli("interpolate", "v", "--frames", "3", "-o", "-")
    assert code == 0 and png.startswith(b"\x89PNG")
    code, gif, err = cli("interpolate", "v", "--frames", "3", "-o", "-", "--format", "gif")
    assert code == 0 and gif.startswith(b"GIF89a") and len(gif_frames(gif)) == 3


def test_interpolate_gan_run(cli, home, tmp_path, clean_error):
    code, _, err = cli("interpolate", "g", "--frames", "6", "-o", tmp_path / "g.gif")
    assert code == 0, err
    assert len(gif_frames((tmp_path / "g.gif").read_bytes())) == 6
    code, _, err = cli("interpolate", "g", "--between", home / "a.png", home / "b.png", "-o", tmp_path / "x.png")
    clean_error(code, err, "gan run", "--between")
    assert not (tmp_path / "x.png").exists()
    code, _, err = cli("reconstruct", "g", home / "a.png", "-o", tmp_path / "x.png")
    clean_error(code, err, "gan run")


def test_interpolate_between_images(cli, home, tmp_path, clean_error):
    code, out, err = cli("interpolate", "v", "--between", home / "a.png", home / "b.png", "--frames", "4",
                         "-o", tmp_path / "b.png", "--json")
    assert code == 0, err
    assert "converted b.png: 16x16 -> 8x8" in err  # resized and made grey for the 8x8 grey run
    assert Image.open(tmp_path / "b.png").size == (4 * 10 + 2, 12)
    # The endpoints are the reconstructions of the two images.
    code, _, err = cli("reconstruct", "v", home / "a.png", "-o", tmp_path / "r.png")
    recon = np.asarray(Image.open(tmp_path / "r.png"))[12:20, 2:10]
    assert np.array_equal(np.asarray(Image.open(tmp_path / "b.png"))[2:10, 2:10], recon)

    code, _, err = cli("interpolate", "v", "--between", home / "a.png", home / "notes.txt", "-o", tmp_path / "x.png")
    clean_error(code, err, "not an image")
    code, _, err = cli("interpolate", "v", "--between", home / "a.png", home / "nope.png", "-o", tmp_path / "x.png")
    clean_error(code, err, "no such file")
    code, _, err = cli("interpolate", "v", "--between", home / "a.png", home / "b.png", "--from-seed", "1",
                       "-o", tmp_path / "x.png")
    clean_error(code, err, "--from-seed")


def test_quiet_hides_conversion_warnings(cli, home, tmp_path):
    code, out, err = cli("-q", "interpolate", "v", "--between", home / "a.png", home / "b.png", "--frames", "3",
                         "-o", tmp_path / "b.png", "--json")
    assert code == 0 and err == "", err
    assert json.loads(out)["converted"] == ["b.png: 16x16 -> 8x8"]  # still reported, on stdout


def test_json_reports_the_label_used(cli, home, tmp_path):
    code, out, err = cli("interpolate", "c", "--frames", "3", "-o", tmp_path / "c.png", "--json")
    assert code == 0, err
    assert json.loads(out)["label"] == 0  # omitted on a conditional run: class 0 is drawn
    assert "label=0" in Image.open(tmp_path / "c.png").text["aigc:interpolate"]
    code, out, err = cli("interpolate", "c", "--frames", "3", "--label", "2", "-o", tmp_path / "c.png", "--json")
    assert code == 0 and json.loads(out)["label"] == 2, err
    code, out, err = cli("interpolate", "v", "--frames", "3", "-o", tmp_path / "v.png", "--json")
    assert code == 0 and json.loads(out)["label"] is None, err  # unconditional: no class


def test_default_class_is_said(cli, home, tmp_path):
    code, _, err = cli("interpolate", "c", "--frames", "3", "-o", tmp_path / "c.png")
    said = " ".join(err.split())  # rich wraps lines at the terminal's width
    assert code == 0 and "class 0 of" in said and "--label K" in said, err
    code, _, err = cli("interpolate", "c", "--frames", "3", "--label", "1", "-o", tmp_path / "c.png")
    said = " ".join(err.split())
    assert code == 0 and "wrote 3 frames" in said and "class 0" not in said, err


def test_interpolate_latents_and_traverse(cli, home, tmp_path, clean_error):
    z = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    np.save(tmp_path / "z.npy", z)
    code, out, err = cli("interpolate", "v", "--latents", tmp_path / "z.npy", "--frames", "5", "-o", tmp_path / "p.gif")
    assert code == 0, err
    assert len(gif_frames((tmp_path / "p.gif").read_bytes())) == 5
    np.save(tmp_path / "one.npy", z[:1])
    code, _, err = cli("interpolate", "v", "--latents", tmp_path / "one.npy", "-o", tmp_path / "x.png")
    clean_error(code, err, "2 or more")

    code, out, err = cli("interpolate", "v", "--traverse", "all", "--frames", "6", "--range", "2",
                         "-o", tmp_path / "t.png", "--json")
    assert code == 0, err
    assert json.loads(out)["rows"] == 4
    assert Image.open(tmp_path / "t.png").size == (6 * 10 + 2, 4 * 10 + 2)  # a row per dimension
    code, out, err = cli("interpolate", "v", "--traverse", "1,2", "--latents", tmp_path / "one.npy", "--frames", "3",
                         "-o", tmp_path / "t.gif", "--json")
    assert code == 0, err
    info = json.loads(out)
    assert info["latents"] == str(tmp_path / "one.npy") and info["from_seed"] is None and "mode" not in info
    assert len(gif_frames((tmp_path / "t.gif").read_bytes())) == 3
    code, _, err = cli("interpolate", "v", "--traverse", "7", "-o", tmp_path / "x.png")
    clean_error(code, err, "0..3")


@pytest.mark.parametrize("args, words", [
    (["--frames", "1"], ["--frames", "at least 2"]),
    (["--frames", "0"], ["--frames"]),
    (["-o", "out.jpg"], [".png", ".gif"]),
    (["-o", "out.png", "--format", "gif"], ["--format"]),
    (["-o", "-", "--format", "webp"], ["--format"]),
    (["-o", "out.gif", "--fps", "0"], ["--fps"]),
    (["--mode", "cubic"], ["--mode"]),
    (["--label", "1"], ["not class-conditional"]),
    (["--traverse", "0", "--to-seed", "3"], ["--to-seed"]),
    (["--traverse", "0", "--mode", "slerp"], ["--mode does not apply to --traverse"]),
    (["--traverse", "0", "--mode", "lerp"], ["--mode", "drop --mode"]),
])
def test_interpolate_bad_input(cli, home, tmp_path, clean_error, args, words):
    if "-o" not in args:
        args = [*args, "-o", tmp_path / "x.png"]
    code, _, err = cli("interpolate", "v", *args)
    clean_error(code, err, *words)


@pytest.mark.parametrize("fps", ["60", "50.5", "nan"])
def test_fps_above_50_refused(cli, home, tmp_path, clean_error, fps):
    from aigc_cli.core.errors import ConfigError
    from aigc_cli.core.images import render

    code, _, err = cli("interpolate", "v", "--frames", "3", "--fps", fps, "-o", tmp_path / "x.gif")
    clean_error(code, err, "--fps must be in (0, 50]")
    assert not (tmp_path / "x.gif").exists()
    with pytest.raises(ConfigError, match="50"):
        render(torch.zeros(1, 2, 1, 4, 4), "gif", fps=float(fps))
    assert Image.open(io.BytesIO(render(torch.zeros(1, 2, 1, 4, 4), "gif", fps=50))).info["duration"] == 20


def test_from_seed_help_names_the_zero_base(cli):
    code, out, _ = cli("interpolate", "--help")
    assert code == 0 and "zero vector if omitted" in " ".join(out.decode().split())


def test_interpolate_unknown_run(cli, home, tmp_path):
    code, _, err = cli("interpolate", "nosuchrun", "-o", tmp_path / "x.png")
    assert code == 1 and "Traceback" not in err
