"""CLIP from the Hugging Face format (aigc_cli/hub/clip.py) against transformers itself, without
network: tiny random CLIPModel / CLIPTextModel / CLIPTextModelWithProjection (width 32, 2 layers,
4 heads, 16 positions; 32x32 images in 8x8 patches) over a 300-token CLIP BPE learnt here, saved
as transformers saves them. Encoders within 1e-5 of transformers' outputs (fp32, eval), token ids
and masks equal to its tokenizer's (tokenizer.json, and vocab.json + merges.txt), the CLIP score
from transformers' embeddings, and one-line refusals.
"""

import json
import shutil

import pytest
import torch

transformers = pytest.importorskip("transformers")

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
LENGTH = 16
STRINGS = ["a photo of a cat", "A PHOTO of a Dog!", "  extra   white\tspace\n here ", "what's this? it's 3.5 cats...",
           "Grüße, café", "", "a very long caption that goes on and on about the red bus parked near the old "
           "station in the rain"]
TEXT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            max_position_embeddings=LENGTH, layer_norm_eps=1e-5)
VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=32,
              patch_size=8)


@pytest.fixture(scope="module")
def saves(clip_saves):
    return clip_saves


def _hf_ids(hf_tok, texts):
    got = hf_tok(texts, padding="max_length", truncation=True, max_length=LENGTH, return_tensors="pt")
    return got["input_ids"], got["attention_mask"].bool()


def test_tokenizer_ids_and_masks_equal_transformers(saves, tmp_path):
    """tokenizer.json as saved, and vocab.json + merges.txt alone: the same ids and masks as
    CLIPTokenizer(padding="max_length", truncation=True), the long text cut to BOS + 14 + EOS."""
    from aigc_cli.hub.clip import read_clip, tokenize

    folder = saves["full"][0]
    assert (folder / "tokenizer.json").is_file()
    old = tmp_path / "old"
    shutil.copytree(folder, old)
    (old / "tokenizer.json").unlink()  # transformers 5 saves only tokenizer.json: older saves had these
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(saves["bpe"] / name, old / name)
    want_ids, want_mask = _hf_ids(saves["tokenizer"], STRINGS)
    assert want_mask[-1].all() and not want_mask[0].all()  # one text is cut, others are padded
    for source in (folder, old):
        files = read_clip(str(source))
        ids, mask = tokenize(STRINGS, files.tokenizer, LENGTH)
        assert ids.dtype == torch.int64 and mask.dtype == torch.bool
        assert torch.equal(ids, want_ids), source
        assert torch.equal(mask, want_mask), source
        assert files.text["pad_token_id"] == saves["tokenizer"].pad_token_id
        assert files.text["bos_token_id"] == saves["tokenizer"].bos_token_id
    # a pad token other than EOS (as some Stable Diffusion saves have) pads with its own id
    config = json.loads((old / "tokenizer_config.json").read_text())
    (old / "tokenizer_config.json").write_text(json.dumps({**config, "pad_token": "!"}))
    ids, mask = tokenize(["a cat"], read_clip(str(old)).tokenizer, LENGTH)
    bang = saves["tokenizer"].convert_tokens_to_ids("!")
    assert ids[0, mask[0].sum():].eq(bang).all() and ids[0, 3] == saves["tokenizer"].eos_token_id


def _max_diff(a, b):
    return (a - b).abs().max().item()


@pytest.mark.parametrize("kind", ["full", "text", "proj"])
def test_text_encoder_matches_transformers(saves, kind):
    from aigc_cli.hub.clip import load_clip, tokenize

    folder, model = saves[kind]
    text, vision, tokenizer = load_clip(str(folder))
    assert (vision is None) == (kind != "full")
    assert not any(p.requires_grad for p in text.parameters()) and not text.training
    ids, mask = tokenize(STRINGS, tokenizer, text.max_length)
    hf_text = getattr(model, "text_model", model)  # CLIPTextModel is the text transformer itself
    with torch.no_grad():
        ref = hf_text(input_ids=ids, attention_mask=mask.long())
        states, pooled = text(ids, mask)
        unmasked, _ = text(ids, None)
        diffs = [_max_diff(states, ref.last_hidden_state), _max_diff(pooled, ref.pooler_output)]
        if kind != "text":
            diffs.append(_max_diff(text.embed(ids, mask), model.text_projection(ref.pooler_output)))
        else:
            assert text.projection is None
    print(kind, "max differences", diffs)
    assert max(diffs) < 1e-5, diffs
    assert (unmasked[~mask] - states[~mask]).abs().max() > 1e-2  # the padding mask is exercised


def test_legacy_eos_token_id_2_pools_at_the_largest_id(saves, tmp_path):
    """Configs from before transformers#24773 say eos_token_id 2: transformers then pools at the
    argmax of the ids (in OpenAI's vocabulary EOS has the largest id; in this one it has not,
    which is what transformers computes all the same), and so does aigc."""
    from transformers import CLIPTextModel

    from aigc_cli.hub.clip import load_clip, tokenize

    folder = tmp_path / "legacy"
    shutil.copytree(saves["text"][0], folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "eos_token_id": 2}))
    model = CLIPTextModel.from_pretrained(folder).eval()
    text, _, tokenizer = load_clip(str(folder))
    ids, mask = tokenize(STRINGS, tokenizer, text.max_length)
    with torch.no_grad():
        ref = model(input_ids=ids, attention_mask=mask.long()).pooler_output
        assert _max_diff(text(ids, mask)[1], ref) < 1e-5


def test_vision_encoder_and_clip_score_match_transformers(saves):
    """Pooled outputs and image_embeds within 1e-5 on the same pixels; the score equals
    max(100 * cos, 0) of CLIPModel's own (normalised) text_embeds and image_embeds."""
    from aigc_cli.hub.clip import clip_preprocess, clip_score, load_clip, tokenize

    folder, model = saves["full"]
    text, vision, tokenizer = load_clip(str(folder))
    images = torch.randint(0, 256, (4, 3, 40, 56), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    pixels = clip_preprocess(images, vision.image_size)
    assert pixels.shape == (4, 3, 32, 32)
    texts = STRINGS[:4]
    ids, mask = tokenize(texts, tokenizer, text.max_length)
    with torch.no_grad():
        ref = model(input_ids=ids, attention_mask=mask.long(), pixel_values=pixels)
        tower = model.vision_model(pixel_values=pixels)
        states, pooled = vision(pixels)
        diffs = [_max_diff(states, tower.last_hidden_state), _max_diff(pooled, tower.pooler_output),
                 _max_diff(vision.embed(pixels), model.visual_projection(tower.pooler_output))]
    want = (100 * (ref.image_embeds * ref.text_embeds).sum(-1)).clamp(min=0)
    got = clip_score(text, vision, images, texts, tokenizer)
    print("vision max differences", diffs, "score", _max_diff(got, want), "scores", want.tolist())
    assert max(diffs) < 1e-5, diffs
    torch.testing.assert_close(got, want, rtol=0, atol=1e-4)
    assert got.shape == (4,) and (got >= 0).all()


def test_preprocess_against_clip_image_processor():
    """Against transformers' CLIPImageProcessor (torchvision, antialiased bicubic) and its PIL
    variant, on photograph-like smooth images and on sharp random noise, down- and upscaled: the
    measured differences, in uint8 levels after undoing the normalisation, stay within the
    tolerances clip_preprocess's docstring states."""
    from transformers import CLIPImageProcessor

    from aigc_cli.hub.clip import CLIP_STD, clip_preprocess

    g = torch.Generator().manual_seed(3)
    smooth = torch.nn.functional.interpolate(torch.rand(2, 3, 12, 16, generator=g) * 255, size=(96, 128),
                                             mode="bilinear").round().to(torch.uint8)
    noise = torch.randint(0, 256, (2, 3, 60, 45), dtype=torch.uint8, generator=g)
    small = torch.randint(0, 256, (1, 3, 20, 30), dtype=torch.uint8, generator=g)  # upscaled
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1) * 255
    processors = {"torchvision": CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})}
    try:
        from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
        processors["pil"] = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    except ImportError:
        pass
    limits = {"torchvision": 1e-3, "pil": 1.001}  # uint8 levels: float rounding; one level
    for name, proc in processors.items():
        for what, images in (("smooth", smooth), ("noise", noise), ("small", small)):
            ref = proc([im for im in images], return_tensors="pt")["pixel_values"]
            levels = ((clip_preprocess(images, 32) - ref) * std).abs()
            print(name, what, "max", round(levels.max().item(), 3), "mean", round(levels.mean().item(), 4))
            assert levels.max() < limits[name], (name, what, levels.max())


def _edit_config(folder, **changes):
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **changes}))


@pytest.mark.parametrize("damage, words", [
    (lambda f: (f / "model.safetensors").rename(f / "pytorch_model.bin"),
     ["has only pickled weights (pytorch_model.bin)", "safetensors only"]),
    (lambda f: (f / "config.json").unlink(), ["has no config.json"]),
    (lambda f: _edit_config(f, model_type="bert"), ["field 'model_type' is 'bert'"]),
    (lambda f: _edit_config(f, hidden_act="relu"), ["field 'hidden_act' is 'relu': aigc's CLIP has quick_gelu, gelu"]),
    (lambda f: _edit_config(f, num_hidden_layers=3), ["has no tensor 'encoder.layers.2.self_attn.q_proj.weight'"]),
    (lambda f: _edit_config(f, num_hidden_layers=1), ["holds more layers than config.json's num_hidden_layers (1)"]),
    (lambda f: _edit_config(f, intermediate_size=48), ["tensor for blocks.0.fc.weight is (64, 32), config.json makes it (48, 32)"]),
    (lambda f: _edit_config(f, vocab_size=100), ["tokenizer has 569 tokens, more than config.json's vocab_size (100)"]),
    (lambda f: [(f / n).unlink() for n in ("tokenizer.json", "vocab.json", "merges.txt") if (f / n).exists()],
     ["has no tokenizer: expected tokenizer.json, or vocab.json and merges.txt"]),
])
def test_bad_saves_are_one_line_errors(saves, tmp_path, damage, words):
    from aigc_cli.hub.clip import load_clip
    from aigc_cli.hub.formats import ImportError_

    folder = tmp_path / "bad"
    shutil.copytree(saves["text"][0], folder)
    damage(folder)
    with pytest.raises(ImportError_) as caught:
        load_clip(str(folder))
    message = str(caught.value)
    assert "\n" not in message, message
    for w in words:
        assert w in message, message


def test_aigc_import_points_clip_elsewhere(saves, cli, aigc_home, clean_error):
    """`aigc import` recognises a CLIP save and says where it goes, leaving no run."""
    code, out, err = cli("import", saves["full"][0], "--name", "c")
    clean_error(code, err, "is a CLIP model", "--text-encoder")
    assert out == b"" and not (aigc_home / "runs").exists() or not any((aigc_home / "runs").iterdir())


def test_a_hub_id_is_fetched_like_an_import(saves, tmp_path, aigc_env):
    """A hub id (a stand-in hub on 127.0.0.1, through huggingface_hub, in a child process: its
    endpoint is read at import): only CLIP's files are fetched, and the result is the folder's."""
    import subprocess
    import sys

    from hub_server import HubServer

    from aigc_cli.hub.clip import read_clip

    repo = tmp_path / "repo"
    shutil.copytree(saves["full"][0], repo)
    (repo / "flax_model.msgpack").write_bytes(b"\0" * 64)  # not CLIP's to fetch
    server = HubServer({"tiny/clip": repo})
    try:
        code = "import json, sys; from aigc_cli.hub.clip import read_clip; print(json.dumps(read_clip('tiny/clip').text))"
        env = aigc_env(tmp_path / "home", HF_ENDPOINT=server.url, HF_HOME=tmp_path / "hf", HF_HUB_DISABLE_TELEMETRY="1")
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == read_clip(str(repo)).text
        assert "flax_model.msgpack" not in server.downloaded()
        assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(server.downloaded())
    finally:
        server.close()
