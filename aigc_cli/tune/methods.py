"""Tuning methods: how a trained run learns from a reward or from preferences (``aigc tune``).

A method is a :class:`TuneTask` wrapped around the family's own training task: the same modules
(so the checkpoint, ``--lora``, ``--nproc`` and every command that loads a run see an ordinary run
of the family), another objective, and the parent's weights frozen beside them as the reference
that keeps the tuned model close (``load_reference``, called by the training engine on every
start, resume included). Methods register here with what they tune (``produces``: text or
images) and what they learn from (``learns_from``: a reward or preferences); ``aigc tune`` picks
the one that fits the run and the inputs given.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from aigc_cli.core.errors import ConfigError
from aigc_cli.core.registry import Registry
from aigc_cli.models.protocol import TrainTask

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

    from aigc_cli.models.optim import OptimizerSpec
    from aigc_cli.models.protocol import FamilyImpl, TrainingData


class TuneTask(TrainTask):
    """A family's task (``base``) trained on another objective. ``reference``: the parent's
    inference modules, frozen, filled by ``load_reference``."""

    def __init__(self, base: TrainTask, impl: "FamilyImpl", config: dict[str, Any], device: "torch.device"):
        self.base, self.impl, self.config, self.device = base, impl, config, device
        self.tune = config["tune"]
        self.modules = base.modules  # the same names: the checkpoint, LoRA and --init see the family's
        self.reference: dict[str, "nn.Module"] = {}
        self._reward = None

    def reward(self, scores: str):
        """The run's reward (tune/rewards.py), loaded on first use: a reward file runs user code."""
        if self._reward is None:
            from aigc_cli.tune.rewards import load_reward

            r = self.tune["reward"]
            self._reward = load_reward(r["spec"], r["command"], scores, r["timeout"])
        return self._reward

    def load_reference(self, weights: dict[str, dict[str, "torch.Tensor"]]) -> None:
        """The parent's inference weights (its model.safetensors, adapters merged), frozen."""
        modules = self.impl.build(self.config)
        for name, module in modules.items():
            module.load_state_dict(weights[name])
            module.to(self.device).eval().requires_grad_(False)
        self.reference = modules

    def param_groups(self) -> dict[str, "OptimizerSpec"]:
        return self.base.param_groups()

    def inference_names(self) -> dict[str, str]:
        return self.base.inference_names()


@dataclass(frozen=True)
class TuneMethod:
    name: str
    description: str
    produces: str  # "text" or "images": the runs it tunes
    learns_from: str  # "reward" or "preferences"
    make_task: Callable[[TrainTask, "FamilyImpl", dict[str, Any], "torch.device"], TuneTask]
    options: tuple[str, ...]  # the method options (training/tune_options.py METHOD_OPTIONS) it reads
    # The config's 'tune' section (less 'method') from the resolved options and what the run
    # produces: every input read and checked (a reward loaded once, a file's pairs).
    configure: Callable[[dict[str, Any], str], dict[str, Any]]
    items: Callable[[dict[str, Any]], "TrainingData"]  # what the loop steps through, from a whole config
    check: Callable[[dict[str, Any]], None] = lambda config: None  # a new run's config, before it exists
    families: tuple[str, ...] | None = None  # the families whose task it knows (None: any that produces it)


TUNE_METHODS: Registry[TuneMethod] = Registry("tuning method")


def register_method(method: TuneMethod) -> TuneMethod:
    if method.produces not in ("text", "images") or method.learns_from not in ("reward", "preferences"):
        raise ValueError(f"tuning method {method.name!r}: produces text|images, learns from reward|preferences")
    TUNE_METHODS.register(method.name)(method)
    return method


def list_methods() -> list[str]:
    _discover()
    return TUNE_METHODS.names()


def get_method(name: str) -> TuneMethod:
    _discover()
    return TUNE_METHODS.get(name)


def method_for(family: str, produces: str, learns_from: str) -> TuneMethod:
    """The method that tunes a ``family`` run (of ``produces``) from a reward or preferences; one
    line naming those there are if none does."""
    _discover()
    for name in TUNE_METHODS.names():
        m = TUNE_METHODS.get(name)
        if (m.produces == produces and m.learns_from == learns_from
                and (m.families is None or family in m.families)):
            return m
    have = [f"{m.name} ({', '.join(m.families) if m.families else m.produces} runs, from a {m.learns_from})"
            for m in map(TUNE_METHODS.get, TUNE_METHODS.names())]
    source = "a reward" if learns_from == "reward" else "preferences"
    raise ConfigError(f"no tuning method learns a {family} run from {source} yet; there are: {'; '.join(have)}")


def wrap(config: dict[str, Any], impl: "FamilyImpl", device: "torch.device") -> Callable[[TrainTask], TrainTask]:
    """What ``Family.training_task`` wraps the family's task in for a tuned run's config."""
    method = get_method(config["tune"]["method"])
    return lambda base: method.make_task(base, impl, config, device)


METHOD_MODULES = ("grpo", "dpo", "ddpo")  # each registers its method when imported


def _discover() -> None:
    import importlib

    for name in METHOD_MODULES:
        importlib.import_module(f"aigc_cli.tune.{name}")
