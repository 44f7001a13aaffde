"""What an import format provides, and the registry ``aigc import`` picks from.

A format recognises a folder in another library's layout (``detect``), names the files a hub
download needs (``files``) and converts the folder into the parts of an aigc run (``convert``):
a family, its config.json sections and the state dicts of the family's inference modules
(what ``FamilyImpl.build`` returns and model.safetensors holds). Formats never write runs:
importer.py does, so every import gets the same checks and the same atomic run creation.

Safetensors only: a format reads weights with :func:`read_safetensors`, which refuses pickled
``.bin`` checkpoints in one line (they can run code when loaded).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aigc_cli.core.errors import ConfigError
from aigc_cli.core.registry import Registry

if TYPE_CHECKING:  # pragma: no cover
    import torch


class ImportError_(ConfigError):
    """A folder that cannot be imported: one line naming the file and what is wrong."""


@dataclass
class Converted:
    """An imported model, ready to become a run: ``family``'s config sections and the state
    dict of each of its inference modules (name -> {key: tensor})."""

    family: str
    model: dict[str, Any]  # config.json's 'model' section, as the family's model_fields declare it
    train: dict[str, Any]  # config.json's 'train' section: the defaults a fine-tune starts from
    weights: dict[str, dict[str, "torch.Tensor"]]
    source: dict[str, Any] = field(default_factory=dict)  # what it came from: format, files, hub id


class ImportFormat(ABC):
    """One foreign checkpoint format. ``name``: how messages and ``--format`` name it."""

    name: str
    summary: str  # one line for ``aigc import --help`` and docs

    @abstractmethod
    def detect(self, folder: Path) -> bool:
        """Whether ``folder`` is in this format (from its config files, not its weights)."""

    @abstractmethod
    def files(self) -> list[str]:
        """Glob patterns of the files a hub download fetches for this format (configs,
        ``*.safetensors``, tokenizer files): nothing else is downloaded."""

    @abstractmethod
    def convert(self, folder: Path) -> Converted:
        """The run's parts; ImportError_ (one line, naming the file and field) for anything
        this format cannot build."""


FORMATS: Registry[ImportFormat] = Registry("import format")


def register_format(fmt: ImportFormat) -> ImportFormat:
    FORMATS.register(fmt.name)(fmt)
    return fmt


def read_json(path: Path, what: str) -> dict[str, Any]:
    """A JSON object from ``path``; a missing or unreadable file is one line naming it."""
    if not path.is_file():
        raise ImportError_(f"{path.parent} has no {path.name} ({what})")
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ImportError_(f"{path} is not readable JSON ({str(e).splitlines()[0]})") from None
    if not isinstance(value, dict):
        raise ImportError_(f"{path} must hold a JSON object ({what})")
    return value


def read_safetensors(folder: Path, names: tuple[str, ...]) -> dict[str, "torch.Tensor"]:
    """The tensors of the first of ``names`` present in ``folder`` (e.g. model.safetensors,
    diffusion_pytorch_model.safetensors), or of a sharded checkpoint's index. A folder with only
    pickled weights (``*.bin``, ``*.pt``, ``*.ckpt``) is refused: safetensors only."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    for name in names:
        index = folder / f"{name}.index.json"
        if index.is_file():
            shards = sorted(set(read_json(index, "a sharded checkpoint's index").get("weight_map", {}).values()))
            paths = [folder / s for s in shards]
            break
        if (folder / name).is_file():
            paths = [folder / name]
            break
    else:
        pickled = sorted(p.name for p in folder.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt"))
        if pickled:
            raise ImportError_(f"{folder} has only pickled weights ({', '.join(pickled[:3])}); aigc reads safetensors "
                               "only (a pickle can run code): convert them, or pick a revision that has "
                               f"{names[0]}")
        raise ImportError_(f"{folder} has no weights: expected {' or '.join(names)}")
    tensors: dict[str, torch.Tensor] = {}
    for path in paths:
        try:
            tensors.update(load_file(str(path)))
        except (SafetensorError, OSError, ValueError, RuntimeError) as e:
            raise ImportError_(f"{path} is not a readable safetensors file ({str(e).splitlines()[0]}); "
                               "download it again") from None
    return tensors


_discovered = False


def list_formats() -> list[str]:
    """The formats ``aigc import`` reads (each module of this package registers its own)."""
    global _discovered
    if not _discovered:
        _discovered = True
        import importlib
        import pkgutil

        import aigc_cli.hub as pkg

        for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name):
            if info.name not in ("formats", "importer", "download"):
                importlib.import_module(f"{pkg.__name__}.{info.name}")
    return FORMATS.names()


def get_format(name: str) -> ImportFormat:
    list_formats()
    return FORMATS.get(name)


def detect_format(folder: Path) -> ImportFormat:
    """The one format ``folder`` is in; a folder of none is one line listing what is read."""
    found = [f for f in (get_format(n) for n in list_formats()) if f.detect(folder)]
    if not found:
        raise ImportError_(f"{folder} is in no format aigc imports ({'; '.join(get_format(n).summary for n in list_formats())})")
    return found[0]


def read_vocab_and_merges(vocab_path: Path, merges_path: Path) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A BPE's vocab.json (token -> id) and merges.txt (pairs, one a line after an optional
    ``#version`` line), checked: each a one-line error naming the file (and line)."""
    vocab = read_json(vocab_path, "the tokenizer's vocabulary")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in vocab.values()):
        raise ImportError_(f"{vocab_path} must map tokens to whole numbers")
    try:
        lines = merges_path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ImportError_(f"{merges_path} is not readable UTF-8 text ({e})") from None
    merges = []
    for number, line in enumerate(lines, 1):
        if line.startswith("#version") or not line.strip():
            continue
        pair = line.split(" ")
        if len(pair) != 2:
            raise ImportError_(f"{merges_path} line {number} must hold two tokens separated by a space, got {line!r:.60}")
        merges.append(tuple(pair))
    return vocab, merges
