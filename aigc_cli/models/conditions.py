"""What a generation is conditioned on: one ``Conditioning`` object from the command line to the
decoder, whatever the kind of condition.

A *condition kind* is a way a user steers a generation: a class label (``--label``), a text
prompt (``--prompt``). A family declares the kinds its runs may accept (``FamilySpec.conditions``);
a run says which it does accept and with what (``Sampler.conditions``: ``{"label": 10}`` for a
class-conditional run on 10 classes, ``{}`` for an unconditional one). The kind builds the
per-sample values from what the user gave (``ConditionKind.build``), and every path that
generates (``Generator.generate``, interpolation, previews, FID sampling, the ONNX export) carries
them in one :class:`Conditioning`. Adding a kind is a class here and a registration
(docs/architecture.md, "Adding a conditioning kind").

Light to import (no torch at import time): ``aigc sample --help`` reads the kinds' options.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any

from aigc_cli.core.errors import ConfigError, opt
from aigc_cli.core.options import Option
from aigc_cli.core.registry import Registry

if TYPE_CHECKING:  # pragma: no cover
    import torch


@dataclass(frozen=True)
class Conditioning:
    """The conditions of ``n`` generations, one row each; a field the run does not use is None.

    ``labels``: (n,) int64 class ids. ``prompts``: n texts (a text run's start, a captioned
    image run's captions). ``negatives``: a captioned run's n negative prompts, the unconditional
    half of guidance ("" for none). ``prompts_to``/``mix``: a blend of each row's caption towards
    another ((n,) weights in [0, 1], 0 = ``prompts``), for interpolations between prompts. Rows
    travel together: slicing, moving to a device and repeating act on every field alike, so a
    batch of latents and its conditions never part.
    """

    n: int
    labels: "torch.Tensor | None" = None
    prompts: tuple[str, ...] | None = None
    negatives: tuple[str, ...] | None = None
    prompts_to: tuple[str, ...] | None = None
    mix: "torch.Tensor | None" = None

    def _values(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "n"}

    def __len__(self) -> int:
        return self.n

    def rows(self, lo: int, hi: int) -> "Conditioning":
        """Rows ``lo:hi``, as a batch of latents is sliced."""
        hi = min(hi, self.n)
        lo = min(lo, hi)
        return replace(self, n=hi - lo, **{k: v[lo:hi] for k, v in self._values().items() if v is not None})

    def to(self, device) -> "Conditioning":
        # Tensors move; texts (tuples of str) stay where they are.
        return replace(self, **{k: v.to(device) for k, v in self._values().items()
                                if v is not None and not isinstance(v, tuple)})

    def repeat(self, k: int) -> "Conditioning":
        """Each row ``k`` times in a row: the conditions of ``k`` frames per row of an interpolation."""
        out = {}
        for name, v in self._values().items():
            if v is None:
                continue
            out[name] = tuple(x for x in v for _ in range(k)) if isinstance(v, tuple) else v.repeat_interleave(k)
        return replace(self, n=self.n * k, **out)


class ConditionKind(ABC):
    """One way to steer a generation. ``option`` is the user's flag for it (every command that
    generates takes it); ``build`` turns its value into Conditioning fields for ``n`` rows."""

    name: str  # "label": the key of Sampler.conditions
    option: Option  # the flag: --label
    needs: str  # what a run must be to take it, for messages: "class-conditional"
    help: str  # which runs of the families that declare it accept it, for docs/options.md

    @abstractmethod
    def build(self, n: int, value: Any, accepts: Any, run_id: str) -> dict[str, Any]:
        """Conditioning fields for ``n`` rows from the user's ``value`` (None: not given, the
        kind's default for every row) for a run that accepts the kind with ``accepts``."""

    def single(self, value: Any) -> Any:
        """The value one path of frames uses when the user gave none (interpolate): the default
        when ``build`` would vary it row by row."""
        return value

    def graph_inputs(self, accepts: Any) -> list:
        """The inputs an exported decoder takes for this kind (models/protocol.py GraphInput)."""
        raise ConfigError(f"runs conditioned on a {self.name} cannot be exported to ONNX yet")

    def from_graph(self, *tensors: "torch.Tensor") -> dict[str, Any]:
        """Conditioning fields from the values of ``graph_inputs``, inside the exported graph."""
        raise NotImplementedError


class LabelCondition(ConditionKind):
    """A class label; a run accepts it with its number of classes."""

    name = "label"
    option = Option("label", int, None, "Class of a class-conditional run.",
                    default_text="every class in turn; interpolate: 0", minimum=0)
    needs = "class-conditional"
    help = "when class-conditional"

    def build(self, n: int, value: int | None, accepts: int, run_id: str) -> dict[str, Any]:
        import torch

        if value is None:
            return {"labels": torch.arange(n) % accepts}  # every class in turn
        if not 0 <= value < accepts:
            raise ConfigError(f"{opt('label')} must be in 0..{accepts - 1} for {run_id}, got {value}")
        return {"labels": torch.full((n,), value, dtype=torch.int64)}

    def single(self, value: int | None) -> int:
        return 0 if value is None else value

    def graph_inputs(self, accepts: int) -> list:
        import torch

        from aigc_cli.models.graphs import GraphInput

        return [GraphInput("label", "int64", (), lambda n, g: torch.arange(n) % accepts, {"classes": accepts})]

    def from_graph(self, label: "torch.Tensor") -> dict[str, Any]:
        return {"labels": label}


class PromptCondition(ConditionKind):
    """A text to continue (text runs) or a caption to draw (captioned image runs). A run accepts
    it with ``{"defaults": [...], "empty": text}``: the prompts used in turn when none is given
    (a text run's start text; a captioned run's preview prompts), and what an empty prompt
    stands for (the start text; "" for a captioned run: an unconditional image)."""

    name = "prompt"
    option = Option("prompt", str, None, "Text to continue, or the caption to draw for a captioned run (- reads "
                    "standard input: a captioned run draws each of its lines).",
                    default_text="a newline; captioned runs: their preview prompts in turn")
    needs = "a text run or a captioned image run"
    help = "every text run; captioned image runs"

    def build(self, n: int, value: str | None, accepts: dict, run_id: str) -> dict[str, Any]:
        if value is None:
            defaults = accepts["defaults"]
            return {"prompts": tuple(defaults[i % len(defaults)] for i in range(n))}
        return {"prompts": (value if value else accepts["empty"],) * n}


class NegativePromptCondition(ConditionKind):
    """What a captioned run's guidance steers away from: the unconditional half of classifier-free
    guidance drawn from this caption instead of the empty one."""

    name = "negative_prompt"
    option = Option("negative_prompt", str, None, "Caption to steer away from (replaces the empty caption of "
                    "classifier-free guidance).", default_text="none")
    needs = "a captioned image run"
    help = "captioned image runs"

    def build(self, n: int, value: str | None, accepts: Any, run_id: str) -> dict[str, Any]:
        return {"negatives": (value or "",) * n}


CONDITIONS: Registry[ConditionKind] = Registry("condition kind")


def register_condition(kind: ConditionKind) -> ConditionKind:
    return CONDITIONS.register(kind.name)(kind)


register_condition(LabelCondition())
register_condition(PromptCondition())
register_condition(NegativePromptCondition())


def condition_options(names: tuple[str, ...] | None = None) -> list[Option]:
    """The flags of the condition kinds ``names`` (all when None), for the commands that generate."""
    return [CONDITIONS.get(n).option for n in (CONDITIONS.names() if names is None else names)]


def build_conditioning(n: int, given: dict[str, Any], accepts: dict[str, Any], run_id: str,
                       single: bool = False) -> Conditioning:
    """The Conditioning of ``n`` rows for a run that ``accepts`` these kinds, from the options the
    user ``given`` (kind name -> value, None: not given). A kind given that the run does not
    accept is an error naming what the run would need; ``single``: one condition for every row
    (an interpolation's frames), the kind's single default where nothing was given."""
    out: dict[str, Any] = {}
    for name, value in given.items():
        if value is None:
            continue
        if name not in accepts:
            raise ConfigError(f"{run_id} is not {CONDITIONS.get(name).needs}; drop {opt(name)}")
    for name, spec in accepts.items():
        kind = CONDITIONS.get(name)
        value = kind.option.check(given.get(name))
        if single:
            value = kind.single(value)
        out.update(kind.build(n, value, spec, run_id))
    return Conditioning(n, **out)
