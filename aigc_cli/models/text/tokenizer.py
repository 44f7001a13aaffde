"""Tokenizers of the text family: characters (the corpus' own alphabet, the default), UTF-8
bytes (any text at all) or a byte-level BPE (Hugging Face ``tokenizers``: trained on the corpus by
``--tokenizer bpe``, or GPT-2's own, imported). Stored in the run's config.json
(``model.tokenizer``; ``model.alphabet`` for char, ``model.bpe`` for bpe: the tokenizer's JSON).

Bits per character compare across runs whatever their tokenizer (docs/text.md).
"""

from __future__ import annotations

import codecs
from typing import Any

import torch

from aigc_cli.core.errors import ConfigError


class CharTokenizer:
    """One token per character of ``alphabet``; a character outside it is an error."""

    kind = "char"

    def __init__(self, alphabet: str):
        self.alphabet = alphabet
        self.index = {c: i for i, c in enumerate(alphabet)}
        self.vocab_size = len(alphabet)

    def encode(self, text: str, what: str = "the text") -> torch.Tensor:
        try:
            return torch.tensor([self.index[c] for c in text], dtype=torch.int64)
        except KeyError:
            unknown = sorted({c for c in text if c not in self.index})
            shown = ", ".join(repr(c) for c in unknown[:5]) + (", ..." if len(unknown) > 5 else "")
            raise ConfigError(f"{what} has {len(unknown)} character(s) this run never saw ({shown}); use text in "
                              "its alphabet, or train with --tokenizer byte for any text") from None

    def decode(self, ids) -> str:
        return "".join(self.alphabet[int(i)] for i in ids)

    def stream(self):
        """A function ids -> the text they complete (characters are whole tokens: at once)."""
        return self.decode

    def characters(self, ids: torch.Tensor) -> int:
        return len(ids)


class ByteTokenizer:
    """The 256 byte values of the text's UTF-8 encoding."""

    kind = "byte"
    vocab_size = 256

    def encode(self, text: str, what: str = "the text") -> torch.Tensor:
        return torch.frombuffer(bytearray(text.encode("utf-8")), dtype=torch.uint8).to(torch.int64)

    def decode(self, ids) -> str:
        return bytes(int(i) for i in ids).decode("utf-8", errors="replace")

    def stream(self):
        """A function ids -> text, holding back a character's first bytes until it is whole."""
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        return lambda ids: decoder.decode(bytes(int(i) for i in ids))

    def characters(self, ids: torch.Tensor) -> int:
        return len(self.decode(ids.tolist()))


def make_tokenizer(model: dict[str, Any]):
    """The tokenizer of a run's ``model`` config section."""
    if model["tokenizer"] == "byte":
        return ByteTokenizer()
    if model["tokenizer"] == "bpe":
        from aigc_cli.models.text.bpe import BPETokenizer

        return BPETokenizer(model["bpe"])
    return CharTokenizer(model["alphabet"])
