"""`aigc export onnx`: export, ONNX Runtime check, metadata, dynamic batch, sample parity,
the torch-fidelity variant, and bad input (no weights, unwritable path, bad opset, disagreement)."""

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from aigc_cli.core.images import to_uint8
from aigc_cli.export import onnx as onnx_export

ort = pytest.importorskip("onnxruntime")


def session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def no_leftovers(folder):
    return not [p.name for p in folder.iterdir() if p.name.startswith(".") or p.name.endswith(".tmp")]


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """One AIGC_HOME with two tiny runs: run1 = MLP, unconditional, 1x8x8; run2 = DCGAN, conditional, 3x8x8."""
    from aigc_cli.training import train

    root = tmp_path_factory.mktemp("export")
    rng = np.random.default_rng(0)
    np.savez(root / "gray.npz", images=rng.integers(0, 256, (32, 8, 8), dtype=np.uint8))
    np.savez(root / "rgb.npz", images=rng.integers(0, 256, (32, 8, 8, 3), dtype=np.uint8),
             labels=rng.integers(0, 3, 32))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AIGC_HOME", str(root / "home"))
        train("gan", dataset=str(root / "gray.npz"), arch="mlp", width=4, latent_dim=8, epochs=1,
              batch_size=16, device="cpu")
        train("gan", dataset=str(root / "rgb.npz"), arch="dcgan", width=4, latent_dim=8, epochs=1,
              batch_size=16, device="cpu", conditional=True)
        yield root


@pytest.fixture(scope="module")
def exported(home, cli_captured):
    """Both runs exported once through the CLI: run1 plain (opset 18), run2 with --json --opset 17."""
    out = home / "models"  # does not exist yet: export creates it
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AIGC_HOME", str(home / "home"))
        return {
            "run1": cli_captured("export", "onnx", "run1", "-o", str(out / "run1.onnx")),
            "run2": cli_captured("export", "onnx", "run2", "-o", str(out / "run2.onnx"), "--json", "--opset", "17"),
            "paths": {"run1": out / "run1.onnx", "run2": out / "run2.onnx"},
        }


def pytorch_images(run, z, labels=None):
    from aigc_cli.generation import load_generator

    from aigc_cli.models.conditions import Conditioning

    gen = load_generator(run)
    cond = Conditioning(len(z), labels=None if labels is None else torch.from_numpy(labels))
    return gen.generate(torch.from_numpy(z), cond).numpy()


# --------------------------------------------------------------------------- success


def test_export_and_verify_unconditional(exported):
    code, out, err = exported["run1"]
    target = exported["paths"]["run1"]
    assert code == 0, err
    assert target.is_file() and no_leftovers(target.parent)
    assert out.startswith("max_abs_diff") and float(out.split()[-1]) < 1e-5  # stdout: the largest difference
    assert "matches PyTorch on batches 1, 7, 64" in err and "Traceback" not in err
    s = session(target)
    assert [(i.name, i.type) for i in s.get_inputs()] == [("z", "tensor(float)")]
    assert [(o.name, o.type, o.shape[1:]) for o in s.get_outputs()] == [("images", "tensor(float)", [1, 8, 8])]


def test_json_report_conditional(exported):
    code, out, err = exported["run2"]
    target = exported["paths"]["run2"]
    assert code == 0, err
    report = json.loads(out)
    assert report["ok"] and report["verification"]["ok"] and report["opset"] == 17
    assert [b["batch"] for b in report["verification"]["batches"]] == [1, 7, 64]
    assert report["max_abs_diff"] < 1e-5 and report["verification"]["rtol"] == 1e-3
    assert report["verification"]["atol"] == 1e-5 and report["verification"]["provider"] == "CPUExecutionProvider"
    assert [i["name"] for i in report["inputs"]] == ["z", "label"] and report["num_classes"] == 3
    assert report["outputs"][0]["shape"] == ["N", 3, 8, 8] and report["output"] == str(target)
    s = session(target)
    assert [(i.name, i.type) for i in s.get_inputs()] == [("z", "tensor(float)"), ("label", "tensor(int64)")]
    import onnx

    assert [o.version for o in onnx.load(str(target)).opset_import if o.domain in ("", "ai.onnx")] == [17]


def test_metadata(exported):
    meta = onnx_export.read_metadata(exported["paths"]["run2"])
    assert meta["aigc.run_id"] == "run2" and meta["aigc.family"] == "gan" and meta["aigc.arch"] == "dcgan"
    assert meta["aigc.latent_dim"] == "8" and json.loads(meta["aigc.image_shape"]) == [3, 8, 8]
    assert meta["aigc.num_classes"] == "3" and meta["aigc.conditional"] == "true"
    assert meta["aigc.format"] == "images" and meta["aigc.inputs"] == "z,label"
    from aigc_cli import __version__

    assert meta["aigc.version"] == __version__ and meta["aigc.opset"] == "17"
    meta1 = onnx_export.read_metadata(exported["paths"]["run1"])
    assert meta1["aigc.num_classes"] == "0" and meta1["aigc.conditional"] == "false" and meta1["aigc.inputs"] == "z"
    assert meta1["aigc.opset"] == str(onnx_export.DEFAULT_OPSET) and meta1["aigc.run_id"] == "run1"


@pytest.mark.parametrize("run", ["run1", "run2"])
def test_batch_axis_is_dynamic(exported, run):
    s = session(exported["paths"][run])
    assert all(isinstance(i.shape[0], str) for i in s.get_inputs())  # symbolic, not traced in
    for n in (1, 2, 3, 33):
        z = np.random.default_rng(n).standard_normal((n, 8)).astype(np.float32)
        feed = {"z": z}
        labels = None
        if run == "run2":
            labels = feed["label"] = (np.arange(n) % 3).astype(np.int64)
        (images,) = s.run(None, feed)
        assert images.shape == (n, 1 if run == "run1" else 3, 8, 8) and images.dtype == np.float32
        assert 0 <= images.min() and images.max() <= 1
        np.testing.assert_allclose(images, pytorch_images(run, z, labels), rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("run", ["run1", "run2"])
def test_sample_and_onnx_agree_within_one_grey_level(home, exported, cli, tmp_path, run):
    z = np.random.default_rng(42).standard_normal((10, 8)).astype(np.float32)
    np.save(tmp_path / f"z_{run}.npy", z)
    folder = tmp_path / f"samples_{run}"
    code, _, err = cli("sample", run, "--latents", str(tmp_path / f"z_{run}.npy"), "-o", f"{folder}/")
    assert code == 0, err
    pngs = sorted(folder.glob("*.png"))
    assert len(pngs) == 10
    sampled = np.stack([np.asarray(Image.open(p)) for p in pngs])  # (N, H, W) or (N, H, W, 3)
    if sampled.ndim == 3:
        sampled = sampled[..., None]
    feed = {"z": z}
    if run == "run2":
        feed["label"] = (np.arange(10) % 3).astype(np.int64)  # what `aigc sample` draws: classes in turn
    (images,) = session(exported["paths"][run]).run(None, feed)
    quantised = to_uint8(torch.from_numpy(images)).numpy().transpose(0, 2, 3, 1)
    assert quantised.shape == sampled.shape
    assert np.abs(quantised.astype(int) - sampled.astype(int)).max() <= 1


def pixel_stats_extractor():
    """A stand-in for torch-fidelity's Inception (no download): checks its input contract, gives means."""
    from torch_fidelity.feature_extractor_base import FeatureExtractorBase

    class PixelStats(FeatureExtractorBase):
        @staticmethod
        def get_provided_features_list():
            return ("mean",)

        def forward(self, x):
            # what torch-fidelity's extractors demand of a generator's output: uint8, (N, 3, H, W)
            assert x.dtype == torch.uint8 and x.dim() == 4 and x.shape[1] == 3, (x.dtype, x.shape)
            return (x.float().mean(dim=(1, 2, 3)),)

    return PixelStats("aigc-test-pixel-stats", ["mean"])


@pytest.mark.parametrize("run", ["run1", "run2"])
def test_fidelity_format_loads_in_torch_fidelity(home, exported, tmp_path, run, monkeypatch):
    tf_utils = pytest.importorskip("torch_fidelity.utils")
    from torch_fidelity.generative_model_onnx import GenerativeModelONNX

    target = tmp_path / "fidelity" / f"{run}.onnx"
    report = onnx_export.export_onnx(run, target, fmt="fidelity")
    assert report["verification"]["ok"] and report["outputs"][0]["dtype"] == "uint8"
    classes = 3 if run == "run2" else 0
    # Exactly what `fidelity --input1 X.onnx --input1-model-z-size 8 ...` builds.
    model = GenerativeModelONNX(str(target), 8, "normal", classes)
    assert model.input_names == (["z", "label"] if classes else ["z"])
    z = torch.randn(5, 8)
    args = [z] + ([torch.arange(5) % 3] if classes else [])
    fakes = model(*args)
    assert fakes.dtype == torch.uint8 and tuple(fakes.shape) == (5, 3, 8, 8)
    # Pixels equal the images export quantised as `aigc sample` does; grayscale repeated to RGB.
    feed = {"z": z.numpy(), **({"label": args[1].numpy()} if classes else {})}
    (floats,) = session(exported["paths"][run]).run(None, feed)
    expected = to_uint8(torch.from_numpy(floats))
    if run == "run1":
        expected = expected.repeat(1, 3, 1, 1)
    assert (fakes.int() - expected.int()).abs().max() <= 1
    # torch-fidelity's own sampling loop (its noise source, its label draw) over the wrapper.
    if classes:
        monkeypatch.setattr(np, "int", int, raising=False)  # torch-fidelity 0.4.0 still calls np.int
    feats = tf_utils.get_featuresdict_from_generative_model(
        model, pixel_stats_extractor(), num_samples=20, batch_size=8, cuda=False, rng_seed=1, verbose=False
    )
    assert feats["mean"].shape == (20,)
    assert "--input1-model-z-size 8" in onnx_export.fidelity_command(report)
    assert ("--input1-model-num-classes 3" in onnx_export.fidelity_command(report)) == bool(classes)


# --------------------------------------------------------------------------- bad input


def test_run_without_weights(home, cli, clean_error, tmp_path, monkeypatch):
    # A run without weights is added to a copy of the shared AIGC_HOME, never to the module's store.
    shutil.copytree(home / "home", tmp_path / "home")
    monkeypatch.setenv("AIGC_HOME", str(tmp_path / "home"))
    runs = tmp_path / "home" / "runs"
    shutil.copytree(runs / "run1", runs / "run7")
    (runs / "run7" / "model.safetensors").unlink()
    target = tmp_path / "bad" / "noweights.onnx"
    code, _, err = cli("export", "onnx", "run7", "-o", str(target))
    clean_error(code, err, "no weights")
    assert not target.exists()


def test_unwritable_output(home, cli, clean_error, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    for target in (blocker / "model.onnx", blocker / "deeper" / "model.onnx"):
        code, _, err = cli("export", "onnx", "run1", "-o", str(target))
        clean_error(code, err, "cannot write", "not a folder")
    assert blocker.read_text() == "not a folder"
    folder = tmp_path / "a_folder"
    folder.mkdir()
    code, _, err = cli("export", "onnx", "run1", "-o", str(folder))
    clean_error(code, err, "is a folder")
    assert list(folder.iterdir()) == []
    code, _, err = cli("export", "onnx", "run1", "-o", "-")
    clean_error(code, err, "stdout")


@pytest.mark.parametrize("opset", ["3", "15", "24", "99"])
def test_opset_out_of_range(home, cli, clean_error, tmp_path, opset):
    target = tmp_path / "bad" / f"opset{opset}.onnx"
    code, _, err = cli("export", "onnx", "run1", "-o", str(target), "--opset", opset)
    clean_error(code, err, "--opset must be between 16 and 23", f"got {opset}")
    assert not target.exists()


def test_exporter_refusal_is_one_line(home, cli, clean_error, tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise RuntimeError("Unsupported ONNX opset version: 19\n  File 'deep/inside.py', line 1\nmore")

    monkeypatch.setattr(torch.onnx, "export", refuse)
    (tmp_path / "bad").mkdir(exist_ok=True)
    target = tmp_path / "bad" / "refused.onnx"
    code, _, err = cli("export", "onnx", "run1", "-o", str(target), "--opset", "19")
    clean_error(code, err, "the ONNX exporter failed at opset 19: Unsupported ONNX opset version: 19")
    assert not target.exists() and no_leftovers(target.parent)


def test_bad_format_and_fidelity_name(home, cli, clean_error, tmp_path):
    code, _, err = cli("export", "onnx", "run1", "-o", str(tmp_path / "x.onnx"), "--format", "png")
    clean_error(code, err, "--format must be one of images, fidelity, denoiser")
    code, _, err = cli("export", "onnx", "run1", "-o", str(tmp_path / "x.onnx"), "--format", "denoiser")
    clean_error(code, err, "denoiser is not one that gan runs export to (images, fidelity)")
    code, _, err = cli("export", "onnx", "run1", "-o", str(tmp_path / "x.bin"), "--format", "fidelity")
    clean_error(code, err, "ending in .onnx")
    assert not (tmp_path / "x.onnx").exists() and not (tmp_path / "x.bin").exists()


def test_disagreement_fails_and_writes_nothing(home, exported, cli, clean_error, tmp_path, monkeypatch):
    real = onnx_export.reference_outputs

    def perturbed(module, feed, device):
        return real(module, feed, device) + np.float32(0.01)

    monkeypatch.setattr(onnx_export, "reference_outputs", perturbed)
    import onnx

    traced = onnx.load(str(exported["paths"]["run1"]))  # skip re-tracing: the check is what is tested here
    monkeypatch.setattr(onnx_export, "trace_to_onnx", lambda *a, **k: traced)
    folder = tmp_path / "disagree"
    target = folder / "model.onnx"
    code, out, err = cli("--quiet", "export", "onnx", "run1", "-o", str(target), "--json")
    clean_error(code, err, "ONNX Runtime disagrees with PyTorch", "largest difference 0.01", "not written")
    report = json.loads(out)  # --json still reports the comparison
    assert report["ok"] is False and report["verification"]["ok"] is False
    assert report["max_abs_diff"] == pytest.approx(0.01, rel=1e-3)
    assert not folder.exists()  # checked before anything is written: not even the folder is made


def test_vae_decoder_exports(tmp_path, monkeypatch):
    """A conditional conv VAE: its decoder exports through the family's sampler, no VAE-specific code."""
    from aigc_cli.models.registry import list_families

    if "vae" not in list_families():
        pytest.skip("no vae family registered yet")
    from aigc_cli.training import train

    monkeypatch.setenv("AIGC_HOME", str(tmp_path / "home"))
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "gray.npz", images=rng.integers(0, 256, (32, 8, 8), dtype=np.uint8),
             labels=rng.integers(0, 3, 32))
    run = train("vae", dataset=str(tmp_path / "gray.npz"), arch="conv", width=4, latent_dim=8, epochs=1,
                batch_size=16, device="cpu", conditional=True)
    report = onnx_export.export_onnx(run.id, tmp_path / "vae.onnx")  # the decoder, through the sampler contract
    assert report["family"] == "vae" and report["verification"]["ok"]
    assert [i["name"] for i in report["inputs"]] == ["z", "label"]
    meta = onnx_export.read_metadata(tmp_path / "vae.onnx")
    assert meta["aigc.family"] == "vae" and meta["aigc.latent_dim"] == "8"
    assert meta["aigc.z_distribution"] == "fitted-gmm"  # the default prior is not in the graph
