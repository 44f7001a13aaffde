"""Datasets: named (downloaded once, checksummed, cached), built-in, and paths on disk."""

from aigc_cli.data.base import DATASETS, ImageDataset, list_datasets, register_dataset
from aigc_cli.data.load import load_dataset

__all__ = ["DATASETS", "ImageDataset", "list_datasets", "load_dataset", "register_dataset"]
