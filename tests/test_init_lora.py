"""Starting a run from another's weights (--init) and LoRA adapters (--lora): issue 29.

Tiny GPTs on the shared 20,000-character corpus, tiny diffusion models and GANs on 8x8 bars.
"""


import pytest
import torch
from safetensors.torch import load_file

TINY = ["--arch", "gpt", "--layers", "1", "--width", "16", "--heads", "2", "--context", "16", "--batch-size", "32",
        "--seed", "1", "--lr", "1e-2", "--warmup", "5"]
FINE = ["--batch-size", "32", "--seed", "2", "--lr", "1e-2", "--warmup", "5"]  # no architecture: it is the parent's
UNET = ["--width", "8", "--channel-mult", "1,2", "--batch-size", "32"]




@pytest.fixture
def gpt_parent(aigc_home, corpus, cli):
    code, _, err = cli("-q", "train", "text", "--dataset", corpus, *TINY, "--epochs", "1")
    assert code == 0, err
    return "run1"


def _modules(ref):
    from aigc_cli.generation import load_modules
    from aigc_cli.runs.store import resolve_run

    return load_modules(resolve_run(ref))


def test_init_starts_from_the_parents_weights_with_its_architecture(aigc_home, corpus, gpt_parent, cli, run_config):
    # A learning rate too small to move anything: the new run's weights are its parent's.
    code, _, err = cli("-q", "train", "text", "--dataset", corpus, "--init", gpt_parent, "--epochs", "1",
                       "--lr", "1e-12", "--warmup", "1")
    assert code == 0, err
    child, parent = run_config(aigc_home, "run2"), run_config(aigc_home, "run1")
    assert child["model"] == parent["model"]  # the architecture, the tokenizer and its alphabet
    assert child["train"]["lr"] == 1e-12 and child["parent"]["run"] == "run1"
    a, b = _modules("run1")["model"].state_dict(), _modules("run2")["model"].state_dict()
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    # An ordinary fine-tune moves them, from there, and resumes as any run does.
    code, _, err = cli("-q", "train", "text", "--dataset", corpus, "--init", "run1", *FINE, "--epochs", "1")
    assert code == 0, err
    assert not torch.allclose(_modules("run3")["model"].tok.weight, a["tok.weight"])
    assert cli("-q", "train", "text", "--resume", "run3", "--epochs", "2")[0] == 0


def test_init_refuses_what_contradicts_the_parent(aigc_home, corpus, gpt_parent, cli, clean_error, tmp_path, run_ids):
    cases = [
        (["--init", "run1", "--width", "32"], ["--init run1 takes the architecture from run1", "--width (run1 has 16)"]),
        (["--init", "run1", "--tokenizer", "byte"], ["drop --tokenizer (run1 has char)"]),
        (["--init", "run9"], ["run9"]),
        (["--lora", "4"], ["--lora", "give --init RUN"]),
        (["--lora-alpha", "2"], ["--lora-alpha", "give --lora RANK"]),
        (["--init", "run1", "--lora", "2", "--lora-targets", "nope*"], ["--lora-targets 'nope*' matches no", "blocks.0"]),
        (["--init", "run1", "--lora", "2", "--lora-targets", " , "], ["--lora-targets names no layer"]),
    ]
    for args, words in cases:
        code, _, err = cli("train", "text", "--dataset", corpus, *args, "--epochs", "1")
        clean_error(code, err, *words)
    # Text outside a char run's alphabet: a byte or BPE tokenizer is the way.
    other = tmp_path / "greek.txt"
    other.write_text("αβγδε ζηθ ικλμ " * 400, encoding="utf-8")
    code, _, err = cli("train", "text", "--dataset", other, "--init", "run1")
    clean_error(code, err, "outside its alphabet", "--tokenizer byte or bpe")
    code, _, err = cli("train", "gan", "--init", "run1")
    clean_error(code, err, "run1 is a text run", "aigc train text --init run1")
    assert run_ids(aigc_home) == ["run1"]  # nothing written for any of them


def test_lora_run_holds_only_adapters_and_samples_evaluates_exports(aigc_home, corpus, gpt_parent, cli, tmp_path,
                                                                    run_config):
    code, _, err = cli("-q", "train", "text", "--dataset", corpus, "--init", "run1", "--lora", "4", "--lora-alpha", "8",
                       *FINE, "--epochs", "1")
    assert code == 0, err
    config = run_config(aigc_home, "run2")
    layers = config["adapters"]["layers"]["model"]
    assert layers == ["blocks.0.attn.qkv", "blocks.0.attn.proj", "blocks.0.fc", "blocks.0.out"]  # the default targets
    assert config["adapters"]["rank"] == 4 and config["adapters"]["alpha"] == 8.0
    saved = load_file(aigc_home / "runs/run2/model.safetensors")
    assert sorted(saved) == sorted(f"model.{n}.{f}" for n in layers for f in ("lora_A", "lora_B"))
    assert saved["model.blocks.0.fc.lora_A"].shape == (4, 16) and saved["model.blocks.0.fc.lora_B"].shape == (64, 4)
    checkpoint = load_file(aigc_home / "runs/run2/checkpoint.safetensors")
    assert not any(k.endswith(("tok.weight", "fc.weight")) for k in checkpoint)  # the base is not copied
    # Loaded for sampling: the parent's network with the update folded in, plain layers again.
    parent, child = _modules("run1")["model"], _modules("run2")["model"]
    assert type(child.blocks[0].fc) is torch.nn.Linear
    p, c = parent.state_dict(), child.state_dict()
    assert p.keys() == c.keys()
    assert torch.equal(p["tok.weight"], c["tok.weight"]) and torch.equal(p["blocks.0.ln1.weight"], c["blocks.0.ln1.weight"])
    assert not torch.equal(p["blocks.0.fc.weight"], c["blocks.0.fc.weight"])  # the adapters trained
    code, out, err = cli("sample", "run2", "--prompt", "The", "--length", "30", "--seed", "1")
    assert code == 0 and out.decode().startswith("The"), err
    assert cli("eval", "ppl", "run2", corpus, "--json")[0] == 0
    code, _, err = cli("export", "onnx", "run2", "-o", tmp_path / "lm.onnx")  # checked in ONNX Runtime
    assert code == 0 and (tmp_path / "lm.onnx").stat().st_size > 0, err
    code, out, _ = cli("runs", "show", "run2")
    assert "LoRA rank 4, alpha 8.0, on 4 layers of model" in " ".join(out.decode().split())


def test_lora_refuses_what_it_cannot_adapt(aigc_home, corpus, cli, clean_error, run_config, run_ids):
    assert cli("-q", "train", "text", "--dataset", corpus, *TINY[2:], "--arch", "gru", "--epochs", "1")[0] == 0
    code, _, err = cli("train", "text", "--dataset", corpus, "--init", "run1", "--lora", "2")
    clean_error(code, err, "no default LoRA layers", "--lora-targets")
    assert run_ids(aigc_home) == ["run1"]
    # Named layers of any family work: the RNN's output layer here.
    code, _, err = cli("-q", "train", "text", "--dataset", corpus, "--init", "run1", "--lora", "2", "--lora-targets",
                       "head", "--epochs", "1")
    assert code == 0, err
    assert run_config(aigc_home, "run2")["adapters"]["layers"] == {"model": ["head"]}


def test_a_lora_runs_base_is_kept_from_runs_rm(aigc_home, corpus, gpt_parent, cli, clean_error, run_ids):
    assert cli("-q", "train", "text", "--dataset", corpus, "--init", "run1", "--lora", "2", *FINE, "--epochs", "1")[0] == 0
    code, _, err = cli("runs", "rm", "run1")
    clean_error(code, err, "run1 is the base of LoRA run run2", "--force")
    assert run_ids(aigc_home) == ["run1", "run2"]
    assert cli("runs", "rm", "run2", "run1")[0] == 0  # together: nothing is left without its base
    assert run_ids(aigc_home) == []


def test_a_lora_run_whose_base_changed_is_refused(aigc_home, corpus, gpt_parent, cli, clean_error):
    assert cli("-q", "train", "text", "--dataset", corpus, "--init", "run1", "--lora", "2", *FINE, "--epochs", "1")[0] == 0
    assert cli("-q", "train", "text", "--resume", "run1", "--epochs", "2")[0] == 0  # the base trains on
    for args in (["sample", "run2", "--length", "5"], ["train", "text", "--resume", "run2", "--epochs", "2"]):
        code, out, err = cli(*args)
        clean_error(code, err, "descends from run1", "its weights have changed since")
        assert out == b""


@pytest.mark.slow  # three trainings in processes
def test_lora_resume_after_ctrl_c_is_bit_identical(tmp_path, corpus, run_aigc, interrupted, assert_same_tensors):
    """SIGINT inside epoch 2 of a LoRA run (dropout on), --resume: the adapters equal those of a
    run never stopped; the frozen base is reloaded from the parent on resume."""
    homes = tmp_path / "a", tmp_path / "b"
    for home in homes:
        assert run_aigc(home, "-q", "train", "text", "--dataset", corpus, *TINY, "--epochs", "1").returncode == 0
    args = ["-q", "train", "text", "--dataset", corpus, "--init", "run1", "--lora", "4", "--dropout", "0.1", *FINE,
            "--epochs", "2"]
    straight = run_aigc(homes[0], *args)
    assert straight.returncode == 0, straight.stderr
    interrupted(homes[1], args, 50, run="run2")
    assert run_aigc(homes[1], "-q", "train", "text", "--resume", "run2").returncode == 0
    for name in ("model.safetensors", "checkpoint.safetensors"):
        assert_same_tensors(homes[0] / "runs/run2" / name, homes[1] / "runs/run2" / name)


def test_diffusion_lora_and_init_on_images(aigc_home, tiny_npz, make_bars, tmp_path, cli, clean_error, run_config,
                                           run_ids):
    assert cli("-q", "train", "diffusion", "--dataset", tiny_npz, *UNET, "--epochs", "1", "--unconditional")[0] == 0
    code, _, err = cli("-q", "train", "diffusion", "--dataset", tiny_npz, "--init", "run1", "--lora", "2",
                       "--batch-size", "32", "--epochs", "1", "--unconditional")
    assert code == 0, err
    layers = run_config(aigc_home, "run2")["adapters"]["layers"]["unet"]
    assert "attn.qkv" in layers and "down.0.conv1" in layers and "conv_in" not in layers
    for args in (["sample", "run2", "-n", "4", "--steps", "3", "-o", tmp_path / "s.png"],
                 ["interpolate", "run2", "--frames", "3", "--steps", "3", "-o", tmp_path / "i.png"],
                 ["export", "onnx", "run2", "--format", "denoiser", "-o", tmp_path / "d.onnx"]):
        code, _, err = cli(*args)
        assert code == 0, (args, err)
    # A dataset with classes: the class table is new, and said; the rest is the parent's.
    code, _, err = cli("train", "diffusion", "--dataset", tiny_npz, "--init", "run1", "--batch-size", "32",
                       "--epochs", "1")
    assert code == 0, err
    assert "the class embeddings (4 classes) start from random weights: run1 is unconditional" in " ".join(err.split())
    assert run_config(aigc_home, "run3")["model"]["conditional"] is True
    # Another image size: refused, nothing written.
    other = make_bars(tmp_path / "big.npz", size=16)
    code, _, err = cli("train", "diffusion", "--dataset", other, "--init", "run1")
    clean_error(code, err, "--init run1: its network draws 1x8x8 images", "1x16x16")
    assert run_ids(aigc_home) == ["run1", "run2", "run3"]


def test_gan_init_says_what_starts_afresh(aigc_home, tiny_npz, tiny_gan, cli):
    assert cli("-q", "train", "gan", "--dataset", tiny_npz, *tiny_gan, "--epochs", "1")[0] == 0
    code, _, err = cli("train", "gan", "--dataset", tiny_npz, "--init", "run1", "--batch-size", "16", "--epochs", "1")
    assert code == 0, err
    assert "D starts from random weights: run1's model.safetensors holds G" in " ".join(err.split())


@pytest.mark.parametrize("family", ["text", "diffusion"])
def test_peft_loads_the_exported_adapters_onto_the_base(family, aigc_home, corpus, tiny_npz, cli, tmp_path, clean_error):
    """`aigc export peft`: peft itself (a test reference, never a runtime dependency) reads the
    files onto the parent's network and computes what aigc's merged network does."""
    peft = pytest.importorskip("peft")
    if family == "text":
        first = ["--dataset", corpus, *TINY]
        second = ["--dataset", corpus, *FINE]
    else:
        first = ["--dataset", tiny_npz, *UNET, "--unconditional", "--precision", "fp32"]
        second = ["--dataset", tiny_npz, "--batch-size", "32", "--unconditional", "--lr", "1e-2", "--precision", "fp32"]
    assert cli("-q", "train", family, *first, "--epochs", "1")[0] == 0
    code, _, err = cli("-q", "train", family, *second, "--init", "run1", "--lora", "3", "--lora-alpha", "6",
                       "--epochs", "1")
    assert code == 0, err
    code, out, err = cli("export", "peft", "run2", "-o", tmp_path / "adapter")
    assert code == 0 and out.decode().strip() == str(tmp_path / "adapter"), err
    merged, plain = next(iter(_modules("run2").values())), next(iter(_modules("run1").values()))
    wrapped = peft.PeftModel.from_pretrained(next(iter(_modules("run1").values())), tmp_path / "adapter").eval()
    inputs = (torch.randint(0, 20, (2, 12)),) if family == "text" else (torch.randn(2, 1, 8, 8), torch.tensor([10, 700]))
    with torch.no_grad():
        a, b, c = wrapped(*inputs), merged(*inputs), plain(*inputs)
    assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max()
    assert not torch.allclose(b, c, atol=1e-5)  # the adapters did train: peft applied them
    code, _, err = cli("export", "peft", "run1", "-o", tmp_path / "none")
    clean_error(code, err, "run1 has no adapters")
