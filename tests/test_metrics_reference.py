"""Agreement with pytorch-fid and torch-fidelity themselves, on seeded random Inception weights.

The real weights file cannot be downloaded here; a seeded random state dict with the same keys
and shapes is loaded into both pytorch-fid's network and ours.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from aigc_cli.metrics.inception import expected_shapes
from aigc_cli.metrics.testing import random_state_dict

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# Each reference library through a fixture: without one, only the tests that compare with it skip.
@pytest.fixture(scope="module")
def pfid():
    return SimpleNamespace(inception=pytest.importorskip("pytorch_fid.inception"),
                           score=pytest.importorskip("pytorch_fid.fid_score"))


@pytest.fixture(scope="module")
def fidelity():
    return SimpleNamespace(kid=pytest.importorskip("torch_fidelity.metric_kid"),
                           isc=pytest.importorskip("torch_fidelity.metric_isc"),
                           prc=pytest.importorskip("torch_fidelity.metric_prc"))


@pytest.fixture(scope="module")
def state():
    return random_state_dict(seed=0)


@pytest.fixture(scope="module")
def weights_file(state, tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "random_inception.pth"
    torch.save(state, path)
    return path


@pytest.fixture(scope="module")
def patched_url(state, pfid):
    """pytorch-fid's loader hands back our seeded state dict instead of downloading."""
    mp = pytest.MonkeyPatch()
    mp.setattr(pfid.inception, "load_state_dict_from_url", lambda *a, **k: {k2: v.clone() for k2, v in state.items()})
    yield
    mp.undo()


@pytest.fixture(scope="module")
def ref_model(patched_url, pfid):
    return pfid.inception.InceptionV3([3]).eval()


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Two folders of small PNGs: colour blobs (A), and noisier ones plus grayscale images (B)."""
    from PIL import Image

    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:32, 0:32]
    out = []
    for name, count, noise in (("a", 8, 20), ("b", 8, 60)):
        folder = root / name
        folder.mkdir()
        for i in range(count):
            cy, cx, r = rng.uniform(8, 24), rng.uniform(8, 24), rng.uniform(4, 12)
            blob = ((yy - cy) ** 2 + (xx - cx) ** 2 < r * r)[..., None] * rng.uniform(60, 255, 3)
            img = np.clip(blob + rng.normal(0, noise, (32, 32, 3)), 0, 255).astype(np.uint8)
            if name == "b" and i % 3 == 0:
                Image.fromarray(img[..., 0], mode="L").save(folder / f"{i:03d}.png")
            else:
                Image.fromarray(img).save(folder / f"{i:03d}.png")
        out.append(folder)
    return out


def test_weights_layout_is_pytorch_fids(patched_url, pfid):
    theirs = pfid.inception.fid_inception_v3().state_dict()
    ours = expected_shapes()
    assert {k: tuple(v.shape) for k, v in theirs.items()} == ours
    assert len(ours) == 566  # the entries of pt_inception-2015-12-05-6726825d.pth


def test_network_matches_pytorch_fid_on_the_same_input(state, ref_model):
    from aigc_cli.metrics.inception import FIDInceptionV3

    model = FIDInceptionV3()
    model.load_state_dict(state)
    model.eval()
    x = torch.rand(2, 3, 40, 40)
    with torch.no_grad():
        theirs = ref_model(x)[0].flatten(1)
        resized = torch.nn.functional.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        plain = model(2 * resized - 1)
        fused = model.fused()(2 * resized - 1)
    assert torch.equal(plain, theirs)  # the same operations in the same order: bit for bit
    assert (fused - theirs).abs().max() <= 1e-5 * theirs.abs().max()
    assert theirs.std() > 0.05 and torch.isfinite(theirs).all()  # random weights, lively features


@pytest.fixture(scope="module")
def pytorch_fid_activations(folders, ref_model, pfid):
    acts = []
    for folder in folders:
        files = sorted(folder.glob("*.png"))
        acts.append(pfid.score.get_activations(files, ref_model, batch_size=8, dims=2048, device="cpu", num_workers=0))
    return acts


@pytest.fixture(scope="module")
def our_features(folders, weights_file):
    from aigc_cli.metrics.features import Extractor, FolderReader, list_images

    ex = Extractor(weights_file, "cpu", batch_size=8)
    return [ex.extract(FolderReader(list_images(f), batch_size=5)) for f in folders]


def test_features_match_pytorch_fid(pytorch_fid_activations, our_features):
    for theirs, ours in zip(pytorch_fid_activations, our_features):
        assert ours.features.shape == theirs.shape
        assert np.abs(ours.features - theirs).max() <= 1e-5 * np.abs(theirs).max()


def test_statistics_match_pytorch_fid(pytorch_fid_activations, our_features):
    from aigc_cli.metrics.stats import compute_stats

    for theirs, ours in zip(pytorch_fid_activations, our_features):
        stats = compute_stats(ours.features)
        assert stats.mu.dtype == np.float64 and stats.sigma.dtype == np.float64
        np.testing.assert_allclose(stats.mu, np.mean(theirs, axis=0), rtol=0, atol=1e-5 * np.abs(theirs).max())
        ref_sigma = np.cov(theirs, rowvar=False)
        assert np.abs(stats.sigma - ref_sigma).max() <= 1e-4 * np.abs(ref_sigma).max()


@pytest.mark.parametrize("n,d", [(600, 64), (40, 128)])  # full rank, and rank-deficient (n < d)
def test_frechet_distance_matches_pytorch_fid(n, d, pfid):
    from aigc_cli.metrics.frechet import frechet_distance

    rng = np.random.default_rng(n)
    a = np.abs(rng.standard_normal((n, d))) * 0.3 + rng.random(d)
    b = np.abs(rng.standard_normal((n, d))) * 0.4 + rng.random(d)
    m1, s1, m2, s2 = a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False)
    theirs = pfid.score.calculate_frechet_distance(m1, s1, m2, s2)
    assert frechet_distance(m1, s1, m2, s2) == pytest.approx(theirs, rel=1e-6)
    assert frechet_distance(m1, s1, m1, s1) == pytest.approx(0, abs=1e-6 * theirs)


@pytest.mark.slow  # scipy's sqrtm of a 2048x2048 matrix inside pytorch-fid: ~20 s on 2 cores
def test_whole_fid_pipeline_matches_pytorch_fid(folders, weights_file, pytorch_fid_activations, cli, monkeypatch, tmp_path,
                                                 pfid):
    """pytorch-fid's calculate_fid_given_paths is get_activations -> mean/cov -> calculate_frechet_distance."""
    from aigc_cli.metrics.frechet import frechet_distance

    stats = []
    for act in pytorch_fid_activations:  # calculate_activation_statistics, verbatim
        stats += [np.mean(act, axis=0), np.cov(act, rowvar=False)]
    theirs = pfid.score.calculate_frechet_distance(*stats)
    # Same statistics, our Frechet distance: 1e-6 relative.
    assert frechet_distance(*stats) == pytest.approx(theirs, rel=1e-6)

    # Our whole pipeline, from the PNG files, through the CLI: 1e-3 relative.
    monkeypatch.setenv("AIGC_HOME", str(tmp_path / "home"))
    code, out, err = cli("eval", "fid", folders[0], folders[1], "--inception-weights", weights_file, "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["fid"] == pytest.approx(theirs, rel=1e-3)
    assert (result["n_a"], result["n_b"]) == (8, 8)


# ----------------------------------------------------------------------------------------------
# torch-fidelity: KID, IS, precision/recall on the same features

def test_kid_matches_torch_fidelity(fidelity):
    from aigc_cli.metrics.kid import kid

    rng = np.random.default_rng(0)
    fa = np.abs(rng.standard_normal((70, 2048))).astype(np.float32)
    fb = (np.abs(rng.standard_normal((60, 2048))) * 1.05 + 0.02).astype(np.float32)
    theirs = fidelity.kid.kid_features_to_metric(
        torch.from_numpy(fa), torch.from_numpy(fb), kid_subsets=20, kid_subset_size=50, verbose=False, rng_seed=2020
    )
    ours = kid(fa, fb, subsets=20, subset_size=50)
    assert ours.mean == pytest.approx(theirs["kernel_inception_distance_mean"], rel=1e-4)
    assert ours.std == pytest.approx(theirs["kernel_inception_distance_std"], rel=1e-3)


def test_inception_score_matches_torch_fidelity(fidelity):
    from aigc_cli.metrics.isc import inception_score

    logits = (torch.randn(123, 1008, generator=torch.Generator().manual_seed(0)) * 3).numpy()
    theirs = fidelity.isc.isc_features_to_metric(torch.from_numpy(logits), splits=10, shuffle=True, rng_seed=2020)
    ours = inception_score(logits, splits=10)
    assert ours.mean == pytest.approx(theirs["inception_score_mean"], rel=1e-9)
    assert ours.std == pytest.approx(theirs["inception_score_std"], rel=1e-6)


def test_precision_recall_match_torch_fidelity(fidelity):
    from aigc_cli.metrics.prc import precision_recall

    rng = np.random.default_rng(0)
    gen = rng.standard_normal((90, 32)).astype(np.float32)
    real = (rng.standard_normal((80, 32)) * 1.3 + 0.3).astype(np.float32)
    theirs = fidelity.prc.prc_features_to_metric(
        torch.from_numpy(gen), torch.from_numpy(real), prc_neighborhood=3, prc_batch_size=10000,
        save_cpu_ram=False, verbose=False,
    )
    ours = precision_recall(gen, real, k=3, block=16)  # small blocks: the blocked path
    assert ours.precision == pytest.approx(theirs["precision"])
    assert ours.recall == pytest.approx(theirs["recall"])
    assert ours.f_score == pytest.approx(theirs["f_score"])
    assert 0 < ours.precision < 1 and 0 < ours.recall < 1


@pytest.mark.usefixtures("fidelity")
def test_is_logits_are_torch_fidelitys_logits_unbiased(weights_file):
    """torch-fidelity reads the same weights layout; its IS input is pool features @ fc.weight.T."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    from aigc_cli.metrics.weights import load_model

    fe = FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"],
                                     feature_extractor_weights_path=str(weights_file))  # fmt: skip
    assert fe.get_default_feature_layer_for_metric("isc") == "logits_unbiased"
    x = torch.randint(0, 256, (1, 3, 16, 16), dtype=torch.uint8)
    with torch.no_grad():
        pool, logits = fe(x)
    model, _ = load_model(weights_file)
    assert torch.allclose(model.fused().logits_unbiased(pool), logits, rtol=1e-5, atol=1e-5)
