"""Checkpoints: round trip of modules, optimizers and extras; corrupt and mismatched files."""

import pytest
import torch
from torch import nn

from aigc_cli.core.errors import WeightsError
from aigc_cli.runs.checkpoint import load_checkpoint, load_weights, save_checkpoint, save_weights


def _model(width=4):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, width), nn.BatchNorm1d(width), nn.Linear(width, 2))


def test_round_trip_restores_optimizer_state(tmp_path):
    model = _model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.5, 0.9))
    for _ in range(3):
        loss = model(torch.randn(8, 3)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    path = tmp_path / "ckpt.safetensors"
    rng = torch.get_rng_state()
    save_checkpoint(path, {"m": model}, {"m": opt}, {"rng": rng}, {"step": 3})

    model2 = _model()
    opt2 = torch.optim.Adam(model2.parameters(), lr=0.5)
    extra, state = load_checkpoint(path, {"m": model2}, {"m": opt2})
    assert state == {"step": 3}
    assert torch.equal(extra["rng"], rng)
    for a, b in zip(model.state_dict().values(), model2.state_dict().values()):
        assert torch.equal(a, b)
    assert opt2.param_groups[0]["lr"] == 1e-3 and opt2.param_groups[0]["betas"] == (0.5, 0.9)
    # The next step is identical: moments and step counts came back.
    x = torch.randn(8, 3)
    for m, o in ((model, opt), (model2, opt2)):
        loss = m(x).pow(2).mean()
        o.zero_grad()
        loss.backward()
        o.step()
    for a, b in zip(model.parameters(), model2.parameters()):
        assert torch.equal(a, b)


def test_corrupt_and_truncated_files(tmp_path):
    model = _model()
    path = tmp_path / "w.safetensors"
    save_weights(path, {"m": model})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="not a readable safetensors"):
        load_weights(path, {"m": _model()})
    path.write_bytes(b"not safetensors at all")
    with pytest.raises(WeightsError):
        load_weights(path, {"m": _model()})
    with pytest.raises(WeightsError, match="no weights file"):
        load_weights(tmp_path / "missing.safetensors", {"m": _model()})


def test_weights_that_do_not_fit(tmp_path):
    path = tmp_path / "w.safetensors"
    save_weights(path, {"m": _model(width=4)})
    with pytest.raises(WeightsError, match=r"do not fit .*'0.weight' is \(4, 3\) in the file, \(5, 3\) here"):
        load_weights(path, {"m": _model(width=5)})
    with pytest.raises(WeightsError, match=r"do not fit .*missing, e\.g\. 'weight'; 9 unexpected, e\.g\. '"):
        load_weights(path, {"m": torch.nn.Linear(3, 4)})
    with pytest.raises(WeightsError, match="no weights for 'other'"):
        load_weights(path, {"other": _model()})


def test_weights_file_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "w.safetensors"
    save_weights(path, {"m": _model()})
    with pytest.raises(WeightsError, match="not an aigc checkpoint"):
        load_checkpoint(path, {"m": _model()}, {})
