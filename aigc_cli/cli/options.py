"""Typer parameters from the engine's ``Option`` declarations (core/options.py).

Commands whose options are declared elsewhere (a family's training and generation options, the
loop's) get them here, so a new family's options reach ``aigc train <family> --help``, ``aigc
sample --help`` and the rest without an edit to the commands.
"""

from __future__ import annotations

import functools
import inspect
from typing import Annotated, Any, Callable, Iterable, Optional

import typer

from aigc_cli.core.options import Option


def parameter(o: Option, name: str | None = None) -> inspect.Parameter:
    """A keyword parameter for ``o``, None when not given (so the engine's default applies and
    --resume can tell what the user asked to change). ``name`` renames its flag."""
    name = name or o.name
    long = "--" + name.replace("_", "-")
    decls = [f"{long}/{o.off_flag}" if o.off_flag else long]
    if o.short:
        decls.append(o.short)
    info = typer.Option(*decls, help=o.help_text())
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None,
                             annotation=Annotated[Optional[o.type], info])


def with_signature(fn: Callable, params: list[inspect.Parameter], doc: str | None = None) -> Callable:
    """``fn`` (taking **kwargs) as typer sees a function with these parameters."""
    fn.__signature__ = inspect.Signature(params)
    fn.__annotations__ = {p.name: p.annotation for p in params}
    if doc is not None:
        fn.__doc__ = doc
    return fn


def add_options(options: Iterable[Option], into: str, rename: dict[str, str] | None = None):
    """Decorator: the command also takes ``options`` as flags; their values (None = not given)
    reach it as one dict in its keyword ``into``, under the options' own names. ``rename`` gives
    an option another flag where the command has one of that name already."""
    options = list(options)
    rename = rename or {}

    def deco(fn: Callable) -> Callable:
        sig = inspect.signature(fn)
        own = [p for p in sig.parameters.values() if p.name != into]
        taken = {p.name for p in own}
        extra = []
        for o in options:
            name = rename.get(o.name, o.name)
            if name in taken:
                raise ValueError(f"{fn.__name__}: option {o.name!r} clashes with the command's own; rename it")
            extra.append(parameter(o, name))
        flags = {rename.get(o.name, o.name): o.name for o in options}

        @functools.wraps(fn)
        def command(**kwargs: Any):
            given = {flags[k]: kwargs.pop(k) for k in list(kwargs) if k in flags}
            return fn(**kwargs, **{into: given})

        return with_signature(command, own + [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in extra])

    return deco
