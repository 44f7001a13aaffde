"""A trained run, loaded for generation: the one path behind sample, interpolate, reconstruct,
eval and export, whatever the family (its Sampler, models/protocol.py, does the family's part).

```python
from aigc_cli.generation import load_generator

gen = load_generator("last")
images = gen.sample_uint8(16, seed=1)            # (16, C, H, W) uint8, the pixels 'aigc sample' writes
images = gen.sample_uint8(16, seed=1, label=3)   # a class-conditional run, class 3
```
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch

from aigc_cli.core import distributed
from aigc_cli.core.errors import ConfigError, RunError
from aigc_cli.core.faults import fault_point
from aigc_cli.core.options import check_seed
from aigc_cli.core.images import to_uint8
from aigc_cli.models.conditions import Conditioning, build_conditioning
from aigc_cli.models.protocol import Sampler, TextSampler
from aigc_cli.models.registry import (Family, check_generation_options, get_family, load_config, require_command,
                                      resolve_generation)
from aigc_cli.runs.checkpoint import load_weights
from aigc_cli.runs.store import Run, resolve_run


@dataclass
class _Loaded:
    """A trained run ready to generate: its checked config, family and sampler on ``device``."""

    run: Run
    config: dict[str, Any]
    family: Family
    sampler: Any
    device: torch.device

    @property
    def conditions(self) -> dict[str, Any]:
        """The condition kinds this run accepts (models/conditions.py): {"label": 10}, {}."""
        return self.sampler.conditions

    def options(self, given: dict[str, Any]) -> dict[str, Any]:
        """Generation options given to a command (None = not given), checked for this run's family."""
        return check_generation_options(self.family.spec, given, self.run.id)

    def resolved(self, kind: str, given: dict[str, Any]) -> dict[str, Any]:
        """Every ``kind`` option (draw, condition, decode) of the family, defaults filled in;
        ``given`` may hold options of the other kinds, which are left out here."""
        names = {o.name for o in getattr(self.family.spec, f"{kind}_options")}
        return resolve_generation(self.family.spec, {k: v for k, v in given.items() if k in names}, self.run.id, kind)

    def conditioning(self, n: int, single: bool = False, **given: Any) -> Conditioning:
        """The conditions of ``n`` generations from the condition options given (``label=3``,
        ``prompt="..."``; absent: each kind's default, e.g. every class in turn); ``single``:
        one condition for all (an interpolation's frames: class 0 when none is given). A
        condition the run does not take is an error (an unconditional run and ``label``)."""
        check_generation_options(self.family.spec, given, self.run.id)  # a kind its family never takes
        return build_conditioning(n, self.resolved("condition", given), self.conditions, self.run.id, single)


@dataclass
class Generator(_Loaded):
    """A trained image run: latents from seeds, conditions from the user's options, images."""

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return tuple(self.sampler.latent_shape)

    @property
    def latent_dim(self) -> int:
        """The size of one flattened latent: the D of every (N, D) latent array."""
        return math.prod(self.latent_shape)

    @property
    def num_classes(self) -> int | None:
        """The classes of a class-conditional run (None otherwise): its label condition."""
        return self.conditions.get("label")

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.config["model"]["image_shape"])

    @property
    def can_encode(self) -> bool:
        return self.family.spec.encoder is not None

    def latents(self, n: int, seed: int, **options: Any) -> torch.Tensor:
        """(n, latent_dim) latents from ``seed`` alone (a CPU generator: the same on any device),
        under the draw options among ``options`` (truncation)."""
        g = torch.Generator().manual_seed(check_seed(seed))
        return self.sampler.draw(n, g, **self.resolved("draw", options))

    def decoder(self, **options: Any) -> torch.nn.Module:
        """The Decoder (z (N, latent_dim), Conditioning) -> images in [0, 1] under the decode options."""
        return self.sampler.decoder(**self.resolved("decode", options))

    @torch.inference_mode()
    def generate(self, z: torch.Tensor, cond: Conditioning | None = None, batch_size: int = 256,
                 progress: Callable[[int, int], None] | None = None, **options: Any) -> torch.Tensor:
        """(n, latent_dim) -> (n, C, H, W) floats in [0, 1] on the CPU, under ``cond`` (None: the
        conditions' defaults, e.g. every class in turn). ``progress(done, total)`` hears of every
        network pass: one per batch, or each of an iterating decoder's steps. Under a process
        group of several ranks this is collective: every rank must call it."""
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ConfigError(
                f"latents must have shape (N, {self.latent_dim}) for {self.run.id}, got {tuple(z.shape)}"
            )
        cond = self.conditioning(len(z)) if cond is None else cond
        if len(cond) != len(z):
            raise ConfigError(f"{len(z)} latents but {len(cond)} conditions for {self.run.id}")
        if distributed.active():
            # Under torchrun every rank calls this: each decodes its own whole batches, and all
            # get every image, the same as one process gets (core/distributed.py).
            lo, hi = distributed.shard(len(z), batch_size)
            return distributed.gather_rows(self._generate(z[lo:hi], cond.rows(lo, hi), batch_size, progress, options))
        return self._generate(z, cond, batch_size, progress, options)

    def _generate(self, z, cond: Conditioning, batch_size, progress, options) -> torch.Tensor:
        module = self.decoder(**options)
        total, done = -(-len(z) // batch_size) * module.passes, 0

        def one_pass() -> None:
            nonlocal done
            done += 1
            progress(done, total)

        steps = one_pass if progress is not None and module.passes > 1 else None
        out = []
        for i in range(0, len(z), batch_size):
            zb = z[i : i + batch_size].to(self.device, torch.float32)
            out.append(module(zb, cond.rows(i, i + batch_size).to(self.device), on_pass=steps).float().cpu())
            if progress is not None and module.passes == 1:
                one_pass()
        return torch.cat(out) if out else torch.empty(0, *self.image_shape)

    @torch.inference_mode()
    def encode(self, images: torch.Tensor, cond: Conditioning | None = None, batch_size: int = 256,
               **options: Any) -> torch.Tensor:
        """(n, C, H, W) uint8 images of the run's shape -> (n, latent_dim) latents on the CPU,
        under ``cond`` (None: one condition for all, class 0 of a class-conditional run)."""
        encoder = self.sampler.encoder(**self.resolved("decode", options)) if self.can_encode else None
        if encoder is None:
            raise ConfigError(f"{self.run.id} is a {self.family.name} run: it has no encoder to map images to latents")
        cond = self.conditioning(len(images), single=True) if cond is None else cond
        out = []
        for i in range(0, len(images), batch_size):
            xb = images[i : i + batch_size].to(self.device).float() / 255
            out.append(encoder(xb, cond.rows(i, i + batch_size).to(self.device)).float().cpu())
        return torch.cat(out) if out else torch.empty(0, self.latent_dim)

    def sample_uint8(self, n: int, seed: int, batch_size: int = 256, prompts: Sequence[str] | None = None,
                     **options: Any) -> torch.Tensor:
        """(n, C, H, W) uint8, exactly the pixels ``aigc sample`` would write to PNG; ``options``:
        the family's generation options (``truncation=``, ``label=``, ``steps=``...); ``prompts``:
        a captioned run's caption for each of the n images (a dataset's, for eval)."""
        z = self.latents(n, seed, **options)
        cond = self.conditioning(n, **options)
        if prompts is not None:
            if len(prompts) != n:
                raise ConfigError(f"{len(prompts)} prompts for {n} images of {self.run.id}")
            cond = dataclasses.replace(cond, prompts=tuple(prompts))
        return to_uint8(self.generate(z, cond, batch_size, **options))


def load_latents(path: str, latent_dim: int) -> torch.Tensor:
    """An (N, latent_dim) float32 tensor, N >= 1, from a .npy file (one row: N = 1); rows of any
    shape whose size is latent_dim, such as (N, C, H, W) noise, are flattened. The file is checked
    before it is opened (core.io.open_input: a FIFO or a device is refused, never read)."""
    from aigc_cli.core.io import open_input

    try:
        with open_input(path, "a .npy file of latent vectors", error=ConfigError) as f:
            array = np.load(f, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:  # EOFError: an empty file
        raise ConfigError(f"cannot read latents from {path}: {str(e).splitlines()[0]}") from None
    if array.ndim == 1:
        array = array[None]
    if array.ndim > 2 and math.prod(array.shape[1:]) == latent_dim:
        array = array.reshape(len(array), latent_dim)
    if array.ndim != 2 or array.shape[1] != latent_dim or not np.issubdtype(array.dtype, np.number):
        raise ConfigError(f"{path} must hold an (N, {latent_dim}) numeric array, got shape {array.shape}")
    if len(array) == 0:
        raise ConfigError(f"{path} holds no latent vectors (shape {array.shape}); give at least one row")
    if not np.isfinite(array).all():
        raise ConfigError(f"{path} holds non-finite values")
    return torch.from_numpy(array.astype(np.float32))


@dataclass
class TextGenerator(_Loaded):
    """A trained text run, loaded: its tokenizer and model (models/text/sampling.py does the work).

    ```python
    gen = load_generator("last", command="sample")    # a TextGenerator for a text run
    text = gen.complete("ROMEO:", length=200, seed=1)[0]
    ```
    """

    @property
    def tokenizer(self):
        return self.sampler.tokenizer

    @property
    def context(self) -> int:
        return self.sampler.context

    def encode(self, text: str, what: str = "the prompt") -> torch.Tensor:
        return self.tokenizer.encode(text, what)

    def prompt_ids(self, prompt: str | None) -> tuple[str, torch.Tensor]:
        """(the text continued, its ids): an empty or absent prompt stands for the sampler's start
        text (a newline)."""
        text = self.conditioning(1, prompt=prompt).prompts[0]
        return text, self.encode(text)

    def generate(self, prompt: str | None = None, n: int = 1, seed: int = 0,
                 on_tokens: Callable[[torch.Tensor], None] | None = None, cache: bool = True,
                 **options: Any) -> torch.Tensor:
        """(n, length) token ids after ``prompt`` under the family's decode options (``length``,
        ``temperature``, ``top_k``, ``top_p``; absent: their declared defaults); the same seed
        and n give the same ids."""
        decode = self.resolved("decode", options)
        _, ids = self.prompt_ids(prompt)
        g = torch.Generator().manual_seed(check_seed(seed))
        length = decode.pop("length")
        return self.sampler.generate(ids, n, length, g, on_tokens=on_tokens, cache=cache, **decode)

    def complete(self, prompt: str | None = None, n: int = 1, **options: Any) -> list[str]:
        """The n continuations of ``prompt`` as text (without the prompt)."""
        return [self.tokenizer.decode(row.tolist()) for row in self.generate(prompt, n, **options)]


GENERATORS = {"images": (Generator, Sampler), "text": (TextGenerator, TextSampler)}  # by what a family produces


def load_modules(run: Run, names: list[str] | None = None,
                 config: dict[str, Any] | None = None) -> dict[str, torch.nn.Module]:
    """The inference modules ``names`` of ``run`` (all when None), built by its family and filled
    from model.safetensors alone (not its checkpoint): what generation loads, and what a run
    started from another's weights will. A name the run lacks is an error naming those it has."""
    config = load_config(run) if config is None else config
    adapters = config.get("adapters")
    if adapters is not None:
        return _with_adapters(run, config, adapters, names)
    modules = get_family(config["family"]).impl.build(config)
    if names is not None:
        unknown = [n for n in names if n not in modules]
        if unknown:
            raise RunError(f"{run.id} has no module {', '.join(map(repr, unknown))}; it has {', '.join(modules)}")
        modules = {n: modules[n] for n in names}
    if not run.weights_path.exists():
        raise RunError(f"{run.id} has no weights yet (model.safetensors); train it for at least one epoch")
    load_weights(run.weights_path, modules)
    return modules


def _with_adapters(run: Run, config: dict[str, Any], adapters: dict[str, Any],
                   names: list[str] | None) -> dict[str, torch.nn.Module]:
    """A LoRA run's modules: its parent's (checked by hash; itself perhaps a LoRA run), its own
    adapters added and folded into the weights (models/adapters.py): plain modules, as a run
    trained without adapters has."""
    from aigc_cli.models.adapters import inject, merge, saved_state
    from aigc_cli.runs.lineage import check_parent

    parent = check_parent(config, f"{run.id}'s config.json")
    if parent is None:
        raise RunError(f"{run.id}'s config.json has adapters but names no parent run to adapt")
    modules = load_modules(parent, names)
    if not run.weights_path.exists():
        raise RunError(f"{run.id} has no weights yet (model.safetensors); train it for at least one epoch")
    adapted = {n: m for n, m in modules.items() if n in adapters["layers"]}
    for name, module in adapted.items():
        inject(module, adapters["layers"][name], adapters["rank"], adapters["alpha"])
    load_weights(run.weights_path, adapted, state=saved_state)
    for module in adapted.values():
        merge(module)
    return modules


def load_generator(run_ref: str | Run, device: torch.device | str = "cpu", command: str = "sample"):
    """A trained run, ready for ``command`` (a name from models/registry.py's COMMANDS): a
    Generator for image runs, a TextGenerator for text runs; a one-line error when ``command``
    does not apply to the run."""
    run = run_ref if isinstance(run_ref, Run) else resolve_run(run_ref)
    config = load_config(run)
    family = get_family(config["family"])
    require_command(family.spec, command, run.id)
    modules = load_modules(run, config=config)
    fault_point("generator:loaded")  # the signal tests stop sample, interpolate, export, eval here
    device = torch.device(device)
    cls, protocol = GENERATORS[family.spec.produces]
    sampler = family.impl.sampler(modules, config, device)
    if not isinstance(sampler, protocol):
        raise TypeError(f"the {family.name} family's sampler must be a {protocol.__name__}")
    return cls(run, config, family, sampler, device)
