"""The toy family's implementation: z (N, D) -> sigmoid(linear(z)) images, fitted by MSE."""

from __future__ import annotations

import torch
from torch import nn


class Decoder(nn.Module):
    def __init__(self, latent_dim: int, image_shape: list[int], steps: int = 1):
        super().__init__()
        self.shape = tuple(image_shape)
        self.linear = nn.Linear(latent_dim, int(torch.tensor(image_shape).prod()))
        self.steps = steps

    def forward(self, z, labels=None):
        x = torch.zeros(z.shape[0], self.linear.out_features, device=z.device)
        target = torch.sigmoid(self.linear(z))
        for _ in range(self.steps):  # an iterating decoder: each step halves the distance
            x = x + (target - x) * (0.5 if self.steps > 1 else 1.0)
        return x.view(-1, *self.shape)


class Sampler:
    latent_distribution = "normal"

    def __init__(self, decoder: Decoder, device):
        self.net = decoder.to(device).eval()
        self.latent_shape = (decoder.linear.in_features,)

    def draw(self, n, generator):
        return torch.randn(n, self.latent_shape[0], generator=generator)

    def decoder(self, steps=None):
        self.net.steps = steps or 1
        return self.net

    def encoder(self):
        return None


class Task:
    def __init__(self, config, device):
        m = config["model"]
        self.net = Decoder(m["latent_dim"], m["image_shape"]).to(device)
        self.modules = {"decoder": self.net}
        self.optimizers = {"adam": torch.optim.Adam(self.net.parameters(), lr=config["train"]["lr"])}
        self.device = device

    def train_step(self, batch, labels, step):
        x = batch.float() / 255
        z = torch.randn(x.shape[0], self.net.linear.in_features, device=self.device)
        loss = (self.net(z) - x).pow(2).mean()
        self.optimizers["adam"].zero_grad()
        loss.backward()
        self.optimizers["adam"].step()
        return {"mse": loss.detach()}

    def inference_modules(self):
        return {"decoder": self.net}

    def sync_inference(self, images, labels):
        pass

    @torch.no_grad()
    def previews(self):
        return {"samples": self.net(torch.zeros(4, self.net.linear.in_features, device=self.device))}


class ToyFamily:
    @staticmethod
    def make_config(options, dataset_info):
        model = {"latent_dim": options["latent_dim"], "image_shape": list(dataset_info["shape"]),
                 "num_classes": dataset_info.get("classes"), "conditional": False}
        return model, {"lr": options["lr"]}

    @staticmethod
    def make_task(config, device):
        return Task(config, device)

    @staticmethod
    def build(config):
        return {"decoder": Decoder(config["model"]["latent_dim"], config["model"]["image_shape"])}

    @staticmethod
    def sampler(modules, config, device):
        return Sampler(modules["decoder"], device)
