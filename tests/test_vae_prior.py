"""The VAE's fitted prior: the mixture fit itself, the sampler's use of it, and the CLI around it
(--prior, sample --save-latents, runs made before priors existed)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open

from aigc_cli.models.vae.prior import MAX_FIT_POINTS, GmmPrior, components_for, fit_gmm, fit_subset


def two_blobs(n=3000, seed=0):
    """30% of points around (-4, 0) with an elongated covariance, 70% around (3, 2), isotropic."""
    g = torch.Generator().manual_seed(seed)
    first = int(0.3 * n)
    a = torch.randn(first, 2, generator=g, dtype=torch.float64) @ torch.tensor([[1.0, 0.0], [0.8, 0.4]]).T.double()
    b = torch.randn(n - first, 2, generator=g, dtype=torch.float64) * 0.5
    return torch.cat([a + torch.tensor([-4.0, 0.0]), b + torch.tensor([3.0, 2.0])])


def test_fit_gmm_recovers_a_known_mixture():
    weights, means, tril = fit_gmm(two_blobs(), 2, seed=0)
    order = means[:, 0].argsort()  # the component on the left first
    weights, means, covs = weights[order], means[order], (tril @ tril.mT)[order]
    assert torch.allclose(weights, torch.tensor([0.3, 0.7]), atol=0.01)
    assert torch.allclose(means, torch.tensor([[-4.0, 0.0], [3.0, 2.0]]), atol=0.1)
    assert torch.allclose(covs[0], torch.tensor([[1.0, 0.8], [0.8, 0.8]]), atol=0.12)
    assert torch.allclose(covs[1], 0.25 * torch.eye(2), atol=0.03)


def test_fit_gmm_is_deterministic_for_a_seed_and_depends_on_it():
    x = torch.randn(500, 3, generator=torch.Generator().manual_seed(1))
    a, b, c = fit_gmm(x, 4, seed=5), fit_gmm(x, 4, seed=5), fit_gmm(x, 4, seed=6)
    assert all(torch.equal(p, q) for p, q in zip(a, b))
    assert not torch.equal(a[1], c[1])


@pytest.mark.parametrize("points", [torch.zeros(40, 3), torch.randn(3, 3)])
def test_fit_gmm_degenerate_data_stays_finite(points):
    """Identical points, or fewer points than components: finite parameters, weights summing to 1."""
    weights, means, tril = fit_gmm(points, 5, seed=0)
    assert len(weights) <= 5
    assert all(torch.isfinite(t).all() for t in (weights, means, tril))
    assert float(weights.sum()) == pytest.approx(1.0, abs=1e-5)


def test_fit_gmm_does_not_depend_on_the_codes_scale():
    """Codes of any size (an autoencoder at beta 0) fit the same mixture, in their own units."""
    x = two_blobs(1000)
    w1, m1, l1 = fit_gmm(x, 2, seed=0)
    w2, m2, l2 = fit_gmm(x * 1000 + 5, 2, seed=0)
    assert torch.allclose(w1, w2, atol=1e-4)
    assert torch.allclose(m1 * 1000 + 5, m2, rtol=1e-4, atol=0.05)
    assert torch.allclose(l1 * 1000, l2, rtol=1e-3, atol=0.05)


def test_prior_fit_keeps_its_shape_and_ignores_non_finite_codes():
    prior = GmmPrior(5, 3)
    prior.fit(torch.randn(3, 3), seed=0)  # 3 points, 5 components: 2 unused ones
    assert prior.weights.shape == (5,) and float(prior.weights[3:].sum()) == 0.0
    assert torch.isfinite(prior.scale_tril).all()
    before = [t.clone() for t in (prior.weights, prior.means, prior.scale_tril)]
    prior.fit(torch.tensor([[0.0, float("nan"), 1.0]] * 10), seed=0)
    assert all(torch.equal(a, b) for a, b in zip(before, (prior.weights, prior.means, prior.scale_tril)))
    assert torch.isfinite(prior.codes(torch.randn(50, 3), torch.rand(50))).all()


def test_prior_codes_pick_components_by_u_and_scale_eps():
    prior = GmmPrior(2, 2)
    prior.weights.copy_(torch.tensor([0.25, 0.75]))
    prior.means.copy_(torch.tensor([[10.0, 0.0], [-10.0, 0.0]]))
    prior.scale_tril.copy_(torch.stack([torch.eye(2) * 2, torch.tensor([[1.0, 0.0], [1.0, 1.0]])]))
    eps = torch.tensor([[1.0, 1.0], [1.0, 1.0], [1.0, 1.0]])
    codes = prior.codes(eps, torch.tensor([0.1, 0.3, 0.99]))
    assert torch.allclose(codes, torch.tensor([[12.0, 2.0], [-9.0, 2.0], [-9.0, 2.0]]))


def test_an_unfitted_prior_is_the_standard_normal():
    eps = torch.randn(8, 4)
    assert torch.equal(GmmPrior(3, 4).codes(eps, torch.rand(8)), eps)


def test_components_grow_with_the_dataset_up_to_30():
    assert [components_for(n) for n in (1, 64, 256, 1000, 10_000, 60_000)] == [1, 1, 2, 10, 30, 30]


def test_fit_subset_is_all_images_or_a_fixed_seeded_sample():
    assert fit_subset(MAX_FIT_POINTS, seed=0) is None
    keep = fit_subset(3 * MAX_FIT_POINTS, seed=0)
    assert len(keep) == MAX_FIT_POINTS == len(keep.unique()) and int(keep.max()) < 3 * MAX_FIT_POINTS
    assert torch.equal(keep, fit_subset(3 * MAX_FIT_POINTS, seed=0))
    assert not torch.equal(keep, fit_subset(3 * MAX_FIT_POINTS, seed=1))


@pytest.fixture
def bars(tmp_path, aigc_home, make_bars):
    return str(make_bars(tmp_path / "bars.npz", n=320))


def weights_keys(run_dir):
    with safe_open(str(run_dir / "model.safetensors"), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def test_train_vae_fits_the_prior_and_sample_draws_from_it(cli, bars, tmp_path, aigc_home, tiny_vae):
    from aigc_cli.generation import load_generator

    code, out, err = cli(*["train", "vae", "--dataset", bars, "--epochs", "1", *tiny_vae["args"], "--json"])
    assert code == 0, err
    run_dir = aigc_home / "runs" / "run1"
    config = json.loads((run_dir / "config.json").read_text())
    assert config["model"]["prior"] == "gmm" and config["model"]["prior_components"] == 3  # 320 images
    tensors = weights_keys(run_dir)
    means = tensors["prior.means"]
    assert means.shape == (3, 4) and means.abs().sum() > 0  # fitted, not the N(0, I) it starts as
    assert float(tensors["prior.weights"].sum()) == pytest.approx(1.0, abs=1e-5)

    # The mixture is fitted to the posterior means of the training images.
    gen = load_generator("run1")
    data = np.load(bars)
    codes = gen.encode(torch.from_numpy(data["images"])[:, None]).double()
    mixture_mean = (tensors["prior.weights"].double()[:, None] * means.double()).sum(0)
    assert torch.allclose(mixture_mean, codes.mean(0), atol=1e-3)

    # Sampled latents are the mixture's samples: reproducible, and not the N(0, I) draws.
    z = gen.latents(64, seed=3)
    assert torch.equal(z, gen.latents(64, seed=3))
    standard = torch.randn(64, 4, generator=torch.Generator().manual_seed(3))
    assert not torch.allclose(z, standard)

    # --save-latents writes exactly the latents that --latents takes back: same pixels.
    a, b, saved = tmp_path / "a.png", tmp_path / "b.png", tmp_path / "z.npy"
    code, _, err = cli(*["sample", "run1", "-n", "9", "--seed", "3", "-o", str(a), "--save-latents", str(saved)])
    assert code == 0, err
    assert np.array_equal(np.load(saved), gen.latents(9, seed=3).numpy())
    code, _, err = cli(*["sample", "run1", "--latents", str(saved), "-o", str(b)])
    assert code == 0, err
    from PIL import Image

    assert np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(b)))


def test_prior_standard_samples_the_textbook_normal(cli, bars, tmp_path, aigc_home, tiny_vae):
    from aigc_cli.generation import load_generator

    code, _, err = cli(*["train", "vae", "--dataset", bars, "--epochs", "1", *tiny_vae["args"], "--prior", "standard"])
    assert code == 0, err
    assert not any(k.startswith("prior.") for k in weights_keys(aigc_home / "runs" / "run1"))
    gen = load_generator("run1")
    assert gen.sampler.prior is None and gen.sampler.latent_distribution == "normal"
    assert torch.equal(gen.latents(5, seed=2), torch.randn(5, 4, generator=torch.Generator().manual_seed(2)))


def test_runs_from_before_priors_sample_from_the_standard_normal(cli, bars, tmp_path, aigc_home, tiny_vae):
    from aigc_cli.generation import load_generator

    code, _, err = cli(*["train", "vae", "--dataset", bars, "--epochs", "1", *tiny_vae["args"]])
    assert code == 0, err
    path = aigc_home / "runs" / "run1" / "config.json"
    config = json.loads(path.read_text())
    del config["model"]["prior"], config["model"]["prior_components"]
    path.write_text(json.dumps({**config, "format": "aigc-run/1"}))  # a run from before priors
    gen = load_generator("run1")
    assert gen.sampler.prior is None and gen.sampler.latent_distribution == "normal"
    assert torch.equal(gen.latents(5, seed=2), torch.randn(5, 4, generator=torch.Generator().manual_seed(2)))
    code, _, err = cli(*["sample", "run1", "-n", "4", "-o", str(tmp_path / "old.png")])
    assert code == 0, err


def test_bad_prior_and_save_latents_names_are_clean_errors(cli, bars, tmp_path, aigc_home, clean_error, tiny_vae):
    code, _, err = cli(*["train", "vae", "--dataset", bars, "--epochs", "1", *tiny_vae["args"], "--prior", "flow"])
    clean_error(code, err, "--prior", "gmm, standard")
    assert not (aigc_home / "runs" / "run1").exists()
    code, _, err = cli(*["train", "vae", "--dataset", bars, "--epochs", "1", *tiny_vae["args"]])
    assert code == 0, err
    code, _, err = cli(*["sample", "run1", "-o", str(tmp_path / "s.png"), "--save-latents", str(tmp_path / "z.txt")])
    clean_error(code, err, ".npy")
    assert not (tmp_path / "s.png").exists()
