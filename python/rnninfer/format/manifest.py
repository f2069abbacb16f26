"""The model description carried in a model file's manifest.

These dataclasses are the single description of a model that every part of
rnninfer shares: converters produce them, the file stores them as JSON, the
reference executor interprets them and the C++ engine receives them. They hold
hyper-parameters only; weights travel separately as named tensors (see
:mod:`rnninfer.format.spec`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

# The enumerated names live in one table (kinds.py); re-exported for existing imports.
from .kinds import (
    CELLS,
    DIRECTIONS,
    ELEMENTWISE_ACTIVATIONS,
    GATES,
    HEAD_ACTIVATIONS,
    INPUT_KINDS,
    MERGE_MODES,
    READOUTS,
    VECTOR_ACTIVATIONS,
)

FORMAT_NAME = "rnninfer"
FORMAT_VERSION = 2


@dataclass(frozen=True)
class InputSpec:
    """What the model reads.

    Attributes:
        kind: ``"tokens"`` (integer ids through an embedding table) or
            ``"features"`` (float vectors fed straight to the first layer).
        vocab_size: rows of the embedding table (tokens only).
        embedding_dim: width of an embedding row (tokens only).
        features: width of a feature vector (features only).
        mask_zero: token id 0 is skipped wherever it occurs (Keras
            ``Embedding(mask_zero=True)``).
        mask_value: a feature step whose every value equals this is skipped
            (Keras ``Masking``); ``None`` for no masking.
    """

    kind: str = "tokens"
    vocab_size: int = 0
    embedding_dim: int = 0
    features: int = 0
    mask_zero: bool = False
    mask_value: float | None = None

    @property
    def width(self) -> int:
        """Width of the vectors the first recurrent layer reads."""
        return self.embedding_dim if self.kind == "tokens" else self.features


@dataclass(frozen=True)
class RecurrentSpec:
    """One recurrent layer, possibly bidirectional.

    Attributes:
        cell: ``"lstm"``, ``"gru"`` or ``"rnn"``.
        units: hidden size ``H`` of one direction.
        direction: ``"forward"``, ``"backward"`` (reads each sequence from its
            own last step to its first; outputs stay aligned with the input
            steps) or ``"bidirectional"``.
        merge: how a bidirectional layer combines its two directions.
        activation: the cell's candidate/output activation (tanh by default).
        recurrent_activation: the gate activation (sigmoid by default);
            ignored by plain RNN cells.
        reset_after: GRU only: apply the reset gate after the recurrent
            product (PyTorch, Keras default) or before it (Keras
            ``reset_after=False``).
        proj_size: LSTM only: width ``P`` of the projected hidden state, 0 for
            no projection.
        bias: whether the layer has bias tensors.
        residual_from: add a stream to this layer's merged output: ``-1`` is
            the model input (embedding output or features), ``i >= 0`` the
            output of layer ``i`` (which must come before this one).
    """

    cell: str
    units: int
    direction: str = "forward"
    merge: str = "concat"
    activation: str = "tanh"
    recurrent_activation: str = "sigmoid"
    reset_after: bool = True
    proj_size: int = 0
    bias: bool = True
    residual_from: int | None = None

    @property
    def num_directions(self) -> int:
        """1 or 2."""
        return 2 if self.direction == "bidirectional" else 1

    @property
    def direction_width(self) -> int:
        """Width of one direction's hidden output (``P`` if projected, else ``H``)."""
        return self.proj_size if self.proj_size else self.units

    @property
    def output_width(self) -> int:
        """Width of the layer's merged output."""
        w = self.direction_width
        return 2 * w if (self.num_directions == 2 and self.merge == "concat") else w


@dataclass(frozen=True)
class DenseSpec:
    """One fully connected head layer: ``y = activation(W x + b)``."""

    units: int
    activation: str = "linear"
    bias: bool = True


@dataclass(frozen=True)
class ModelSpec:
    """A whole model: input, recurrent stack, readout and head.

    Attributes:
        input: what the model reads.
        layers: recurrent layers, bottom first.
        readout: ``"last"`` (final state of the top layer, directions merged),
            ``"sequence"`` (head applied at every step), ``"mean"`` or
            ``"max"`` (mask-aware pooling over the top layer's valid steps).
        head: dense layers applied after the readout, in order.
        name: a free-form model name.
    """

    input: InputSpec
    layers: tuple[RecurrentSpec, ...]
    readout: str = "last"
    head: tuple[DenseSpec, ...] = ()
    name: str = "model"
    extras: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def top_width(self) -> int:
        """Width of the top recurrent layer's output."""
        return self.layers[-1].output_width if self.layers else self.input.width

    @property
    def output_width(self) -> int:
        """Width of one output row of ``predict``."""
        return self.head[-1].units if self.head else self.top_width

    def stream_width(self, index: int) -> int:
        """Width of stream ``index`` (-1 = model input, i = output of layer i)."""
        return self.input.width if index < 0 else self.layers[index].output_width

    # ---- JSON ------------------------------------------------------------------
    def to_json_dict(self) -> dict[str, Any]:
        """The ``model`` section of the manifest."""
        return {
            "name": self.name,
            "input": dataclasses.asdict(self.input),
            "layers": [dataclasses.asdict(layer) for layer in self.layers],
            "readout": self.readout,
            "head": [dataclasses.asdict(d) for d in self.head],
            **({"extras": self.extras} if self.extras else {}),
        }

    @staticmethod
    def from_json_dict(d: Any) -> ModelSpec:
        """Build from the ``model`` section; raises ``ValueError``/``TypeError``/``KeyError``."""
        if not isinstance(d, dict):
            raise TypeError("'model' must be a JSON object")
        inp = _make(InputSpec, d["input"], "input")
        layers = tuple(
            _make(RecurrentSpec, x, f"layers[{i}]") for i, x in enumerate(_as_list(d["layers"]))
        )
        head = tuple(_make(DenseSpec, x, f"head[{i}]") for i, x in enumerate(_as_list(d["head"])))
        extras = d.get("extras", {})
        return ModelSpec(
            input=inp,
            layers=layers,
            readout=d["readout"],
            head=head,
            name=str(d.get("name", "model")),
            extras=extras if isinstance(extras, dict) else {},
        )


def _as_list(x: Any) -> list[Any]:
    if not isinstance(x, list):
        raise TypeError(f"expected a JSON list, got {type(x).__name__}")
    return x


def _make(cls: Any, d: Any, where: str) -> Any:
    if not isinstance(d, dict):
        raise TypeError(f"{where} must be a JSON object")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - names
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)}")
    return cls(**d)


__all__ = [
    "CELLS",
    "DIRECTIONS",
    "ELEMENTWISE_ACTIVATIONS",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "GATES",
    "HEAD_ACTIVATIONS",
    "INPUT_KINDS",
    "MERGE_MODES",
    "READOUTS",
    "VECTOR_ACTIVATIONS",
    "DenseSpec",
    "InputSpec",
    "ModelSpec",
    "RecurrentSpec",
    "validate_spec",
]


def validate_spec(spec: ModelSpec) -> list[str]:
    """Every problem with a spec's hyper-parameters (see :func:`rnninfer.format.checked.spec_problems`)."""
    from .checked import spec_problems

    return spec_problems(spec)
