"""rnninfer: fast CPU inference for stacked LSTM/GRU/RNN models.

Typical use::

    import rnninfer
    model = rnninfer.load("model.npz")
    model.predict([12, 7, 99])
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ._version import __version__
from .converters.base import Probe
from .errors import ModelFormatError
from .model import Model, build, load
from .serving.batcher import Batcher, Overloaded

if TYPE_CHECKING:
    from .serving.stream import Stream


def __getattr__(name: str) -> Any:
    # Stream's module loads the compiled engine; ``import rnninfer`` does not
    # (the file format and the converters work without it), so it loads on first use.
    if name == "Stream":
        from .serving.stream import Stream

        return Stream
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | {"Stream"})


def isa() -> str:
    """The instruction set the engine's kernels use in this process."""
    from . import _core

    return str(_core.active_isa())


def from_keras(src: object, *, check: bool = True, tolerance: float = 1e-4) -> Model:
    """Convert a Keras model (``.keras``, ``.h5`` or in-memory ``keras.Model``).

    See ``docs/keras.md``. Reading files needs h5py, not TensorFlow. An
    in-memory model is also run on a small random input and, with ``check``,
    the converted model must agree with it within ``tolerance`` (relative to
    the output's magnitude, at least absolute).

    Raises:
        ValueError: also when the converted model disagrees with the source.
    """
    from .converters.keras import convert_keras, keras_probe

    conv = convert_keras(src)
    model = Model._from_checked(conv.checked, producer=conv.producer)
    if check and not isinstance(src, (str, os.PathLike)):
        _check(model, keras_probe(src, conv.spec), tolerance, "the Keras model")
    return model


def _check(model: Model, probe: Probe | None, tolerance: float, what: str) -> None:
    """Compare a converted model with its source's output on the probe's input."""
    if probe is None:
        return
    got = np.asarray(model.predict(probe.inputs, lengths=probe.lengths))
    diff = probe.max_difference(got)
    scale = max(1.0, float(np.max(np.abs(probe.expected)))) if len(probe.expected) else 1.0
    if not diff <= tolerance * scale:
        raise ValueError(
            f"the converted model disagrees with {what} on an example input: max difference "
            f"{diff:.3g} (tolerance {tolerance * scale:.3g}); rnninfer's reading of the source "
            "misses something it computes. Please report it; pass check=False to skip this check"
        )


def from_torch(
    src: object,
    *,
    readout: str | None = None,
    head_activation: str | None = None,
    hidden_activation: str | None = None,
    nonlinearity: str = "tanh",
    example_inputs: Sequence[Any] | None = None,
    check: bool = True,
    tolerance: float = 1e-4,
) -> Model:
    """Convert a PyTorch model (module, state dict, ``.pt``/``.pth``, ``.safetensors``).

    An ``nn.Module``'s ``forward`` is run once on an example input to read
    what it computes (readout, direction order, activations); with ``check``
    the converted model is run on the same input and must agree with the
    module's output within ``tolerance``. See ``docs/torch.md`` and
    :func:`rnninfer.converters.torch.convert_torch` for the other arguments.

    Raises:
        ValueError: also when the converted model disagrees with the module
            (the message names the largest difference).
    """
    from .converters.torch import convert_torch_probed

    conv, probe = convert_torch_probed(
        src,
        readout=readout,
        head_activation=head_activation,
        hidden_activation=hidden_activation,
        nonlinearity=nonlinearity,
        example_inputs=example_inputs,
    )
    model = Model._from_checked(conv.checked, producer=conv.producer)
    if check:
        _check(model, probe, tolerance, "the module's forward")
    return model


__all__ = [
    "Batcher",
    "Model",
    "ModelFormatError",
    "Overloaded",
    "Stream",
    "__version__",
    "build",
    "from_keras",
    "from_torch",
    "isa",
    "load",
]
