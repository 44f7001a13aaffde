"""aigc: train, sample, evaluate and export small generative image and text models."""

__version__ = "0.1.0"
