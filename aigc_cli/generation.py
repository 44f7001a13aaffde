"""A trained run, loaded for generation: the one path behind sample, interpolate, reconstruct,
eval and export, whatever the family (models/registry.py's Sampler does the family's part).

```python
from aigc_cli.generation import load_generator

gen = load_generator("last")
images = gen.sample_uint8(16, seed=1)   # (16, C, H, W) uint8, the pixels 'aigc sample' writes
```
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from aigc_cli.core import distributed
from aigc_cli.core.errors import ConfigError, RunError, opt
from aigc_cli.core.faults import fault_point
from aigc_cli.core.images import to_uint8
from aigc_cli.models.registry import Family, Sampler, check_generation_options, get_family, require_command
from aigc_cli.runs.checkpoint import load_weights
from aigc_cli.runs.store import Run, resolve_run


@dataclass
class Generator:
    run: Run
    config: dict[str, Any]
    family: Family
    sampler: Sampler
    device: torch.device

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return tuple(self.sampler.latent_shape)

    @property
    def latent_dim(self) -> int:
        """The size of one flattened latent: the D of every (N, D) latent array."""
        return math.prod(self.latent_shape)

    @property
    def num_classes(self) -> int | None:
        m = self.config["model"]
        return m["num_classes"] if m.get("conditional") else None

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.config["model"]["image_shape"])

    @property
    def can_encode(self) -> bool:
        return self.family.spec.encoder is not None

    def options(self, given: dict[str, Any]) -> dict[str, Any]:
        """Generation options given to a command (None = not given), checked for this run's family."""
        return check_generation_options(self.family.spec, given, self.run.id)

    def _split(self, options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """(draw options, decode options) of ``options``."""
        draw = {o.name for o in self.family.spec.draw_options}
        return ({k: v for k, v in options.items() if k in draw},
                {k: v for k, v in options.items() if k not in draw})

    def latents(self, n: int, seed: int, **options: Any) -> torch.Tensor:
        """(n, latent_dim) latents from ``seed`` alone (a CPU generator: the same on any device)."""
        g = torch.Generator().manual_seed(seed)
        return self.sampler.draw(n, g, **self._split(options)[0])

    def labels(self, n: int, label: int | None) -> torch.Tensor | None:
        k = self.num_classes
        if k is None:
            if label is not None:
                raise ConfigError(f"{self.run.id} is not class-conditional; drop {opt('label')}")
            return None
        if label is None:
            return torch.arange(n) % k  # every class in turn
        if not 0 <= label < k:
            raise ConfigError(f"{opt('label')} must be in 0..{k - 1} for {self.run.id}, got {label}")
        return torch.full((n,), label, dtype=torch.int64)

    def decoder(self, **options: Any) -> torch.nn.Module:
        """The module that maps (z (N, latent_dim), labels) to images in [0, 1] under ``options``."""
        return self.sampler.decoder(**self._split(options)[1])

    @torch.inference_mode()
    def generate(self, z: torch.Tensor, labels: torch.Tensor | None = None, batch_size: int = 256,
                 progress: Callable[[int, int], None] | None = None, **options: Any) -> torch.Tensor:
        """(n, latent_dim) -> (n, C, H, W) floats in [0, 1] on the CPU. ``progress(done, total)``
        hears of every network pass: one per batch, or each of an iterative decoder's steps.
        Under a process group of several ranks this is collective: every rank must call it."""
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ConfigError(
                f"latents must have shape (N, {self.latent_dim}) for {self.run.id}, got {tuple(z.shape)}"
            )
        if distributed.active():
            # Under torchrun every rank calls this: each decodes its own whole batches, and all
            # get every image, the same as one process gets (core/distributed.py).
            lo, hi = distributed.shard(len(z), batch_size)
            mine = self._generate(z[lo:hi], labels[lo:hi] if labels is not None else None, batch_size, progress,
                                  **options)
            return distributed.gather_rows(mine)
        return self._generate(z, labels, batch_size, progress, **options)

    def _generate(self, z, labels, batch_size, progress, **options) -> torch.Tensor:
        module = self.decoder(**options)
        passes = getattr(module, "passes", 1)  # models/registry.py: an iterating decoder says how many
        total, done = -(-len(z) // batch_size) * passes, 0

        def one_pass() -> None:
            nonlocal done
            done += 1
            progress(done, total)

        if progress is not None and passes > 1:
            module.on_pass = one_pass
        out = []
        try:
            for i in range(0, len(z), batch_size):
                zb = z[i : i + batch_size].to(self.device, torch.float32)
                yb = labels[i : i + batch_size].to(self.device) if labels is not None else None
                out.append(module(zb, yb).float().cpu())
                if progress is not None and passes == 1:
                    one_pass()
        finally:
            if passes > 1:
                module.on_pass = None
        return torch.cat(out) if out else torch.empty(0, *self.image_shape)

    @torch.inference_mode()
    def encode(self, images: torch.Tensor, labels: torch.Tensor | None = None, batch_size: int = 256,
               **options: Any) -> torch.Tensor:
        """(n, C, H, W) uint8 images of the run's shape -> (n, latent_dim) latents on the CPU."""
        encoder = self.sampler.encoder(**self._split(options)[1]) if self.can_encode else None
        if encoder is None:
            raise ConfigError(f"{self.run.id} is a {self.family.name} run: it has no encoder to map images to latents")
        out = []
        for i in range(0, len(images), batch_size):
            xb = images[i : i + batch_size].to(self.device).float() / 255
            yb = labels[i : i + batch_size].to(self.device) if labels is not None else None
            out.append(encoder(xb, yb).float().cpu())
        return torch.cat(out) if out else torch.empty(0, self.latent_dim)

    def sample_uint8(self, n: int, seed: int, batch_size: int = 256, label: int | None = None,
                     **options: Any) -> torch.Tensor:
        """(n, C, H, W) uint8, exactly the pixels ``aigc sample`` would write to PNG."""
        z = self.latents(n, seed, **options)
        return to_uint8(self.generate(z, self.labels(n, label), batch_size, **options))


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
class TextGenerator:
    """A trained text run, loaded: its tokenizer and model (models/text/sampling.py does the work).

    ```python
    gen = load_generator("last", command="sample")    # a TextGenerator for a text run
    text = gen.complete("ROMEO:", length=200, seed=1)[0]
    ```
    """

    run: Run
    config: dict[str, Any]
    family: Family
    sampler: Any  # the family's TextSampler
    device: torch.device

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
        text = prompt if prompt else self.sampler.start
        return text, self.encode(text)

    def generate(self, prompt: str | None, n: int = 1, length: int = 500, seed: int = 0,
                 temperature: float = 0.8, top_k: int | None = None, top_p: float | None = None,
                 on_tokens: Callable[[torch.Tensor], None] | None = None, cache: bool = True) -> torch.Tensor:
        """(n, length) token ids after ``prompt``; the same seed and n give the same ids."""
        if top_p is not None and not 0 < top_p <= 1:
            raise ConfigError(f"{opt('top_p')} must be in (0, 1], got {top_p}")
        _, ids = self.prompt_ids(prompt)
        g = torch.Generator().manual_seed(seed)
        return self.sampler.generate(ids, n, length, g, temperature=temperature, top_k=top_k, top_p=top_p,
                                     on_tokens=on_tokens, cache=cache)

    def complete(self, prompt: str | None, n: int = 1, **options: Any) -> list[str]:
        """The n continuations of ``prompt`` as text (without the prompt)."""
        return [self.tokenizer.decode(row.tolist()) for row in self.generate(prompt, n, **options)]


GENERATORS = {"images": Generator, "text": TextGenerator}  # by what the family produces


def load_generator(run_ref: str | Run, device: torch.device | str = "cpu", command: str = "sample"):
    """A trained run, ready for ``command`` (a name from models/registry.py's COMMANDS): a
    Generator for image runs, a TextGenerator for text runs; a one-line error when ``command``
    does not apply to the run."""
    run = run_ref if isinstance(run_ref, Run) else resolve_run(run_ref)
    config = run.read_config()
    family = get_family(config["family"])
    require_command(family.spec, command, run.id)
    if not run.weights_path.exists():
        raise RunError(f"{run.id} has no weights yet (model.safetensors); train it for at least one epoch")
    modules = family.impl.build(config)
    load_weights(run.weights_path, modules)
    fault_point("generator:loaded")  # the signal tests stop sample, interpolate, export, eval here
    device = torch.device(device)
    return GENERATORS[family.spec.produces](run, config, family, family.impl.sampler(modules, config, device), device)
