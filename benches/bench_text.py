"""Text family: aigc's GPT next to a plain PyTorch loop written as nanoGPT writes its own.

nanoGPT's README trains a character-level Shakespeare model on a CPU with 4 layers, 4 heads,
width 128, context 64, batch 12, dropout 0, lr 1e-3 (100 warm-up steps, cosine to 1e-4 over 2,000
iterations), AdamW (0.9, 0.99), weight decay 0.1, gradient clip 1, and reports a validation loss
near 1.88 after about three minutes. ``PlainGPT``/``plain_trainer`` below is that model and loop,
rewritten here (model.py's blocks, train.py's get_batch and step; fp32, as nanoGPT runs on a CPU).

Four parts, each printing its figures:

1. speed: training tokens/s at nanoGPT's batch, aigc's step (its default precision, and fp32)
   against the plain loop, interleaved rounds, median of ratios;
2. time to validation loss 1.88: each trains for up to --minutes of wall time, the clock paused
   while both are scored on the same held-out windows (every 100 steps of 768 tokens);
3. generation tokens/s with the KV cache against without (nanoGPT's way: re-read the window);
4. GRU and LSTM against the GPT at equal wall time (--rnn-minutes each).

    python benches/bench_text.py --corpus input.txt [--parts 1,2,3,4] [--minutes 4] [--rnn-minutes 2]

--corpus: Tiny Shakespeare's input.txt (``aigc datasets`` downloads it as ``shakespeare``); the
first 90% trains, the last 10% validates, as nanoGPT's prepare.py splits it.
"""

from __future__ import annotations

import argparse
import functools
import math
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

print = functools.partial(print, flush=True)  # noqa: A001  (figures appear as each part ends)

TARGET = 1.88
B, T, C, LAYERS, HEADS = 12, 64, 128, 4, 4
EVAL_ROWS = 256  # held-out windows of T + 1 scored at every evaluation (16,384 tokens), the same for all


# -- the plain loop, as nanoGPT writes it --------------------------------------------------------
class LayerNorm(nn.Module):
    def __init__(self, n):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n))

    def forward(self, x):
        return F.layer_norm(x, self.weight.shape, self.weight, None, 1e-5)


class Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.c_attn = nn.Linear(C, 3 * C, bias=False)
        self.c_proj = nn.Linear(C, C, bias=False)

    def forward(self, x):
        b, t, c = x.size()
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (z.view(b, t, HEADS, c // HEADS).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.c_proj(y.transpose(1, 2).contiguous().view(b, t, c))


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.ln_1, self.attn, self.ln_2 = LayerNorm(C), Attention(), LayerNorm(C)
        self.c_fc, self.c_proj = nn.Linear(C, 4 * C, bias=False), nn.Linear(4 * C, C, bias=False)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.c_proj(F.gelu(self.c_fc(self.ln_2(x))))


class PlainGPT(nn.Module):
    def __init__(self, vocab):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, C), nn.Embedding(T, C)
        self.h = nn.ModuleList(Block() for _ in range(LAYERS))
        self.ln_f = LayerNorm(C)
        self.lm_head = nn.Linear(C, vocab, bias=False)
        self.wte.weight = self.lm_head.weight  # weight tying
        for name, p in self.named_parameters():
            if p.dim() == 2:
                std = 0.02 / math.sqrt(2 * LAYERS) if name.endswith("c_proj.weight") else 0.02
                nn.init.normal_(p, 0.0, std)

    def forward(self, idx, targets=None):
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
        for block in self.h:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))
        if targets is None:
            return logits
        return logits, F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))


def plain_trainer(train_ids, vocab, seed=0):
    torch.manual_seed(seed)
    model = PlainGPT(vocab)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}],
                            lr=1e-3, betas=(0.9, 0.99))
    it = [0]

    def lr_at(i, warmup=100, decay_iters=2000, lr=1e-3, min_lr=1e-4):
        if i < warmup:
            return lr * (i + 1) / (warmup + 1)
        ratio = min((i - warmup) / (decay_iters - warmup), 1.0)
        return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (lr - min_lr)

    def step():
        ix = torch.randint(len(train_ids) - T, (B,))
        x = torch.stack([train_ids[i : i + T] for i in ix])
        y = torch.stack([train_ids[i + 1 : i + 1 + T] for i in ix])
        for g in opt.param_groups:
            g["lr"] = lr_at(it[0])
        _, loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        it[0] += 1
        return B * T

    return model, step


# -- aigc, through its own family code (what `aigc train text` runs) -----------------------------
def aigc_trainer(text_path, arch="gpt", batch=None, epochs=1, seed=0, **options):
    from aigc_cli.core.seeding import seed_everything
    from aigc_cli.data.text import load_corpus
    from aigc_cli.models.registry import get_family
    from aigc_cli.training.loop import epoch_permutation

    fam = get_family("text")
    corpus = load_corpus(str(text_path))
    given = {"arch": arch, **options}
    model_cfg, train_cfg = fam.make_config(given, corpus.info())
    batch = batch or 32  # the loop's default batch for text (training/options.py)
    train_cfg.update(epochs=epochs, batch_size=batch)
    data = fam.training_data(corpus, {"model": model_cfg, "train": train_cfg})
    train_cfg["items"] = len(data)
    seed_everything(seed)
    task = fam.training_task({"model": model_cfg, "train": train_cfg, "seed": seed}, torch.device("cpu"))
    state = {"epoch": 0, "pos": 0, "step": 0, "order": epoch_permutation(len(data), seed, 0)}

    def step():
        if state["pos"] + batch > len(state["order"]):
            state["epoch"] += 1
            state["pos"], state["order"] = 0, epoch_permutation(len(data), seed, state["epoch"])
        idx = state["order"][state["pos"] : state["pos"] + batch]
        state["pos"] += batch
        task.train_step(data.items[idx], None, state["step"])
        state["step"] += 1
        return batch * model_cfg["context"]

    return task, step, corpus


@torch.no_grad()
def val_loss(model, rows):
    model.eval()
    out = model(rows[:, :-1])
    logits = out[0] if isinstance(out, tuple) else out
    loss = F.cross_entropy(logits.float().flatten(0, 1), rows[:, 1:].flatten()).item()
    model.train()
    return loss


def encode_all(text_path):
    from aigc_cli.data.text import load_corpus
    from aigc_cli.models.text.tokenizer import CharTokenizer

    corpus = load_corpus(str(text_path))
    tok = CharTokenizer(corpus.alphabet)
    train, held = tok.encode(corpus.text), tok.encode(corpus.held_out)
    starts = torch.linspace(0, len(held) - T - 2, EVAL_ROWS).long()
    rows = torch.stack([held[s : s + T + 1] for s in starts.tolist()])
    return train, rows, tok.vocab_size


def part_speed(args, train, vocab):
    fns = {}
    _, fns["plain (nanoGPT's loop, fp32)"] = plain_trainer(train, vocab)
    task, fns["aigc fp32"], _ = aigc_trainer(args.corpus, batch=B, lr=1e-3, precision="fp32")
    task, fns["aigc (default precision: " + task.precision + ")"], _ = aigc_trainer(args.corpus, batch=B, lr=1e-3)
    for f in fns.values():
        for _ in range(20):
            f()
    rates = {k: [] for k in fns}
    for _ in range(args.rounds):
        for k, f in fns.items():
            start, tokens = time.perf_counter(), 0
            for _ in range(args.steps):
                tokens += f()
            rates[k].append(tokens / (time.perf_counter() - start))
    base = rates["plain (nanoGPT's loop, fp32)"]
    print(f"\n## 1. training tokens/s, batch {B} x {T}, {args.rounds} interleaved rounds of {args.steps} steps")
    print("| loop | tokens/s (median) | ratio to plain (median of rounds) | range |")
    print("|---|---|---|---|")
    for k, v in rates.items():
        ratios = [a / b for a, b in zip(v, base)]
        print(f"| {k} | {statistics.median(v):,.0f} | {statistics.median(ratios):.2f}x | "
              f"{min(ratios):.2f}-{max(ratios):.2f} |")


def race(name, model, step, rows, minutes, every_tokens=100 * B * T):
    """Train until the wall time is spent; score every ``every_tokens``; the clock stops while scoring."""
    spent, tokens, since, reached, curve = 0.0, 0, 0, None, []
    while spent < minutes * 60:
        start = time.perf_counter()
        n = step()
        spent += time.perf_counter() - start
        tokens += n
        since += n
        if since >= every_tokens:
            since = 0
            loss = val_loss(model, rows)
            curve.append((spent, tokens, loss))
            if reached is None and loss <= TARGET:
                reached = (spent, tokens)
    loss = val_loss(model, rows)
    curve.append((spent, tokens, loss))
    return {"name": name, "reached": reached, "final": loss, "tokens": tokens, "curve": curve}


def report_race(results, minutes):
    print(f"\n## 2. time to validation loss {TARGET} ({minutes} minutes of training each, scoring not counted)")
    print("| trainer | reached 1.88 after | tokens then | loss at the end | tokens trained |")
    print("|---|---|---|---|---|")
    for r in results:
        when = f"{r['reached'][0]:.0f} s" if r["reached"] else "not reached"
        tok = f"{r['reached'][1]:,}" if r["reached"] else "-"
        print(f"| {r['name']} | {when} | {tok} | {r['final']:.3f} | {r['tokens']:,} |")
    for r in results:
        marks = [f"{s:.0f}s:{loss:.2f}" for s, _, loss in r["curve"][:: max(len(r["curve"]) // 12, 1)]]
        print(f"curve {r['name']}: " + " ".join(marks))


def part_race(args, train, rows, vocab):
    results = []
    model, step = plain_trainer(train, vocab)
    results.append(race("plain (nanoGPT's recipe)", model, step, rows, args.minutes))
    task, step, _ = aigc_trainer(args.corpus, epochs=args.aigc_epochs)
    results.append(race(f"aigc defaults (batch 32, lr 2e-3, {args.aigc_epochs} epoch, {task.precision})", task.net,
                        step, rows, args.minutes))
    task, step, _ = aigc_trainer(args.corpus, batch=B, lr=1e-3, epochs=1)
    results.append(race(f"aigc with nanoGPT's batch and lr ({task.precision})", task.net, step, rows, args.minutes))
    report_race(results, args.minutes)


def part_generation(args):
    from aigc_cli.models.text.nets import GPT
    from aigc_cli.models.text.sampling import generate

    print("\n## 3. generation tokens/s, one sequence, temperature 1")
    print("| context | tokens | with the KV cache | without (re-read the window) | ratio |")
    print("|---|---|---|---|---|")
    for context in (64, 256):
        torch.manual_seed(0)
        model = GPT(65, C, LAYERS, HEADS, context, 0.0).eval()
        prompt = torch.zeros(1, dtype=torch.long)
        rates = {}
        for cache in (True, False):
            generate(model, prompt, 1, 20, torch.Generator().manual_seed(0), cache=cache)  # warm-up
            start = time.perf_counter()
            generate(model, prompt, 1, args.gen_tokens, torch.Generator().manual_seed(0), cache=cache)
            rates[cache] = args.gen_tokens / (time.perf_counter() - start)
        print(f"| {context} | {args.gen_tokens} | {rates[True]:,.0f} | {rates[False]:,.0f} | "
              f"{rates[True] / rates[False]:.2f}x |")


def part_rnn(args, rows):
    results = []
    for arch in ("gpt", "gru", "lstm"):  # each at its defaults (models/text/family.py DEFAULT_*)
        task, step, _ = aigc_trainer(args.corpus, arch=arch, epochs=args.rnn_epochs)
        n = sum(p.numel() for p in task.net.parameters())
        results.append(race(f"{arch} ({n / 1e6:.2f}M parameters)", task.net, step, rows, args.rnn_minutes))
    print(f"\n## 4. GPT, GRU and LSTM at their defaults (gpt 4 x 128, gru and lstm 2 x 256; "
          f"default precision), "
          f"{args.rnn_minutes} minutes each")
    print("| arch | loss at the end | tokens trained | reached 1.88 after |")
    print("|---|---|---|---|")
    for r in results:
        when = f"{r['reached'][0]:.0f} s" if r["reached"] else "not reached"
        print(f"| {r['name']} | {r['final']:.3f} | {r['tokens']:,} | {when} |")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--corpus", required=True)
    p.add_argument("--parts", default="1,2,3,4")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--minutes", type=float, default=4.0)
    p.add_argument("--aigc-epochs", type=int, default=1, help="aigc's cosine horizon in part 2")
    p.add_argument("--rnn-minutes", type=float, default=2.0)
    p.add_argument("--rnn-epochs", type=int, default=1)
    p.add_argument("--gen-tokens", type=int, default=1000)
    args = p.parse_args()
    parts = set(args.parts.split(","))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    train, rows, vocab = encode_all(args.corpus)
    if "1" in parts:
        part_speed(args, train, vocab)
    if "2" in parts:
        part_race(args, train, rows, vocab)
    if "3" in parts:
        part_generation(args)
    if "4" in parts:
        part_rnn(args, rows)


if __name__ == "__main__":
    main()
