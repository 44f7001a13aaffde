"""Byte-level BPE tokenizers through Hugging Face ``tokenizers``: GPT-2's kind, either trained on a
run's corpus (``--tokenizer bpe --vocab-size N``) or imported with a GPT-2 checkpoint.

The tokenizer travels inside config.json as the char alphabet does: ``model.bpe`` holds the
tokenizer's JSON object (``json.loads(tokenizer.to_str())``), checked when the run is loaded.

Byte-level means every token stands for a fixed byte string (its characters through GPT-2's
byte-to-unicode table), so any text encodes and decoding is "join the bytes, then UTF-8": that
is what ``decode`` and ``stream`` do here, so that a stream holds back an unfinished character
exactly like the byte tokenizer's, and equals ``tokenizers``' own decode (tests/test_import_gpt2.py).
"""

from __future__ import annotations

import codecs
import functools
import json
from typing import Any

import torch

from aigc_cli.core.errors import RunError, first_line

END_OF_TEXT = "<|endoftext|>"  # GPT-2's document separator: an imported run's empty prompt


@functools.cache
def byte_of_char() -> dict[str, int]:
    """GPT-2's ``bytes_to_unicode`` inverted: the printable character standing for each byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[chr(b)] = b
        else:  # the others (controls, space, ...) map to 256, 257, ... in byte order
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


def load_bpe(spec: Any):
    """The ``tokenizers.Tokenizer`` of a tokenizer JSON object; ValueError if it is not one."""
    from tokenizers import Tokenizer

    if not isinstance(spec, dict):
        raise ValueError(f"must be a JSON object, got {type(spec).__name__}")
    try:
        tokenizer = Tokenizer.from_str(json.dumps(spec))
    except Exception as e:  # noqa: BLE001 (tokenizers raises a bare Exception for a malformed file)
        raise ValueError(f"is not a tokenizers JSON ({first_line(e)[:120]})") from None
    model = (spec.get("model") or {}).get("type")
    decoder = (spec.get("decoder") or {}).get("type")
    if model != "BPE" or decoder != "ByteLevel":
        raise ValueError(f"must be a byte-level BPE (model BPE, decoder ByteLevel), got model {model}, "
                         f"decoder {decoder}")
    return tokenizer


def check_bpe(spec: Any, vocab_size: int, where: str) -> None:
    """RunError naming ``where``'s field 'bpe' for a damaged or unusable tokenizer."""
    try:
        tokenizer = load_bpe(spec)
    except ValueError as e:
        raise RunError(f"{where} field 'bpe' {e}") from None
    n = tokenizer.get_vocab_size(with_added_tokens=True)
    if n > vocab_size:
        raise RunError(f"{where} field 'bpe' has {n} tokens, more than 'vocab_size' ({vocab_size})")


def train_bpe(text: str, vocab_size: int) -> dict[str, Any]:
    """A byte-level BPE of at most ``vocab_size`` tokens learnt from ``text``, as its JSON object:
    GPT-2's pre-tokenization (its regex, no added prefix space) over the 256 byte symbols, then
    merges of the most frequent pairs (fewer than asked when the text runs out of pairs). No special
    tokens: the corpus has no documents to separate. The same text gives the same tokenizer
    (``tokenizers`` breaks ties between equal counts by pair, not by hash order)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator([text], trainer, length=1)
    return json.loads(tokenizer.to_str())


class BPETokenizer:
    """A run's byte-level BPE (``model.bpe``): any text encodes."""

    kind = "bpe"

    def __init__(self, spec: dict[str, Any]):
        self.spec = spec
        self.tokenizer = load_bpe(spec)
        self.vocab_size = self.tokenizer.get_vocab_size(with_added_tokens=True)

    @functools.cached_property
    def token_bytes(self) -> list[bytes]:
        """Token id -> the bytes it stands for, as ``tokenizers``' ByteLevel decoder maps it: each
        character through GPT-2's table, or, for a token with a character outside it (an added
        token such as a space-holding one), the token's own UTF-8."""
        table = byte_of_char()
        out = []
        for i in range(self.vocab_size):
            token = self.tokenizer.id_to_token(i) or ""
            try:
                out.append(bytes(table[c] for c in token))
            except KeyError:
                out.append(token.encode("utf-8"))
        return out

    def _bytes(self, ids) -> bytes:
        table, n = self.token_bytes, self.vocab_size
        # ids past the tokenizer's (a model's padded vocabulary) stand for nothing
        return b"".join(table[i] if i < n else b"" for i in map(int, ids))

    def has_token(self, text: str) -> bool:
        return self.tokenizer.token_to_id(text) is not None

    def encode(self, text: str, what: str = "the text") -> torch.Tensor:
        # No special tokens added (GPT-2 adds none either); "<|endoftext|>" in the text is its token.
        return torch.tensor(self.tokenizer.encode(text, add_special_tokens=False).ids, dtype=torch.int64)

    def decode(self, ids) -> str:
        return self._bytes(ids).decode("utf-8", errors="replace")

    def stream(self):
        """A function ids -> text, holding back a character's first bytes until it is whole (a
        token may end inside a character: GPT-2 splits many CJK characters and emoji)."""
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        return lambda ids: decoder.decode(self._bytes(ids))

    def characters(self, ids: torch.Tensor) -> int:
        return len(self.decode(ids.tolist()))

    def to_json(self) -> str:
        """The tokenizer file's text (``tokenizers.Tokenizer.from_str`` reads it back)."""
        return self.tokenizer.to_str()
