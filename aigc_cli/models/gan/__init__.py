"""GAN family: MLP GAN and DCGAN with bce, hinge and wgan-gp losses (family.py implements it)."""

from aigc_cli.core.options import Option
from aigc_cli.models.registry import (
    TRUNCATION,
    FamilySpec,
    conditional_option,
    latent_dim_option,
    register_family,
    width_option,
)

# Defaults chosen for the best samples per CPU-minute; docs/train.md says why.
SPEC = register_family(FamilySpec(
    name="gan",
    summary="Train a GAN: MLP or DCGAN, with bce, hinge (spectral norm) or wgan-gp loss.",
    implementation="aigc_cli.models.gan.family:GanFamily",
    options=(
        Option("arch", str, "dcgan", "mlp or dcgan.", choices=("dcgan", "mlp")),
        Option("loss", str, "hinge", "bce, hinge or wgan-gp.", choices=("bce", "hinge", "wgan-gp")),
        Option("lr", float, None, "Adam learning rate.", default_text="per loss", above=0.0),
        latent_dim_option(64),
        width_option(32),
        conditional_option("Class-conditional training (needs labels).", "conditional when the dataset has labels"),
        # How D and G take turns. simultaneous: both step from one scoring of the fake batch (one
        # D pass over the fakes fewer per step: 8 to 13% faster on the CPU here, with samples as
        # good on MNIST; docs/benchmarks/gan.md). alternating: D steps, then G steps against the
        # updated D (the DCGAN tutorial's order).
        Option("updates", str, "simultaneous", "simultaneous (D and G both step from one scoring of the fakes) "
               "or alternating (D steps, then G against the updated D).", choices=("alternating", "simultaneous")),
        Option("lr_d", float, None, "The discriminator's learning rate.", default_text="lr", above=0.0, cli=False),
        Option("class_lr_scale", float, 100.0, "Learning-rate multiplier of the per-class tables.", above=0.0, cli=False),
        Option("ema_decay", float, 0.999, "Decay of the generator's weight average.", minimum=0.0, below=1.0,
               cli=False),
    ),
    conditions=("label",),
    draw_options=(TRUNCATION,),
    traverse=True,
    docs="docs/train.md",
))
