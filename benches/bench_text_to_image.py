"""Text to image on the built-in ``shapes-captions`` (issue 31's quality goal): caption agreement of
``aigc train diffusion`` runs for seen and held-out combinations, by text encoder, guidance and
training time, on the CPU.

Parts (each runnable alone; results are appended as JSON rows to ``$HOME/bench_text_to_image.jsonl``):

- ``gpt``: the frozen encoder the RUN runs use. A text file of the train split's captions (the
  126 distinct seen captions, shuffled anew for each repeat, one per line, repeated to about
  ``--captions-kb`` kB; ``$HOME/captions.txt``), then ``aigc train text -d captions.txt --arch gpt
  --time {--gpt-minutes}m --epochs 100000 --seed 0 --name captions-gpt`` (its time is reported
  apart from the diffusion budgets).
- ``train``: ``aigc -q train diffusion -d shapes-captions --time {--minutes}m --seed 0
  [--text-encoder captions-gpt] --name {encoder}-{minutes}m{tag}`` for each of ``--encoders``
  (learned, run), all at once (at most two: each on ``--threads`` threads, so equal time is equal
  compute). Default options otherwise: the default 20 epochs (327,680 images) are out of reach of
  30 minutes on one CPU thread (about 60 images/s), so the time ends the runs; ``--until-time``
  adds ``--epochs 100000`` for a faster machine.
- ``judge RUN...``: for each ``--guidance`` (default 2, 3, 5; default steps and sampler), k images
  of every seen combination (126, k = ``--k-seen``, latents seed 1) and of every held-out one (18,
  k = ``--k-held``, latents seed 2), scored by ``aigc_cli.metrics.shapes_check.agreement``:
  per-factor accuracy and the share with all four right; plus ``--n-uncond`` unconditional
  samples (prompt "", latents seed 3): the share in which the checker finds a shape at all, and the
  spread of what it reads (a sanity check: an unconditional model should draw every value). The
  same latents for every run and guidance. Also the run's training figures from metrics.jsonl.
- ``ceiling``: the checker on real renders (the train and test splits), the best a model can score.
- ``pilot``: ``train`` for the learned encoder at ``--minutes`` (4), then ``judge`` at guidance 3.
- ``table``: the markdown tables of every row in the JSON file.

Runs use ``--threads`` threads (default 1: two runs side by side on a 2-core machine).

    python benches/bench_text_to_image.py --part pilot --minutes 4 [--home /tmp/t2ibench]
    python benches/bench_text_to_image.py --part gpt [--gpt-minutes 3]
    python benches/bench_text_to_image.py --part train --encoders learned,run --minutes 30
    python benches/bench_text_to_image.py --part judge learned-30m run-30m [--guidance 2,3,5]
    python benches/bench_text_to_image.py --part ceiling
    python benches/bench_text_to_image.py --part table
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
print = functools.partial(print, flush=True)

SEEN_SEED, HELD_SEED, UNCOND_SEED = 1, 2, 3
GPT_RUN = "captions-gpt"


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--part", required=True, choices=["pilot", "gpt", "train", "judge", "ceiling", "table"])
    p.add_argument("runs", nargs="*", help="judge: the runs to judge")
    p.add_argument("--home", default="/tmp/t2ibench")
    p.add_argument("--minutes", type=float, default=4)
    p.add_argument("--encoders", default="learned,run")
    p.add_argument("--tag", default="", help="suffix of the runs' names")
    p.add_argument("--until-time", action="store_true", help="train: --epochs 100000, so only --time ends a run")
    p.add_argument("--gpt-minutes", type=float, default=3)
    p.add_argument("--captions-kb", type=int, default=200)
    p.add_argument("--guidance", default="2,3,5")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: the sampler's)")
    p.add_argument("--k-seen", type=int, default=8)
    p.add_argument("--k-held", type=int, default=32)
    p.add_argument("--n-uncond", type=int, default=256, help="unconditional samples (0: none; guidance has no "
                   "effect on them, so once per run is enough)")
    p.add_argument("--threads", type=int, default=1)
    return p.parse_args()


sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

sys.path.insert(0, str(ROOT / "benches"))
from runner import aigc, command, configure, exists, now, record  # noqa: E402

ARGS: argparse.Namespace = argparse.Namespace()














def training_figures(name: str) -> dict:
    """Steps, images, seconds and images/s of a run, from its metrics.jsonl (the last row that has
    them) and config."""
    from aigc_cli.runs.store import resolve_run

    run = resolve_run(name)
    rows = [json.loads(line) for line in (run.path / "metrics.jsonl").read_text().splitlines() if line.strip()]
    last = [r for r in rows if "step" in r]
    out: dict = {"metrics_rows": len(rows)}
    if last:
        r = last[-1]
        keep = ("step", "epoch", "loss", "images_per_s")
        out["metrics_last"] = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items() if k in keep}
        rates = [r["images_per_s"] for r in last if "images_per_s" in r]
        if rates:
            out["images_per_s_mean"] = round(sum(rates) / len(rates), 1)
        batch = json.loads((run.path / "config.json").read_text()).get("train", {}).get("batch_size")
        if batch:
            out["batch_size"] = batch
            out["images_seen"] = r["step"] * batch
    return out


# ---- the frozen GPT text encoder ---------------------------------------------------------------

def captions_file() -> Path:
    from aigc_cli.data.shapes_captions import HELD_OUT, all_combinations, caption

    path = Path(ARGS.home) / "captions.txt"
    if not path.exists():
        seen = [caption(*c) for c in all_combinations() if c not in HELD_OUT]
        rng = random.Random(0)
        lines: list[str] = []
        while sum(len(s) + 1 for s in lines) < ARGS.captions_kb * 1000:
            batch = seen[:]
            rng.shuffle(batch)
            lines += batch
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def part_gpt() -> None:
    if exists(GPT_RUN):
        print(f"{GPT_RUN} exists")
        return
    path = captions_file()
    t0 = time.time()
    aigc("train", "text", "-d", path, "--arch", "gpt", "--time", f"{ARGS.gpt_minutes:g}m", "--epochs", "100000",
         "--seed", "0", "--name", GPT_RUN)
    record({"run": GPT_RUN, "captions_bytes": path.stat().st_size, "wall_s": round(time.time() - t0, 1),
            **training_figures(GPT_RUN)})


# ---- diffusion runs -----------------------------------------------------------------------------

def run_name(encoder: str, minutes: float) -> str:
    return f"{encoder}-{minutes:g}m{ARGS.tag}"


def part_train(encoders: list[str]) -> list[str]:
    if len(encoders) > 2:
        raise SystemExit("at most two training runs at once")
    procs, names = [], []
    for enc in encoders:
        name = run_name(enc, ARGS.minutes)
        names.append(name)
        if exists(name):
            print(f"{name} exists")
            continue
        args = ["-q", "train", "diffusion", "-d", "shapes-captions", "--time", f"{ARGS.minutes:g}m", "--seed", "0",
                "--name", name]
        if ARGS.until_time:
            args += ["--epochs", "100000"]
        if enc == "run":
            if not exists(GPT_RUN):
                raise SystemExit(f"train {GPT_RUN} first (--part gpt)")
            args += ["--text-encoder", GPT_RUN]
        elif enc != "learned":
            args += ["--text-encoder", enc]
        print(f"[{now()}] $ AIGC_HOME={ARGS.home} aigc --threads {ARGS.threads} {' '.join(args)}")
        log = open(Path(ARGS.home) / f"train-{name}.log", "w")
        procs.append((name, enc, time.time(), subprocess.Popen(command(*args), env=os.environ, stdout=log,
                                                               stderr=subprocess.STDOUT), log))
    for name, enc, t0, proc, log in procs:
        rc = proc.wait()
        log.close()
        wall = time.time() - t0
        if rc:
            print((Path(ARGS.home) / f"train-{name}.log").read_text()[-3000:])
            raise SystemExit(f"training {name} failed ({rc})")
        if wall < 0.95 * ARGS.minutes * 60:
            print(f"WARNING: {name} ended after {wall:.0f} s, before its budget (the epochs ran out?)")
        record({"run": name, "encoder": enc, "minutes": ARGS.minutes, "wall_s": round(wall, 1),
                "together": [n for n, *_ in procs], **training_figures(name)})
    return names


# ---- judging ------------------------------------------------------------------------------------

def combos() -> tuple[list, list]:
    from aigc_cli.data.shapes_captions import HELD_OUT, all_combinations

    every = all_combinations()
    return [c for c in every if c not in HELD_OUT], [c for c in every if c in HELD_OUT]


def draw(gen, prompts: list[str], seed: int, guidance: float) -> torch.Tensor:
    """(N, 3, 32, 32) uint8 for N prompts (one image each) from the latents of ``seed``, as
    ``sample_uint8`` draws them but with a prompt per row."""
    from aigc_cli.core.images import to_uint8

    options = {"guidance": guidance} | ({"steps": ARGS.steps} if ARGS.steps else {})
    z = gen.latents(len(prompts), seed)
    cond = dataclasses.replace(gen.conditioning(len(prompts), prompt="x"), prompts=tuple(prompts))
    return to_uint8(gen.generate(z, cond, 256, **options))


def factor_spread(images: torch.Tensor) -> dict:
    from aigc_cli.data.shapes_captions import FACTORS
    from aigc_cli.metrics.shapes_check import check_factors

    found = check_factors(images)
    out = {"found": round((found["shape"] >= 0).double().mean().item(), 4)}
    for name, values in FACTORS.items():
        v = found[name][found[name] >= 0]
        out[f"{name}_hist"] = {values[i]: int((v == i).sum()) for i in range(len(values))}
    return out


def rounded(d: dict) -> dict:
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in d.items()}


def per_value(images: torch.Tensor, prompts: list[str]) -> dict:
    """All-four share per value of each factor (which value fails most)."""
    from aigc_cli.data.shapes_captions import FACTORS, parse_caption
    from aigc_cli.metrics.shapes_check import check_factors

    found = check_factors(images)
    parsed = [parse_caption(p) for p in prompts]
    out = {}
    for name, values in FACTORS.items():
        wanted = torch.tensor([values.index(p[name]) for p in parsed])
        hit = found[name] == wanted
        out[name] = {v: round(hit[wanted == i].double().mean().item(), 3) for i, v in enumerate(values)
                     if (wanted == i).any()}
    return out


def judge(name: str, guidances: list[float]) -> None:
    from aigc_cli.data.shapes_captions import caption
    from aigc_cli.generation import load_generator
    from aigc_cli.metrics.shapes_check import agreement

    gen = load_generator(name, command="sample")
    seen, held = combos()
    seen_prompts = [caption(*c) for c in seen for _ in range(ARGS.k_seen)]
    held_prompts = [caption(*c) for c in held for _ in range(ARGS.k_held)]
    train = training_figures(name)
    for g in guidances:
        t0 = time.time()
        row = {"run": name, "guidance": g, "steps": ARGS.steps, "k_seen": ARGS.k_seen, "k_held": ARGS.k_held}
        for split, prompts, seed in (("seen", seen_prompts, SEEN_SEED), ("held", held_prompts, HELD_SEED)):
            images = draw(gen, prompts, seed, g)
            row[split] = rounded(agreement(images, prompts))
            row[f"{split}_by_value"] = per_value(images, prompts)
            row[f"{split}_black"] = round((images.amax((1, 2, 3)) < 96).double().mean().item(), 4)
            if split == "held" and g == guidances[0]:
                save_grid(images[:: ARGS.k_held // 4 or 1], Path(ARGS.home) / f"grid-{name}-g{g:g}-held.png", 8)
        if g == guidances[0] and ARGS.n_uncond:
            unc = draw(gen, [""] * ARGS.n_uncond, UNCOND_SEED, g)
            row["uncond"] = factor_spread(unc) | {"n": ARGS.n_uncond}
        row["judge_s"] = round(time.time() - t0, 1)
        record(row | train)


def save_grid(images: torch.Tensor, path: Path, cols: int) -> None:
    from PIL import Image

    n, c, h, w = images.shape
    rows = -(-n // cols)
    grid = torch.zeros(c, rows * (h + 2), cols * (w + 2), dtype=torch.uint8)
    for i, im in enumerate(images):
        r, q = divmod(i, cols)
        grid[:, r * (h + 2): r * (h + 2) + h, q * (w + 2): q * (w + 2) + w] = im
    Image.fromarray(grid.permute(1, 2, 0).numpy()).resize((grid.shape[2] * 3, grid.shape[1] * 3), Image.NEAREST).save(path)


def part_ceiling() -> None:
    from aigc_cli.data.shapes_captions import load_shapes_captions
    from aigc_cli.metrics.shapes_check import agreement

    for split in ("train", "test"):
        data = load_shapes_captions(split)
        record({"run": f"real-{split}", "split": split, "real": rounded(agreement(data.images, list(data.captions)))})


# ---- tables -------------------------------------------------------------------------------------

FACTOR_COLS = ("shape", "colour", "size", "position", "all")


def pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def abbrev(value: str) -> str:
    return "".join(w[0] for w in value.split()).upper() if " " in value else value[:3]


def part_table() -> None:
    rows = [json.loads(line) for line in (Path(ARGS.home) / "bench_text_to_image.jsonl").read_text().splitlines() if line.strip()]
    judged = [r for r in rows if r.get("part") in ("judge", "pilot") and "seen" in r]
    print("| run | guidance | split | " + " | ".join(FACTOR_COLS) + " | black | n |")
    print("|---|---|---|" + "---|" * (len(FACTOR_COLS) + 2))
    for r in judged:
        for split in ("seen", "held"):
            a = r[split]
            print(f"| {r['run']} | {r['guidance']:g} | {split} | " + " | ".join(pct(a[f]) for f in FACTOR_COLS)
                  + f" | {pct(r.get(split + '_black'))} | {a['n']} |")
    print()
    print("| run | unconditional: shape found | shapes | colours | sizes | positions |")
    print("|---|---|---|---|---|---|")
    for r in judged:
        if "uncond" in r:
            u = r["uncond"]
            print(f"| {r['run']} | {pct(u['found'])} | " + " | ".join(
                " ".join(f"{abbrev(k)} {v}" for k, v in u[f"{f}_hist"].items()) for f in ("shape", "colour", "size", "position")) + " |")
    for r in rows:
        if "real" in r:
            print(f"real {r['split']}: " + ", ".join(f"{f} {pct(r['real'][f])}" for f in FACTOR_COLS) + f" (n {r['real']['n']})")


def main() -> None:
    global ARGS
    ARGS = parse()
    os.environ["AIGC_HOME"] = ARGS.home
    os.environ["AIGC_THREADS"] = str(ARGS.threads)
    os.environ["PYTHONPATH"] = str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")
    Path(ARGS.home).mkdir(parents=True, exist_ok=True)
    configure(ARGS.home, ARGS.threads, ARGS.part, "bench_text_to_image.jsonl")
    torch.set_num_threads(ARGS.threads)
    guidances = [float(g) for g in ARGS.guidance.split(",")]
    if ARGS.part == "pilot":
        names = part_train(["learned"])
        judge(names[0], [3.0])
    elif ARGS.part == "gpt":
        part_gpt()
    elif ARGS.part == "train":
        part_train(ARGS.encoders.split(","))
    elif ARGS.part == "judge":
        for name in ARGS.runs:
            judge(name, guidances)
    elif ARGS.part == "ceiling":
        part_ceiling()
    elif ARGS.part == "table":
        part_table()


if __name__ == "__main__":
    main()
