"""`aigc import` of GPT-2 checkpoints (aigc_cli/hub/gpt2.py; issue 29) against transformers itself,
without network: a tiny random GPT2LMHeadModel (2 layers, width 32, 4 heads, 64 positions) over
a 400-token byte-level BPE learnt here, saved as transformers saves it (model.safetensors,
tokenizer.json). Logits within 1e-4 of transformers', greedy continuations token for token,
token ids equal to its tokenizer's (tokenizer.json, and vocab.json + merges.txt), the CLI end
to end, and one-line refusals that leave nothing behind.
"""

import json
import shutil

import pytest
import torch

transformers = pytest.importorskip("transformers")

SPECIAL = "<|endoftext|>"
STRINGS = ["ROMEO: What say you?", " leading space", "  two leading spaces", "Grüße aus Köln, naïve café",
           "日本語のテキスト。", "emoji 😀👍🏽!", "tabs\tand\nnew lines\n\n", f"{SPECIAL}First Citizen:",
           "mid" + SPECIAL + "text", "", "a"]


def _tokenizer(text):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator([text], trainers.BpeTrainer(
        vocab_size=400, special_tokens=[SPECIAL], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return tok


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """(folder, the GPT2LMHeadModel, its GPT2TokenizerFast, the raw tokenizer): saved the hub's way."""
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

    from aigc_cli.data.text import CORPORA

    folder = tmp_path_factory.mktemp("gpt2") / "tiny-gpt2"
    raw = _tokenizer(CORPORA.get("bard").read(None)[:50_000] + " Grüße 日本語 😀")
    hf_tok = GPT2TokenizerFast(tokenizer_object=raw, bos_token=SPECIAL, eos_token=SPECIAL, unk_token=SPECIAL)
    hf_tok.save_pretrained(folder)
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(hf_tok), n_layer=2, n_embd=32, n_head=4, n_positions=64,
                        bos_token_id=hf_tok.eos_token_id, eos_token_id=hf_tok.eos_token_id)
    model = GPT2LMHeadModel(config).eval()
    with torch.no_grad():  # biases and LayerNorms away from their 0/1 start, so that a mix-up shows
        for name, p in model.named_parameters():
            if name.endswith("bias") or ".ln_" in name or "ln_f" in name:
                p.add_(torch.randn_like(p) * 0.1)
    model.save_pretrained(folder, safe_serialization=True)
    return folder, model, hf_tok, raw


@pytest.fixture(scope="module")
def imported(checkpoint, tmp_path_factory, cli_captured):
    """An AIGC_HOME where ``aigc import FOLDER --name g`` ran."""
    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AIGC_HOME", str(home))
        code, out, err = cli_captured("import", checkpoint[0], "--name", "g", "--json")
        assert code == 0, err
        assert json.loads(out)["source"]["format"] == "gpt2"
    return home


def _generator(home, monkeypatch):
    from aigc_cli.generation import load_generator

    monkeypatch.setenv("AIGC_HOME", str(home))
    return load_generator("g", command="sample")


def test_logits_match_transformers(checkpoint, imported, monkeypatch):
    """Whole windows up to the 64 positions, a batch of two, and the cached steps: within 1e-4."""
    _, model, _, _ = checkpoint
    gen = _generator(imported, monkeypatch)
    config = gen.config["model"]
    assert (config["bias"], config["activation"], config["context"], config["tokenizer"]) == (True, "gelu_tanh", 64, "bpe")
    ids = torch.randint(0, 400, (2, 64), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = model(ids).logits  # (2, 64, 400)
        ours = gen.sampler.model(ids)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-4)
    from aigc_cli.models.text.sampling import Stepper

    stepper = Stepper(gen.sampler.model)
    with torch.no_grad():
        steps = [stepper.start(ids[:, :10])] + [stepper.step(ids[:, i]) for i in range(10, 30)]
    torch.testing.assert_close(torch.stack(steps, 1), ref[:, 9:30], rtol=0, atol=1e-4)


def test_greedy_continuations_equal_generate(checkpoint, imported, cli, monkeypatch):
    """Temperature 0: the same tokens as ``generate(do_sample=False)``, and `aigc sample` prints
    their text (the prompt, then the continuation as transformers' tokenizer decodes it)."""
    _, model, hf_tok, _ = checkpoint
    gen = _generator(imported, monkeypatch)
    for prompt in ["First Citizen:", " we are", SPECIAL]:
        ids = torch.tensor([hf_tok(prompt)["input_ids"]])
        ref = model.generate(ids, do_sample=False, max_new_tokens=24, use_cache=True,
                             pad_token_id=hf_tok.eos_token_id)[0, ids.shape[1]:]
        ours = gen.generate(prompt, temperature=0, length=len(ref))[0]
        assert ours.tolist() == ref.tolist(), prompt
        code, out, err = cli("sample", "g", "--prompt", prompt, "--temperature", "0", "--length", str(len(ref)))
        assert code == 0, err
        assert out.decode() == prompt + hf_tok.decode(ref.tolist()) + "\n"
    code, out, err = cli("sample", "g", "--length", "3", "--seed", "1", "--json")
    assert code == 0 and json.loads(out)["prompt"] == SPECIAL, err  # GPT-2's start text for an empty prompt


def test_token_ids_equal_transformers_tokenizer(checkpoint, imported, monkeypatch):
    _, _, hf_tok, _ = checkpoint
    tok = _generator(imported, monkeypatch).tokenizer
    for text in STRINGS:
        ids = tok.encode(text).tolist()
        assert ids == hf_tok(text)["input_ids"], text
        assert tok.decode(ids) == hf_tok.decode(ids) == text, text


def test_vocab_json_and_merges_txt_give_the_same_ids(checkpoint, tmp_path):
    """A checkpoint without tokenizer.json (older uploads): vocab.json + merges.txt, built as
    transformers builds GPT2Tokenizer; its special token keeps its id."""
    from transformers import GPT2TokenizerFast

    from aigc_cli.hub.gpt2 import GPT2Format
    from aigc_cli.models.text.bpe import BPETokenizer

    folder, _, _, raw = checkpoint
    old = tmp_path / "old"
    shutil.copytree(folder, old)
    (old / "tokenizer.json").unlink()
    raw.model.save(str(old))  # vocab.json, merges.txt
    assert {"vocab.json", "merges.txt"} <= {p.name for p in old.iterdir()}
    reference = GPT2TokenizerFast.from_pretrained(old)
    converted = GPT2Format().convert(old)
    assert converted.source["files"][-2:] == ["vocab.json", "merges.txt"]
    tok = BPETokenizer(converted.model["bpe"])
    assert tok.vocab_size == len(reference) == 400
    for text in STRINGS:
        assert tok.encode(text).tolist() == reference(text)["input_ids"], text


def test_weights_map_onto_the_gpt_exactly(checkpoint, tmp_path):
    """convert(): every key of the GPT's state dict, no other; Conv1D weights transposed; the
    hub's original layout (no 'transformer.' prefix, an lm_head copy) reads the same."""
    from safetensors.torch import load_file, save_file

    from aigc_cli.hub.gpt2 import GPT2Format
    from aigc_cli.models.text.family import TextFamily

    folder, model, _, _ = checkpoint
    converted = GPT2Format().convert(folder)
    weights = converted.weights["model"]
    own = TextFamily().build({"model": converted.model})["model"].state_dict()
    assert weights.keys() == own.keys() and all(weights[k].shape == own[k].shape for k in own)
    c_attn = model.transformer.h[1].attn.c_attn.weight  # (in 32, out 96)
    assert torch.equal(weights["blocks.1.attn.qkv.weight"], c_attn.detach().t())
    tensors = load_file(str(folder / "model.safetensors"))
    plain = {k.removeprefix("transformer."): v for k, v in tensors.items()}
    plain["lm_head.weight"] = plain["wte.weight"].clone()
    plain["h.0.attn.bias"] = torch.ones(1, 1, 64, 64)  # the causal-mask buffer older files hold
    hub = tmp_path / "hub"
    shutil.copytree(folder, hub)
    save_file(plain, str(hub / "model.safetensors"))
    again = GPT2Format().convert(hub).weights["model"]
    assert all(torch.equal(again[k], weights[k]) for k in weights)


def test_the_imported_run_scores_exports_and_fine_tunes(imported, corpus, cli, monkeypatch, tmp_path):
    monkeypatch.setenv("AIGC_HOME", str(imported))
    code, out, err = cli("eval", "ppl", "g", corpus, "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["tokenizer"] == "bpe" and result["vocab_size"] == 400 and result["context"] == 64
    assert 0 < result["bits_per_char"] < result["bits_per_token"]
    code, out, err = cli("export", "onnx", "g", "-o", tmp_path / "g.onnx", "--json")
    assert code == 0, err
    import onnx
    from tokenizers import Tokenizer

    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "g.onnx"), load_external_data=False).metadata_props}
    assert Tokenizer.from_str(meta["aigc.bpe"]).encode("ROMEO: 日本").ids == \
        _generator(imported, monkeypatch).encode("ROMEO: 日本").tolist()
    code, out, err = cli("-q", "train", "text", "--init", "g", "--dataset", corpus, "--epochs", "1",
                         "--batch-size", "64", "--lr", "1e-4", "--name", "tuned")
    assert code == 0, err
    config = json.loads((imported / "runs/run2/config.json").read_text())
    assert config["parent"]["run"] == "run1" and config["model"]["bpe"] == json.loads(
        (imported / "runs/run1/config.json").read_text())["model"]["bpe"]


def _edit_config(folder, **changes):
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **changes}))


@pytest.mark.parametrize("damage, words", [
    (lambda f: _edit_config(f, scale_attn_by_inverse_layer_idx=True),
     ["config.json field 'scale_attn_by_inverse_layer_idx' is true: aigc's GPT cannot build that"]),
    (lambda f: _edit_config(f, reorder_and_upcast_attn=True), ["field 'reorder_and_upcast_attn' is true"]),
    (lambda f: _edit_config(f, add_cross_attention=True), ["field 'add_cross_attention' is true"]),
    (lambda f: _edit_config(f, tie_word_embeddings=False), ["field 'tie_word_embeddings' is false"]),
    (lambda f: _edit_config(f, activation_function="relu"),
     ["config.json field 'activation_function' is 'relu': aigc's GPT has gelu_new"]),
    (lambda f: _edit_config(f, n_inner=100), ["field 'n_inner' is 100: aigc's GPT has an MLP of 4 x n_embd (128)"]),
    (lambda f: _edit_config(f, n_head=5), ["field 'n_embd' (32) must be a multiple of 'n_head' (5)"]),
    (lambda f: _edit_config(f, n_layer=3), ["model.safetensors has no tensor 'h.2.ln_1.weight'"]),
    (lambda f: _edit_config(f, n_layer=1), ["model.safetensors holds tensors a GPT-2 of 1 layers does not have"]),
    (lambda f: _edit_config(f, vocab_size=300), ["'model' field 'bpe' has 400 tokens, more than 'vocab_size' (300)"]),
    (lambda f: (f / "tokenizer.json").unlink(), ["has no tokenizer: expected tokenizer.json, or vocab.json and merges.txt"]),
    (lambda f: (f / "tokenizer.json").write_text("{\"model\": 3}"), ["tokenizer.json is not a tokenizers JSON"]),
    (lambda f: (f / "model.safetensors").write_bytes((f / "model.safetensors").read_bytes()[:5000]),
     ["model.safetensors is not a readable safetensors file"]),
    (lambda f: (f / "model.safetensors").rename(f / "pytorch_model.bin"),
     ["has only pickled weights (pytorch_model.bin)", "safetensors only"]),
])
def test_bad_checkpoints_are_one_line_errors_and_leave_nothing(checkpoint, tmp_path, cli, aigc_home, clean_error,
                                                             damage, words):
    folder = tmp_path / "bad"
    shutil.copytree(checkpoint[0], folder)
    damage(folder)
    code, out, err = cli("import", folder, "--name", "g")
    clean_error(code, err, *words)
    assert out == b""
    assert not (aigc_home / "runs").exists() or not any(p.name.startswith("run") for p in (aigc_home / "runs").iterdir())


def test_detection(checkpoint, tmp_path):
    from aigc_cli.hub.formats import detect_format
    from aigc_cli.hub.gpt2 import GPT2Format

    fmt = GPT2Format()
    assert fmt.detect(checkpoint[0]) and detect_format(checkpoint[0]).name == "gpt2"
    only = tmp_path / "arch"
    only.mkdir()
    (only / "config.json").write_text(json.dumps({"architectures": ["GPT2LMHeadModel"]}))
    assert fmt.detect(only)
    (only / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}))
    assert not fmt.detect(only)
    (only / "config.json").write_text("not json")
    assert not fmt.detect(only)
    assert {"config.json", "model.safetensors", "tokenizer.json", "vocab.json", "merges.txt"} <= set(fmt.files())
