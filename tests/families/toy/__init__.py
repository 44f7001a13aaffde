"""A toy family for the tests: a linear decoder trained to reproduce images from noise."""

from aigc_cli.core.options import Option
from aigc_cli.models.registry import STEPS, FamilySpec, latent_dim_option, register_family

SPEC = register_family(FamilySpec(
    name="toy",
    summary="Train a toy model (tests only).",
    implementation="aigc_cli.models.toy.family:ToyFamily",
    options=(
        latent_dim_option(4),
        Option("lr", float, 0.01, "Adam learning rate.", above=0.0),
    ),
    # A decode option, as a diffusion sampler's steps: how many times the decoder
    # refines its output (here: repeats a damped update).
    decode_options=(STEPS,),  # the shared declaration (models/registry.py): one flag, one meaning
    export_formats=("images",),
))
