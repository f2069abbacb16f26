"""The model description and the ``.npz`` model file."""

from .manifest import FORMAT_NAME, FORMAT_VERSION, DenseSpec, InputSpec, ModelSpec, RecurrentSpec

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "DenseSpec", "InputSpec", "ModelSpec", "RecurrentSpec"]
