"""Samplers and DDIM inversion as modules: (z, conditioning) -> images, (images, conditioning) -> z.

Each runs a fixed list of timesteps in a Python loop, so ``torch.onnx.export`` unrolls it into one
graph. z is the initial noise x_T, flattened: (N, C*H*W).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from aigc_cli.models.conditions import Conditioning
from aigc_cli.models.diffusion.schedule import to_x0_eps
from aigc_cli.models.protocol import Decoder


SPACINGS = ("aigc", "linspace", "leading", "trailing")


def timesteps(total: int, steps: int, spacing: str = "aigc", offset: int = 0) -> list[int]:
    """``steps`` timesteps from high to low (deduplicated, and at most ``total``).

    ``aigc``: evenly spaced from T-1 down to 0 (aigc's own runs). The others are diffusers'
    ``timestep_spacing`` as its DDIMScheduler.set_timesteps computes them: ``linspace`` (0 to T-1,
    rounded, reversed), ``leading`` (multiples of T // steps from 0, plus ``offset``, diffusers'
    ``steps_offset``) and ``trailing`` (from T down in steps of T / steps, minus 1)."""
    steps = min(steps, total)
    if spacing == "aigc":
        ts = torch.linspace(total - 1, 0, steps).round().long().tolist()
    elif spacing == "linspace":
        ts = np.linspace(0, total - 1, steps).round()[::-1].astype(np.int64).tolist()
    elif spacing == "leading":
        ts = ((np.arange(0, steps) * (total // steps)).round()[::-1].astype(np.int64) + offset).tolist()
    elif spacing == "trailing":
        ts = (np.round(np.arange(total, 0, -total / steps)).astype(np.int64) - 1).tolist()
    else:
        raise ValueError(f"unknown timestep spacing {spacing!r}")
    return list(dict.fromkeys(ts))


@dataclass(frozen=True)
class SamplingRules:
    """How a run's samplers step, from its config.json (``from_model``); the defaults are aigc's
    own runs. ``spacing``/``offset``: the timesteps (``timesteps``). With aigc's spacing each
    step goes to the next timestep of the list; with diffusers' spacings a DDIM step goes from t to
    t - T // steps, as DDIMScheduler.step does (the next listed one, except where rounding made
    them differ). ``final_alpha_one``: the step past the last timestep goes to alpha-bar 1 (clean
    images; diffusers' ``set_alpha_to_one``), else to alpha-bar[0]. ``clip_x0``: the predicted
    image is clipped to [-clip_x0, clip_x0] (None: not clipped); ``clipped_eps``: the noise is
    then re-derived from the clipped image (aigc), or kept as predicted (diffusers' DDIM)."""

    spacing: str = "aigc"
    offset: int = 0
    final_alpha_one: bool = True
    clip_x0: float | None = 1.0
    clipped_eps: bool = True

    @classmethod
    def from_model(cls, model: dict) -> "SamplingRules":
        return cls(model["spacing"], model["steps_offset"], model["final_alpha_one"], model["clip_x0"],
                   model["clipped_eps"])

    def steps(self, total: int, steps: int) -> list[tuple[int, int]]:
        """(t, t_prev) of each step, t_prev -1 past the last timestep (the final alpha)."""
        ts = timesteps(total, steps, self.spacing, self.offset)
        if self.spacing == "aigc":
            return list(zip(ts, ts[1:] + [-1]))
        stride = total // min(steps, total)
        return [(t, t - stride if t - stride >= 0 else -1) for t in ts]


def _both(a, b):
    """The conditional and unconditional halves of one keyword in one batch: (2N, ...) tensors,
    or tuples of them (a caption's states and mask)."""
    if isinstance(a, tuple):
        return tuple(torch.cat([x, y]) for x, y in zip(a, b))
    return torch.cat([a, b])


class _Denoise(nn.Module):
    """Shared: the U-Net with guidance, returning (x0, eps) at a timestep. ``text``: a captioned
    run's text encoder (models/captions/encoders.py), which turns the Conditioning's prompts into
    the states the U-Net attends to."""

    def __init__(self, unet: nn.Module, alpha_bar: torch.Tensor, prediction: str, image_shape, guidance: float,
                 rules: SamplingRules, text: nn.Module | None = None):
        super().__init__()
        self.unet, self.text = unet, text
        self.register_buffer("ab", alpha_bar.float(), persistent=False)
        self.prediction = prediction
        self.image_shape = tuple(image_shape)
        self.guidance = guidance
        self.rules = rules

    def ab_at(self, t: int, like: torch.Tensor) -> torch.Tensor:
        """alpha-bar at timestep t; t = -1 is past the last timestep: 1 or alpha-bar[0] (the rules)."""
        if t >= 0:
            return self.ab[t]
        return torch.ones_like(like) if self.rules.final_alpha_one else self.ab[0]

    def inputs(self, cond: Conditioning | None, device) -> tuple[dict, dict | None]:
        """(the U-Net's keywords for the rows, those of guidance's unconditional half or None):
        a class run's labels and the "no label" label; a captioned run's encoded captions and
        negative prompts ("" unless given)."""
        guided = self.guidance != 1.0
        if self.text is None:
            labels = cond.labels if cond is not None else None
            if labels is None or not guided:
                return {"labels": labels}, None
            return {"labels": labels}, {"labels": torch.full_like(labels, self.unet.null_label)}
        n = cond.n
        states = self.encode(cond.prompts, device)
        if cond.mix is not None:  # a blend towards other captions: their states, weighted per row
            other = self.encode(cond.prompts_to, device)
            w = cond.mix.to(device, states[0].dtype).view(-1, 1, 1)
            # Between the ends a row attends to either caption's tokens; at an end, to its own only
            # (so the first and last frames are the two prompts' images exactly)
            ends = w.view(-1, 1)
            mask = torch.where(ends == 0, states[1], torch.where(ends == 1, other[1], states[1] | other[1]))
            states = (states[0] * (1 - w) + other[0] * w, mask)
        if not guided:
            return {"text": states}, None
        return {"text": states}, {"text": self.encode(cond.negatives or ("",) * n, device)}

    def encode(self, texts, device) -> tuple[torch.Tensor, torch.Tensor]:
        """(states (N, L, D), mask (N, L)) of N texts, each distinct text encoded once."""
        unique = list(dict.fromkeys(texts))
        ids, mask = self.text.tokenize(unique)
        ids, mask = ids.to(device), mask.to(device)
        states = self.text(ids, mask)
        at = torch.tensor([unique.index(t) for t in texts], device=device)
        return states[at], mask[at]

    def predict(self, x: torch.Tensor, t: int, given: dict, unconditional: dict | None = None, clip: bool = True):
        """(x0, eps) at timestep t from the U-Net given ``given`` (its keywords: labels=, text=),
        guided away from ``unconditional`` (None: no guidance)."""
        n = x.shape[0]
        tt = torch.full((n,), t, device=x.device, dtype=torch.long)
        ab = self.ab[tt]
        if unconditional is not None:
            # Conditional and unconditional predictions in one batch (classifier-free guidance).
            both = self.unet(torch.cat([x, x]), torch.cat([tt, tt]),
                             **{k: _both(v, unconditional[k]) for k, v in given.items()})  # (2N, C, H, W)
            out_c, out_u = both[:n], both[n:]  # slices, not chunk(2): chunk pins the batch size in an export
            out = out_u + self.guidance * (out_c - out_u)
        else:
            out = self.unet(x, tt, **given)
        x0, eps = to_x0_eps(self.prediction, out, x, ab)
        c = self.rules.clip_x0
        if clip and c is not None:  # images live in [-1, 1]: a clipped x0 (and its matching eps) keep few-step sampling stable
            x0 = x0.clamp(-c, c)
            if self.rules.clipped_eps:
                eps = (x - ab.sqrt().view(-1, 1, 1, 1) * x0) / (1 - ab).sqrt().view(-1, 1, 1, 1)
        return x0, eps


class DiffusionDecoder(_Denoise, Decoder):
    """(z (N, C*H*W), Conditioning) -> (N, C, H, W) images in [0, 1]; ``on_pass()`` after each step."""

    def __init__(self, unet, alpha_bar, prediction, image_shape, steps: int = 25, sampler: str = "dpm++",
                 eta: float = 0.0, guidance: float = 1.0, rules: SamplingRules = SamplingRules(), text=None):
        super().__init__(unet, alpha_bar, prediction, image_shape, guidance, rules, text)
        self.pairs = rules.steps(len(alpha_bar), steps)  # DDIM's (t, t_prev)
        self.ts = [t for t, _ in self.pairs]
        self.sampler, self.eta = sampler, (1.0 if sampler == "ddpm" else eta)

    @property
    def passes(self) -> int:
        return len(self.ts)

    def forward(self, z: torch.Tensor, cond: Conditioning | None = None, on_pass=None) -> torch.Tensor:
        given, unconditional = self.inputs(cond, z.device)
        x = z.reshape(-1, *self.image_shape)  # x_T: (N, C, H, W)
        # DDPM/DDIM noise is drawn from a generator seeded by the first latent value's bits, so a
        # seed still gives one image on a given machine.
        gen = None
        if self.eta > 0:
            gen = torch.Generator(device="cpu").manual_seed(int(z.detach().flatten()[:1].abs().sum().item() * 1e6) % 2**31)
        x0_prev, h_prev = None, None
        for i, t in enumerate(self.ts):
            x0, eps = self.predict(x, t, given, unconditional)
            ab = self.ab[t]
            if self.sampler == "dpm++":  # a multistep solver: from each listed timestep to the next
                last = i + 1 == len(self.ts)
                ab_next = self.ab_at(-1 if last else self.ts[i + 1], ab)
                x, x0_prev, h_prev = self._dpm_step(x, x0, x0_prev, h_prev, ab, ab_next, last=last)
            else:
                x = self._ddim_step(x, x0, eps, ab, self.ab_at(self.pairs[i][1], ab), gen)
            if on_pass is not None:
                on_pass()
        return ((x + 1) / 2).clamp(0, 1)

    def _ddim_step(self, x, x0, eps, ab, ab_next, gen):
        x, sigma = ddim_mean(x0, eps, ab, ab_next, self.eta)
        if self.eta > 0:
            x = x + sigma * torch.randn(x.shape, generator=gen).to(x.device, x.dtype)
        return x

    @staticmethod
    def _dpm_step(x, x0, x0_prev, h_prev, ab, ab_next, last: bool):
        """DPM-Solver++ 2M (Lu et al. 2022), data prediction, first order at the first and last step."""
        if last:  # to t = 0 (ab = 1): the denoised image itself
            return x0, x0, None
        lam, lam_next = 0.5 * torch.log(ab / (1 - ab)), 0.5 * torch.log(ab_next / (1 - ab_next))
        h = lam_next - lam
        d = x0
        if x0_prev is not None:
            r = h_prev / h
            d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * x0_prev
        sigma_ratio = ((1 - ab_next) / (1 - ab)).sqrt()
        x = sigma_ratio * x - ab_next.sqrt() * torch.expm1(-h) * d
        return x, x0, h


def ddim_sigma(ab: torch.Tensor, ab_next: torch.Tensor, eta: float) -> torch.Tensor:
    """The noise of DDIM's step from alpha-bar ab to ab_next (0 at eta 0, and for the step to a
    clean image, ab_next 1)."""
    return eta * ((1 - ab_next) / (1 - ab) * (1 - ab / ab_next)).clamp(min=0).sqrt()


def ddim_mean(x0: torch.Tensor, eps: torch.Tensor, ab: torch.Tensor, ab_next: torch.Tensor, eta: float):
    """(mean, sigma): DDIM's step from alpha-bar ab to ab_next as a Gaussian, given the predicted
    clean image and noise (tune/ddpo.py scores its draws as a policy)."""
    sigma = ddim_sigma(ab, ab_next, eta)
    return ab_next.sqrt() * x0 + (1 - ab_next - sigma**2).clamp(min=0).sqrt() * eps, sigma


class DdimInverter(_Denoise):
    """(images (N, C, H, W) in [0, 1], labels) -> z (N, C*H*W): deterministic DDIM run backwards,
    so that decoding z with DDIM (eta 0) at the same steps gives the image back (approximately:
    each step uses the prediction at the next timestep)."""

    def __init__(self, unet, alpha_bar, prediction, image_shape, steps: int = 25, guidance: float = 1.0,
                 rules: SamplingRules = SamplingRules(), text=None):
        super().__init__(unet, alpha_bar, prediction, image_shape, guidance, rules, text)
        self.pairs = rules.steps(len(alpha_bar), steps)[::-1]  # the decoder's DDIM steps, last first

    def forward(self, images: torch.Tensor, cond: Conditioning | None = None) -> torch.Tensor:
        given, _ = self.inputs(cond, images.device)  # guidance 1: no unconditional half
        x = images * 2 - 1
        one = torch.ones((), device=x.device)
        for t, t_prev in self.pairs:  # each decoder step (t -> t_prev) undone: t_prev -> t
            ab = self.ab_at(t_prev, one)
            _, eps = self.predict(x, t, given, clip=False)  # eps at the next timestep stands in for this one's
            ab_next = self.ab[t]
            x0 = (x - (1 - ab).sqrt() * eps) / ab.sqrt()
            x = ab_next.sqrt() * x0 + (1 - ab_next).sqrt() * eps
        return x.flatten(1)
