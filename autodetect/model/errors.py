"""Errors of the model package (TensorFlow-free, so any worker can catch them)."""

from __future__ import annotations


class WeightsUnavailable(RuntimeError):
    """Pretrained backbone weights could not be found or fetched. The message says how to supply them."""


class ModelArtifactError(RuntimeError):
    """A model bundle or serving file is missing, unreadable or inconsistent with its labels."""
