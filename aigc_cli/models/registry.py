"""The family registry: what a model family declares, and how it is found.

A family is a folder ``aigc_cli/models/<name>/``. Its ``__init__.py`` registers a
:class:`FamilySpec` (light: no torch, read by ``aigc --help``); the spec names the class that
implements it (a :class:`~aigc_cli.models.protocol.FamilyImpl`, imported on first use). Families
are discovered by listing the folders of ``aigc_cli.models``, so adding one touches nothing
outside its folder: ``aigc train <name>`` is generated from its options, and sample, interpolate,
reconstruct, eval and export read its declarations instead of its name.

Generation options are declared by the family with what they act on: ``draw`` options change
how a seed becomes a latent (truncation), ``decode`` options how latents (or a prompt) become an
output (a sampler's steps, a temperature); the *conditions* (a class label, a prompt) are
condition kinds (models/conditions.py) that the family says its runs may accept.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aigc_cli.core.errors import ConfigError, RunError, opt
from aigc_cli.core.options import Option, option_table, resolve
from aigc_cli.core.registry import Registry
from aigc_cli.core.schema import Field, check_fields
from aigc_cli.models.conditions import CONDITIONS, condition_options

if TYPE_CHECKING:  # pragma: no cover
    from aigc_cli.models.protocol import FamilyImpl, TrainingData

TRAINS_ON = ("images", "text", "none")  # what train loads (data.load_data); none: the task makes its batches
PRODUCTS = ("images", "text")  # what a family's runs generate: which commands apply, which renderer
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
    implementation: str  # "module:Class" of its FamilyImpl
    options: tuple[Option, ...] = ()  # training options (besides the loop's: epochs, batch size...)
    trains_on: str = "images"  # TRAINS_ON: the data train loads, and the loop's data options
    produces: str = "images"  # PRODUCTS: which commands apply (COMMANDS), the generator, the renderer
    conditions: tuple[str, ...] = ()  # condition kinds its runs may accept (models/conditions.py)
    draw_options: tuple[Option, ...] = ()  # generation: how a seed becomes a latent (sample)
    decode_options: tuple[Option, ...] = ()  # generation: how latents or a prompt become the output
    encoder: str | None = None  # "encoder" or "inversion": reconstruct and interpolate --between work
    traverse: bool = False  # latent dimensions are worth varying one at a time (--traverse)
    export_formats: tuple[str, ...] = ("images", "fidelity")  # aigc export onnx --format
    docs: str = ""  # the docs page about the family, for messages

    @property
    def condition_options(self) -> tuple[Option, ...]:
        return tuple(condition_options(self.conditions))

    @property
    def generate_options(self) -> tuple[Option, ...]:
        return self.draw_options + self.condition_options + self.decode_options

    @property
    def commands(self) -> tuple[str, ...]:
        """The commands that work on this family's runs."""
        return tuple(c for c in COMMANDS[self.produces] if c != "reconstruct" or self.encoder is not None)

    def option(self, name: str) -> Option:
        return option_table(self.options)[name]

    def defaults(self) -> dict[str, Any]:
        return {o.name: o.default for o in self.options}


@dataclass
class Family:
    """A registered family: its spec, and its implementation imported on first use."""

    spec: FamilySpec
    _impl: Any = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def impl(self) -> "FamilyImpl":
        if self._impl is None:
            module, _, attr = self.spec.implementation.partition(":")
            self._impl = getattr(importlib.import_module(module), attr)()
        return self._impl

    def make_config(self, given: dict[str, Any], dataset_info: dict[str, Any], data: Any = None) -> tuple[dict, dict]:
        """The (model, train) sections of config.json from the options given (None or absent:
        the declared default), each checked against its declaration first; ``data``: the
        training data, for a config that learns from it (``FamilyImpl.make_config``)."""
        return self.impl.make_config(resolve(self.spec.options, given, f"the {self.name} family"), dataset_info, data)

    def training_data(self, data: Any, config: dict[str, Any]) -> "TrainingData":
        """What the loop trains on (the family's ``training_data``)."""
        return self.impl.training_data(data, config)

    def training_task(self, config: dict[str, Any], device, frozen=None, horizon: int | None = None,
                      prepare=None, wrap=None):
        """The family's training task with its optimizers built from its parameter groups
        (models/optim.py), less the parameters ``frozen`` accepts: what the loop steps, and what a
        bench steps by hand. ``horizon``: the step learning-rate schedules end at (the loop sets
        it; default: the config's epochs of ``items // batch_size`` steps, when it has them).
        ``prepare(task)``: runs before the optimizers and weight averages are built (a parent's
        weights loaded, adapters added); it may return more to freeze. ``wrap(task)``: the task
        that trains instead, around the family's (a tuned run's objective, tune/methods.py)."""
        from aigc_cli.models.optim import attach

        task = self.impl.make_task(config, device)
        if wrap is not None:  # another objective over the family's modules (aigc tune: tune/methods.py)
            task = wrap(task)
        more = prepare(task) if prepare is not None else None
        if more is not None:
            frozen = more if frozen is None else (lambda name, a=frozen, b=more: a(name) or b(name))
        attach(task, device, frozen)
        train = config.get("train", {})
        if horizon is None and train.get("items") and train.get("batch_size") and train.get("epochs"):
            horizon = train["epochs"] * (train["items"] // train["batch_size"])
        for o in task.optim.values():
            o.horizon = max(int(horizon or 1), 1)
        return task


FAMILIES: Registry[Family] = Registry("model family")


def register_family(spec: FamilySpec) -> FamilySpec:
    """Validate and register a family's spec; its package's ``__init__`` calls this."""
    if spec.produces not in PRODUCTS:
        raise ValueError(f"family {spec.name!r}: produces must be one of {PRODUCTS}, got {spec.produces!r}")
    if spec.trains_on not in TRAINS_ON:
        raise ValueError(f"family {spec.name!r}: trains_on must be one of {TRAINS_ON}, got {spec.trains_on!r}")
    unknown = [c for c in spec.conditions if c not in CONDITIONS]
    if unknown:
        raise ValueError(f"family {spec.name!r}: unknown condition kinds {unknown}; known: {CONDITIONS.names()}")
    if spec.encoder is not None and spec.encoder not in ENCODERS:
        raise ValueError(f"family {spec.name!r}: encoder must be one of {ENCODERS} or None")
    if spec.implementation.count(":") != 1:
        raise ValueError(f"family {spec.name!r}: implementation must be 'module:Class'")
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


# config.json's format: "aigc-run/<version>". Version 1 left out fields added later (each
# family's upgrade_config says what those runs did); version 2 writes every field; version 3 adds
# the fields imported architectures need (GPT-2's biases and GELU, diffusers' U-Net options), the
# tokenizer of a BPE run, and adapters (LoRA).
RUN_FORMAT = 3


def format_version(config: dict[str, Any], where: str) -> int:
    text = config.get("format", "aigc-run/1")
    prefix, _, number = str(text).partition("/")
    if prefix != "aigc-run" or not number.isdigit():
        raise RunError(f"{where} has format {text!r}, not an aigc run's")
    version = int(number)
    if version > RUN_FORMAT:
        raise RunError(f"{where} was written by a newer aigc (run format {version}; this one reads up to "
                       f"{RUN_FORMAT}); upgrade aigc to use it")
    return version


def load_config(run) -> dict[str, Any]:
    """``run``'s config.json as the current code reads it: brought up to RUN_FORMAT by its
    family (``upgrade_config``) and checked against the family's declared fields, so that a
    damaged or hand-edited file is one line naming the file and the field."""
    config = run.read_config()  # runs/store.py: JSON, an object, the four sections present
    where = f"{run.id}'s config.json"
    version = format_version(config, where)
    if config["family"] not in list_families():
        raise RunError(f"{where} names an unknown family {config['family']!r}; this aigc has "
                       f"{', '.join(list_families())}")
    impl = get_family(config["family"]).impl
    if version < RUN_FORMAT:
        config = {**impl.upgrade_config(config, version), "format": f"aigc-run/{RUN_FORMAT}"}
    if not isinstance(config.get("seed"), int) or isinstance(config["seed"], bool):
        raise RunError(f"{where} field 'seed' must be a whole number, got {config.get('seed')!r:.60}")
    impl.check_config(config, where)
    if config.get("adapters") is not None:
        check_adapters(config["adapters"], where)
    return config


def check_adapters(adapters: Any, where: str) -> None:
    """config.json's 'adapters' (a LoRA run: models/adapters.py), checked as the families' fields are."""
    check_fields(adapters, (Field("kind", str, choices=("lora",)), Field("rank", int, minimum=1),
                            Field("alpha", float, minimum=1e-12)),
                 f"{where} 'adapters'")
    layers = adapters.get("layers")
    if not (isinstance(layers, dict) and layers and all(
            isinstance(v, list) and v and all(isinstance(n, str) for n in v) for v in layers.values())):
        raise RunError(f"{where} 'adapters' field 'layers' must map module names to lists of layer names")


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


GENERATION_KINDS = ("draw", "condition", "decode")


def generation_options(kind: str, command: str | None = None) -> list[Option]:
    """The union of the families' ``draw``, ``condition`` or ``decode`` options (of the
    families ``command`` applies to, when given), for the commands' flags; an option two
    families declare must be declared the same way."""
    if kind not in GENERATION_KINDS:
        raise ValueError(f"generation options are one of {GENERATION_KINDS}, not {kind!r}")
    seen: dict[str, Option] = {}
    for spec in family_specs():
        if command is not None and command not in spec.commands:
            continue
        for o in getattr(spec, f"{kind}_options"):
            if seen.setdefault(o.name, o) != o:
                raise ValueError(f"generation option {o.name!r} is declared differently by two families")
    return list(seen.values())


def check_generation_options(spec: FamilySpec, given: dict[str, Any], run_id: str) -> dict[str, Any]:
    """The options given (not None) for a run of ``spec``, checked; one it does not take is an
    error naming the families that do. Options not given are left out: ``resolve_generation``
    fills in their declared defaults."""
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


def resolve_generation(spec: FamilySpec, given: dict[str, Any], run_id: str, kind: str) -> dict[str, Any]:
    """Every ``kind`` option of ``spec`` (draw, condition or decode): the value given (checked),
    else its declared default. The Python API and every command fill defaults here, once."""
    checked = check_generation_options(spec, given, run_id)
    return {o.name: checked.get(o.name, o.default) for o in getattr(spec, f"{kind}_options")}


# -- options several families declare the same way ---------------------------------------------


def width_option(default: int) -> Option:
    return Option("width", int, default, "Base channel count / hidden width unit.", minimum=1)


def latent_dim_option(default: int) -> Option:
    return Option("latent_dim", int, default, "Size of the latent vector.", minimum=1)


def conditional_option(help: str, default_text: str) -> Option:
    return Option("conditional", bool, None, help, default_text=default_text, off_flag="--unconditional")


# Options of iterative samplers, shared so that one flag means one thing for every family.
STEPS = Option("steps", int, 25, "Steps of an iterative sampler (diffusion: denoising steps).", minimum=1)

TRUNCATION = Option(
    "truncation", float, None, "Truncation psi: redraw latent values with |z| > psi.", above=0.0
)
