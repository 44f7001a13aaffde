"""The family protocol and registry: what a model family declares, and how it is found.

A family is a folder ``aigc_cli/models/<name>/``. Its ``__init__.py`` registers a
:class:`FamilySpec` (light: no torch, read by ``aigc --help``); the spec names the module that
implements it (:class:`FamilyImpl`, imported on first use). Families are discovered by listing
the folders of ``aigc_cli.models``, so adding one touches nothing outside its folder: ``aigc
train <name>`` is generated from its options, and sample, interpolate, reconstruct, eval and
export read its capability flags instead of its name.

Generation (see :class:`Sampler`): a seed gives latents of ``latent_shape`` (flattened to
``(N, D)`` wherever they travel: ``--latents`` files, interpolation paths, ONNX inputs); a
decoder maps ``(z, labels)`` to images in [0, 1] in one module, which may iterate inside (a
diffusion sampler's steps) and is exported as is; an encoder, where the family has one, maps
images back to latents. Generation options (``truncation`` for the GAN and the VAE) are
declared by the family, with where they act: ``draw`` options change how a seed becomes a
latent, ``decode`` options change how latents become images.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Protocol

from aigc_cli.core.errors import ConfigError, opt
from aigc_cli.core.options import Option, option_table, resolve
from aigc_cli.core.registry import Registry

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

PRODUCTS = ("images", "text")  # what a family can produce; commands check it before they start
ENCODERS = ("encoder", "inversion")  # how a family maps images to latents, if it can

# The commands that work on a run, by what its family produces (``FamilySpec.commands``);
# reconstruct and interpolate --between also need an encoder. A command outside the list refuses
# a run with one line naming those that do work (``require_command``).
COMMANDS = {
    "images": ("sample", "interpolate", "reconstruct", "eval fid", "eval kid", "eval is", "eval pr", "export onnx"),
    "text": ("sample", "eval ppl", "export onnx"),
}


@dataclass(frozen=True)
class FamilySpec:
    """What a family declares, read without importing torch."""

    name: str
    summary: str  # one line: the help of ``aigc train <name>``
    implementation: str  # "module:attribute" of its FamilyImpl
    options: tuple[Option, ...] = ()  # training options (besides the loop's: epochs, batch size...)
    draw_options: tuple[Option, ...] = ()  # generation: how a seed becomes a latent (sample)
    decode_options: tuple[Option, ...] = ()  # generation: how latents become images (every command)
    produces: str = "images"  # or "text": which data it trains on, and which commands apply (COMMANDS)
    encoder: str | None = None  # "encoder" or "inversion": reconstruct and interpolate --between work
    traverse: bool = False  # latent dimensions are worth varying one at a time (--traverse)
    export_formats: tuple[str, ...] = ("images", "fidelity")  # aigc export onnx --format
    docs: str = ""  # the docs page about the family, for messages

    @property
    def generate_options(self) -> tuple[Option, ...]:
        return self.draw_options + self.decode_options

    @property
    def commands(self) -> tuple[str, ...]:
        """The commands that work on this family's runs."""
        return tuple(c for c in COMMANDS[self.produces] if c != "reconstruct" or self.encoder is not None)

    def option(self, name: str) -> Option:
        return option_table(self.options)[name]

    def defaults(self) -> dict[str, Any]:
        return {o.name: o.default for o in self.options}


@dataclass(frozen=True)
class TrainingData:
    """What the training loop indexes: ``items[idx]`` is a batch (images (N, C, H, W) uint8; a text
    family's token windows (N, L) int64), ``labels`` (N,) or None. Built by the family's
    ``training_data`` from the loaded dataset (``Family.training_data``)."""

    items: "torch.Tensor"
    labels: "torch.Tensor | None"
    unit: str = "images"  # metrics.jsonl's rate: images_per_s, tokens_per_s
    per_item: int = 1  # units in one item: 1 image; a text window's trained tokens
    held_out: "torch.Tensor | None" = None  # scored after every epoch by the task's ``validate``

    def __len__(self) -> int:
        return len(self.items)


@dataclass(frozen=True)
class GraphInput:
    """One input of an exported network: ``name``, ``dtype`` ("float32" or "int64"), the shape
    after the batch axis, and ``make(n, generator)``: (n, *shape) values to check the export on.

    A string in ``shape`` is a named dynamic axis of the graph (``ExportGraph.dynamic``), e.g. a
    text model's ``("L",)``; ``make`` is then called with its size as well: ``make(n, g, L=16)``."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]
    make: Callable[..., "torch.Tensor"]
    note: dict[str, Any] = field(default_factory=dict)  # shown in the export report, e.g. {"classes": 10}


@dataclass(frozen=True)
class ExportGraph:
    """A network as ``aigc export onnx --format F`` writes it: ``module(*inputs)`` -> one tensor."""

    module: "nn.Module"
    inputs: tuple[GraphInput, ...]
    output: str
    output_dtype: str
    output_shape: tuple[int | str, ...]  # after the batch axis; a string: a named dynamic axis
    summary: str  # the ONNX doc string: what the graph computes
    metadata: dict[str, str] = field(default_factory=dict)  # aigc.* entries beyond the common ones
    output_range: tuple[float, float] | None = None
    rtol: float = 1e-3  # ONNX Runtime against PyTorch
    atol: float = 1e-5
    # Dynamic axes besides the batch axis (which every graph has): name -> (smallest, largest or
    # None for no bound), e.g. {"L": (1, 64)} for a sequence length; the names appear in the
    # inputs' and the output's shapes. The export traces them symbolically and checks several sizes.
    dynamic: dict[str, tuple[int, int | None]] = field(default_factory=dict)


class Sampler(Protocol):
    """How a family's trained modules turn latents into images (built by ``FamilyImpl.sampler``)."""

    latent_shape: tuple[int, ...]  # one latent, e.g. (64,), or (C, H, W) for initial noise
    latent_distribution: str  # what draw() gives, for export metadata: "normal", "fitted-gmm", ...

    def draw(self, n: int, generator: "torch.Generator", **options: Any) -> "torch.Tensor":
        """(n, D) latents on the CPU from a seeded generator, D = prod(latent_shape)."""

    def decoder(self, **options: Any) -> "nn.Module":
        """(z (N, D), labels (N,) or None) -> (N, C, H, W) images in [0, 1]; exported as is. A
        decoder that runs its network several times per call (a diffusion sampler's steps) says
        how often in ``passes`` and calls ``on_pass()`` after each when it is set: commands show
        progress over those passes (``Generator.generate(progress=...)``)."""

    def encoder(self, **options: Any) -> "nn.Module | None":
        """(x (N, C, H, W) in [0, 1], labels) -> z (N, D); None unless the spec declares an encoder."""

    def export_graph(self, fmt: str) -> ExportGraph:
        """The network of an export format the spec declares besides ``images`` and ``fidelity``
        (which every family exports through its decoder), e.g. diffusion's ``denoiser``."""


class TrainTask(Protocol):
    """A family's training side, built by ``FamilyImpl.make_task``; training/loop.py drives it."""

    modules: dict[str, "nn.Module"]  # everything that goes into a checkpoint (EMA copies too)
    optimizers: dict[str, "torch.optim.Optimizer"]

    def train_step(self, batch: "torch.Tensor", labels: "torch.Tensor | None", step: int) -> dict[str, "torch.Tensor"]:
        """One update on a (B, C, H, W) uint8 batch; returns detached scalar losses."""

    def inference_modules(self) -> dict[str, "nn.Module"]:
        """What model.safetensors holds: the modules the family's ``build`` rebuilds."""

    def sync_inference(self, images: "torch.Tensor", labels: "torch.Tensor | None") -> None:
        """Bring the inference modules up to date before they are saved or previewed (e.g.
        re-estimate BatchNorm statistics of an EMA generator, fit a prior to the encoded data).
        images: the whole training set on the device, (N, C, H, W) uint8; labels (N,) or None."""

    def previews(self) -> dict[str, "torch.Tensor | str"]:
        """name -> (B, C, H, W) images in [0, 1] from fixed inputs, saved as samples/<name>_epochNNN.png;
        or text (a text family's continuations of fixed prompts), saved as samples/<name>_epochNNN.txt."""

    # Optional: training state that is neither a module nor an optimizer (fp16's loss scale), as
    # JSON-able values; the checkpoint keeps it and a resume gives it back.
    # def extra_state(self) -> dict[str, Any]: ...
    # def load_extra_state(self, state: dict[str, Any]) -> None: ...


class FamilyImpl(Protocol):
    """The torch side of a family: config, training task, modules and sampler."""

    def make_config(self, options: dict[str, Any], dataset_info: dict[str, Any]) -> tuple[dict, dict]:
        """(model, train) sections of config.json from the resolved options (None: decide here)."""

    def make_task(self, config: dict[str, Any], device: "torch.device") -> TrainTask:
        """The training side: modules, optimizers, one train_step."""

    def build(self, config: dict[str, Any]) -> dict[str, "nn.Module"]:
        """The inference modules stored in model.safetensors, untrained."""

    def sampler(self, modules: dict[str, "nn.Module"], config: dict[str, Any], device: "torch.device") -> Sampler:
        """Generation from the loaded inference modules, placed on ``device`` (a text family's
        sampler is a TextSampler: models/text/sampling.py)."""

    # Optional: the loop's items from the loaded dataset, when they are not its images and labels
    # (a text family tokenizes its corpus into windows).
    # def training_data(self, data: Any, config: dict[str, Any]) -> TrainingData: ...


@dataclass
class Family:
    """A registered family: its spec, and its implementation imported on first use."""

    spec: FamilySpec
    _impl: Any = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def impl(self) -> FamilyImpl:
        if self._impl is None:
            module, _, attr = self.spec.implementation.partition(":")
            self._impl = getattr(importlib.import_module(module), attr)
        return self._impl

    def make_config(self, given: dict[str, Any], dataset_info: dict[str, Any]) -> tuple[dict, dict]:
        """The (model, train) sections of config.json from the options given (None or absent:
        the declared default), each checked against its declaration first."""
        return self.impl.make_config(resolve(self.spec.options, given, f"the {self.name} family"), dataset_info)

    def training_data(self, data: Any, config: dict[str, Any]) -> TrainingData:
        """What the loop trains on: the family's own ``training_data``, else the images and labels."""
        if hasattr(self.impl, "training_data"):
            return self.impl.training_data(data, config)
        return TrainingData(data.images, data.labels)


FAMILIES: Registry[Family] = Registry("model family")


def register_family(spec: FamilySpec) -> FamilySpec:
    """Validate and register a family's spec; its package's ``__init__`` calls this."""
    if spec.produces not in PRODUCTS:
        raise ValueError(f"family {spec.name!r}: produces must be one of {PRODUCTS}, got {spec.produces!r}")
    if spec.encoder is not None and spec.encoder not in ENCODERS:
        raise ValueError(f"family {spec.name!r}: encoder must be one of {ENCODERS} or None")
    if spec.implementation.count(":") != 1:
        raise ValueError(f"family {spec.name!r}: implementation must be 'module:attribute'")
    option_table(spec.options)  # refuses an option declared twice (training/options.py: or a loop option's name)
    option_table(spec.generate_options)
    FAMILIES.register(spec.name)(Family(spec))
    return spec


_discovered = False


def _discover() -> None:
    """Import every family package under aigc_cli/models/ (each registers itself)."""
    global _discovered
    if _discovered:
        return
    _discovered = True
    import aigc_cli.models as pkg

    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name):
        if info.ispkg:
            importlib.import_module(f"{pkg.__name__}.{info.name}")


def get_family(name: str) -> Family:
    _discover()
    return FAMILIES.get(name)


def list_families() -> list[str]:
    _discover()
    return FAMILIES.names()


def family_specs() -> list[FamilySpec]:
    return [get_family(n).spec for n in list_families()]


def require_command(spec: FamilySpec, command: str, run_id: str) -> None:
    """A one-line error when ``command`` does not work on ``run_id``, a run of ``spec``."""
    if command not in spec.commands:
        kind = spec.name if spec.name == spec.produces else f"{spec.name} ({spec.produces})"
        takers = families_where(lambda s: command in s.commands)
        raise ConfigError(f"'aigc {command}' does not apply to {run_id}, a {kind} run (it does to "
                          f"{', '.join(takers)} runs); for {spec.name} runs use: "
                          f"{', '.join('aigc ' + c for c in spec.commands)}")


def families_where(test) -> list[str]:
    """Names of the families whose spec passes ``test``: for messages such as "works for gan, vae"."""
    return [s.name for s in family_specs() if test(s)]


def generation_options(kind: str) -> list[Option]:
    """The union of the families' ``draw`` or ``decode`` options, for the commands' flags; an
    option two families declare must be declared the same way."""
    seen: dict[str, Option] = {}
    for spec in family_specs():
        for o in spec.draw_options if kind == "draw" else spec.decode_options:
            if seen.setdefault(o.name, o) != o:
                raise ValueError(f"generation option {o.name!r} is declared differently by two families")
    return list(seen.values())


def check_generation_options(spec: FamilySpec, given: dict[str, Any], run_id: str) -> dict[str, Any]:
    """The options given (not None) for a run of ``spec``, checked; one it does not take is an error."""
    table = option_table(spec.generate_options)
    out = {}
    for name, value in given.items():
        if value is None:
            continue
        if name not in table:
            takers = families_where(lambda s: name in option_table(s.generate_options))
            raise ConfigError(
                f"{opt(name)} does not apply to {run_id}, a {spec.name} run (it does to {', '.join(takers)} runs)"
            )
        out[name] = table[name].check(value)
    return out


# -- options several families declare the same way ---------------------------------------------


def width_option(default: int) -> Option:
    return Option("width", int, default, "Base channel count / hidden width unit.", minimum=1)


def latent_dim_option(default: int) -> Option:
    return Option("latent_dim", int, default, "Size of the latent vector.", minimum=1)


def conditional_option(help: str, default_text: str) -> Option:
    return Option("conditional", bool, None, help, default_text=default_text, off_flag="--unconditional")


# Options of iterative samplers, shared so that one flag means one thing for every family.
STEPS = Option("steps", int, None, "Steps of an iterative sampler (diffusion: denoising steps).",
               default_text="the family's; 25 for diffusion", minimum=1)

TRUNCATION = Option(
    "truncation", float, None, "Truncation psi: redraw latent values with |z| > psi.", above=0.0
)
