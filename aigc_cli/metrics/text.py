"""``aigc eval ppl``: how well a text run predicts a text — bits per character, bits per token and
perplexity (docs/eval.md#ppl). No typer, no rich: the CLI (cli/eval.py) only prints the result.

```python
from aigc_cli.metrics.text import perplexity

result = perplexity("last", "held_out.txt")      # or "-" for standard input
result["bits_per_char"], result["perplexity"]
```

The loss is the training loss (models/text/sampling.py ``token_losses``): the file's tokens are
cut into windows of ``context`` tokens, each scored from its start (the first token of a window
sees only itself, its last one ``context`` tokens), plus one shorter window for the tail; every
token but the file's first is scored once. Then, over the ``tokens`` scored:

- ``nats_per_token`` = the mean next-token cross-entropy (natural log);
- ``bits_per_token`` = nats_per_token / ln 2;
- ``perplexity`` = exp(nats_per_token), per token;
- ``bits_per_char`` = the total bits over the ``characters`` scored: the text's characters but
  those the first token holds (a char run: one per token, so bits_per_char == bits_per_token; a
  byte run: every character whose UTF-8 bytes begin after the first byte — all of them but the
  first; a bpe run: all but the first token's characters, e.g. 5 for "First").
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Any

from aigc_cli.core.errors import DatasetError

STDIN = "-"


def _read_stdin() -> str:
    from aigc_cli.data.text import decode_text as _decode

    stream = getattr(sys.stdin, "buffer", None)
    if stream is None:  # a text stream without bytes under it (a test's StringIO): already decoded
        return _decode(sys.stdin.read().encode("utf-8"), "standard input")
    return _decode(stream.read(), "standard input")


def read_text(file: str | Path) -> str:
    """The text of ``file`` (UTF-8; ``-``: standard input, read once by rank 0 under torchrun and
    passed to the others); a one-line DatasetError for a missing, unreadable or non-UTF-8 file."""
    from aigc_cli.core import distributed
    from aigc_cli.data.text import read_text_file

    if str(file) == STDIN:
        return distributed.from_main(_read_stdin, "reading standard input")
    try:  # a missing file, a folder, a FIFO, a link loop: one line, before anything opens it
        return read_text_file(Path(file).expanduser(), "a UTF-8 text file, or - for standard input")
    except OSError as e:
        raise DatasetError(f"cannot read {file}: {e.strerror or e}") from None


def score_text(gen, text: str, file: str = "the text", progress=None) -> dict[str, Any]:
    """The ``perplexity`` result, less ``run``, ``device`` and ``seconds``, of ``gen`` (a
    TextGenerator: ``load_generator(run, command="eval ppl")``) on ``text``; ``file`` names the
    text in messages and in the result; ``progress(done, total)`` hears of the scoring."""
    label = "standard input" if file == STDIN else file
    if len(text) < 2:
        raise DatasetError(f"{label} has {len(text)} character(s): nothing to score (the first is never "
                           "scored; give at least two)")
    tokenizer = gen.tokenizer
    ids = gen.encode(text, label)  # a char run: a one-line error naming characters it never saw
    if len(ids) < 2:  # a bpe token can hold the whole text
        raise DatasetError(f"{label} is {len(ids)} token(s) of {gen.run.id}'s tokenizer: nothing to score (the "
                           "first is never scored; give more text)")
    total, tokens = gen.sampler.token_losses(ids, progress)  # nats over every token but the first
    characters = len(text) - tokenizer.characters(ids[:1])  # those beginning in a scored token
    nats = total / tokens
    bits = total / math.log(2)
    return {
        "file": str(file),
        "tokens": tokens,
        "characters": characters,
        "nats_per_token": nats,
        "bits_per_token": nats / math.log(2),
        "bits_per_char": bits / characters,
        "perplexity": math.exp(nats),
        "bits": bits,
        "tokenizer": tokenizer.kind,
        "vocab_size": tokenizer.vocab_size,
        "context": gen.context,
        "arch": gen.config["model"]["arch"],
    }


def perplexity(run: Any, file: str | Path, device: Any = "cpu", progress=None) -> dict[str, Any]:
    """Bits per character, bits per token and perplexity of text run ``run`` (id, name, 'last' or
    a Run) on ``file`` (a UTF-8 text file, or ``-`` for standard input), as JSON-ready values
    (module docstring). One-line errors: an image run, a run without weights, a missing or
    non-UTF-8 file, fewer than two characters, characters outside a char run's alphabet.
    ``progress(done, total)`` hears of every batch of windows scored (a large file's progress)."""
    from aigc_cli.core.threads import used as used_threads
    from aigc_cli.generation import load_generator

    started = time.perf_counter()
    gen = load_generator(run, device, command="eval ppl")  # an image run: "does not apply", one line
    text = read_text(file)
    result = score_text(gen, text, str(file), progress)
    return {"run": gen.run.id, **result, "device": str(gen.device), "threads": used_threads(),
            "seconds": round(time.perf_counter() - started, 3)}
