"""The options every family's training takes, with their defaults: read by ``aigc train
<family>``'s flags and help, by ``train()`` and by docs/options.md. Light to import (no torch)."""

from __future__ import annotations

from aigc_cli.core.options import SEED_MAX, Option, option_table, parse_duration
from aigc_cli.core.schema import Field
from aigc_cli.metrics.registry import FID_N

LOG_EVERY = 20  # steps between two rows of metrics.jsonl (and at the end of every epoch)

DATASET_HELP = ("Dataset: a name (digits: built in, the MNIST test digits; shapes: built in; shapes-captions: built "
                "in, captioned; mnist, fashion-mnist, cifar10: downloaded once), an image folder, an IDX or "
                ".npy/.npz file.")
CORPUS_HELP = ("Text: a name (bard: built in; shakespeare: downloaded once), a UTF-8 text file or a folder of .txt "
               "files (the first 90% trains, the last 10% validates).")

# Where the data comes from, by what the family produces: first in every train command's help.
DATA_OPTIONS = (
    Option("dataset", str, "digits", DATASET_HELP, short="-d"),
    Option("split", str, "train", "train or test, for named datasets."),
    Option("resolution", int, None, "Scale every image so its short side is N px, then centre-crop it to N x N "
           "(antialiased; smaller images are upscaled and counted). Needed for a folder of images larger than "
           "256 px.", default_text="the dataset's own size", minimum=4, maximum=4096),
    Option("crop", str, "center", "How --resolution makes an image square: center (its middle N x N) or random "
           "(a random N x N window each batch, of the image scaled to 9/8 N; drawn from the run's seed).",
           choices=("center", "random")),
    Option("caption_column", str, "text", "The field of an image folder's metadata.jsonl that holds the captions "
           "(a folder without one takes cat.txt beside cat.png; docs/text-to-image.md)."),
    Option("flip", bool, False, "Flip training batches horizontally at random (each image with probability "
           "1/2, drawn from the run's seed). Off by default: digits and text-like images must not be mirrored."),
)
TEXT_DATA_OPTIONS = (
    Option("dataset", str, "bard", CORPUS_HELP, short="-d"),
    Option("split", str, "train", "train (the first 90%, the rest validates) or test (the last 10%, the rest validates)."),
)
# How the loop runs: after the family's own options.
RUN_OPTIONS = (
    Option("epochs", int, 20, "Passes over the data.", short="-e", minimum=1),
    Option("time", str, None, "Wall-clock budget (90s, 10m, 1h30m): stop at a clean checkpoint "
           "when it runs out, or at the last epoch if that comes first.", default_text="none"),
    Option("batch_size", int, 64, "Images per training step.", short="-b", minimum=1),
    Option("seed", int, 0, "Seed of the weights, the data order and the noise.", minimum=0, maximum=SEED_MAX),
    Option("name", str, None, "A name to refer to the run by."),
    Option("log_every", int, LOG_EVERY, "Steps between two rows of metrics.jsonl (and the last step of "
           "every epoch).", minimum=1),
    Option("eval_every", int, 0, "Record FID every N epochs (0: never).", minimum=0),
    Option("fid_n", int, FID_N, "Samples for each FID of --eval-every.", minimum=2),
)
# Text runs: sequences per step, and no FID (their held-out loss is logged every epoch instead).
TEXT_RUN_OPTIONS = tuple(
    Option("batch_size", int, 32, "Sequences of --context tokens per training step.", short="-b", minimum=1)
    if o.name == "batch_size" else o for o in RUN_OPTIONS if o.name not in ("eval_every", "fid_n")
)


# Starting from another run (models/inherit.py) and LoRA adapters (models/adapters.py): every family.
INIT_OPTIONS = (
    Option("init", str, None, "Start from RUN's weights (a run id, name or 'last'; or a folder 'aigc import' "
           "reads, imported first): its architecture, this run's data, a fresh optimizer.",
           default_text="random weights"),
    Option("lora", int, 0, "Train LoRA adapters of this rank on the --init run's frozen weights; the run "
           "holds only the adapters (0: train every weight). Adapters want a higher --lr than a full "
           "fine-tune (about 5x: docs/pretrained.md).", minimum=0, maximum=4096),
    Option("lora_alpha", float, None, "LoRA scale: the adapters' update is multiplied by alpha / rank.",
           default_text="the rank (scale 1)", above=0.0),
    Option("lora_targets", str, None, "Comma-separated glob patterns of the layers that get adapters "
           "(e.g. 'blocks.*.attn.qkv').", default_text="the family's choice (docs/pretrained.md)"),
)

# A family whose task makes its own batches: no data, no FID against it.
OWN_RUN_OPTIONS = tuple(o for o in RUN_OPTIONS if o.name not in ("eval_every", "fid_n"))

# By what a family trains on (models/registry.py TRAINS_ON): (data options, run options).
OPTIONS_BY_DATA = {
    "images": (DATA_OPTIONS, RUN_OPTIONS),
    "text": (TEXT_DATA_OPTIONS, TEXT_RUN_OPTIONS),
    "none": ((), OWN_RUN_OPTIONS),
}


def loop_options(trains_on: str = "images") -> tuple[Option, ...]:
    """The loop's options for a family that trains on ``trains_on``."""
    data, run = OPTIONS_BY_DATA[trains_on]
    return data + run + INIT_OPTIONS


def train_options(spec) -> list[Option]:
    """Every option of one family's training (``spec``: its FamilySpec), in the order ``aigc
    train <family> --help`` lists them; a family option named like a loop option is refused."""
    data, run = OPTIONS_BY_DATA[spec.trains_on]
    options = [*data, *spec.options, *run, *INIT_OPTIONS]
    option_table(options)
    return options


# The loop's fields in a run's config.json 'train' section, checked when a run is resumed.
LOOP_FIELDS = (
    Field("epochs", int, minimum=1),
    Field("batch_size", int, minimum=1),
    Field("log_every", int, minimum=1),
    Field("flip", bool, optional=True),  # image runs; absent before --flip (false)
)


def loop_section(train: dict) -> dict:
    """A config's 'train' section with the loop's fields of the current run format (runs of
    format 1 could lack log_every: they logged every LOG_EVERY steps)."""
    return {"log_every": LOG_EVERY, **train}


def time_budget(value: str | None) -> float | None:
    """Seconds of a ``time`` option's value (None: no budget); OptionError for a bad one."""
    return None if value is None else parse_duration("time", value)
