"""Caption conditioning: the text encoders that turn a caption into the token embeddings a
denoiser attends to (encoders.py), chosen per run with ``--text-encoder``.

A captioned run's ``model`` section holds a ``text`` section: which encoder, its own fields, its
token length and width, and the fixed prompts its previews draw. The encoder is one of the run's
modules (``text``), saved with its weights, so a run samples and exports without its sources.
Light to import (no torch): the option is read by ``aigc train diffusion --help``.
"""

from aigc_cli.core.options import Option

ENCODERS = ("learned", "run", "clip")  # the kinds a --text-encoder value resolves to
LEARNED = "learned"

TEXT_ENCODER = Option(
    "text_encoder", str, LEARNED,
    "Caption encoder of a captioned dataset: learned (a small byte-level transformer trained with the "
    "U-Net), the name or id of an aigc GPT text run (frozen), or a CLIP text model in the Hugging Face "
    "format (a folder or hub id, safetensors only; frozen).")

# Where frozen encoders come from is known above this package (an aigc run, a CLIP folder:
# training/text_encoders.py registers how to read them); ``encoder_section`` asks each in turn.
_SOURCES: list = []


def register_source(resolve) -> None:
    """``resolve(value) -> the text section (without prompts), or None when ``value`` is not
    one of its sources``."""
    _SOURCES.append(resolve)


def encoder_section(value: str) -> dict:
    """The ``text`` section (less its preview prompts) a --text-encoder value stands for."""
    from aigc_cli.core.errors import OptionError

    if value == LEARNED:
        from aigc_cli.models.captions.encoders import learned_section

        return learned_section()
    for resolve in _SOURCES:
        section = resolve(value)
        if section is not None:
            return section
    raise OptionError("text_encoder", f"{value!r} is not 'learned', an aigc text run or a CLIP model folder")
