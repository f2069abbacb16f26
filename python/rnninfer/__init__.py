"""rnninfer: fast CPU inference for stacked LSTM/GRU/RNN models.

Typical use::

    import rnninfer
    model = rnninfer.load("model.npz")
    model.predict([12, 7, 99])
"""

from __future__ import annotations

from ._version import __version__
from .errors import ModelFormatError
from .model import Model, build, load
from .serving.batcher import Batcher, Overloaded


def isa() -> str:
    """The instruction set the engine's kernels use in this process."""
    from . import _core

    return str(_core.active_isa())


def from_keras(src: object) -> Model:
    """Convert a Keras model (``.keras``, ``.h5`` or in-memory ``keras.Model``).

    See ``docs/keras.md``. Reading files needs h5py, not TensorFlow.
    """
    from .converters.keras import from_keras as _from_keras

    return _from_keras(src)


def from_torch(
    src: object,
    *,
    readout: str = "last",
    head_activation: str | None = None,
    hidden_activation: str | None = None,
    nonlinearity: str = "tanh",
) -> Model:
    """Convert a PyTorch model (module, state dict, ``.pt``/``.pth``, ``.safetensors``).

    See ``docs/torch.md``.
    """
    from .converters.torch import from_torch as _from_torch

    return _from_torch(
        src,
        readout=readout,
        head_activation=head_activation,
        hidden_activation=hidden_activation,
        nonlinearity=nonlinearity,
    )


__all__ = [
    "Batcher",
    "Model",
    "ModelFormatError",
    "Overloaded",
    "__version__",
    "build",
    "from_keras",
    "from_torch",
    "isa",
    "load",
]
