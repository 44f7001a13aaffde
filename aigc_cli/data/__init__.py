"""Datasets: named (downloaded once, checksummed, cached), built-in, and paths on disk; images
(``load_dataset``) and text corpora (``load_corpus``), picked by what a family trains on."""

from aigc_cli.data.base import DATASETS, ImageDataset, list_datasets, register_dataset
from aigc_cli.data.load import load_dataset
from aigc_cli.data.text import CORPORA, TextCorpus, list_corpora, load_corpus

LOADERS = {"images": load_dataset, "text": load_corpus}  # by models/registry.py's PRODUCTS


def load_data(produces: str, spec: str, split: str = "train", progress=None, resolution: int | None = None,
              crop: str = "center", caption_column: str = "text"):
    """The training data of a family that produces ``produces``: an ImageDataset (at
    ``resolution``, when given, with ``crop``; an image folder's captions from ``caption_column``)
    or a TextCorpus."""
    if produces == "images":
        return load_dataset(spec, split, progress=progress, resolution=resolution, crop=crop,
                            caption_column=caption_column)
    return LOADERS[produces](spec, split, progress=progress)


__all__ = ["CORPORA", "DATASETS", "ImageDataset", "LOADERS", "TextCorpus", "list_corpora", "list_datasets",
           "load_corpus", "load_data", "load_dataset", "register_dataset"]
