"""A tiny registry: a dict plus a validating ``register`` decorator.

The same ``names()`` list feeds CLI choices and error messages, so the two never disagree.
"""

from __future__ import annotations

from typing import Callable, Generic, TypeVar

from aigc_cli.core.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind  # e.g. "architecture", used in messages
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        if not name or name != name.lower() or " " in name:
            raise ValueError(f"{self.kind} name must be lower-case without spaces: {name!r}")

        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[name] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise ConfigError(
                f"unknown {self.kind} {name!r}; choose one of: {', '.join(self.names())}"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items
