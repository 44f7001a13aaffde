"""Text-image agreement of a captioned run: does it draw what its prompts say? ``aigc eval
agreement RUN DATASET`` draws one image per caption of ``n`` picked from a captioned dataset and
judges each against its caption:

- with a CLIP model (``clip=``: a folder or hub id): the CLIP score, 100 x the cosine of CLIP's
  image and text embeddings, floored at 0 (Hessel et al. 2021; torchmetrics' definition);
- without one, for captions in the built-in shapes-captions template: the factor checker
  (metrics/shapes_check.py), the share of images whose shape, colour, size and position read
  back from their pixels as the caption names them, each and all four;
- otherwise there is no judge, and it says so (give a CLIP model).

```python
from aigc_cli.metrics.agreement import agreement
result = agreement("last", "shapes-captions", split="test", n=512)   # result["all"]: share all right
```
"""

from __future__ import annotations

from typing import Any

from aigc_cli.core.errors import ConfigError, opt

AGREEMENT_N = 1000  # images drawn (one per picked caption)


def agreement(run: str, dataset: str, *, split: str = "train", n: int = AGREEMENT_N, seed: int = 0,
              clip: str | None = None, device: Any = "cpu", batch_size: int = 256,
              generation: dict[str, Any] | None = None) -> dict[str, Any]:
    """What ``aigc eval agreement`` prints with --json."""
    from aigc_cli.data.load import load_dataset
    from aigc_cli.generation import load_generator
    from aigc_cli.metrics.sides import pick_captions

    if n < 1:
        raise ConfigError("-n must be at least 1")
    gen = load_generator(run, device, command="eval fid")
    if "negative_prompt" not in gen.conditions:
        raise ConfigError(f"{gen.run.id} is not a captioned run: agreement compares images with the captions they "
                          "were drawn from")
    ds = load_dataset(dataset, split)
    if not ds.captioned:
        raise ConfigError(f"{ds.name} has no captions to draw from; give a captioned dataset (shapes-captions, a "
                          "folder with metadata.jsonl or .txt captions)")
    prompts = pick_captions(ds.captions, n, seed)
    judge = _judge(prompts, clip)
    options = gen.options(generation or {})
    if options.get("prompt") is not None:
        raise ConfigError(f"agreement draws from the dataset's captions; drop {opt('prompt')}")
    images = gen.sample_uint8(n, seed, batch_size=batch_size, prompts=prompts, **options)
    result = {"run": gen.run.id, "dataset": ds.name, "split": split, "n": n, "seed": seed,
              **{k: v for k, v in options.items() if v is not None}}
    result.update(judge(images, prompts))
    return result


def _judge(prompts: list[str], clip: str | None):
    """The scorer for these prompts: CLIP when given, the shapes checker when every prompt is in
    its template, else a one-line error (before any image is drawn)."""
    if clip is not None:
        from aigc_cli.hub.clip import clip_score, load_clip

        text, vision, tokenizer = load_clip(clip)
        if vision is None:
            raise ConfigError(f"{opt('clip')} {clip} is a text-only CLIP save; a CLIP score needs both towers "
                              "(a CLIPModel save)")

        def by_clip(images, texts):
            scores = clip_score(text, vision, images, texts, tokenizer)
            return {"judge": "clip", "clip": clip, "clip_score": float(scores.mean()),
                    "clip_score_std": float(scores.std()) if len(scores) > 1 else 0.0}

        return by_clip
    from aigc_cli.data.shapes_captions import parse_caption

    if all(parse_caption(p) is not None for p in prompts):
        from aigc_cli.metrics.shapes_check import agreement as factors

        return lambda images, texts: {"judge": "shapes-factors", **factors(images, texts)}
    raise ConfigError(f"no judge for these captions: give {opt('clip')} MODEL (a CLIP folder or hub id) for a CLIP "
                      "score; without one only shapes-captions' captions are judged (by their factors)")
