"""The self-play family's implementation: a linear map z -> a 1x4x4 image, fitted to a target
map from batches of z it draws itself each step (no dataset)."""

from __future__ import annotations

import torch
from torch import nn

from aigc_cli.core.distributed import batch_randn
from aigc_cli.models.common import OnePassDecoder
from aigc_cli.models.optim import OptimizerSpec
from aigc_cli.models.protocol import FamilyImpl, Sampler, TrainingData, TrainTask

SHAPE = (1, 4, 4)


class Net(OnePassDecoder):
    def __init__(self, latent_dim: int):
        super().__init__()
        self.linear = nn.Linear(latent_dim, 16)

    def image(self, z, labels):
        return torch.sigmoid(self.linear(z)).view(-1, *SHAPE)


class SelfPlaySampler(Sampler):
    def __init__(self, net: Net, device):
        self.net = net.to(device).eval()
        self.latent_shape = (net.linear.in_features,)

    def draw(self, n, generator):
        return torch.randn(n, self.latent_shape[0], generator=generator)

    def decoder(self):
        return self.net


class SelfPlayTask(TrainTask):
    def __init__(self, config, device):
        d = config["model"]["latent_dim"]
        self.net = Net(d).to(device)
        self.modules = {"net": self.net}
        g = torch.Generator().manual_seed(1234)  # the map to learn: fixed, not trained
        self.target = torch.randn(d, 16, generator=g).to(device)
        self.lr, self.device = config["train"]["lr"], device

    def param_groups(self):
        return {"sgd": OptimizerSpec([{"params": list(self.net.parameters()), "lr": self.lr}])}

    def inference_names(self):
        return {"net": "net"}

    def make_batch(self, batch_size, step):
        z = batch_randn(batch_size, self.target.shape[0], device=self.device)  # drawn, not loaded
        return z, None

    def train_step(self, batch, labels, step):
        want = torch.sigmoid(batch @ self.target).view(-1, *SHAPE)
        loss = (self.net(batch) - want).pow(2).mean()
        opt = self.optim["sgd"]
        opt.zero_grad()
        opt.backward(loss)
        opt.step(step)
        return {"mse": loss.detach()}


class SelfPlayFamily(FamilyImpl):
    def make_config(self, options, dataset_info, data=None):
        model = {"latent_dim": options["latent_dim"], "image_shape": list(SHAPE), "num_classes": None,
                 "conditional": False}
        return model, {"lr": options["lr"], "steps_per_epoch": options["steps_per_epoch"]}

    def training_data(self, data, config):
        return TrainingData(None, unit="samples", steps_per_epoch=config["train"]["steps_per_epoch"])

    def make_task(self, config, device):
        return SelfPlayTask(config, device)

    def build(self, config):
        return {"net": Net(config["model"]["latent_dim"])}

    def sampler(self, modules, config, device):
        return SelfPlaySampler(modules["net"], device)
