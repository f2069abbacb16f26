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

FORMAT_NAME = "rnninfer"
FORMAT_VERSION = 2

CELLS = ("lstm", "gru", "rnn")
DIRECTIONS = ("forward", "backward", "bidirectional")
MERGE_MODES = ("concat", "sum", "mul", "ave")
READOUTS = ("last", "sequence", "mean", "max")
INPUT_KINDS = ("tokens", "features")

#: Element-wise activations usable inside a cell and in a head layer.
#: ``hard_sigmoid`` is Keras 3's ``relu6(x + 3) / 6``; ``hard_sigmoid_keras2`` is
#: Keras 2's ``clip(0.2 x + 0.5, 0, 1)``; ``leaky_relu`` has slope 0.2 (Keras);
#: ``gelu`` is the exact (erf) form.
ELEMENTWISE_ACTIVATIONS = (
    "linear",
    "relu",
    "tanh",
    "sigmoid",
    "hard_sigmoid",
    "hard_sigmoid_keras2",
    "elu",
    "selu",
    "softplus",
    "softsign",
    "swish",
    "gelu",
    "exponential",
    "relu6",
    "leaky_relu",
    "mish",
    "hard_swish",
)
#: Activations over a whole output vector, allowed in head layers only.
VECTOR_ACTIVATIONS = ("softmax", "log_softmax")
HEAD_ACTIVATIONS = ELEMENTWISE_ACTIVATIONS + VECTOR_ACTIVATIONS

GATES = {"lstm": 4, "gru": 3, "rnn": 1}


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


def validate_spec(spec: ModelSpec) -> list[str]:
    """Every problem with a spec's hyper-parameters, as readable sentences."""
    p: list[str] = []
    inp = spec.input

    def pos_int(v: Any, what: str) -> bool:
        ok = isinstance(v, int) and not isinstance(v, bool) and v > 0
        if not ok:
            p.append(f"{what} must be a positive integer, got {v!r}")
        return ok

    if inp.kind not in INPUT_KINDS:
        p.append(f"input.kind must be one of {INPUT_KINDS}, got {inp.kind!r}")
    elif inp.kind == "tokens":
        pos_int(inp.vocab_size, "input.vocab_size")
        pos_int(inp.embedding_dim, "input.embedding_dim")
        if inp.mask_value is not None:
            p.append("input.mask_value applies to feature input only")
    else:
        pos_int(inp.features, "input.features")
        if inp.mask_zero:
            p.append("input.mask_zero applies to token input only")
        if inp.mask_value is not None and not isinstance(inp.mask_value, (int, float)):
            p.append(f"input.mask_value must be a number or null, got {inp.mask_value!r}")
    if not isinstance(inp.mask_zero, bool):
        p.append("input.mask_zero must be a boolean")
    if not isinstance(spec.layers, tuple) or len(spec.layers) == 0:
        p.append("a model needs at least one recurrent layer")
    for i, layer in enumerate(spec.layers):
        w = f"layers[{i}]"
        if layer.cell not in CELLS:
            p.append(f"{w}: unknown layer kind (cell) {layer.cell!r}; known: {CELLS}")
            continue
        pos_int(layer.units, f"{w}.units")
        if layer.direction not in DIRECTIONS:
            p.append(f"{w}.direction must be one of {DIRECTIONS}, got {layer.direction!r}")
        if layer.merge not in MERGE_MODES:
            p.append(f"{w}.merge must be one of {MERGE_MODES}, got {layer.merge!r}")
        for attr in ("activation", "recurrent_activation"):
            if getattr(layer, attr) not in ELEMENTWISE_ACTIVATIONS:
                p.append(
                    f"{w}.{attr} {getattr(layer, attr)!r} is not supported; "
                    f"supported: {ELEMENTWISE_ACTIVATIONS}"
                )
        for attr in ("reset_after", "bias"):
            if not isinstance(getattr(layer, attr), bool):
                p.append(f"{w}.{attr} must be a boolean")
        if not isinstance(layer.proj_size, int) or isinstance(layer.proj_size, bool):
            p.append(f"{w}.proj_size must be an integer")
        elif layer.proj_size < 0:
            p.append(f"{w}.proj_size must be >= 0")
        elif layer.proj_size and layer.cell != "lstm":
            p.append(f"{w}.proj_size is only valid for lstm cells")
        elif layer.proj_size and isinstance(layer.units, int) and layer.proj_size >= layer.units:
            p.append(f"{w}.proj_size ({layer.proj_size}) must be smaller than units ({layer.units})")
        r = layer.residual_from
        if r is not None:
            if not isinstance(r, int) or isinstance(r, bool) or r < -1 or r >= i:
                p.append(f"{w}.residual_from must be -1 or an earlier layer index, got {r!r}")
            elif not p and spec.stream_width(r) != layer.output_width:
                p.append(
                    f"{w}.residual_from={r}: width {spec.stream_width(r)} does not match "
                    f"the layer's output width {layer.output_width}"
                )
    if spec.readout not in READOUTS:
        p.append(f"readout must be one of {READOUTS}, got {spec.readout!r}")
    elif spec.readout == "last" and spec.layers and spec.layers[-1].residual_from is not None:
        p.append("a residual link on the top layer needs readout 'sequence', 'mean' or 'max'")
    for j, d in enumerate(spec.head):
        pos_int(d.units, f"head[{j}].units")
        if d.activation not in HEAD_ACTIVATIONS:
            p.append(
                f"head[{j}].activation {d.activation!r} is not supported; "
                f"supported: {HEAD_ACTIVATIONS}"
            )
        if not isinstance(d.bias, bool):
            p.append(f"head[{j}].bias must be a boolean")
    return p
