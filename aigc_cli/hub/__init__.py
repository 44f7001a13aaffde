"""Pre-trained models from elsewhere: ``aigc import SOURCE`` turns a checkpoint in another
library's format (a local folder, or a Hugging Face hub id) into an ordinary aigc run.

Each supported format is a module here that registers an :class:`~aigc_cli.hub.formats.ImportFormat`
(gpt2.py: transformers' GPT2LMHeadModel; diffusers_unet.py: diffusers' UNet2DModel with its
scheduler); importer.py finds the files, picks the format and writes the run.
"""
