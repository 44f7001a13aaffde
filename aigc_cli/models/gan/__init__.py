"""GAN family: MLP GAN and DCGAN with bce, hinge and wgan-gp losses."""

from aigc_cli.models.gan import family  # noqa: F401  (registers the family)
