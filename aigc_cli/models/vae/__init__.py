"""VAE family: MLP and convolutional VAEs with Bernoulli or Gaussian likelihoods, beta and CVAE
(family.py implements it)."""

from aigc_cli.core.options import Option
from aigc_cli.models.registry import (
    TRUNCATION,
    FamilySpec,
    conditional_option,
    latent_dim_option,
    register_family,
    width_option,
)

# Defaults chosen for the best samples per CPU-minute; docs/vae.md says why.
SPEC = register_family(FamilySpec(
    name="vae",
    summary="Train a VAE: MLP or convolutional, Bernoulli or Gaussian likelihood, beta-VAE, CVAE.",
    implementation="aigc_cli.models.vae.family:VaeFamily",
    options=(
        Option("arch", str, "conv", "mlp or conv.", choices=("conv", "mlp")),
        Option("likelihood", str, "auto", "bernoulli, gaussian or auto (bernoulli for grey images and shapes, "
               "gaussian for other colour images).", choices=("auto", "bernoulli", "gaussian")),
        Option("beta", float, 1.0, "Weight of the KL term (beta-VAE); 1 is the plain VAE.", minimum=0.0),
        Option("kl_warmup", float, 0.0, "Epochs over which the KL weight ramps up from 0 to --beta.", minimum=0.0),
        # gmm: sample from a mixture fitted to the encoded training images (prior.py)
        Option("prior", str, "gmm", "Where samples start: gmm (a Gaussian mixture fitted to the encoded training "
               "images at every save) or standard (N(0, I), the textbook VAE).", choices=("gmm", "standard")),
        Option("lr", float, 1e-3, "Adam learning rate.", above=0.0),
        latent_dim_option(16),
        width_option(32),
        # Unconditional unless asked, unlike the GAN: a CVAE's samples are hardly better
        # (docs/vae.md), and reconstruct/--between would need every image's class.
        conditional_option("Class-conditional (a CVAE; needs labels).", "unconditional"),
    ),
    conditions=("label",),
    draw_options=(TRUNCATION,),
    encoder="encoder",
    traverse=True,
    docs="docs/vae.md",
))
