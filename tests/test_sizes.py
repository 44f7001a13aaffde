"""Sizes are checked before a run exists (issue 27): every family's networks are built and run once
on the meta device (models/sizing.py), so an impossible shape or a training too large for the
device is a one-line error and no run folder, not a failed run or a terabyte allocation."""

import importlib

import pytest
import torch
from torch import nn

from aigc_cli.core.errors import ConfigError
from aigc_cli.models import sizing
from aigc_cli.models.registry import get_family


def _no_runs(home):
    runs = home / "runs"
    return not runs.exists() or not list(runs.glob("run*"))


def test_an_impossible_shape_is_named_before_a_run_exists(aigc_home, cli, clean_error, tiny_npz):
    # Before: a run was created, and its first step failed with "mat1 and mat2 shapes cannot be multiplied".
    code, _, err = cli("train", "diffusion", "--dataset", tiny_npz, "--width", "3", "--channel-mult", "1,2",
                       "--batch-size", "16")
    clean_error(code, err, "--width 3 with --channel-mult 1,2 and --blocks 1 gives a network that cannot train "
                "at a batch of 16", "in unet.time_mlp.0 (Linear)", "change --width, --channel-mult or --blocks")
    assert _no_runs(aigc_home)


def test_a_model_too_large_is_refused_in_words_without_allocating(aigc_home, cli, clean_error, tiny_npz):
    # Before: "DefaultCPUAllocator: can't allocate memory: you tried to allocate 368640000000000 bytes"
    # from building the network. Now nothing is allocated: the network is built on meta.
    from aigc_cli.models.diffusion.family import aigc_defaults, build_unet

    code, _, err = cli("train", "diffusion", "--dataset", tiny_npz, "--channel-mult", "1,100000", "--batch-size", "16")
    with torch.device("meta"):
        n = sum(p.numel() for p in build_unet({"image_shape": [1, 8, 8], "width": 32, "channel_mult": [1, 100000],
                                               "num_classes": 4, "conditional": True, "layout": "compact",
                                               "blocks": 1, **aigc_defaults(2)}).parameters())
    clean_error(code, err, "the model needs at least", f"({n:.2g} parameters: ".replace("e+", "e"),
                "PB for the weights, their gradients and Adam's state", "of activations at a batch of 16",
                "this machine has", "available: use a smaller --width, --channel-mult or --blocks")
    assert _no_runs(aigc_home)


def test_a_batch_batchnorm_cannot_train_on_is_refused_before_a_run_exists(aigc_home, cli, clean_error, tiny_npz):
    code, _, err = cli("train", "gan", "--dataset", tiny_npz, "--arch", "mlp", "--width", "4", "--batch-size", "1")
    clean_error(code, err, "cannot train at a batch of 1", "Expected more than 1 value per channel", "(BatchNorm1d)")
    assert _no_runs(aigc_home)


@pytest.mark.parametrize("batch,smaller", [
    ("2", "use a smaller --width or --latent-dim"),
    ("256", "use a smaller --batch-size, --width or --latent-dim"),  # activations outweigh the weights
])
def test_the_memory_check_sizes_for_the_runs_batch_and_device(aigc_home, cli, clean_error, tiny_npz, monkeypatch,
                                                              batch, smaller):
    from aigc_cli.models.gan.nets import NetSpec, build_nets

    asked = []
    monkeypatch.setattr(sizing, "available_bytes", lambda device: asked.append(device) or 1000)
    code, _, err = cli("train", "gan", "--dataset", tiny_npz, "--arch", "mlp", "--width", "1", "--latent-dim", "1",
                       "--unconditional", "--batch-size", batch)
    g, d = build_nets("mlp", NetSpec((1, 8, 8), 1, None, 1), spectral=True)
    n = sum(p.numel() for p in [*g.parameters(), *d.parameters()])
    clean_error(code, err, f"({n:,} parameters: {sizing.human_bytes(16 * n)} for the weights",
                f"of activations at a batch of {batch}", f"this machine has 1 kB available: {smaller}")
    assert asked == [torch.device("cpu")]  # train()'s device
    assert _no_runs(aigc_home)


def test_the_estimate_counts_weights_adam_and_what_backward_keeps():
    def build():
        return {"net": nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 5))}

    with sizing.sizing_for("cpu", 4):
        e = sizing.check_network(build, lambda nets, b: nets["net"](torch.randn(b, 10)), {"width": 20})
    assert e.parameters == 10 * 20 + 20 + 20 * 5 + 5
    assert e.state_bytes == 4 * 4 * e.parameters  # fp32 weights, gradients and Adam's two moments
    # Kept for backward: the (4, 10) input, for the first weight's gradient, and the ReLU's (4, 20)
    # output, which the second Linear keeps too (counted once); weights are not activations.
    assert e.activation_bytes == 4 * (4 * 10 + 4 * 20)
    assert e.batch == 4 and e.total_bytes == e.state_bytes + e.activation_bytes


def test_without_a_target_shapes_are_checked_at_a_batch_of_two_and_memory_is_not(monkeypatch):
    monkeypatch.setattr(sizing, "available_bytes", lambda device: 1)
    e = sizing.check_network(lambda: {"net": nn.Linear(3, 3)}, lambda nets, b: nets["net"](torch.randn(b, 3)), {})
    assert e.batch == 2 and e.parameters == 12


def test_a_failing_layer_is_named_and_an_overflow_is_said_so():
    with pytest.raises(ConfigError, match=r"^the network cannot train at a batch of 2: .* in net\.1 \(Linear\)"):
        sizing.check_network(lambda: {"net": nn.Sequential(nn.Linear(3, 4), nn.Linear(5, 2))},
                             lambda nets, b: nets["net"](torch.randn(b, 3)), {})
    with pytest.raises(ConfigError, match=r"^width 10000000000 gives a network that is too large to describe"):
        sizing.check_network(lambda: {"net": nn.Linear(10**10, 4 * 10**10)}, lambda nets, b: None,
                             {"width": 10**10})


def test_an_operation_without_a_meta_kernel_skips_only_the_activations():
    class NoMeta(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.empty(3, 3))

        def forward(self, x):
            raise NotImplementedError("no meta kernel")

    e = sizing.check_network(lambda: {"n": NoMeta()}, lambda nets, b: nets["n"](torch.randn(b, 3)), {})
    assert e.parameters == 9 and e.activation_bytes is None


def test_spectral_norm_runs_on_meta_too():
    # The GAN sizes its discriminator without it (no shape changes; seconds of power iterations on
    # meta), but it works there: the parametrized weight is counted once, as its original.
    from torch.nn.utils.parametrizations import spectral_norm

    e = sizing.check_network(lambda: {"d": spectral_norm(nn.Linear(6, 4))},
                             lambda nets, b: nets["d"](torch.randn(b, 6)), {})
    assert e.parameters == 6 * 4 + 4 and e.activation_bytes > 0


@pytest.mark.parametrize("rnn", [nn.GRU, nn.LSTM])
@pytest.mark.parametrize("batch_first", [True, False])
def test_recurrent_layers_are_sized_from_two_steps_exactly(rnn, batch_first, monkeypatch):
    def forward(nets, b):
        x = torch.randn(b, 12, 8) if batch_first else torch.randn(12, b, 8)
        return nets["rnn"](x)[0]

    def build():
        return {"rnn": rnn(8, 8, 2, batch_first=batch_first)}

    short = sizing.check_network(build, forward, {})
    monkeypatch.setattr(sizing, "RNN_STEPS", 10**6)  # every step on meta, as torch runs it there
    full = sizing.check_network(build, forward, {})
    assert short.activation_bytes == full.activation_bytes > 0


INFO = {"name": "bars", "shape": [1, 8, 8], "classes": 4, "size": 256, "alphabet": "abc\n"}


def _kept_on_cpu(build, forward, batch):
    """Bytes autograd keeps for backward when ``forward`` really runs on the CPU, counted as
    models/sizing.py counts them (each tensor once, weights not)."""
    nets = build()
    params = {id(p) for net in nets.values() for p in net.parameters()}
    kept = {}

    def pack(t):
        base = t._base if t._base is not None else t
        if id(base) not in params:
            kept[id(base)] = (base, base.numel() * base.element_size())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        forward(nets, batch)
    return sum(size for _, size in kept.values())


@pytest.mark.parametrize("family,options", [
    ("gan", {"arch": "dcgan", "loss": "hinge"}),  # conditional BatchNorm
    ("gan", {"arch": "mlp", "loss": "wgan-gp", "conditional": False}),
    ("vae", {"arch": "conv"}),
    ("vae", {"arch": "mlp", "conditional": True}),
    ("diffusion", {"layout": "ddpm", "blocks": 2, "precision": "fp32"}),  # attention
    ("text", {"arch": "gpt", "precision": "fp32"}),
    ("text", {"arch": "gpt", "dropout": 0.1, "precision": "fp32"}),  # the math path on the CPU
    ("text", {"arch": "gru", "precision": "fp32"}),
    ("text", {"arch": "lstm", "layers": 3, "precision": "fp32"}),
])
def test_every_familys_networks_run_on_meta_and_count_what_trains(family, options, monkeypatch):
    fam = get_family(family)
    module = importlib.import_module(fam.spec.implementation.partition(":")[0])
    calls, estimates = [], []
    real = module.check_network

    def spy(*args, **kwargs):
        calls.append(args)
        estimates.append(real(*args, **kwargs))

    monkeypatch.setattr(module, "check_network", spy)
    with sizing.sizing_for("cpu", 8):
        model, train = fam.make_config(options, INFO)
    [(build, forward, _, *_)], [estimate] = calls, estimates
    # What the estimate counts is what the CPU's autograd keeps for the same forward; the CPU's
    # LSTM (oneDNN) keeps a larger workspace than its step-by-step form: a lower bound there.
    on_cpu = _kept_on_cpu(build, forward, 8)
    if options.get("arch") == "lstm":
        assert 0 < estimate.activation_bytes < on_cpu
    else:
        assert estimate.activation_bytes == on_cpu
    config = {"model": model, "train": {**train, "epochs": 1, "batch_size": 8, "items": 64},
              "seed": 0, "dataset": {"size": 256}}
    task = fam.training_task(config, torch.device("cpu"))
    trained = {id(p): p.numel() for o in task.optim.values() for g in o.optimizer.param_groups for p in g["params"]}
    assert estimate.parameters == sum(trained.values())  # what the optimizers step, no more, no less
