"""A toy family for the tests: a linear decoder trained to reproduce images from noise."""

from __future__ import annotations

import torch
from torch import nn

from aigc_cli.models.optim import OptimizerSpec
from aigc_cli.models.protocol import Decoder, FamilyImpl, Sampler, TrainTask


class ToyDecoder(nn.Module, Decoder):
    def __init__(self, latent_dim: int, image_shape: list[int], steps: int = 1):
        super().__init__()
        self.shape = tuple(image_shape)
        self.linear = nn.Linear(latent_dim, int(torch.tensor(image_shape).prod()))
        self.steps = steps

    @property
    def passes(self) -> int:
        return self.steps

    def forward(self, z, cond=None, on_pass=None):
        x = torch.zeros(z.shape[0], self.linear.out_features, device=z.device)
        target = torch.sigmoid(self.linear(z))
        for _ in range(self.steps):  # an iterating decoder: each step halves the distance
            x = x + (target - x) * (0.5 if self.steps > 1 else 1.0)
            if on_pass is not None:
                on_pass()
        return x.view(-1, *self.shape)


class ToySampler(Sampler):
    def __init__(self, decoder: ToyDecoder, device):
        self.net = decoder.to(device).eval()
        self.latent_shape = (decoder.linear.in_features,)

    def draw(self, n, generator):
        return torch.randn(n, self.latent_shape[0], generator=generator)

    def decoder(self, steps):
        self.net.steps = steps
        return self.net


class ToyTask(TrainTask):
    def __init__(self, config, device):
        m = config["model"]
        self.net = ToyDecoder(m["latent_dim"], m["image_shape"]).to(device)
        self.modules = {"decoder": self.net}
        self.lr = config["train"]["lr"]
        self.device = device

    def param_groups(self):
        return {"adam": OptimizerSpec([{"params": list(self.net.parameters()), "lr": self.lr}])}

    def inference_names(self):
        return {"decoder": "decoder"}

    def train_step(self, batch, labels, step):
        x = batch.float() / 255
        z = torch.randn(x.shape[0], self.net.linear.in_features, device=self.device)
        loss = (self.net(z) - x).pow(2).mean()
        opt = self.optim["adam"]
        opt.zero_grad()
        opt.backward(loss)
        opt.step(step)
        return {"mse": loss.detach()}

    @torch.no_grad()
    def previews(self):
        return {"samples": self.net(torch.zeros(4, self.net.linear.in_features, device=self.device))}


class ToyFamily(FamilyImpl):
    def make_config(self, options, dataset_info, data=None):
        model = {"latent_dim": options["latent_dim"], "image_shape": list(dataset_info["shape"]),
                 "num_classes": dataset_info.get("classes"), "conditional": False}
        return model, {"lr": options["lr"]}

    def make_task(self, config, device):
        return ToyTask(config, device)

    def build(self, config):
        return {"decoder": ToyDecoder(config["model"]["latent_dim"], config["model"]["image_shape"])}

    def sampler(self, modules, config, device):
        return ToySampler(modules["decoder"], device)
