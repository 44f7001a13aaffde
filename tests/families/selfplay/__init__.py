"""A test family whose task makes its own training batches (no dataset): the shape of a run that
trains on samples it draws itself, as reinforcement learning does."""

from aigc_cli.core.options import Option
from aigc_cli.models.registry import FamilySpec, latent_dim_option, register_family

SPEC = register_family(FamilySpec(
    name="selfplay",
    summary="Train a self-play model (tests only).",
    implementation="aigc_cli.models.selfplay.family:SelfPlayFamily",
    trains_on="none",
    options=(
        latent_dim_option(4),
        Option("lr", float, 0.05, "SGD learning rate.", above=0.0),
        Option("steps_per_epoch", int, 5, "Batches the task makes per epoch.", minimum=1),
    ),
    export_formats=("images",),
))
