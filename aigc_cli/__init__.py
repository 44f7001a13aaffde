"""aigc: train, sample, evaluate and export small generative image models."""

__version__ = "0.1.0"
