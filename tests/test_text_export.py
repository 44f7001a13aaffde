"""`aigc export onnx` on text runs: tokens (N, L) -> logits (N, L, V), batch and length dynamic,
checked in ONNX Runtime against the model's own forward at several batches and lengths; the
vocabulary in the metadata; the default format; refused options and formats.

Two tiny runs on a 5,000-character slice of the built-in corpus, one epoch each: run1 a GPT over
characters (context 16), run2 a GRU over bytes.
"""

import json

import numpy as np
import pytest
import torch

from aigc_cli.export import onnx as onnx_export

ort = pytest.importorskip("onnxruntime")

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CONTEXT = 16
TINY = dict(layers=1, width=16, heads=2, context=CONTEXT, batch_size=64, epochs=1, seed=1, device="cpu")


def session(path):
    options = ort.SessionOptions()
    options.log_severity_level = 4  # the too-long input below is expected to fail: no log line for it
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """(the AIGC_HOME with run1 = GPT/char, run2 = GRU/byte, the corpus' path)."""
    from aigc_cli.data.text import CORPORA
    from aigc_cli.training import train

    root = tmp_path_factory.mktemp("text_export")
    corpus = root / "plays.txt"
    corpus.write_text(CORPORA.get("bard").read(None)[:5_000], encoding="utf-8")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AIGC_HOME", str(root / "home"))
        assert train("text", str(corpus), arch="gpt", **TINY).id == "run1"
        assert train("text", str(corpus), arch="gru", tokenizer="byte", **TINY).id == "run2"
    return root


@pytest.fixture(scope="module")
def exported(home, cli_captured):
    """run1 exported without --format (the family's default), run2 with --format logits --json."""
    out = home / "models"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AIGC_HOME", str(home / "home"))
        return {
            "run1": cli_captured("export", "onnx", "run1", "-o", out / "gpt.onnx"),
            "run2": cli_captured("export", "onnx", "run2", "-o", out / "gru.onnx", "--format", "logits", "--json"),
            "paths": {"run1": out / "gpt.onnx", "run2": out / "gru.onnx"},
        }


@pytest.fixture(scope="module")
def models(home):
    """run -> the trained model as `aigc sample` loads it (its TextSampler)."""
    from aigc_cli.generation import load_generator

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AIGC_HOME", str(home / "home"))
        return {run: load_generator(run, "cpu", command="export onnx").sampler for run in ("run1", "run2")}


def test_default_format_is_logits_with_batch_and_length_dynamic(exported, models):
    code, out, err = exported["run1"]
    assert code == 0, err
    assert out.startswith("max_abs_diff") and float(out.split()[-1]) < 1e-4
    assert "(logits, opset 18" in err and "Traceback" not in err
    # Checked at several batches, each at another length: the longest (the context), 1, and between.
    assert f"matches PyTorch on batches 1 (L={CONTEXT}), 7 (L=1), 64 (L=8)" in err
    vocab = models["run1"].tokenizer.vocab_size
    s = session(exported["paths"]["run1"])
    assert [(i.name, i.type, i.shape) for i in s.get_inputs()] == [("tokens", "tensor(int64)", ["N", "L"])]
    assert [(o.name, o.type, o.shape) for o in s.get_outputs()] == [("logits", "tensor(float)", ["N", "L", vocab])]


def test_json_report_of_an_rnn(exported):
    code, out, err = exported["run2"]
    assert code == 0, err
    report = json.loads(out)
    assert report["ok"] and report["format"] == "logits" and report["family"] == "text"
    assert report["inputs"] == [{"name": "tokens", "dtype": "int64", "shape": ["N", "L"], "vocab_size": 256}]
    assert report["outputs"] == [{"name": "logits", "dtype": "float32", "shape": ["N", "L", 256]}]
    assert report["dynamic_axes"] == {"N": [1, None], "L": [1, None]}  # an RNN takes any length
    checks = report["verification"]["batches"]
    assert [(c["batch"], c["sizes"]["L"], c["ok"]) for c in checks] == [(1, 100, True), (7, 1, True), (64, 50, True)]
    assert {c["sizes"]["L"] for c in checks} - {onnx_export.EXAMPLE_SIZE}  # not only the traced length
    assert "latent_dim" not in report and "image_shape" not in report  # image facts stay with image runs
    s = session(exported["paths"]["run2"])
    assert [o.shape for o in s.get_outputs()] == [["N", "L", 256]]


@pytest.mark.parametrize("run, cases", [
    ("run1", [(1, 1), (3, 5), (2, CONTEXT), (5, 11)]),
    ("run2", [(1, 1), (3, 5), (2, CONTEXT), (4, 3 * CONTEXT)]),  # an RNN beyond its training length
])
def test_onnx_logits_match_the_models_own_forward(exported, models, run, cases):
    """ORT against the network itself (not the exported wrapper): same logits for every batch and length."""
    s = session(exported["paths"][run])
    model, vocab = models[run].model, models[run].tokenizer.vocab_size
    g = torch.Generator().manual_seed(3)
    for n, length in cases:
        tokens = torch.randint(0, vocab, (n, length), generator=g)
        (logits,) = s.run(["logits"], {"tokens": tokens.numpy()})
        with torch.no_grad():
            out = model(tokens)
        want = (out[0] if isinstance(out, tuple) else out).numpy()  # the RNN starts from a zero state
        assert logits.shape == (n, length, vocab) and logits.dtype == np.float32
        np.testing.assert_allclose(logits, want, rtol=1e-3, atol=1e-4, err_msg=f"batch {n}, length {length}")


def test_gpt_refuses_tokens_beyond_its_context(exported):
    s = session(exported["paths"]["run1"])
    with pytest.raises(Exception):  # onnxruntime's own error: its positions end at the context
        s.run(["logits"], {"tokens": np.zeros((2, CONTEXT + 1), dtype=np.int64)})


def test_metadata_holds_the_vocabulary(exported, models):
    meta = onnx_export.read_metadata(exported["paths"]["run1"])
    tokenizer = models["run1"].tokenizer
    assert meta["aigc.family"] == "text" and meta["aigc.arch"] == "gpt" and meta["aigc.run_id"] == "run1"
    assert meta["aigc.format"] == "logits" and meta["aigc.inputs"] == "tokens" and meta["aigc.output"] == "float32"
    assert meta["aigc.tokenizer"] == "char" and meta["aigc.context"] == str(CONTEXT)
    alphabet = json.loads(meta["aigc.alphabet"])
    assert alphabet == tokenizer.alphabet and meta["aigc.vocab_size"] == str(len(alphabet))
    assert json.loads(meta["aigc.dynamic_axes"]) == {"N": [1, None], "L": [1, CONTEXT]}
    assert json.loads(meta["aigc.output_shape"]) == ["L", len(alphabet)]
    assert "aigc.image_shape" not in meta and "aigc.latent_dim" not in meta
    # Enough to encode a prompt and decode the next character with nothing but the file.
    ids = np.array([[alphabet.index(c) for c in "the "]], dtype=np.int64)
    (logits,) = session(exported["paths"]["run1"]).run(["logits"], {"tokens": ids})
    with torch.no_grad():
        want = models["run1"].model(tokenizer.encode("the ")[None])[0, -1]
    assert alphabet[int(logits[0, -1].argmax())] == tokenizer.decode([int(want.argmax())])

    byte = onnx_export.read_metadata(exported["paths"]["run2"])
    assert byte["aigc.tokenizer"] == "byte" and byte["aigc.vocab_size"] == "256" and "aigc.alphabet" not in byte
    assert byte["aigc.arch"] == "gru" and json.loads(byte["aigc.dynamic_axes"])["L"] == [1, None]


def test_refused_options_and_formats_are_one_line(home, cli, clean_error, tmp_path, monkeypatch):
    monkeypatch.setenv("AIGC_HOME", str(home / "home"))
    target = tmp_path / "x.onnx"
    code, _, err = cli("export", "onnx", "run1", "-o", target, "--steps", "3")  # a diffusion decode option
    clean_error(code, err, "--steps does not apply to run1, a text run")
    code, _, err = cli("export", "onnx", "run2", "-o", target, "--guidance", "2")
    clean_error(code, err, "--guidance does not apply to run2, a text run")
    code, _, err = cli("export", "onnx", "run1", "-o", target, "--format", "images")
    clean_error(code, err, "--format images is not one that text runs export to (logits)")
    code, _, err = cli("export", "onnx", "run1", "-o", target, "--format", "png")
    clean_error(code, err, "--format must be one of", "logits", "got 'png'")
    code, _, err = cli("export", "onnx", "run2", "-o", "-")
    clean_error(code, err, "cannot go to stdout")
    assert not target.exists()
