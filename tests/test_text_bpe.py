"""The text family's BPE tokenizer (issue 29: `--tokenizer bpe --vocab-size N`) and the GPT's
GPT-2 fields (bias, activation, ln_eps), including runs written before they existed.

A tiny GPT over a 300-token byte-level BPE learnt from a 20,000-character slice of the built-in
corpus (context 16: about 20 steps an epoch at batch 32).
"""

import json
import math
import subprocess
import sys

import pytest
import torch

TINY = ["--arch", "gpt", "--layers", "1", "--width", "16", "--heads", "2", "--context", "16", "--batch-size", "32",
        "--seed", "1", "--lr", "1e-2", "--warmup", "5"]
BPE = ["--tokenizer", "bpe", "--vocab-size", "300"]
POLY = ["Grüße aus Köln!", " leading space", "日本語のテキスト。", "emoji 😀👍🏽 ok", "tabs\tand\nnewlines\n\n",
        "<|endoftext|>", ""]


def _config(home, run="run1"):
    return json.loads((home / "runs" / run / "config.json").read_text())


@pytest.fixture(scope="module")
def bpe_home(tmp_path_factory, corpus, cli_captured):
    """An AIGC_HOME with run1: two epochs of a tiny GPT over a 300-token BPE of ``corpus``."""
    home = tmp_path_factory.mktemp("bpe")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AIGC_HOME", str(home))
        code, _, err = cli_captured("-q", "train", "text", "--dataset", corpus, *TINY, *BPE, "--epochs", "2")
        assert code == 0, err
    return home


def model_ids(model, text):
    from tokenizers import Tokenizer

    return Tokenizer.from_str(json.dumps(model["bpe"])).encode(text).ids


def test_the_same_text_gives_the_same_tokenizer_in_every_process(corpus):
    """Trained in three processes (each with its own hash seeds): the same JSON, byte for byte;
    another vocabulary size or text gives another tokenizer."""
    script = ("import sys, json; from aigc_cli.models.text.bpe import train_bpe; "
              "text = open(sys.argv[1], encoding='utf-8').read(); print(json.dumps(train_bpe(text, int(sys.argv[2]))))")
    outs = [subprocess.run([sys.executable, "-c", script, str(corpus), n], capture_output=True, text=True, check=True,
                           env={"PYTHONHASHSEED": str(i), "PATH": "", "PYTHONPATH": ":".join(sys.path)}).stdout
            for i, n in enumerate(["300", "300", "300", "400"])]
    assert outs[0] == outs[1] == outs[2] != outs[3]
    spec = json.loads(outs[0])
    assert len(spec["model"]["vocab"]) == 300 and spec["added_tokens"] == []


def test_bpe_encodes_any_text_and_decodes_like_tokenizers(corpus):
    """Round trips on accents, CJK, emoji and leading spaces; ``decode`` equals ``tokenizers``'
    own on arbitrary ids (cut characters included); ``stream`` holds back a character's first
    bytes and adds up to ``decode``."""
    from aigc_cli.models.text.bpe import BPETokenizer, train_bpe

    tok = BPETokenizer(train_bpe(corpus.read_text(encoding="utf-8"), 300))
    assert tok.vocab_size == 300 and tok.kind == "bpe"
    for text in POLY:
        ids = tok.encode(text)
        assert ids.dtype == torch.int64 and tok.decode(ids.tolist()) == text
        assert ids.tolist() == tok.tokenizer.encode(text, add_special_tokens=False).ids
    common = tok.encode(" the the the")
    assert len(common) < len(b" the the the")  # merges learnt: fewer tokens than bytes
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        ids = torch.randint(0, tok.vocab_size, (int(torch.randint(1, 12, (1,), generator=g)),), generator=g).tolist()
        assert tok.decode(ids) == tok.tokenizer.decode(ids, skip_special_tokens=False), ids
    ids = tok.encode("日本語 😀").tolist()
    stream = tok.stream()
    pieces = [stream([i]) for i in ids]
    assert "".join(pieces) == "日本語 😀" and "\ufffd" not in "".join(pieces)
    assert "" in pieces  # a byte token that began a character: held back, not shown broken
    assert tok.characters(tok.encode("First")) == 5


def test_a_bpe_run_trains_samples_scores_and_exports(bpe_home, corpus, cli, monkeypatch, tmp_path):
    from aigc_cli.data.text import load_corpus
    from aigc_cli.models.text.bpe import train_bpe

    monkeypatch.setenv("AIGC_HOME", str(bpe_home))
    model = _config(bpe_home)["model"]
    assert model["tokenizer"] == "bpe" and model["vocab_size"] == 300 and model["alphabet"] is None
    assert model["bpe"] == train_bpe(load_corpus(str(corpus)).text, 300)  # from the training split alone
    assert (model["bias"], model["activation"], model["ln_eps"]) == (False, "gelu", 1e-5)  # aigc's own GPT
    rows = [json.loads(line) for line in (bpe_home / "runs/run1/metrics.jsonl").read_text().splitlines()]
    val = [r for r in rows if "val_loss" in r]
    assert len(val) == 2 and val[1]["val_loss"] < math.log(300) - 0.5, val  # it learns
    args = ["sample", "run1", "--prompt", "ROMEO:", "--length", "30", "--seed", "4"]
    code, out, err = cli(*args)
    assert code == 0 and out.decode().startswith("ROMEO:"), err
    assert cli(*args)[1] == out and cli(*args[:-1], "5")[1] != out
    code, js, _ = cli(*args, "--json")
    assert json.loads(js)["continuations"] == [out.decode()[len("ROMEO:"):-1]]  # streamed = the whole text
    code, out, err = cli("sample", "run1", "--prompt", "日本 😀", "--length", "40", "--seed", "1")
    assert code == 0 and out.decode("utf-8").startswith("日本 😀"), err  # valid UTF-8 however tokens cut it
    code, out, err = cli("sample", "run1", "--length", "5", "--seed", "1", "--json")
    assert json.loads(out)["prompt"] == "\n"  # no <|endoftext|> in a BPE learnt from a corpus
    code, out, err = cli("eval", "ppl", "run1", corpus, "--json")
    result = json.loads(out)
    text = corpus.read_text(encoding="utf-8")
    assert code == 0 and result["tokenizer"] == "bpe" and result["vocab_size"] == 300, err
    from tokenizers import Tokenizer

    first = Tokenizer.from_str(json.dumps(model["bpe"])).encode(text).offsets[0][1]  # the first token's characters
    assert result["characters"] == len(text) - first and result["tokens"] == len(model_ids(model, text)) - 1
    assert result["tokens"] < 0.8 * len(text)  # 44 merges: already fewer tokens than characters
    assert result["bits_per_char"] == pytest.approx(result["bits"] / result["characters"])
    assert result["bits_per_char"] < result["bits_per_token"]
    code, out, err = cli("export", "onnx", "run1", "-o", tmp_path / "m.onnx", "--json")
    assert code == 0, err
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "m.onnx"), load_external_data=False).metadata_props}
    assert meta["aigc.tokenizer"] == "bpe" and meta["aigc.vocab_size"] == "300"
    assert Tokenizer.from_str(meta["aigc.bpe"]).encode("ROMEO: 日本").ids == \
        Tokenizer.from_str(json.dumps(model["bpe"])).encode("ROMEO: 日本").ids


@pytest.mark.slow  # three text trainings, two in a process (about 15 s)
def test_a_bpe_run_resumes_bit_identically(corpus, resumes_bit_identically):
    """SIGINT inside step 30 (epoch 2), --resume: the weights equal those of a run never stopped."""
    args = ["-q", "train", "text", "--dataset", corpus, *TINY, *BPE, "--epochs", "2", "--dropout", "0.1"]
    resumes_bit_identically(args, 30, ["-q", "train", "text", "--resume", "run1"], drop=("tokens_per_s",))


@pytest.mark.parametrize("edit, words", [
    (lambda m: m.update(bpe=None), ["'model' field 'bpe' is missing: a bpe run needs its tokenizer"]),
    (lambda m: m.update(bpe="not a tokenizer"), ["'model' field 'bpe' must be a JSON object"]),  # Field's type check
    (lambda m: m["bpe"]["model"].update(type="Unigram"), ["field 'bpe'"]),
    (lambda m: m["bpe"].update(decoder={"type": "WordPiece", "prefix": "##", "cleanup": True}),
     ["field 'bpe' must be a byte-level BPE (model BPE, decoder ByteLevel), got model BPE, decoder WordPiece"]),
    (lambda m: m["bpe"]["model"].update(merges=[["x", "y", "z"]]), ["field 'bpe' is not a tokenizers JSON"]),
    (lambda m: m.update(vocab_size=299), ["field 'bpe' has 300 tokens, more than 'vocab_size' (299)"]),
    (lambda m: m.pop("bias"), ["field 'bias' is missing: a gpt run needs it"]),
    (lambda m: m.update(activation="relu"), ["field 'activation' must be one of gelu, gelu_tanh, got 'relu'"]),
])
def test_a_damaged_bpe_or_gpt_field_is_one_line(bpe_home, tmp_path, cli, monkeypatch, clean_error, edit, words):
    import shutil

    home = tmp_path / "home"
    shutil.copytree(bpe_home, home)
    monkeypatch.setenv("AIGC_HOME", str(home))
    config = _config(home)
    edit(config["model"])
    (home / "runs/run1/config.json").write_text(json.dumps(config))
    for args in (["sample", "run1", "--length", "5"], ["export", "onnx", "run1", "-o", tmp_path / "m.onnx"]):
        code, out, err = cli(*args)
        clean_error(code, err, "run1's config.json 'model'", *words)
        assert out == b""
    assert not (tmp_path / "m.onnx").exists()


def test_vocab_size_is_for_bpe_only(aigc_home, corpus, cli, clean_error):
    code, _, err = cli("train", "text", "--dataset", corpus, *TINY, "--vocab-size", "300")
    clean_error(code, err, "--vocab-size applies to --tokenizer bpe only")
    code, _, err = cli("train", "text", "--dataset", corpus, *TINY, *BPE[:2], "--vocab-size", "100")
    clean_error(code, err, "--vocab-size must be at least 256, got 100")
    assert not (aigc_home / "runs").exists() or not list((aigc_home / "runs").glob("run*"))


@pytest.mark.parametrize("version", [1, 2])
def test_gpt_runs_from_before_the_gpt2_fields_sample_as_they_did(aigc_home, corpus, cli, version):
    """A GPT run written without bias/activation/ln_eps/bpe (run formats 1 and 2) loads as the
    GPT it was (no biases, exact GELU, eps 1e-5): the same text for the same seed, and it resumes."""
    assert cli("-q", "train", "text", "--dataset", corpus, *TINY, "--epochs", "1")[0] == 0
    args = ["sample", "run1", "--prompt", "ROMEO:", "--length", "40", "--seed", "3"]
    code, now, err = cli(*args)
    assert code == 0, err
    config = _config(aigc_home)
    old = {**config, "format": f"aigc-run/{version}",
           "model": {k: v for k, v in config["model"].items() if k not in ("bias", "activation", "ln_eps", "bpe")}}
    (aigc_home / "runs/run1/config.json").write_text(json.dumps(old))
    code, then, err = cli(*args)
    assert code == 0 and then == now, err
    code, _, err = cli("-q", "train", "text", "--resume", "run1", "--epochs", "2")
    assert code == 0, err
    assert _config(aigc_home)["model"]["activation"] == "gelu"  # written out explicitly now
