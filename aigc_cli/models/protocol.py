"""The family protocol: what a family's implementation provides, as abstract base classes whose
optional methods do nothing by default (docs/architecture.md).

- :class:`FamilyImpl`: a run's config, its training task, its inference modules and sampler.
- :class:`TrainTask`: the training side. It declares its modules, its parameter groups
  (``param_groups``: the loop builds the optimizers, EMA copies, gradient clipping and the
  learning-rate schedule from them, and may freeze parameters) and one ``train_step``.
- :class:`Sampler` (image runs) and :class:`TextSampler` (text runs): generation from the loaded
  inference modules. An image sampler draws latents from a seed and decodes them under a
  :class:`~aigc_cli.models.conditions.Conditioning` through one :class:`Decoder` module, which is
  also what the ONNX export traces.

Light to import: torch only where a method runs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from aigc_cli.core.errors import ConfigError
from aigc_cli.core.schema import Field, check_fields
from aigc_cli.models.graphs import ExportGraph

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

    from aigc_cli.models.optim import Optim, OptimizerSpec


@dataclass(frozen=True)
class TrainingData:
    """What the training loop steps through. From a dataset: ``items[idx]`` is a batch (images
    (N, C, H, W) uint8; a text family's token windows (N, L) int64) and ``labels`` (N,) or None,
    in epochs of a seeded order. Without one (``items`` None): ``steps_per_epoch`` batches a
    task makes itself (``TrainTask.make_batch``), e.g. from its own samples."""

    items: "torch.Tensor | None"
    labels: "torch.Tensor | None" = None
    unit: str = "images"  # metrics.jsonl's rate: images_per_s, tokens_per_s
    per_item: int = 1  # units in one item: 1 image; a text window's trained tokens
    held_out: "torch.Tensor | None" = None  # scored after every epoch by the task's ``validate``
    steps_per_epoch: int | None = None  # self-made batches only: steps between two epoch ends
    windows: "torch.Tensor | None" = None  # --crop random: (N, C, M, M) images whose random windows train
    mapped: bool = False  # read from a memory-mapped file: a GPU takes each batch, not the whole set

    def __len__(self) -> int:
        return len(self.items) if self.items is not None else 0


class Sampler(ABC):
    """How a family's trained modules turn latents into images (``FamilyImpl.sampler``).

    ``latent_shape``: one latent, e.g. (64,), or (C, H, W) for a diffusion model's initial noise;
    latents travel flattened as (N, D) arrays everywhere (``--latents`` files, interpolation
    paths, ONNX inputs). ``conditions``: the condition kinds this run accepts, each with what the
    kind needs to build its values (``{"label": 10}``; ``{}``: unconditional)."""

    latent_shape: tuple[int, ...]
    latent_distribution: str = "normal"  # what draw() gives, for export metadata: "normal", "fitted-gmm"
    conditions: dict[str, Any] = {}

    @abstractmethod
    def draw(self, n: int, generator: "torch.Generator", **options: Any) -> "torch.Tensor":
        """(n, D) latents on the CPU from a seeded generator, D = prod(latent_shape), under the
        family's draw options (truncation)."""

    @abstractmethod
    def decoder(self, **options: Any) -> "nn.Module":
        """The :class:`Decoder` under the family's decode options (a sampler's steps, a guidance
        scale): (z (N, D), Conditioning) -> (N, C, H, W) images in [0, 1]; exported as is."""

    def encoder(self, **options: Any) -> "nn.Module | None":
        """(images (N, C, H, W) in [0, 1], Conditioning) -> z (N, D); None unless the spec
        declares an encoder."""
        return None

    def export_graph(self, fmt: str) -> ExportGraph:
        """The network of an export format the spec declares besides ``images`` and ``fidelity``
        (which every image family exports through its decoder), e.g. diffusion's ``denoiser``."""
        raise ConfigError(f"this run has no {fmt!r} network to export")


class TextSampler(ABC):
    """A trained text model, loaded for generation and scoring (``FamilyImpl.sampler`` of a
    family that produces text). ``start``: the text an empty prompt stands for."""

    tokenizer: Any  # encode(text, what) -> (L,) ids; decode(ids) -> text; stream()
    context: int
    start: str

    @property
    def conditions(self) -> dict[str, Any]:
        return {"prompt": {"defaults": [self.start], "empty": self.start}}

    @abstractmethod
    def generate(self, prompt: "torch.Tensor", n: int, length: int, generator: "torch.Generator", *,
                 on_tokens: Callable[["torch.Tensor"], None] | None = None, **options: Any) -> "torch.Tensor":
        """(n, length) token ids after the ``prompt`` ids (P,), under the family's decode options
        (temperature, top_k, top_p); ``on_tokens((n,) ids)`` hears each step."""

    @abstractmethod
    def token_losses(self, tokens: "torch.Tensor",
                     progress: Callable[[int, int], None] | None = None) -> tuple[float, int]:
        """(sum of the next-token losses in nats, tokens scored) over ``tokens`` (L,);
        ``progress(done, total)`` hears of the work as it goes (a long file's scoring)."""

    def export_graph(self, fmt: str) -> ExportGraph:
        raise ConfigError(f"this run has no {fmt!r} network to export")


class TrainTask(ABC):
    """A family's training side (``FamilyImpl.make_task``); training/loop.py drives it.

    ``modules``: everything that goes into a checkpoint. The loop adds the EMA copies the
    parameter groups ask for (``<name>_ema``) and sets ``optim`` (name -> :class:`Optim`: the
    optimizer with its clipping, schedule, loss scaling and EMA) before the first step."""

    modules: dict[str, "nn.Module"]
    optim: dict[str, "Optim"]

    @abstractmethod
    def param_groups(self) -> dict[str, "OptimizerSpec"]:
        """Optimizer name -> what it trains and how (models/optim.py); the loop builds them."""

    @abstractmethod
    def train_step(self, batch: "torch.Tensor", labels: "torch.Tensor | None", step: int) -> dict[str, "torch.Tensor"]:
        """One update on a batch (images (B, C, H, W) uint8, or a text family's token windows);
        returns detached scalar losses."""

    @abstractmethod
    def inference_names(self) -> dict[str, str]:
        """What model.safetensors holds, name -> the training module it is (the GAN's ``G`` is
        its ``G_ema``): the explicit map between a run's inference and training modules."""

    def inference_modules(self) -> dict[str, "nn.Module"]:
        """The modules the family's ``build`` rebuilds, as saved to model.safetensors."""
        return {name: self.modules[source] for name, source in self.inference_names().items()}

    def sync_inference(self, images: "torch.Tensor | None", labels: "torch.Tensor | None") -> None:
        """Bring the inference modules up to date before they are saved or previewed (an EMA
        generator's BatchNorm statistics, a fitted prior). ``images``: the whole training set on
        the device, (N, C, H, W) uint8, or None when the task makes its own batches."""

    def previews(self) -> dict[str, "torch.Tensor | str"]:
        """name -> (B, C, H, W) images in [0, 1] from fixed inputs, saved as
        samples/<name>_epochNNN.png; or text, saved as samples/<name>_epochNNN.txt."""
        return {}

    def validate(self, held_out: "torch.Tensor") -> dict[str, float]:
        """Scores of the held-out data after every epoch (and at a --time stop), into metrics.jsonl."""
        return {}

    def extra_state(self) -> dict[str, Any]:
        """Training state that is neither a module nor an optimizer, as JSON-able values."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """What ``extra_state`` gave, on resume."""

    def make_batch(self, batch_size: int, step: int) -> tuple["torch.Tensor", "torch.Tensor | None"]:
        """The batch of ``step`` when the task makes its own (TrainingData without items): this
        rank's ``batch_size`` rows, drawn with core.distributed's batch_* so that N ranks draw
        the global batch of one process."""
        raise NotImplementedError(f"{type(self).__name__} trains on a dataset")


class FamilyImpl(ABC):
    """The torch side of a family. ``model_fields``/``train_fields`` declare the fields of its
    config.json sections; a run's config is checked against them when it is loaded."""

    model_fields: tuple[Field, ...] = ()
    train_fields: tuple[Field, ...] = ()

    @abstractmethod
    def make_config(self, options: dict[str, Any], dataset_info: dict[str, Any],
                    data: Any = None) -> tuple[dict, dict]:
        """(model, train) sections of config.json from the resolved options (None: decide here),
        ``dataset_info`` (the dataset's ``info()``) and ``data``, the training data itself (a
        TextCorpus, an image dataset; None where only its info is at hand: benches, tests) for a
        config that learns from it (the text family's BPE vocabulary)."""

    @abstractmethod
    def make_task(self, config: dict[str, Any], device: "torch.device") -> TrainTask:
        """The training side: modules, parameter groups, one train_step."""

    @abstractmethod
    def build(self, config: dict[str, Any]) -> dict[str, "nn.Module"]:
        """The inference modules stored in model.safetensors, untrained."""

    @abstractmethod
    def sampler(self, modules: dict[str, "nn.Module"], config: dict[str, Any],
                device: "torch.device") -> "Sampler | TextSampler":
        """Generation from the loaded inference modules, placed on ``device``."""

    def training_data(self, data: Any, config: dict[str, Any]) -> TrainingData:
        """What the loop trains on: by default the dataset's images and labels."""
        return TrainingData(data.images, data.labels, windows=data.windows, mapped=data.mapped)

    def upgrade_config(self, config: dict[str, Any], version: int) -> dict[str, Any]:
        """A config written by run format ``version`` (older than runs/store.py's RUN_FORMAT)
        with every field the current code reads: what older runs did, made explicit."""
        return config

    # Runs started from another's weights (models/inherit.py): the 'model' fields such a run
    # decides from its own data and options; every other field is the parent's architecture.
    init_free: tuple[str, ...] = ()

    def init_model(self, parent: dict[str, Any], fresh: dict[str, Any], parent_id: str) -> tuple[dict, list[str]]:
        """The 'model' section of a run started from ``parent``'s weights, given ``fresh``, the
        section made for its own data and options; and what to tell the user (a class table
        started afresh). A parent whose network cannot take this data is a one-line error."""
        return {**parent, **{k: fresh[k] for k in self.init_free if k in fresh}}, []

    def data_notes(self, data: Any, config: dict[str, Any]) -> list[str]:
        """What to tell the user about how a new run uses its data (a captioned run: captions cut
        to its text encoder's length); printed as train starts. None by default."""
        return []

    def lora_targets(self, config: dict[str, Any]) -> dict[str, tuple[str, ...]]:
        """Inference module -> glob patterns of the layers ``--lora`` adapts by default
        (models/adapters.py); empty: the family has no default, ``--lora-targets`` must say."""
        return {}

    def check_config(self, config: dict[str, Any], where: str) -> None:
        """The declared fields' types and ranges; families add checks across fields."""
        check_fields(config["model"], self.model_fields, f"{where} 'model'")
        check_fields(config["train"], self.train_fields, f"{where} 'train'")


class Decoder:
    """Mixin for a sampler's decoder module: ``forward(z, cond, on_pass=None)``. ``passes``: how
    often one call runs the network (a diffusion sampler's steps); an iterating decoder calls
    ``on_pass()`` after each, which commands show as progress (``Generator.generate``)."""

    passes: int = 1
