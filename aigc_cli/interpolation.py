"""Interpolation: frames along a path through a run's latent space, the engine behind ``aigc
interpolate`` (models/latent.py holds the path maths, generation.py the decoding).

```python
from aigc_cli.generation import load_generator
from aigc_cli.interpolation import interpolate

gen = load_generator("last", command="interpolate")
result = interpolate(gen, from_seed=1, to_seed=2, frames=8)      # result.frames: (1, 8, C, H, W) in [0, 1]
result = interpolate(gen, traverse="0-3", frames=7, span=2.0)    # (4, 7, C, H, W): a row per dimension
```

The path comes from one of: two seeds (``from_seed``/``to_seed``, random when absent), two image
files encoded by the run (``between``, runs with an encoder), an (N, D) ``.npy`` of latents
(``latents``), or one latent varied a dimension at a time (``traverse``). Every frame is drawn
under one condition (``condition``: a class of a class-conditional run, class 0 when none is given).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from aigc_cli.core.errors import ConfigError, opt
from aigc_cli.core.options import check_seed

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from aigc_cli.generation import Generator

# Light to import (torch only inside the functions): `aigc interpolate --help` reads the defaults.

FRAMES = 8  # frames of a path, endpoints included
SPAN = 3.0  # --traverse: values from -SPAN to SPAN


@dataclass
class Interpolation:
    """``frames``: (rows, frames, C, H, W) images in [0, 1] (one row, or one per traversed
    dimension); ``info``: what was drawn (seeds, mode, dimensions...), for --json and the PNG's
    text; ``notes``: images converted to the run's shape on the way in (``between``)."""

    frames: "torch.Tensor"
    info: dict[str, Any]
    notes: list[str] = field(default_factory=list)


def check_request(*, frames: int = FRAMES, from_seed: int | None = None, to_seed: int | None = None,
                  between: tuple[Path, Path] | None = None, latents: Path | None = None,
                  traverse: str | None = None, mode: str | None = None, from_prompt: str | None = None,
                  to_prompt: str | None = None) -> None:
    """What can be refused before a run is loaded: the frames and a clash of path sources."""
    from aigc_cli.models import latent as L

    L.check_frames(frames)
    if (from_prompt is None) != (to_prompt is None):
        raise ConfigError(f"give {opt('from_prompt')} and {opt('to_prompt')} together: the captions of the first "
                          "and the last frame")
    if from_prompt is not None:
        clash = [name for name, v in (("between", between), ("latents", latents), ("traverse", traverse)) if v is not None]
        if clash:
            raise ConfigError(f"{opt('from_prompt')} blends two captions over one latent or a seed path; drop "
                              f"{' and '.join(opt(c) for c in clash)}")
    for name, seed in (("from_seed", from_seed), ("to_seed", to_seed)):
        if seed is not None:
            check_seed(seed, name)
    if mode is not None and mode not in L.MODES:
        raise ConfigError(f"unknown {opt('mode')} {mode!r}; choose {' or '.join(L.MODES)}")
    if traverse is not None:
        if to_seed is not None or between is not None:
            raise ConfigError(f"{opt('traverse')} varies one latent ({opt('from_seed')} or the first "
                              f"{opt('latents')} row); drop {opt('to_seed')} and {opt('between')}")
        if mode is not None:
            raise ConfigError(f"{opt('mode')} does not apply to {opt('traverse')} (each row is a straight line "
                              f"along one axis); drop {opt('mode')}")
        if latents is not None and from_seed is not None:
            raise ConfigError(f"{opt('traverse')} starts from {opt('from_seed')} or the first {opt('latents')} "
                              "row, not both")
        return
    given = [name for name, v in (("between", between), ("latents", latents)) if v is not None]
    if len(given) > 1:
        raise ConfigError(f"give {opt('between')} or {opt('latents')}, not both")
    if given and (from_seed is not None or to_seed is not None):
        raise ConfigError(f"{opt(given[0])} gives the endpoints; drop {opt('from_seed')} and {opt('to_seed')}")


def interpolate(gen: "Generator", *, frames: int = FRAMES, from_seed: int | None = None, to_seed: int | None = None,
                between: tuple[Path, Path] | None = None, latents: Path | None = None,
                traverse: str | None = None, span: float = SPAN, mode: str | None = None,
                from_prompt: str | None = None, to_prompt: str | None = None,
                options: dict[str, Any] | None = None,
                progress: Callable[[int, int], None] | None = None) -> Interpolation:
    """The frames of one interpolation of ``gen``'s run; ``options``: its generation options
    (decode options such as steps, and condition options such as ``label``; None = not given)."""
    import torch

    from aigc_cli.core.images import image_files, read_images
    from aigc_cli.core.seeding import fresh_seed
    from aigc_cli.generation import load_latents
    from aigc_cli.models import latent as L
    from aigc_cli.models.registry import families_where

    check_request(frames=frames, from_seed=from_seed, to_seed=to_seed, between=between, latents=latents,
                  traverse=traverse, mode=mode, from_prompt=from_prompt, to_prompt=to_prompt)
    options = gen.options(options or {})
    family = gen.family.spec
    if from_prompt is not None:
        return _between_prompts(gen, frames, from_seed, to_seed, from_prompt, to_prompt, mode, options, progress)
    if between is not None and not gen.can_encode:
        takers = ", ".join(families_where(lambda s: s.encoder is not None))
        raise ConfigError(f"{opt('between')} needs a run with an encoder ({takers}); {gen.run.id} is a "
                          f"{family.name} run")
    if traverse is not None and not family.traverse:
        takers = ", ".join(families_where(lambda s: s.traverse))
        raise ConfigError(f"{opt('traverse')} needs a run whose latent dimensions mean something ({takers}); "
                          f"{gen.run.id} is a {family.name} run")
    if "label" in gen.conditions and between is not None and options.get("label") is None:
        raise ConfigError(f"{gen.run.id} is class-conditional: pass {opt('label')}, the class of both images")
    one = gen.conditioning(1, single=True, **options)  # every frame's condition
    info: dict[str, Any] = {"run": gen.run.id, "family": family.name, "frames": frames, **options,
                            "label": int(one.labels[0]) if one.labels is not None else None}
    notes: list[str] = []

    if traverse is not None:
        dims = L.parse_dims(traverse, gen.latent_dim)
        if latents is not None:
            base = load_latents(str(latents), gen.latent_dim)[0]
            info["latents"] = str(latents)
        elif from_seed is not None:
            base = gen.latents(1, from_seed)[0]
        else:
            base = torch.zeros(gen.latent_dim)  # the prior's mode
        z = L.traversal(base, dims, frames, span)  # (dims, frames, D)
        info.update(traverse=dims, range=span, from_seed=from_seed)
    else:
        if between is not None:
            files, in_folders = image_files(list(between))
            if in_folders:
                raise ConfigError(f"{opt('between')} takes two image files, not folders")
            images, notes = read_images(files, gen.image_shape)
            points = gen.encode(images, one.repeat(2), **options)
            info["between"] = [str(p) for p in between]
        elif latents is not None:
            points = load_latents(str(latents), gen.latent_dim)
            if len(points) < 2:
                raise ConfigError(f"{latents} holds 1 latent; an interpolation needs 2 or more rows")
            info["latents"] = str(latents)
        else:
            from_seed = fresh_seed() if from_seed is None else from_seed
            to_seed = fresh_seed() if to_seed is None else to_seed
            points = torch.cat([gen.latents(1, from_seed, **options), gen.latents(1, to_seed, **options)])
            info.update(from_seed=from_seed, to_seed=to_seed)
        mode = mode or "slerp"
        z = L.latent_path(points, frames, mode)[None]  # (1, frames, D)
        info["mode"] = mode

    rows = z.shape[0]
    flat = z.reshape(-1, gen.latent_dim)
    images = gen.generate(flat, one.repeat(len(flat)), progress=progress, **options)
    info["rows"] = rows
    return Interpolation(images.view(rows, frames, *gen.image_shape), info, notes)


def _between_prompts(gen: "Generator", frames: int, from_seed: int | None, to_seed: int | None, from_prompt: str,
                     to_prompt: str, mode: str | None, options: dict[str, Any], progress) -> Interpolation:
    """Frames whose caption blends from one prompt to another (the text encoder's token states,
    weighted from 0 to 1), drawn from one latent, or along a seed path when ``to_seed`` is given."""
    import dataclasses

    import torch

    from aigc_cli.core.seeding import fresh_seed
    from aigc_cli.models import latent as L

    if "prompt" not in gen.conditions or "negative_prompt" not in gen.conditions:
        raise ConfigError(f"{opt('from_prompt')} needs a captioned image run; {gen.run.id} is not one")
    if options.get("prompt") is not None:
        raise ConfigError(f"{opt('from_prompt')} and {opt('to_prompt')} give the captions; drop {opt('prompt')}")
    from_seed = fresh_seed() if from_seed is None else from_seed
    info: dict[str, Any] = {"run": gen.run.id, "family": gen.family.spec.name, "frames": frames, **options,
                            "from_prompt": from_prompt, "to_prompt": to_prompt, "from_seed": from_seed}
    if to_seed is not None:
        mode = mode or "slerp"
        points = torch.cat([gen.latents(1, from_seed, **options), gen.latents(1, to_seed, **options)])
        z = L.latent_path(points, frames, mode)  # (frames, D)
        info.update(to_seed=to_seed, mode=mode)
    else:
        z = gen.latents(1, from_seed, **options).expand(frames, -1).contiguous()  # one latent: only the caption moves
    cond = gen.conditioning(frames, **{**options, "prompt": from_prompt})
    cond = dataclasses.replace(cond, prompts_to=(to_prompt,) * frames, mix=torch.linspace(0, 1, frames))
    images = gen.generate(z, cond, progress=progress, **options)
    info["rows"] = 1
    return Interpolation(images.view(1, frames, *gen.image_shape), info, [])
