"""Gate orders and activation names shared by the converters (pure numpy, no rnninfer types).

The canonical layout is PyTorch's (``docs/format.md``): LSTM gates ``i, f, g,
o``; GRU ``r, z, n``. Keras keeps LSTM gates in the same order but GRU gates
as ``z, r, h``, and stores kernels transposed; these helpers do exactly that
reordering, never any arithmetic.
"""

from __future__ import annotations

import numpy as np

from ..format.manifest import ELEMENTWISE_ACTIVATIONS, HEAD_ACTIVATIONS

__all__ = [
    "KERAS2_ACTIVATIONS",
    "KERAS3_ACTIVATIONS",
    "TORCH_ACTIVATION_MODULES",
    "head_activation_option",
    "hidden_activation_option",
    "keras_gru_order",
]


def keras_gru_order(a: np.ndarray, units: int) -> np.ndarray:
    """Keras GRU gate blocks z, r, h -> canonical r, z, n along the last axis."""
    z, r, h = (a[..., k * units : (k + 1) * units] for k in range(3))
    return np.concatenate([r, z, h], axis=-1)


#: Keras activation names -> rnninfer names. ``hard_sigmoid`` is resolved by
#: Keras major version by the caller because its definition changed.
KERAS3_ACTIVATIONS = {
    "linear": "linear",
    "relu": "relu",
    "tanh": "tanh",
    "sigmoid": "sigmoid",
    "elu": "elu",
    "selu": "selu",
    "softplus": "softplus",
    "softsign": "softsign",
    "swish": "swish",
    "silu": "swish",
    "gelu": "gelu",
    "exponential": "exponential",
    "relu6": "relu6",
    "leaky_relu": "leaky_relu",
    "mish": "mish",
    "hard_silu": "hard_swish",
    "hard_swish": "hard_swish",
    "softmax": "softmax",
    "log_softmax": "log_softmax",
}
#: Keras 2 (tf.keras / tf_keras) names; a smaller set, with the same meaning.
KERAS2_ACTIVATIONS = {
    k: v
    for k, v in KERAS3_ACTIVATIONS.items()
    if k not in ("relu6", "leaky_relu", "hard_silu", "hard_swish", "log_softmax")
}

#: PyTorch activation modules (class names in ``torch.nn``) whose definition is
#: exactly the manifest's, whatever their arguments; modules with arguments
#: that matter (GELU, ELU, LeakyReLU, Softplus, Softmax) are checked by the
#: torch converter itself.
TORCH_ACTIVATION_MODULES = {
    "ReLU": "relu",
    "Tanh": "tanh",
    "Sigmoid": "sigmoid",
    "SiLU": "swish",
    "SELU": "selu",
    "Softsign": "softsign",
    "ReLU6": "relu6",
    "Mish": "mish",
    "Hardswish": "hard_swish",
    "Hardsigmoid": "hard_sigmoid",
}

#: PyTorch / user spellings accepted by the torch options.
_ACT_ALIASES = {
    "identity": "linear",
    "none": "linear",
    "silu": "swish",
    "hardsigmoid": "hard_sigmoid",
    "hardswish": "hard_swish",
    "logsoftmax": "log_softmax",
}


def _activation_option(option: str, name: str, allowed: tuple[str, ...], hint: str) -> str:
    """A user's activation name (torch spellings accepted) checked against ``allowed``."""
    if not isinstance(name, str):
        raise TypeError(f"{option} must be a string or None, got {type(name).__name__}")
    act = _ACT_ALIASES.get(name.lower(), name.lower())
    if act not in allowed:
        raise ValueError(f"{option} {name!r} is not supported; use {hint}{allowed}")
    return act


def head_activation_option(name: str | None) -> str:
    """The ``head_activation`` option as a manifest name (``None`` -> ``"linear"``)."""
    if name is None:
        return "linear"
    return _activation_option("head_activation", name, HEAD_ACTIVATIONS,
                              "None, 'sigmoid', 'softmax', 'tanh', 'relu' or one of ")


def hidden_activation_option(name: str | None) -> str | None:
    """The ``hidden_activation`` option as a manifest name (``None`` stays ``None``)."""
    if name is None:
        return None
    return _activation_option("hidden_activation", name, ELEMENTWISE_ACTIVATIONS, "'identity' or one of ")
