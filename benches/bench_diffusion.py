"""Diffusion speed: aigc's U-Net and samplers next to Hugging Face diffusers, interleaved rounds.

Both sides: unconditional, 1 input channel, 32x32 inputs, batch 64, channels 32-64-64 over three
levels, attention only in the middle (lowest resolution), the same threads. diffusers side:
``UNet2DModel`` (DownBlock2D/UpBlock2D, layers_per_block=1, its mid block with attention) with
``DDPMScheduler.add_noise`` and an eps MSE loss in the loop of its unconditional-training example;
sampling with ``DDIMScheduler`` over the same number of steps. aigc side: the diffusion family's
``DiffusionTask.train_step`` (v target, Min-SNR weights, EMA update included) and its DDIM decoder.
aigc runs in each ``--layouts`` entry: ``compact`` (its default U-Net: one residual block per level
each way, 0.79 M parameters here) and ``ddpm`` (the same network as diffusers' UNet2DModel with
layers_per_block=1: a skip from every block, two blocks per level on the way up; the parameter
counts are printed and equal), so the ratios show what aigc's default gives for the same channel
list and what its implementation gives for the very same network.

    pip install diffusers   # bench-only
    python benches/bench_diffusion.py [--rounds 5] [--steps 10] [--sample-steps 10] [--threads 2] [--layouts compact,ddpm]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def aigc_side(batch: int, layout: str = "compact"):
    from aigc_cli.models.diffusion.family import DiffusionSampler
    from aigc_cli.models.registry import get_family

    family = get_family("diffusion")  # the declared defaults, with the sizes below
    model, train = family.make_config({"width": 32, "channel_mult": "1,2,2", "conditional": False, "layout": layout},
                                      {"shape": (1, 32, 32), "classes": None})
    config = {"model": model, "train": train, "seed": 0}
    task = family.training_task(config, torch.device("cpu"))
    images = torch.randint(0, 256, (batch, 1, 32, 32), dtype=torch.uint8)

    def train_steps(n):
        for i in range(n):
            task.train_step(images, None, i)

    decoder_of = DiffusionSampler(task.modules["unet_ema"], config, torch.device("cpu"))

    def sample(steps):
        z = torch.randn(batch, 32 * 32)
        with torch.inference_mode():
            decoder_of.decoder(steps=steps, sampler="ddim", eta=0.0, guidance=None)(z)

    return task.net, train_steps, sample


def diffusers_side(batch: int):
    from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel

    net = UNet2DModel(sample_size=32, in_channels=1, out_channels=1, layers_per_block=1,
                      block_out_channels=(32, 64, 64), down_block_types=("DownBlock2D",) * 3,
                      up_block_types=("UpBlock2D",) * 3, norm_num_groups=8)
    noise_sched = DDPMScheduler(num_train_timesteps=1000)
    opt = torch.optim.AdamW(net.parameters(), lr=5e-4)
    images = torch.randint(0, 256, (batch, 1, 32, 32), dtype=torch.uint8)

    def train_steps(n):
        net.train()
        for _ in range(n):
            x0 = images.float() / 127.5 - 1
            noise = torch.randn_like(x0)
            t = torch.randint(0, 1000, (batch,))
            pred = net(noise_sched.add_noise(x0, noise, t), t).sample
            loss = torch.nn.functional.mse_loss(pred, noise)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    ddim = DDIMScheduler(num_train_timesteps=1000)

    def sample(steps):
        net.eval()
        ddim.set_timesteps(steps)
        x = torch.randn(batch, 1, 32, 32)
        with torch.inference_mode():
            for t in ddim.timesteps:
                x = ddim.step(net(x, t).sample, t, x).prev_sample

    return net, train_steps, sample


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--sample-steps", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--layouts", default="compact,ddpm", help="aigc U-Net layouts to time, comma-separated")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    sides = {f"aigc-{layout}": aigc_side(a.batch_size, layout) for layout in a.layouts.split(",")}
    sides["diffusers"] = diffusers_side(a.batch_size)
    for name, (net, _, _) in sides.items():
        print(f"{name}: {sum(p.numel() for p in net.parameters()) / 1e6:.2f} M parameters")
    for _, train_steps, sample in sides.values():  # warm-up
        train_steps(2)
        sample(2)
    rates = {f"{k} {n}": [] for k in ("train", "sample") for n in sides}
    for _ in range(a.rounds):
        for name, (_, train_steps, sample) in sides.items():
            t0 = time.perf_counter()
            train_steps(a.steps)
            rates[f"train {name}"].append(a.steps * a.batch_size / (time.perf_counter() - t0))
            t0 = time.perf_counter()
            sample(a.sample_steps)
            rates[f"sample {name}"].append(a.batch_size / (time.perf_counter() - t0))
    for k, v in rates.items():
        print(f"{k}: median {statistics.median(v):.1f} images/s")
    for kind in ("train", "sample"):
        for name in sides:
            if name == "diffusers":
                continue
            ratios = [x / y for x, y in zip(rates[f"{kind} {name}"], rates[f"{kind} diffusers"])]
            print(f"{kind}: {name} / diffusers, median of per-round ratios {statistics.median(ratios):.2f} "
                  f"(min {min(ratios):.2f}, max {max(ratios):.2f})")


if __name__ == "__main__":
    main()
