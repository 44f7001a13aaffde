"""DDPO for diffusion runs: the denoising chain as a policy (Black et al. 2023).

Each step samples ``--batch-size`` chains of ``--steps`` DDIM steps with eta 1, so that every
step is a Gaussian, ``x_prev ~ N(mean_theta(x_t), sigma_t^2)``, from the current weights; the
reward scores the final images; an advantage is a sample's reward less the batch's mean, over its
standard deviation. The chains then train in ``--minibatches`` parts for ``--inner-epochs``
passes, an optimizer step each, on DDPO's clipped importance-sampling objective per denoising
step:

    max(-A * ratio, -A * clip(ratio, 1 - clip, 1 + clip)),  ratio = pi_theta(x_prev | x_t) / pi_old(x_prev | x_t)

with the log-probabilities averaged over pixels, as DDPO's code does (a ratio of sums over 784
pixels would overflow). The first part trains on-policy (ratio 1); the later ones see the weights
the earlier parts moved, which the clipping bounds. ``--kl`` adds the exact KL divergence between
this run's step and its parent's (two Gaussians of the same sigma: ``|mean - mean_ref|^2 / 2
sigma^2``, averaged over pixels), which the paper does not have. The last step, to the clean
image, has sigma 0 here (alpha-bar 1): it is deterministic, not part of the policy.

A class-conditional run samples its labels at random (or ``--label``'s) and is tuned without
guidance (one U-Net pass a step); ``aigc sample`` guides it afterwards as any run. Reproducible as
GRPO is: every draw of a step comes from (seed, step, the sample's place in the global batch).
"""

from __future__ import annotations

from typing import Any

import torch

from aigc_cli.core.device import autocast
from aigc_cli.core.distributed import rank
from aigc_cli.core.seeding import keyed_generator
from aigc_cli.core.errors import ConfigError
from aigc_cli.core.images import to_uint8
from aigc_cli.models.diffusion.sampling import SamplingRules, _Denoise, ddim_mean, ddim_sigma
from aigc_cli.models.protocol import TrainingData
from aigc_cli.tune.methods import TuneMethod, TuneTask, register_method
from aigc_cli.tune.rewards import reward_record

KEY = "aigc-ddpo"  # of every draw's generator (core.seeding.keyed_generator)
STEPS_PER_EPOCH = 25  # sampling rounds in an epoch (a reward has no data to pass over)



def configure(values: dict[str, Any], produces: str) -> dict[str, Any]:
    return {"reward": reward_record(values, produces),
            **{k: values[k] for k in ("steps", "kl", "clip", "minibatches", "inner_epochs", "label")}}


def check(config: dict[str, Any]) -> None:
    if config["model"].get("text"):
        raise ConfigError("aigc tune does not tune captioned diffusion runs yet (DDPO draws without prompts); "
                          "tune a class-conditional or unconditional run")
    tune, model, batch = config["tune"], config["model"], config["train"]["batch_size"]
    if batch % tune["minibatches"]:
        raise ConfigError(f"--batch-size {batch} does not split into --minibatches {tune['minibatches']}")
    k = model["num_classes"] if model["conditional"] else None
    if tune["label"] is not None and (k is None or not 0 <= tune["label"] < k):
        raise ConfigError(f"--label {tune['label']}: " + ("this run is unconditional" if k is None
                                                         else f"the run has classes 0 to {k - 1}"))


def items(config: dict[str, Any]) -> TrainingData:
    return TrainingData(None, unit="images", steps_per_epoch=STEPS_PER_EPOCH)


class DDPOTask(TuneTask):
    def __init__(self, base, impl, config, device):
        super().__init__(base, impl, config, device)
        model = base.model_cfg
        self.net, self.ab, self.classes = base.net, base.ab, base.num_classes
        self.net.eval()  # in inference mode throughout: chains are drawn and scored by the same network
        self.shape, self.prediction = tuple(model["image_shape"]), model["prediction"]
        self.rules = SamplingRules.from_model(model)
        self.denoise = _Denoise(self.net, self.ab, self.prediction, self.shape, 1.0, self.rules)  # the policy's
        # (t, alpha-bar at t_prev) of each DDIM step, and its sigma at eta 1
        self.steps = [(t, self.denoise.ab_at(t_prev, self.ab[t])) for t, t_prev in
                      self.rules.steps(len(self.ab), self.tune["steps"])]
        self.sigmas = [float(ddim_sigma(self.ab[t], ab_next, 1.0)) for t, ab_next in self.steps]
        self.batch_size, self.seed = config["train"]["batch_size"], config["seed"]
        self.old: dict[str, torch.Tensor] = {}  # the chains' labels and log-probabilities at sampling
        self.stats: dict[str, torch.Tensor] = {}

    def load_reference(self, weights) -> None:
        super().load_reference(weights)
        self.denoise_ref = _Denoise(self.reference["unet"], self.ab, self.prediction, self.shape, 1.0, self.rules)

    def _step(self, den: _Denoise, x: torch.Tensor, i: int, labels: torch.Tensor | None):
        """(mean, sigma) of DDIM step i with eta 1 from x (N, C, H, W), ``den`` the policy's or
        the parent's denoiser."""
        t, ab_next = self.steps[i]
        with autocast(self.device, self.base.precision):
            x0, eps = den.predict(x, t, {"labels": labels})
        return ddim_mean(x0.float(), eps.float(), self.ab[t], ab_next, 1.0)

    @staticmethod
    def _logp(x_prev: torch.Tensor, mean: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """(N,) Gaussian log-density of x_prev, averaged over pixels, less its constant."""
        return (-((x_prev - mean) ** 2) / (2 * sigma**2)).mean(dim=(1, 2, 3))

    @torch.no_grad()
    def make_batch(self, batch_size: int, step: int):
        """(this rank's chains (N, S + 1, C, H, W): x_T then each step's draw; (N,) advantages)."""
        lo, s = rank() * batch_size, len(self.steps)
        noise = torch.stack([torch.randn(s + 1, *self.shape, generator=keyed_generator(KEY, self.seed, step, j))
                             for j in range(lo, lo + batch_size)]).to(self.device)  # (N, S + 1, C, H, W)
        labels = None
        if self.classes:
            g = keyed_generator(KEY, self.seed, step, "labels")
            drawn = torch.randint(self.classes, (self.batch_size,), generator=g)
            if self.tune["label"] is not None:
                drawn.fill_(self.tune["label"])
            labels = drawn[lo : lo + batch_size].to(self.device)
        x, chain, logps = noise[:, 0], [noise[:, 0]], []
        for i in range(s):
            mean, sigma = self._step(self.denoise, x, i, labels)
            stochastic = self.sigmas[i] > 0  # not the last step, to the clean image
            x = mean + sigma * noise[:, i + 1] if stochastic else mean
            chain.append(x)
            logps.append(self._logp(x, mean, sigma) if stochastic else torch.zeros(len(x), device=x.device))
        images = to_uint8(((x + 1) / 2).clamp(0, 1)).permute(0, 2, 3, 1).numpy()  # (N, H, W, C)
        scores = torch.tensor(self.reward("images")(images, labels=labels.tolist() if labels is not None else None),
                              dtype=torch.float32)
        adv = (scores - scores.mean()) / (scores.std(unbiased=False) + 1e-4)
        self.old = {"labels": labels, "logp": torch.stack(logps, 1)}  # (N, S)
        self.stats = {"reward": scores.mean(), "reward_min": scores.min(), "reward_max": scores.max()}
        return torch.stack(chain, 1), adv.to(self.device)

    def train_step(self, batch: torch.Tensor, labels: torch.Tensor | None, step: int) -> dict[str, torch.Tensor]:
        adv, n = labels, batch.shape[0]
        steps = [i for i, s in enumerate(self.sigmas) if s > 0]  # the stochastic ones
        parts = self.tune["minibatches"]
        size = max(n // parts, 1)
        clip, opt = self.tune["clip"], self.optim["unet"]
        clipped, kls, count = 0.0, 0.0, 0
        for _ in range(self.tune["inner_epochs"]):
            for lo in range(0, n, size):
                rows = slice(lo, lo + size)
                y = self.old["labels"][rows] if self.old["labels"] is not None else None
                opt.zero_grad()
                for i in steps:  # one backward a step: the graph of one U-Net pass at a time
                    x, x_prev = batch[rows, i], batch[rows, i + 1]
                    mean, sigma = self._step(self.denoise, x, i, y)
                    ratio = (self._logp(x_prev, mean, sigma) - self.old["logp"][rows, i]).exp()
                    a = adv[rows]
                    loss = torch.maximum(-a * ratio, -a * ratio.clamp(1 - clip, 1 + clip)).mean()
                    with torch.no_grad():
                        ref, _ = self._step(self.denoise_ref, x, i, y)
                    kl = ((mean - ref) ** 2 / (2 * sigma**2)).mean()  # logged whatever its weight
                    loss = loss + self.tune["kl"] * kl
                    kls += float(kl.detach())
                    opt.backward(loss / len(steps))
                    clipped += float(((ratio - 1).abs() > clip).float().mean())
                    count += 1
                opt.step(step)
        return {"loss": loss.detach(), **self.stats, "kl": torch.tensor(kls / max(count, 1)),
                "clipfrac": torch.tensor(clipped / max(count, 1))}

    def previews(self) -> dict[str, torch.Tensor]:
        return self.base.previews()


register_method(TuneMethod(
    name="ddpo", description="the denoising chain as a policy, clipped importance sampling (diffusion)",
    produces="images", learns_from="reward", make_task=DDPOTask,
    options=("reward", "reward_cmd", "reward_timeout", "steps", "kl", "clip", "minibatches", "inner_epochs", "label"),
    configure=configure, items=items, check=check, families=("diffusion",)))
