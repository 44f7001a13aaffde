"""CLIP's text and vision towers and its tokenizer as modules (hub/clip.py reads them from the
Hugging Face format; tests/test_clip_import.py holds them to transformers' outputs), and
``ClipEncoder``: the text tower as a captioned run's frozen text encoder (``--text-encoder``).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from aigc_cli.core.errors import ConfigError
from aigc_cli.models.captions.encoders import TextEncoder

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "quick_gelu": lambda x: x * torch.sigmoid(1.702 * x),  # OpenAI's CLIP: a sigmoid approximation of GELU
    "gelu": F.gelu,  # the exact erf form (e.g. LAION's OpenCLIP conversions)
}

@functools.lru_cache(maxsize=4)
def _tokenizer(tokenizer_json: str):
    from tokenizers import Tokenizer

    return Tokenizer.from_str(tokenizer_json)


def tokenize(texts: Sequence[str], tokenizer_json: str, max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids (B, max_length) int64, mask (B, max_length) bool): BOS text EOS, cut to ``max_length``
    (BOS and EOS kept: 75 text tokens of 77) and padded with the tokenizer's pad token, as
    transformers' ``tokenizer(texts, padding="max_length", truncation=True, max_length=...)``."""
    tokenizer = _tokenizer(tokenizer_json)
    padding = tokenizer.padding or {"pad_id": tokenizer.token_to_id(EOS), "pad_token": EOS}
    tokenizer.enable_truncation(max_length)
    tokenizer.enable_padding(pad_id=padding["pad_id"], pad_token=padding["pad_token"], length=max_length)
    encodings = tokenizer.encode_batch(list(texts))
    ids = torch.tensor([e.ids for e in encodings], dtype=torch.int64).reshape(len(encodings), max_length)
    mask = torch.tensor([e.attention_mask for e in encodings], dtype=torch.bool).reshape(len(encodings), max_length)
    return ids, mask


# -- the encoders --------------------------------------------------------------------------------
class Block(nn.Module):
    """CLIPEncoderLayer: x + attn(ln1(x)), then x + mlp(ln2(x))."""

    def __init__(self, fields: dict[str, Any]):
        super().__init__()
        width, self.heads = fields["hidden_size"], fields["num_attention_heads"]
        self.ln1 = nn.LayerNorm(width, eps=fields["layer_norm_eps"])
        self.attn = nn.ModuleDict({"qkv": nn.Linear(width, 3 * width), "proj": nn.Linear(width, width)})
        self.ln2 = nn.LayerNorm(width, eps=fields["layer_norm_eps"])
        self.fc = nn.Linear(width, fields["intermediate_size"])
        self.out = nn.Linear(fields["intermediate_size"], width)
        self.act = ACTIVATIONS[fields["hidden_act"]]

    def forward(self, x: torch.Tensor, allowed: torch.Tensor | None) -> torch.Tensor:
        b, length, width = x.shape
        # (B, L, 3D) -> 3 x (B, heads, L, D/heads)
        q, k, v = self.attn["qkv"](self.ln1(x)).view(b, length, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        mixed = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)  # scale 1/sqrt(D/heads), as CLIP's
        x = x + self.attn["proj"](mixed.transpose(1, 2).reshape(b, length, width))
        return x + self.out(self.act(self.fc(self.ln2(x))))


class ClipTextEncoder(nn.Module):
    """CLIPTextTransformer (+ text_projection when the save has one), built from
    ``ClipFiles.text``. Frozen where aigc uses it: ``load_clip`` sets eval() and no gradients."""

    def __init__(self, fields: dict[str, Any]):
        super().__init__()
        self.fields = dict(fields)
        width = fields["hidden_size"]
        self.max_length = fields["max_position_embeddings"]
        self.eos_token_id = fields["eos_token_id"]
        self.tok = nn.Embedding(fields["vocab_size"], width)
        self.pos = nn.Embedding(self.max_length, width)
        self.blocks = nn.ModuleList(Block(fields) for _ in range(fields["num_hidden_layers"]))
        self.ln = nn.LayerNorm(width, eps=fields["layer_norm_eps"])
        proj = fields.get("projection_dim")
        self.projection = nn.Linear(width, proj, bias=False) if proj else None

    def forward(self, ids: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """ids (B, L) int64, mask (B, L) bool (False: padding) -> (states (B, L, D): the final
        LayerNorm's output, transformers' last_hidden_state; pooled (B, D): its EOS position)."""
        b, length = ids.shape
        x = self.tok(ids) + self.pos(torch.arange(length, device=ids.device))
        # (B, 1, L, L): query i sees keys j <= i that are not padding
        allowed = torch.ones(length, length, dtype=torch.bool, device=ids.device).tril()[None, None]
        if mask is not None:
            allowed = allowed & mask.bool()[:, None, None, :]
        allowed = allowed | ~allowed.any(-1, keepdim=True)  # a row with no key (no BOS) stays finite
        for block in self.blocks:
            x = block(x, allowed)
        states = self.ln(x)
        if self.eos_token_id == 2:
            # configs from before transformers#24773 name EOS 2: CLIP's EOS has the largest id
            where = ids.argmax(-1)
        else:
            where = (ids == self.eos_token_id).int().argmax(-1)  # the first EOS: padding may be EOS too
        return states, states[torch.arange(b, device=ids.device), where]

    def embed(self, ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, P): text_projection(pooled), transformers' text_embeds (before normalisation)."""
        if self.projection is None:
            raise ConfigError("this CLIP text encoder has no text_projection (a CLIPTextModel save): "
                               "a CLIP score needs a CLIPModel or CLIPTextModelWithProjection save")
        return self.projection(self(ids, mask)[1])


class ClipVisionEncoder(nn.Module):
    """CLIPVisionTransformer + visual_projection, built from ``ClipFiles.vision``."""

    def __init__(self, fields: dict[str, Any]):
        super().__init__()
        self.fields = dict(fields)
        width, self.image_size, patch = fields["hidden_size"], fields["image_size"], fields["patch_size"]
        self.patch = nn.Conv2d(3, width, patch, patch, bias=False)
        self.cls = nn.Parameter(torch.zeros(width))
        self.pos = nn.Embedding((self.image_size // patch) ** 2 + 1, width)
        self.ln_pre = nn.LayerNorm(width, eps=fields["layer_norm_eps"])
        self.blocks = nn.ModuleList(Block(fields) for _ in range(fields["num_hidden_layers"]))
        self.ln_post = nn.LayerNorm(width, eps=fields["layer_norm_eps"])
        proj = fields.get("projection_dim")
        self.projection = nn.Linear(width, proj, bias=False) if proj else None

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """pixels (N, 3, S, S), as clip_preprocess makes them -> (states (N, 1 + patches, D):
        last_hidden_state, before any LayerNorm after the blocks; pooled (N, D): post-LN class token)."""
        if tuple(pixels.shape[1:]) != (3, self.image_size, self.image_size):
            raise ValueError(f"CLIP's vision tower takes (N, 3, {self.image_size}, {self.image_size}) pixels, "
                             f"got {tuple(pixels.shape)}: use clip_preprocess")
        x = self.patch(pixels.to(self.patch.weight.dtype)).flatten(2).transpose(1, 2)  # (N, patches, D)
        x = torch.cat([self.cls.expand(x.shape[0], 1, -1), x], 1) + self.pos.weight
        x = self.ln_pre(x)
        for block in self.blocks:
            x = block(x, None)
        return x, self.ln_post(x[:, 0])

    def embed(self, pixels: torch.Tensor) -> torch.Tensor:
        """(N, P): visual_projection(pooled), transformers' image_embeds (before normalisation)."""
        if self.projection is None:
            raise ConfigError("this CLIP vision encoder has no visual_projection")
        return self.projection(self(pixels)[1])


class ClipEncoder(TextEncoder):
    """A CLIP text tower, frozen: its final LayerNorm's states (what Stable Diffusion's U-Net
    attends to), over CLIP's tokenization of the caption. ``section``: the run's ``text["clip"]``,
    hub/clip.py's text fields plus the tokenizer's JSON."""

    def __init__(self, section: dict[str, Any], length: int):
        super().__init__()
        self.clip = ClipTextEncoder({k: v for k, v in section.items() if k != "tokenizer"})
        self.tokenizer = section["tokenizer"]
        self.dim, self.length = section["hidden_size"], length

    def tokenize(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        return tokenize(texts, self.tokenizer, self.length)

    def tokens_needed(self, text: str) -> int:
        from tokenizers import Tokenizer

        if not hasattr(self, "_counter"):  # a copy that neither cuts nor pads (tokenize's does both)
            self._counter = Tokenizer.from_str(self.tokenizer)
            self._counter.no_truncation()
            self._counter.no_padding()
        return len(self._counter.encode(text).ids)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.clip(ids, mask)[0]
