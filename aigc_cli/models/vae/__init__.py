"""VAE family: MLP and convolutional VAEs with Bernoulli or Gaussian likelihoods, beta and CVAE."""

from aigc_cli.models.vae import family  # noqa: F401  (registers the family)
