"""Bench 3: GPT-2-sized generation on the CPU, aigc's cached sampler against transformers' generate.

One random GPT-2 small (124M parameters: 12 layers, width 768, 12 heads, vocabulary 50,257,
1,024 positions) built by transformers, and the same weights in aigc's GPT through the gpt2
import format's conversion (hub/gpt2.py). Each round times both on the same prompt (16 tokens)
and the same number of new tokens (64, batch 1, greedy: temperature 0 / ``do_sample=False``, both
with their key/value cache), on the same CPU threads (aigc's ``set_threads``, as ``--threads``;
transformers runs on torch's count, which that sets). Rounds interleave the two, the order
alternating, so a slower spell of a shared machine hits both; the figure is the median of the
per-round ratios (aigc tokens/s over transformers'). Both must agree token for token first.

    python benches/bench_gpt2_sampling.py [--rounds 7] [--threads N] [--prompt 16] [--new 64]
        [--layers 12 --width 768 --heads 12 --vocab 50257 --positions 1024]

Results: docs/benchmarks/text.md ("5. GPT-2 generation").
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from pathlib import Path

import torch

print = functools.partial(print, flush=True)  # noqa: A001  (each round appears as it ends)


def build(layers: int, width: int, heads: int, vocab: int, positions: int, seed: int = 0):
    """(transformers' GPT2LMHeadModel, aigc's GPT with the same weights), both in eval mode."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from aigc_cli.hub.gpt2 import convert_weights, model_section
    from aigc_cli.models.text.family import build_model

    torch.manual_seed(seed)
    config = GPT2Config(n_layer=layers, n_embd=width, n_head=heads, vocab_size=vocab, n_positions=positions)
    hf = GPT2LMHeadModel(config).eval()
    model = model_section(config.to_dict(), Path("config.json"))
    ours = build_model(model)
    ours.load_state_dict(convert_weights(dict(hf.state_dict()), model, Path(".")))
    return hf, ours.eval()


def aigc_tokens(model, prompt: torch.Tensor, new: int) -> torch.Tensor:
    from aigc_cli.models.text.sampling import generate

    return generate(model, prompt, 1, new, torch.Generator().manual_seed(0), temperature=0)[0]


@torch.inference_mode()
def hf_tokens(model, prompt: torch.Tensor, new: int) -> torch.Tensor:
    out = model.generate(prompt[None], do_sample=False, max_new_tokens=new, min_new_tokens=new, use_cache=True,
                         pad_token_id=0, attention_mask=torch.ones(1, len(prompt), dtype=torch.long))
    return out[0, len(prompt):]


def timed(fn) -> tuple[float, torch.Tensor]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def run(rounds: int, prompt_len: int, new: int, threads: int | None, **sizes) -> dict:
    from aigc_cli.core.threads import set_threads

    set_threads(threads or torch.get_num_threads())
    hf, ours = build(**sizes)
    prompt = torch.randint(0, sizes["vocab"], (prompt_len,), generator=torch.Generator().manual_seed(1))
    a, b = aigc_tokens(ours, prompt, new), hf_tokens(hf, prompt, new)  # also the warm-up of each
    assert torch.equal(a, b), "aigc and transformers disagree on the greedy tokens"
    rows = []
    for r in range(rounds):
        sides = [("aigc", lambda: aigc_tokens(ours, prompt, new)), ("transformers", lambda: hf_tokens(hf, prompt, new))]
        times = {name: timed(fn)[0] for name, fn in (sides if r % 2 == 0 else sides[::-1])}
        row = {"aigc": new / times["aigc"], "transformers": new / times["transformers"]}
        row["ratio"] = row["aigc"] / row["transformers"]
        rows.append(row)
        print(f"round {r + 1}: aigc {row['aigc']:.1f} tokens/s, transformers {row['transformers']:.1f} tokens/s, "
              f"ratio {row['ratio']:.3f}")
    median = statistics.median(r["ratio"] for r in rows)
    used = torch.get_num_threads()
    print(f"median ratio (aigc / transformers) over {rounds} rounds: {median:.3f} on {used} thread(s)")
    set_threads(None)  # the caller's count back (the bench's smoke test runs in the test process)
    return {"rounds": rows, "median_ratio": median, "threads": used}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--threads", type=int, default=None, help="CPU threads for both (default: torch's count)")
    p.add_argument("--prompt", type=int, default=16)
    p.add_argument("--new", type=int, default=64)
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--width", type=int, default=768)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--vocab", type=int, default=50257)
    p.add_argument("--positions", type=int, default=1024)
    a = p.parse_args(argv)
    print(f"torch {torch.__version__}, {a.layers} layers, width {a.width}, {a.heads} heads, vocabulary {a.vocab}, "
          f"{a.positions} positions; prompt {a.prompt} tokens, {a.new} new, batch 1, greedy")
    run(a.rounds, a.prompt, a.new, a.threads, layers=a.layers, width=a.width, heads=a.heads, vocab=a.vocab,
        positions=a.positions)


if __name__ == "__main__":
    main()
