"""The family protocol: specs agree with their implementations, and a new family is one folder.

tests/families/toy/ is a family kept outside aigc_cli/models/. Putting its folder on the
models package's search path is what dropping it into aigc_cli/models/ would do: the commands
below find it, train it, sample, interpolate and export it, with no edit anywhere else.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

FAMILIES = Path(__file__).parent / "families"

# Runs `aigc ARGS` for each line of argv[2] (JSON list of arg lists) in one process, with the toy
# family's folder added to the models package; prints one JSON result per command.
SCRIPT = """
import contextlib, io, json, sys
import aigc_cli.models
aigc_cli.models.__path__.append(sys.argv[1])
from aigc_cli.cli.app import main
for args in json.loads(sys.argv[2]):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(args)
            code = 0
        except SystemExit as e:
            code = e.code
    print(json.dumps({"args": args, "code": code, "out": out.getvalue(), "err": err.getvalue()}))
"""


@pytest.fixture
def run_with_toy(aigc_env):
    """``run_with_toy(home, *commands)``: SCRIPT's results, one dict per command."""

    def run(home: Path, *commands: list[str]) -> list[dict]:
        done = subprocess.run([sys.executable, "-c", SCRIPT, str(FAMILIES), json.dumps([list(map(str, c)) for c in commands])],
                              capture_output=True, text=True, env=aigc_env(home, COLUMNS=200), timeout=300)
        assert done.returncode == 0, done.stderr
        return [json.loads(line) for line in done.stdout.splitlines()]

    return run


def test_a_new_family_is_one_folder(tmp_path, make_bars, tiny_gan, run_with_toy):
    data = make_bars(tmp_path / "bars.npz", n=64)
    out = tmp_path / "out"
    results = run_with_toy(
        tmp_path / "home",
        ["train", "--help"],
        ["train", "toy", "--help"],
        ["-q", "train", "toy", "--dataset", data, "--epochs", "1", "--batch-size", "16", "--latent-dim", "3"],
        ["sample", "run1", "-n", "4", "-o", out / "a.png", "--seed", "1", "--steps", "3", "--json"],
        ["interpolate", "run1", "--from-seed", "1", "--to-seed", "2", "--steps", "4", "--sample-steps", "2", "-o", out / "i.png"],
        ["-q", "export", "onnx", "run1", "-o", out / "toy.onnx", "--steps", "2"],
        ["reconstruct", "run1", out / "a.png", "-o", out / "r.png"],
        ["interpolate", "run1", "--traverse", "0", "-o", out / "t.png"],
        ["export", "onnx", "run1", "-o", out / "f.onnx", "--format", "fidelity"],
        ["-q", "train", "gan", "--dataset", data, "--epochs", "1", *tiny_gan],
        ["sample", "run2", "-n", "4", "-o", out / "g.png", "--steps", "3"],
        ["train", "toy", "--dataset", data, "--width", "3"],
    )
    by = {i: r for i, r in enumerate(results)}
    assert "toy" in by[0]["out"] and "Train a toy model" in by[0]["out"]
    assert "--latent-dim" in by[1]["out"] and "--lr" in by[1]["out"] and "[default: 0.01]" in by[1]["out"]
    assert by[2]["code"] == 0 and by[2]["out"].strip() == "run1", by[2]["err"]
    config = json.loads((tmp_path / "home/runs/run1/config.json").read_text())
    assert config["family"] == "toy" and config["model"]["latent_dim"] == 3 and config["train"]["lr"] == 0.01
    assert by[3]["code"] == 0, by[3]["err"]
    assert json.loads(by[3]["out"])["steps"] == 3 and (out / "a.png").is_file()
    assert by[4]["code"] == 0 and (out / "i.png").is_file(), by[4]["err"]
    assert by[5]["code"] == 0 and (out / "toy.onnx").is_file(), by[5]["err"]
    # Capabilities the toy family does not declare are refused by reading its flags, in one line.
    for i, words in ((6, ["'aigc reconstruct' does not apply to run1", "for toy runs use: aigc sample, aigc interpolate"]), (7, ["--traverse", "gan, vae"]), (8, ["--format", "images"])):
        assert by[i]["code"] == 1 and by[i]["err"].startswith("aigc: error:"), by[i]
        assert len(by[i]["err"].strip().splitlines()) == 1 and all(w in by[i]["err"] for w in words), by[i]["err"]
    # The toy family's decode option reached `sample`, but a gan run does not take it.
    assert by[10]["code"] == 1 and "--steps does not apply to run2, a gan run" in by[10]["err"], by[10]["err"]
    assert by[11]["code"] == 2 and "--width" in by[11]["err"]  # not a toy option: a usage error


def test_sampler_steps_change_the_images(tmp_path, make_bars, run_with_toy):
    data = make_bars(tmp_path / "bars.npz", n=32)
    out = tmp_path / "out"
    run_with_toy(tmp_path / "home", ["-q", "train", "toy", "--dataset", data, "--epochs", "1", "--batch-size", "16"],
                 ["sample", "run1", "-n", "2", "-o", out / "one.png", "--seed", "0"],
                 ["sample", "run1", "-n", "2", "-o", out / "two.png", "--seed", "0", "--steps", "2"])
    assert (out / "one.png").read_bytes() != (out / "two.png").read_bytes()


@pytest.mark.parametrize("name", ["gan", "vae"])
def test_spec_choices_match_the_implementation(name):
    from aigc_cli.models.registry import get_family

    spec = get_family(name).spec
    if name == "gan":
        from aigc_cli.models.gan.losses import LOSSES
        from aigc_cli.models.gan.nets import ARCHS

        assert set(spec.option("arch").choices) == set(ARCHS.names())
        assert set(spec.option("loss").choices) == set(LOSSES.names())
    else:
        from aigc_cli.models.vae.likelihoods import LIKELIHOODS
        from aigc_cli.models.vae.nets import ARCHS
        from aigc_cli.models.vae.prior import PRIORS

        assert set(spec.option("arch").choices) == set(ARCHS.names())
        assert set(spec.option("likelihood").choices) == {"auto", *LIKELIHOODS.names()}
        assert set(spec.option("prior").choices) == set(PRIORS)


@pytest.mark.parametrize("name", ["gan", "vae"])
def test_declared_defaults_are_the_recorded_ones(name):
    from aigc_cli.models.registry import get_family

    fam = get_family(name)
    model, train = fam.make_config({}, {"shape": [1, 28, 28], "classes": 10, "size": 1000})
    recorded = {**model, **train}
    for option in fam.spec.options:
        if option.default not in (None, "auto") and option.name in recorded:  # "auto": decided by the data
            assert recorded[option.name] == option.default, option.name


def test_unknown_keyword_lists_the_options(aigc_home, tiny_npz):
    from aigc_cli.core.errors import ConfigError
    from aigc_cli.training import train

    with pytest.raises(ConfigError, match="the gan family has no option 'depth'; its options: arch, loss"):
        train("gan", str(tiny_npz), depth=3)
    assert not (aigc_home / "runs").exists()


def test_options_page_is_current():
    from aigc_cli.cli.reference import markdown

    shipped = (Path(__file__).resolve().parents[1] / "docs" / "options.md").read_text()
    assert shipped == markdown(), "regenerate: python -m aigc_cli.cli.reference > docs/options.md"
