"""Building a model in Python, without any framework.

A model is written as the list of its layers, as one would in Keras::

    import rnninfer
    from rnninfer.layers import Embedding, LSTM, Dense

    model = rnninfer.build(
        [Embedding(20000, 128), LSTM(256), LSTM(256), Dense(1, activation="sigmoid")],
        seed=0,
    )

Recurrent layers below the top one always pass their whole sequence up. The
top layer's ``return_sequences=True`` makes the model return one row per step;
a ``GlobalAveragePooling``/``GlobalMaxPooling`` after it pools the valid steps;
otherwise the head reads the top layer's final state.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .format.checked import spec_problems
from .format.manifest import DenseSpec, InputSpec, ModelSpec, RecurrentSpec
from .format.spec import DTYPE, expected_tensors

__all__ = [
    "GRU",
    "LSTM",
    "RNN",
    "Dense",
    "Embedding",
    "Features",
    "GlobalAveragePooling",
    "GlobalMaxPooling",
    "Layer",
    "make_spec",
    "random_tensors",
]


class Layer:
    """Base class of the layer descriptions accepted by :func:`rnninfer.build`."""


@dataclass(frozen=True)
class Embedding(Layer):
    """Token input: ``vocab_size`` rows of width ``dim``; ``mask_zero`` skips id 0."""

    vocab_size: int
    dim: int
    mask_zero: bool = False


@dataclass(frozen=True)
class Features(Layer):
    """Float-vector input of width ``features``; steps equal to ``mask_value`` are skipped."""

    features: int
    mask_value: float | None = None


@dataclass(frozen=True)
class _Recurrent(Layer):
    units: int
    bidirectional: bool = False
    merge: str = "concat"
    go_backwards: bool = False
    activation: str = "tanh"
    recurrent_activation: str = "sigmoid"
    bias: bool = True
    residual: bool | int = False
    return_sequences: bool | None = None

    cell = ""

    def _spec(self, index: int, **extra: object) -> RecurrentSpec:
        if self.bidirectional and self.go_backwards:
            raise ValueError(f"layer {index} ({self.cell}): go_backwards with bidirectional")
        direction = "bidirectional" if self.bidirectional else (
            "backward" if self.go_backwards else "forward"
        )
        if self.residual is True:
            residual: int | None = index - 1
        elif self.residual is False:
            residual = None
        else:
            residual = int(self.residual)
        return RecurrentSpec(
            cell=self.cell,
            units=self.units,
            direction=direction,
            merge=self.merge,
            activation=self.activation,
            recurrent_activation=self.recurrent_activation,
            bias=self.bias,
            residual_from=residual,
            **extra,  # type: ignore[arg-type]
        )


@dataclass(frozen=True)
class LSTM(_Recurrent):
    """LSTM layer; ``proj_size > 0`` projects the hidden state (PyTorch ``proj_size``).

    ``residual=True`` adds the layer's input to its output; an integer ``i``
    adds the output of layer ``i`` instead (``-1``: the model input).
    """

    proj_size: int = 0
    cell = "lstm"

    def to_spec(self, index: int) -> RecurrentSpec:
        """The manifest entry for this layer at position ``index``."""
        return self._spec(index, proj_size=self.proj_size)


@dataclass(frozen=True)
class GRU(_Recurrent):
    """GRU layer; ``reset_after`` as in PyTorch/Keras (True) or classic (False)."""

    reset_after: bool = True
    cell = "gru"

    def to_spec(self, index: int) -> RecurrentSpec:
        """The manifest entry for this layer at position ``index``."""
        return self._spec(index, reset_after=self.reset_after)


@dataclass(frozen=True)
class RNN(_Recurrent):
    """Plain (Elman) recurrent layer, ``h = activation(W x + U h + b)``."""

    cell = "rnn"

    def to_spec(self, index: int) -> RecurrentSpec:
        """The manifest entry for this layer at position ``index``."""
        return self._spec(index)


@dataclass(frozen=True)
class Dense(Layer):
    """Fully connected head layer."""

    units: int
    activation: str = "linear"
    bias: bool = True


@dataclass(frozen=True)
class GlobalAveragePooling(Layer):
    """Mean of the top layer's outputs over each sequence's valid steps."""


@dataclass(frozen=True)
class GlobalMaxPooling(Layer):
    """Maximum of the top layer's outputs over each sequence's valid steps."""


def make_spec(layers: Sequence[Layer], *, name: str = "model") -> ModelSpec:
    """Turn a layer list into a validated :class:`ModelSpec`.

    Raises:
        ValueError: naming the layer and position of anything inconsistent.
        TypeError: for an object that is not a layer.
    """
    layers = list(layers)
    if not layers or not isinstance(layers[0], (Embedding, Features)):
        raise ValueError("the first layer must be Embedding(...) or Features(...)")
    first = layers[0]
    if isinstance(first, Embedding):
        inp = InputSpec(
            kind="tokens", vocab_size=first.vocab_size, embedding_dim=first.dim,
            mask_zero=first.mask_zero,
        )
    else:
        inp = InputSpec(kind="features", features=first.features, mask_value=first.mask_value)
    rec: list[RecurrentSpec] = []
    head: list[DenseSpec] = []
    readout = "last"
    prev_return_sequences: bool | None = None
    for pos, layer in enumerate(layers[1:], start=1):
        if isinstance(layer, (LSTM, GRU, RNN)):
            if head or readout in ("mean", "max"):
                raise ValueError(f"layer {pos} ({type(layer).__name__}): recurrent layers must come before pooling and Dense")
            if rec and prev_return_sequences is False:
                raise ValueError(
                    f"layer {pos - 1}: return_sequences=False below another recurrent layer"
                )
            rec.append(layer.to_spec(len(rec)))
            prev_return_sequences = layer.return_sequences
            readout = "sequence" if layer.return_sequences else "last"
        elif isinstance(layer, (GlobalAveragePooling, GlobalMaxPooling)):
            if not rec or readout != "sequence" or head:
                raise ValueError(
                    f"layer {pos} ({type(layer).__name__}) must follow a recurrent layer "
                    "with return_sequences=True"
                )
            readout = "mean" if isinstance(layer, GlobalAveragePooling) else "max"
        elif isinstance(layer, Dense):
            head.append(DenseSpec(units=layer.units, activation=layer.activation, bias=layer.bias))
        elif isinstance(layer, (Embedding, Features)):
            raise ValueError(f"layer {pos} ({type(layer).__name__}): input layers go first only")  # noqa: TRY004
        else:
            raise TypeError(f"layer {pos}: {layer!r} is not an rnninfer layer")
    spec = ModelSpec(input=inp, layers=tuple(rec), readout=readout, head=tuple(head), name=name)
    problems = spec_problems(spec)
    if problems:
        raise ValueError("invalid model: " + "; ".join(problems))
    return spec


def random_tensors(spec: ModelSpec, seed: int) -> dict[str, np.ndarray]:
    """Random canonical tensors for a spec, initialised as PyTorch does.

    Recurrent and dense weights are uniform in ``±1/sqrt(fan)``; embedding rows
    are standard normal.
    """
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for name, shape in expected_tensors(spec).items():
        if name == "embedding.weight":
            t = rng.standard_normal(shape)
        elif name.startswith("layers."):
            units = spec.layers[int(name.split(".")[1])].units
            t = rng.uniform(-1.0, 1.0, shape) / np.sqrt(units)
        else:
            j = int(name.split(".")[1])
            fan_in = expected_tensors(spec)[f"head.{j}.weight"][1]
            t = rng.uniform(-1.0, 1.0, shape) / np.sqrt(fan_in)
        out[name] = t.astype(DTYPE)
    return out


def complete_tensors(
    spec: ModelSpec, weights: Mapping[str, np.ndarray] | None, seed: int | None
) -> dict[str, np.ndarray]:
    """Weights given by the user, with any missing ones drawn from ``seed``."""
    if weights is None and seed is None:
        raise ValueError("give weights=..., seed=..., or both")
    tensors = random_tensors(spec, seed) if seed is not None else {}
    for name, t in (weights or {}).items():
        tensors[name] = np.ascontiguousarray(t, dtype=DTYPE)
    return tensors
