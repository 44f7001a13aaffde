"""The benches (run by hand, benches/) still fit the engine: every module imports, and every
bench that builds a family's task builds it and steps it once at a tiny size. Speed and quality
are the benches' business, not this test's: it only keeps them from rotting unseen."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

BENCHES = Path(__file__).resolve().parents[1] / "benches"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCHES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", sorted(p.stem for p in BENCHES.glob("*.py")))
def test_every_bench_imports(name):
    assert hasattr(_load(name), "__doc__")


def test_gan_bench_tasks_step(one_torch_thread):
    bench = _load("bench_train")
    for updates in (None, "alternating"):
        task = bench.make_task(4, (1, 8, 8), 10, updates)
        images = torch.randint(0, 256, (4, 1, 8, 8), dtype=torch.uint8)
        labels = torch.arange(4)
        losses = task.train_step(images, labels, 0)
        assert {"d_loss", "g_loss"} <= set(losses)
    bench.tutorial_step(task, images.float() / 127.5 - 1, labels, 0)


def test_vae_bench_task_steps(one_torch_thread):
    task = _load("bench_vae").aigc_task("conv", (1, 8, 8))  # its batch: 64, as the bench steps it
    assert "loss" in task.train_step(torch.randint(0, 256, (64, 1, 8, 8), dtype=torch.uint8), None, 0)


def test_diffusion_bench_side_steps_and_samples(one_torch_thread):
    net, train_steps, sample = _load("bench_diffusion").aigc_side(2)
    train_steps(1)
    sample(2)
    assert sum(p.numel() for p in net.parameters()) > 0


def test_text_bench_trainer_steps(tmp_path, one_torch_thread):
    from aigc_cli.data.text import CORPORA

    path = tmp_path / "plays.txt"
    path.write_text(CORPORA.get("bard").read(None)[:5_000], encoding="utf-8")
    out = _load("bench_text").aigc_trainer(path, arch="gpt", layers=1, width=16, heads=2, context=16)
    step = out[1] if isinstance(out, tuple) else out
    assert step() == 32 * 16  # tokens trained: the default batch of windows


def test_onnx_bench_builds_an_exportable_generator(one_torch_thread):
    from aigc_cli.export import onnx as ox

    gen = _load("bench_onnx").build("mlp", [1, 8, 8], 3, latent=4, width=4)
    graph = ox.decoder_graph(gen, "images")
    assert [i.name for i in graph.inputs] == ["z", "label"]


def test_threads_bench_generators_sample(one_torch_thread):
    bench = _load("bench_threads")
    gen, options = bench.image_generator("gan")
    images = gen.generate(gen.latents(4, seed=0), gen.conditioning(4), **options)
    assert images.shape[0] == 4


def test_gpt2_sampling_bench_agrees_with_transformers(one_torch_thread):
    pytest.importorskip("transformers")
    result = _load("bench_gpt2_sampling").run(1, 4, 3, 1, layers=1, width=16, heads=2, vocab=64, positions=16)
    assert len(result["rounds"]) == 1 and result["median_ratio"] > 0  # the greedy tokens agreed first


@pytest.mark.slow  # three `aigc train` processes: 40-60 s on the shared 2-core VM (2026-12-07, load 5-7)
def test_finetune_bench_arms_run_and_report(tmp_path, aigc_home, one_torch_thread):
    """Both arms of bench_finetune.py text (--init and scratch, each an `aigc train` process) at
    a tiny size, then the LoRA bench's arms and report on the same parent."""
    from aigc_cli.data.text import CORPORA
    from aigc_cli.training import train

    bench, lora = _load("bench_finetune"), _load("bench_lora")
    corpus = tmp_path / "plays.txt"
    corpus.write_text(CORPORA.get("bard").read(None)[:3_000], encoding="utf-8")
    tiny = ["--arch", "gpt", "--tokenizer", "byte", "--width", "16", "--layers", "1", "--heads", "2",
            "--context", "16"]
    parent = train("text", str(corpus), arch="gpt", tokenizer="byte", width=16, layers=1, heads=2, context=16,
                   epochs=1, name="parent").id
    results = bench.interleave(bench.arms("text", parent, str(corpus), "1s", tiny), 1, "t")
    for figs in results.values():
        f = figs[0]
        assert f["steps"] >= 1 and f["val_bpc"] > 0 and f["peak_rss_mib"] > 0 and f["s_per_step"] > 0
    bench.report_text(results, "1s")
    arms = lora.lora_arms(parent, str(corpus), "1s", [2], ["2e-3"])
    out = bench.interleave({k: v for k, v in arms.items() if "LoRA" in k}, 1, "l")
    (f,) = out["LoRA r2, lr 2e-3"]
    f["trained"] = lora.trained_parameters(f["name"])
    assert 0 < f["trained"] < results["init"][0]["files_kib"]["model.safetensors"] * 1024 / 4 / 2  # adapters alone
    assert f["files_kib"]["model.safetensors"] < 64
    lora.report(out, "1s")


def test_finetune_bench_digit_sets_and_judge(tmp_path, aigc_home, one_torch_thread):
    from aigc_cli.training import train

    bench = _load("bench_finetune")
    import sys

    sys.path.insert(0, str(BENCHES))
    from classifier import DigitNet

    pre, other = bench.digit_sets(tmp_path / "data", small=2)
    import numpy as np

    assert set(np.load(pre)["labels"].tolist()) == {0, 1, 2, 3, 4}
    assert np.load(other)["labels"].tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    run = train("diffusion", str(other), width=8, channel_mult="1,2", batch_size=10, epochs=1).id
    judged = bench.judge_digits(run, 5, DigitNet().eval())
    assert 0 <= judged["asked_share"] <= 1
