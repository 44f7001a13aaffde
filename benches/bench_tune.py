"""``aigc tune`` against its rewards (GRPO, DPO, DDPO) and against a plain REINFORCE loop, at
fixed wall-clock budgets on the CPU.

Parts (each runnable alone; a part trains the parent it needs when ``--home`` lacks it):

- ``grpo``: a GPT parent trained on the built-in corpus ``bard`` (``aigc train text --arch gpt
  --time {--parent-minutes}m --epochs 100000 --seed 0 --name gpt-parent``), tuned with ``aigc
  tune gpt-parent --reward avoid:e --kl K --length 63`` for the first budget of ``--minutes``,
  measured, then ``aigc tune --resume`` for the rest of the last budget, measured again; for each
  ``--kl``. ``--length 63``: the default 64 and the newline that starts a sample exceed the
  default GPT's context of 64 (refused).
- ``dpo``: pairs drawn from the parent (``--pairs`` pairs: two completions of the empty prompt,
  63 tokens at temperature 1, seed 2; the one with the smaller share of 'e' per character is
  "chosen", ties skipped) written as TRL's JSONL, then ``aigc tune gpt-parent --preferences
  pairs.jsonl`` with the same two budgets (``--epochs N``: N passes over the pairs instead).
- ``reinforce``: the peer, a plain REINFORCE loop written here on the parent's own network
  (loaded as ``aigc sample`` loads it): 64 completions of 63 tokens a step from the empty prompt
  at temperature 1, reward avoid:e, advantage = reward less the batch mean (no division by the
  standard deviation, no KL, no reference model), the per-token mean of -advantage x log-prob,
  AdamW at GRPO's default lr 1e-4 (betas 0.9/0.99, weight decay 0.1 on matrices, gradient norm
  clipped to 1, as aigc's text optimizer), for the same budgets. TRL is not used: it tunes
  transformers models, not aigc's GPT, and is not installed.
- ``ddpo``: a diffusion parent on the built-in digits (``aigc train diffusion --dataset digits
  --time {--parent-minutes}m --epochs 1000 --seed 0 --name digits-parent``), tuned with ``aigc
  tune digits-parent --reward compressibility`` for the same budgets.

Text figures, for the parent and each child at each budget: the share of 'e' (either case) among
the characters of ``-n`` completions of 63 tokens from the empty prompt, seed 1, at temperature
1 (the policy tuned) and 0.8 (``aigc sample``'s default); the mean avoid:e reward of the
temperature-1 samples; the bits per character on the held-out last 10% of ``bard`` (what ``aigc
eval ppl RUN $HOME/bard-heldout.txt`` prints; the price paid). Image figures: the mean JPEG size
(quality 95, kilobytes, as the reward computes it) of ``-n`` class-conditional samples, seed 1,
every class in turn, drawn as ``aigc sample`` draws them (DPM++ 25 steps, guidance 2) and as the
tuning draws them (DDIM eta 1, 10 steps, no guidance), and the share that benches/classifier.py
classifies as the class asked for. Every figure row carries the 1-minute load average measured
after it; the rows are appended as JSON to ``$HOME/bench_tune.jsonl``.

Runs use ``--threads`` threads (default 1: two parts run side by side on a 2-core machine).

    python benches/bench_tune.py --part grpo|dpo|ddpo|reinforce [--minutes 3,8] [--home /tmp/tunebench-home]
        [--kl 0.05,0.5] [--parent-minutes 4] [-n 64] [--threads 1] [--pairs 512] [--tag=-r2]
    python benches/bench_tune.py --part dpo --epochs 1     # DPO for a number of passes over the pairs
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
print = functools.partial(print, flush=True)

LENGTH = 63  # tokens of a completion: + the newline that starts it = the default GPT context (64)
SAMPLE_SEED = 1


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--part", required=True, choices=["grpo", "dpo", "ddpo", "reinforce"])
    p.add_argument("--minutes", default="3,8", help="budgets: measured after each, the last the total")
    p.add_argument("--home", default="/tmp/tunebench-home")
    p.add_argument("--kl", default="0.05,0.5", help="GRPO's --kl values")
    p.add_argument("--parent-minutes", type=float, default=4)
    p.add_argument("-n", type=int, default=64, help="samples per measurement")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--pairs", type=int, default=512, help="DPO: completions pairs drawn (ties skipped)")
    p.add_argument("--epochs", type=int, default=None,
                   help="DPO: passes over the pairs instead of the --minutes budgets (one run, measured at its end)")
    p.add_argument("--tag", default="", help="suffix of the child runs' names (a second round)")
    return p.parse_args()


sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

sys.path.insert(0, str(ROOT / "benches"))
from runner import aigc, configure, exists, load1, now, record  # noqa: E402

# Set by main() from the command line (importing the module, as tests/test_benches.py does, parses nothing).
ARGS: argparse.Namespace = argparse.Namespace()
BUDGETS: list[float] = []












def curve(name: str) -> dict:
    """The first and last rows of a run's metrics.jsonl: reward, KL, steps."""
    from aigc_cli.runs.store import resolve_run

    rows = [json.loads(line) for line in (resolve_run(name).path / "metrics.jsonl").read_text().splitlines() if line]
    rows = [r for r in rows if "reward" in r or "loss" in r]
    keep = ("step", "reward", "kl", "entropy", "loss", "accuracy", "margin", "grad_norm")
    pick = lambda r: {k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items() if k in keep}
    return {"metrics_first": pick(rows[0]), "metrics_last": pick(rows[-1]), "metrics_rows": len(rows)} if rows else {}


# ---- text ----------------------------------------------------------------------------------

def heldout_file() -> Path:
    from aigc_cli.data.text import load_corpus

    path = Path(ARGS.home) / "bard-heldout.txt"
    if not path.exists():
        path.write_text(load_corpus("bard", "train").held_out, encoding="utf-8")
    return path


def text_parent() -> str:
    if not exists("gpt-parent"):
        aigc("train", "text", "--arch", "gpt", "--time", f"{ARGS.parent_minutes:g}m", "--epochs", "100000",
             "--seed", "0", "--name", "gpt-parent")
    return "gpt-parent"


def e_share(texts: list[str]) -> float:
    chars = sum(len(t) for t in texts)
    return sum(t.lower().count("e") for t in texts) / max(1, chars)


def text_figures(gen, label: str, minutes: float | None, extra: dict | None = None) -> None:
    from aigc_cli.metrics.text import score_text
    from aigc_cli.tune.rewards import load_reward

    reward = load_reward("avoid:e", None, "text", 60)
    t1 = gen.complete(None, n=ARGS.n, seed=SAMPLE_SEED, length=LENGTH, temperature=1.0)
    t08 = gen.complete(None, n=ARGS.n, seed=SAMPLE_SEED, length=LENGTH, temperature=0.8)
    scored = score_text(gen, heldout_file().read_text(encoding="utf-8"), "bard-heldout.txt")
    record({"run": label, "minutes": minutes, "e_share_t1": round(e_share(t1), 4), "e_share_t08": round(e_share(t08), 4),
            "reward_t1": round(sum(reward(t1)) / len(t1), 4), "heldout_bpc": round(scored["bits_per_char"], 4),
            "sample_t08": t08[0][:120], **(extra or {})})


def measure_run(name: str, minutes: float | None) -> None:
    from aigc_cli.generation import load_generator

    text_figures(load_generator(name, command="eval ppl"), name, minutes, curve(name) if minutes is not None else None)


def staged(name: str, first: list[str]) -> None:
    """``first`` (an ``aigc tune`` command) for the first budget, measured; then --resume up to
    each later budget, measured."""
    done = 0.0
    for i, m in enumerate(BUDGETS):
        if i == 0:
            aigc(*first, "--time", f"{m * 60:.0f}s", "--name", name)
        else:
            aigc("tune", "--resume", name, "--time", f"{(m - done) * 60:.0f}s")
        done = m
        measure_run(name, m)


def part_grpo() -> None:
    parent = text_parent()
    measure_run(parent, None)
    for kl in [float(k) for k in ARGS.kl.split(",")]:
        staged(f"grpo-kl{kl:g}{ARGS.tag}", ["tune", parent, "--reward", "avoid:e", "--kl", kl, "--length", LENGTH,
                                           "--epochs", "100000", "--seed", "0"])


def part_dpo() -> None:
    from aigc_cli.generation import load_generator

    parent = text_parent()
    pairs_path = Path(ARGS.home) / "pairs.jsonl"
    if not pairs_path.exists():
        gen = load_generator(parent, command="sample")
        texts = gen.complete(None, n=2 * ARGS.pairs, seed=2, length=LENGTH, temperature=1.0)
        kept = []
        for a, b in zip(texts[0::2], texts[1::2]):
            ea, eb = e_share([a]), e_share([b])
            if ea != eb:
                kept.append({"chosen": a if ea < eb else b, "rejected": b if ea < eb else a})
        pairs_path.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
        record({"run": "pairs", "pairs_drawn": ARGS.pairs, "pairs_kept": len(kept),
                "chosen_e_share": round(e_share([r["chosen"] for r in kept]), 4),
                "rejected_e_share": round(e_share([r["rejected"] for r in kept]), 4)})
    if ARGS.epochs is not None:
        name = f"dpo-e{ARGS.epochs}{ARGS.tag}"
        aigc("tune", parent, "--preferences", str(pairs_path), "--epochs", ARGS.epochs, "--seed", "0", "--name", name)
        measure_run(name, 0.0)
        return
    staged(f"dpo{ARGS.tag}", ["tune", parent, "--preferences", str(pairs_path), "--epochs", "100000", "--seed", "0"])


def part_reinforce() -> None:
    from aigc_cli.generation import load_generator
    from aigc_cli.models.text.family import start_tokens
    from aigc_cli.models.text.sampling import generate
    from aigc_cli.tune.rewards import load_reward

    parent = text_parent()
    gen = load_generator(parent, command="eval ppl")
    net = gen.sampler.model
    reward = load_reward("avoid:e", None, "text", 60)
    prompt = gen.encode(start_tokens(gen.tokenizer))
    decay = [p for p in net.parameters() if p.ndim >= 2]
    rest = [p for p in net.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}],
                            lr=1e-4, betas=(0.9, 0.99))
    label = f"reinforce{ARGS.tag}"
    trained, step, rewards = 0.0, 0, []  # seconds of training: the measurements count against nothing
    for m in BUDGETS:
        while trained < m * 60:
            t0 = time.time()
            g = torch.Generator().manual_seed(1000 + step)
            with torch.no_grad():
                done = generate(net, prompt, 64, LENGTH, g, temperature=1.0).clone()  # (64, L)
            texts = [gen.tokenizer.decode(row.tolist()) for row in done]
            r = torch.tensor(reward(texts), dtype=torch.float32)
            adv = r - r.mean()
            x = torch.cat([prompt.expand(len(done), -1), done], 1)
            net.train()  # dropout is 0 in the default GPT: the same as eval
            logits = net(x[:, :-1])
            logits = (logits[0] if isinstance(logits, tuple) else logits).float()
            logp = logits.log_softmax(-1).gather(-1, x[:, 1:, None]).squeeze(-1)[:, len(prompt) - 1:]
            loss = -(adv[:, None] * logp).mean()
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
            net.eval()
            rewards.append(float(r.mean()))
            step += 1
            trained += time.time() - t0
        text_figures(gen, label, m, {"steps": step, "reward_first20": round(sum(rewards[:20]) / max(1, len(rewards[:20])), 4),
                                     "reward_last20": round(sum(rewards[-20:]) / max(1, len(rewards[-20:])), 4)})


# ---- images --------------------------------------------------------------------------------

def image_figures(name: str, minutes: float | None) -> None:
    sys.path.insert(0, str(ROOT / "benches"))
    import classifier

    from aigc_cli.generation import load_generator
    from aigc_cli.tune.rewards import _jpeg_kb

    classifier.MNIST = Path("/work/shared/data/mnist/t10k-images-idx3-ubyte.gz")  # only if its cache is gone
    judge = classifier.get_classifier(verbose=False)
    gen = load_generator(name, command="sample")
    asked = torch.arange(ARGS.n) % 10
    row = {"run": name, "minutes": minutes}
    for how, opts in (("default", {}), ("ddim_eta1_10", {"sampler": "ddim", "eta": 1.0, "steps": 10, "guidance": 1.0})):
        images = gen.sample_uint8(ARGS.n, seed=SAMPLE_SEED, **opts)  # (N, 1, 28, 28): every class in turn
        kb = _jpeg_kb(images.permute(0, 2, 3, 1).numpy())
        j = classifier.judge(judge, images, asked)
        row |= {f"jpeg_kb_{how}": round(sum(kb) / len(kb), 4), f"asked_share_{how}": j["asked_share"],
                f"confident_{how}": j["confident_share"]}
    record(row | (curve(name) if minutes is not None else {}))


def part_ddpo() -> None:
    if not exists("digits-parent"):
        aigc("train", "diffusion", "--dataset", "digits", "--time", f"{ARGS.parent_minutes:g}m", "--epochs", "1000",
             "--seed", "0", "--name", "digits-parent")
    image_figures("digits-parent", None)
    name = f"ddpo{ARGS.tag}"
    done = 0.0
    for i, m in enumerate(BUDGETS):
        if i == 0:
            aigc("tune", "digits-parent", "--reward", "compressibility", "--epochs", "100000", "--seed", "0",
                 "--time", f"{m * 60:.0f}s", "--name", name)
        else:
            aigc("tune", "--resume", name, "--time", f"{(m - done) * 60:.0f}s")
        done = m
        image_figures(name, m)


def main() -> None:
    global ARGS, BUDGETS
    ARGS = parse()
    os.environ["AIGC_HOME"] = ARGS.home
    os.environ["PYTHONPATH"] = str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")
    torch.set_num_threads(ARGS.threads)
    BUDGETS = [float(m) for m in ARGS.minutes.split(",")]
    configure(ARGS.home, ARGS.threads, ARGS.part, "bench_tune.jsonl")
    print(f"[{now()}] part {ARGS.part}, budgets {BUDGETS} min, {ARGS.threads} thread(s), home {ARGS.home}, "
          f"load {load1()}, {torch.__version__}")
    {"grpo": part_grpo, "dpo": part_dpo, "ddpo": part_ddpo, "reinforce": part_reinforce}[ARGS.part]()


if __name__ == "__main__":
    main()
