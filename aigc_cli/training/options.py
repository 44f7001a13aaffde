"""The options every family's training takes, with their defaults: read by ``aigc train
<family>``'s flags and help, by ``train()`` and by docs/options.md. Light to import (no torch)."""

from __future__ import annotations

from aigc_cli.core.options import Option, option_table, parse_duration
from aigc_cli.metrics.registry import FID_N

LOG_EVERY = 20  # steps between two rows of metrics.jsonl (and at the end of every epoch)

DATASET_HELP = "Dataset: a name (shapes, digits, mnist, fashion-mnist, cifar10), an image folder, an IDX or .npy/.npz file."

# Where the data comes from: first in every train command's help.
DATA_OPTIONS = (
    Option("dataset", str, "shapes", DATASET_HELP, short="-d"),
    Option("split", str, "train", "train or test, for named datasets."),
)
# How the loop runs: after the family's own options.
RUN_OPTIONS = (
    Option("epochs", int, 20, "Passes over the data.", short="-e", minimum=1),
    Option("time", str, None, "Wall-clock budget (90s, 10m, 1h30m): stop at a clean checkpoint "
           "when it runs out, or at the last epoch if that comes first.", default_text="none"),
    Option("batch_size", int, 64, "Images per training step.", short="-b", minimum=1),
    Option("seed", int, 0, "Seed of the weights, the data order and the noise."),
    Option("name", str, None, "A name to refer to the run by."),
    Option("log_every", int, LOG_EVERY, "Steps between two rows of metrics.jsonl (and the last step of "
           "every epoch).", minimum=1),
    Option("eval_every", int, 0, "Record FID every N epochs (0: never).", minimum=0),
    Option("fid_n", int, FID_N, "Samples for each FID of --eval-every.", minimum=2),
)
LOOP_OPTIONS = DATA_OPTIONS + RUN_OPTIONS


def train_options(family_options: tuple[Option, ...]) -> list[Option]:
    """Every option of one family's training, in the order ``aigc train <family> --help`` lists
    them; a family option named like a loop option is refused."""
    options = [*DATA_OPTIONS, *family_options, *RUN_OPTIONS]
    option_table(options)
    return options


def time_budget(value: str | None) -> float | None:
    """Seconds of a ``time`` option's value (None: no budget); OptionError for a bad one."""
    return None if value is None else parse_duration("time", value)
