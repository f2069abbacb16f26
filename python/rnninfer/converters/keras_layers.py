"""Mapping Keras layers onto rnninfer's spec: the builder and one function per layer kind.

Each mapper reads one layer node of the graph (:mod:`.keras_graph`) with its
config and weights (:mod:`.keras_files`) and appends to the spec being built,
refusing with the layer's name and position whatever it cannot map exactly.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ModelFormatError
from ..format.manifest import ELEMENTWISE_ACTIVATIONS, HEAD_ACTIVATIONS, DenseSpec, RecurrentSpec
from ._gates import KERAS2_ACTIVATIONS, KERAS3_ACTIVATIONS, keras_gru_order
from .keras_files import KerasSource
from .keras_graph import Node, TensorKey

Tensors = dict[str, np.ndarray]

RECURRENT = {"LSTM": "lstm", "GRU": "gru", "SimpleRNN": "rnn"}
#: Layers that do nothing at inference time.
NO_OPS = (
    "Dropout",
    "SpatialDropout1D",
    "GaussianNoise",
    "GaussianDropout",
    "AlphaDropout",
    "ActivityRegularization",
)
SUPPORTED_LAYERS = (
    "InputLayer",
    "Embedding",
    "Masking",
    *RECURRENT,
    "Bidirectional",
    "Dense",
    "TimeDistributed(Dense)",
    "Add",
    "GlobalAveragePooling1D",
    "GlobalMaxPooling1D",
    "Activation",
    *NO_OPS,
)
SUPPORTED_TEXT = ", ".join(SUPPORTED_LAYERS)

_RNN_IGNORED_KEYS = frozenset(
    {
        "name", "trainable", "dtype", "batch_input_shape", "batch_shape", "input_shape",
        "kernel_initializer", "recurrent_initializer", "bias_initializer", "unit_forget_bias",
        "kernel_regularizer", "recurrent_regularizer", "bias_regularizer", "activity_regularizer",
        "kernel_constraint", "recurrent_constraint", "bias_constraint", "dropout",
        "recurrent_dropout", "seed", "unroll", "implementation", "use_cudnn",
        "zero_output_for_mask", "build_config",
    }
)  # fmt: skip
_RNN_HANDLED_KEYS = frozenset(
    {
        "units", "activation", "recurrent_activation", "use_bias", "return_sequences",
        "return_state", "go_backwards", "stateful", "time_major", "reset_after",
    }
)  # fmt: skip
_DENSE_IGNORED_KEYS = frozenset(
    {
        "name", "trainable", "dtype", "batch_input_shape", "batch_shape", "input_shape",
        "kernel_initializer", "bias_initializer", "kernel_regularizer", "bias_regularizer",
        "activity_regularizer", "kernel_constraint", "bias_constraint", "build_config",
    }
)  # fmt: skip
_DENSE_HANDLED_KEYS = frozenset({"units", "activation", "use_bias"})
EMBEDDING_IGNORED_KEYS = frozenset(
    {
        "name", "trainable", "dtype", "batch_input_shape", "batch_shape", "input_shape",
        "embeddings_initializer", "embeddings_regularizer", "activity_regularizer",
        "embeddings_constraint", "input_length", "sparse", "build_config",
    }
)  # fmt: skip
EMBEDDING_HANDLED_KEYS = frozenset({"input_dim", "output_dim", "mask_zero"})


# ---- building the spec ---------------------------------------------------------------
@dataclass
class Desc:
    """What a tensor of the Keras graph is, in rnninfer terms.

    kind: ``raw`` (the model input), ``mask`` (a Keras 3 mask op result),
    ``seq`` (stream ``stream``: -1 = model input after Embedding/Masking,
    i = output of recurrent layer i), ``head`` (after the readout; ``n_head``
    dense layers applied). ``gen`` counts residual Adds applied to a stream:
    a ``seq`` tensor taken before its layer's Add is outdated, because
    rnninfer's stream ``i`` is the layer's output *after* the residual.
    """

    kind: str
    stream: int = -1
    n_head: int = 0
    gen: int = 0


@dataclass
class Builder:
    source: KerasSource
    major: int
    notes: list[str] = field(default_factory=list)
    kind: str | None = None  # "tokens" | "features"
    vocab: int = 0
    emb_dim: int = 0
    features: int = 0
    mask_zero: bool = False
    mask_value: float | None = None
    layers: list[RecurrentSpec] = field(default_factory=list)
    layer_names: list[str] = field(default_factory=list)
    returns_seq: list[bool] = field(default_factory=list)
    readout: str | None = None
    head: list[DenseSpec] = field(default_factory=list)
    tensors: Tensors = field(default_factory=dict)
    max_readout_node: Node | None = None

    # -- helpers ------------------------------------------------------------------
    def fail(self, node: Node, problem: str) -> ValueError:
        return ValueError(
            f"{node.where}: {problem}. rnninfer converts Keras models of the form Input -> "
            "[Embedding | Masking] -> LSTM/GRU/SimpleRNN/Bidirectional layers (with optional Add "
            "residuals) -> [GlobalAverage/MaxPooling1D] -> Dense layers; supported layers: "
            f"{SUPPORTED_TEXT}"
        )

    def gen(self, stream: int) -> int:
        """Residual Adds applied so far to stream ``stream`` (0 or 1)."""
        return int(stream >= 0 and self.layers[stream].residual_from is not None)

    def top_stream(self) -> int:
        return len(self.layers) - 1

    def input_width(self) -> int:
        return self.emb_dim if self.kind == "tokens" else self.features

    def stream_width(self, s: int) -> int:
        return self.input_width() if s < 0 else self.layers[s].output_width

    def activation(self, node: Node, value: Any, option: str, allowed: Sequence[str]) -> str:
        """Map a Keras activation config value to an rnninfer name."""
        name = value
        if isinstance(value, dict):
            # Keras 3 may serialise a built-in activation as {"class_name": "function", "config": "tanh"}.
            name = value.get("config") if value.get("class_name") == "function" else None
            if not isinstance(name, str):
                raise self.fail(node, f"{option}={value!r} is not a built-in activation")
        if name is None:
            name = "linear"
        if not isinstance(name, str):
            raise self.fail(node, f"{option}={value!r} is not a built-in activation")
        if name == "hard_sigmoid":
            # Keras 2 defines hard_sigmoid as clip(0.2x + 0.5); Keras 3 as relu6(x + 3) / 6.
            out = "hard_sigmoid_keras2" if self.major < 3 else "hard_sigmoid"
            note = (
                f"{node.name}: {option}='hard_sigmoid' read as Keras {self.major}'s definition "
                f"({out}) from keras_version {self.source.keras_version or 'unknown'}"
            )
            if note not in self.notes:
                self.notes.append(note)
        else:
            table = KERAS2_ACTIVATIONS if self.major < 3 else KERAS3_ACTIVATIONS
            mapped = table.get(name)
            if mapped is None:
                raise self.fail(
                    node,
                    f"{option}={name!r} is not supported (supported: {[*sorted(table), 'hard_sigmoid']})",
                )
            out = mapped
        if out not in allowed:
            raise self.fail(node, f"{option}={name!r} is not allowed here (allowed: {list(allowed)})")
        return out

    def check_keys(
        self, node: Node, cfg: Mapping[str, Any], ignored: frozenset[str], handled: frozenset[str]
    ) -> None:
        """Refuse config keys this converter does not know, unless they are off."""
        for k, v in cfg.items():
            if k in ignored or k in handled:
                continue
            if v in (None, False, 0, 0.0, "", [], {}):
                continue  # an unknown option that is switched off cannot change the numbers
            raise self.fail(node, f"option {k}={v!r} is not supported")
        self.check_dtype(node, cfg.get("dtype"))

    def check_dtype(self, node: Node, dtype: Any) -> None:
        policy = dtype
        if isinstance(dtype, dict):
            policy = (dtype.get("config") or {}).get("name")
        if policy in (None, "float32"):
            return
        if isinstance(policy, str) and policy.startswith("mixed_"):
            note = f"{node.name}: dtype policy {policy!r}; rnninfer computes in float32"
            if note not in self.notes:
                self.notes.append(note)
            return
        raise self.fail(node, f"dtype policy {policy!r} is not supported (rnninfer runs float32)")

    def weights(self, node: Node, expected: int | Sequence[int]) -> list[np.ndarray]:
        try:
            ws = self.source.weights(node.name, node.cls, node.position)
        except ModelFormatError:
            raise
        except (OSError, KeyError, ValueError, TypeError, RuntimeError) as e:
            # h5py reads lazily, so damage inside the weights surfaces only here.
            raise ModelFormatError(f"{node.where}: cannot read its weights: {type(e).__name__}: {e}") from e
        counts = (expected,) if isinstance(expected, int) else tuple(expected)
        if len(ws) not in counts:
            raise ModelFormatError(
                f"{node.where}: expected {' or '.join(map(str, counts))} weight arrays, found {len(ws)}"
            )
        out = []
        for w in ws:
            a = np.asarray(w)
            if a.dtype.kind != "f":
                raise ModelFormatError(f"{node.where}: weight of dtype {a.dtype} is not floating point")
            out.append(a)
        return out

    @staticmethod
    def expect_shape(node: Node, a: np.ndarray, shape: tuple[int, ...], what: str) -> None:
        if tuple(a.shape) != shape:
            raise ModelFormatError(f"{node.where}: {what} has shape {tuple(a.shape)}, expected {shape}")


def map_recurrent(b: Builder, node: Node, d: Desc) -> Desc:
    cfg = node.config
    if d.kind != "seq":
        raise b.fail(node, "a recurrent layer must read a sequence, but its input is a single vector")
    if b.readout is not None or d.stream != b.top_stream():
        raise b.fail(
            node,
            "a recurrent layer must read the output of the recurrent layer right below it "
            "(branches are not supported)",
        )
    if b.layers and not b.returns_seq[-1]:
        raise b.fail(node, "the recurrent layer below it has return_sequences=False")
    if node.cls == "Bidirectional":
        b.check_keys(
            node,
            cfg,
            frozenset({"name", "trainable", "dtype", "layer", "backward_layer", "build_config"}),
            frozenset({"merge_mode"}),
        )
        inner = cfg.get("layer")
        if not (isinstance(inner, dict) and inner.get("class_name") in RECURRENT):
            what = inner.get("class_name") if isinstance(inner, dict) else inner
            raise b.fail(node, f"Bidirectional wraps {what!r}; supported: {list(RECURRENT)}")
        icfg = inner.get("config") or {}
        merge = cfg.get("merge_mode", "concat")
        if merge not in ("concat", "sum", "mul", "ave"):
            raise b.fail(node, f"merge_mode={merge!r} is not supported (concat, sum, mul, ave)")
        if icfg.get("go_backwards"):
            raise b.fail(node, "a Bidirectional layer whose forward layer has go_backwards=True")
        back = cfg.get("backward_layer")
        if isinstance(back, dict):
            bcfg = back.get("config") or {}
            for k in ("units", "activation", "recurrent_activation", "use_bias", "reset_after",
                      "return_sequences", "return_state"):  # fmt: skip
                if back.get("class_name") != inner.get("class_name") or bcfg.get(k) != icfg.get(k):
                    raise b.fail(node, f"its backward_layer differs from the forward layer in {k!r}")
            if not bcfg.get("go_backwards", True):
                raise b.fail(node, "its backward_layer has go_backwards=False")
        cell_cls = str(inner.get("class_name"))
        direction = "bidirectional"
    else:
        icfg = cfg
        merge = "concat"
        cell_cls = node.cls
        direction = "backward" if icfg.get("go_backwards") else "forward"
    b.check_keys(node, icfg, _RNN_IGNORED_KEYS, _RNN_HANDLED_KEYS)
    cell = RECURRENT[cell_cls]
    units = icfg.get("units")
    if not isinstance(units, int) or isinstance(units, bool) or units <= 0:
        raise ModelFormatError(f"{node.where}: units={units!r} is not a positive integer")
    rs = bool(icfg.get("return_sequences", False))
    if icfg.get("return_state"):
        raise b.fail(node, "return_state=True is not supported")
    if icfg.get("time_major"):
        raise b.fail(node, "time_major=True is not supported")
    if direction == "backward" and rs:
        raise b.fail(
            node,
            "go_backwards=True with return_sequences=True is not supported: Keras returns that "
            "sequence in reversed step order, rnninfer keeps outputs aligned with the input steps",
        )
    if icfg.get("stateful") or cfg.get("stateful"):
        warnings.warn(
            f"{node.where} is stateful: in rnninfer the state Keras carries from call to call "
            "is carried by a stream, model.stream(), from feed to feed (one stream per "
            "sequence, no fixed batch); predict() starts every call from a zero state "
            "(docs/serving.md, Streams)",
            UserWarning,
            stacklevel=4,
        )
        b.notes.append(
            f"{node.name}: stateful=True; model.stream() carries the state across feeds, "
            "predict() starts from a zero state"
        )
    act = b.activation(node, icfg.get("activation", "tanh"), "activation", ELEMENTWISE_ACTIVATIONS)
    ract = "sigmoid"
    if cell != "rnn":
        ract = b.activation(
            node, icfg.get("recurrent_activation", "sigmoid"), "recurrent_activation", ELEMENTWISE_ACTIVATIONS
        )
    use_bias = bool(icfg.get("use_bias", True))
    reset_after = bool(icfg.get("reset_after", True)) if cell == "gru" else True
    layer = RecurrentSpec(
        cell=cell,
        units=units,
        direction=direction,
        merge=merge,
        activation=act,
        recurrent_activation=ract,
        reset_after=reset_after,
        bias=use_bias,
    )
    idx = len(b.layers)
    n_dir = layer.num_directions
    per_dir = 3 if use_bias else 2
    ws = b.weights(node, per_dir * n_dir)
    if b.kind == "features" and not b.layers:
        # A feature model's width is known only from the first kernel.
        b.features = int(ws[0].shape[0]) if ws[0].ndim == 2 else 0
    in_width = b.stream_width(d.stream)
    for j, dname in enumerate(("fwd", "bwd")[:n_dir]):
        part = ws[j * per_dir : (j + 1) * per_dir]
        _map_cell(b, node, layer, in_width, part, f"layers.{idx}.{dname}.")
    b.layers.append(layer)
    b.layer_names.append(node.name)
    b.returns_seq.append(rs)
    if not rs:
        b.readout = "last"
        return Desc("head", idx, 0)
    return Desc("seq", idx)


def _map_cell(
    b: Builder, node: Node, layer: RecurrentSpec, in_width: int, ws: list[np.ndarray], pre: str
) -> None:
    """Keras (in, G*H) kernels -> canonical (G*H, in) tensors of one direction."""
    H = layer.units
    G = {"lstm": 4, "gru": 3, "rnn": 1}[layer.cell]
    kernel, rec = ws[0], ws[1]
    b.expect_shape(node, kernel, (in_width, G * H), "kernel")
    b.expect_shape(node, rec, (H, G * H), "recurrent_kernel")
    zeros = np.zeros(G * H, dtype=kernel.dtype)
    if layer.cell == "gru":
        kernel, rec = keras_gru_order(kernel, H), keras_gru_order(rec, H)
    b.tensors[pre + "w_ih"] = kernel.T
    b.tensors[pre + "w_hh"] = rec.T
    if not layer.bias:
        return
    bias = ws[2]
    if layer.cell == "gru" and layer.reset_after:
        b.expect_shape(node, bias, (2, G * H), "bias (reset_after=True)")
        b.tensors[pre + "b_ih"] = keras_gru_order(bias[0], H)
        b.tensors[pre + "b_hh"] = keras_gru_order(bias[1], H)
    else:
        # Keras keeps one bias vector here (LSTM, SimpleRNN, GRU reset_after=False):
        # all of it sits on the input side and the recurrent bias is zero.
        b.expect_shape(node, bias, (G * H,), "bias")
        b.tensors[pre + "b_ih"] = keras_gru_order(bias, H) if layer.cell == "gru" else bias
        b.tensors[pre + "b_hh"] = zeros


def map_add(b: Builder, node: Node, ins: list[Desc]) -> Desc:
    if len(ins) != 2 or any(d.kind != "seq" for d in ins):
        raise b.fail(node, "Add is supported only between two sequences of the recurrent stack")
    top = b.top_stream()
    tops = [d for d in ins if d.stream == top]
    others = [d for d in ins if d.stream != top]
    if top < 0 or len(tops) != 1 or b.readout is not None:
        raise b.fail(node, "Add must combine the newest recurrent layer's output with an earlier stream")
    if b.layers[top].residual_from is not None:
        raise b.fail(node, f"layer {b.layer_names[top]!r} already has a residual link")
    src = others[0].stream
    if b.stream_width(src) != b.layers[top].output_width:
        raise b.fail(
            node,
            f"it adds widths {b.stream_width(src)} and {b.layers[top].output_width}",
        )
    old = b.layers[top]
    b.layers[top] = RecurrentSpec(**{**old.__dict__, "residual_from": src})
    return Desc("seq", top, gen=1)


def map_pooling(b: Builder, node: Node, d: Desc) -> Desc:
    cfg = node.config
    if d.kind != "seq" or b.readout is not None or d.stream != b.top_stream() or d.stream < 0:
        raise b.fail(node, "pooling must read the output of the top recurrent layer")
    if cfg.get("data_format", "channels_last") != "channels_last":
        raise b.fail(node, f"data_format={cfg.get('data_format')!r} is not supported")
    if cfg.get("keepdims"):
        raise b.fail(node, "keepdims=True is not supported")
    b.check_dtype(node, cfg.get("dtype"))
    if node.cls == "GlobalAveragePooling1D":
        b.readout = "mean"
    else:
        b.readout = "max"
        if b.mask_zero or b.mask_value is not None:
            # Keras' GlobalMaxPooling1D ignores the mask and takes the max over
            # every step, including the placeholder rows RNNs emit at masked
            # steps; rnninfer pools over valid steps only (see docs/keras.md).
            warnings.warn(
                f"{node.where} ignores the mask in Keras: rnninfer takes the maximum over the "
                "valid steps only, which equals Keras whenever a sequence has no masked steps",
                UserWarning,
                stacklevel=4,
            )
            b.notes.append(f"{node.name}: GlobalMaxPooling1D pools over unmasked steps only")
    return Desc("head", d.stream, 0)


def map_dense(
    b: Builder, node: Node, cfg: Mapping[str, Any], d: Desc, last_key: dict[str, TensorKey]
) -> Desc:
    if d.kind == "seq":
        if b.readout is not None or d.stream != b.top_stream() or d.stream < 0:
            raise b.fail(
                node,
                "a Dense layer before or inside the recurrent stack is not supported; Dense may "
                "only follow the top recurrent layer",
            )
        b.readout = "sequence"  # a Dense on a returned sequence acts at every step
    elif d.kind != "head" or d.n_head != len(b.head):
        raise b.fail(node, "it does not read the newest head tensor (branches are not supported)")
    b.check_keys(node, cfg, _DENSE_IGNORED_KEYS, _DENSE_HANDLED_KEYS)
    units = cfg.get("units")
    if not isinstance(units, int) or isinstance(units, bool) or units <= 0:
        raise ModelFormatError(f"{node.where}: units={units!r} is not a positive integer")
    act = b.activation(node, cfg.get("activation", "linear"), "activation", HEAD_ACTIVATIONS)
    use_bias = bool(cfg.get("use_bias", True))
    ws = b.weights(node, 2 if use_bias else 1)
    in_width = b.head[-1].units if b.head else b.stream_width(b.top_stream())
    b.expect_shape(node, ws[0], (in_width, units), "kernel")
    j = len(b.head)
    b.tensors[f"head.{j}.weight"] = ws[0].T
    if use_bias:
        b.expect_shape(node, ws[1], (units,), "bias")
        b.tensors[f"head.{j}.bias"] = ws[1]
    b.head.append(DenseSpec(units=units, activation=act, bias=use_bias))
    return Desc("head", d.stream, len(b.head))


def map_activation(b: Builder, node: Node, d: Desc) -> Desc:
    act = b.activation(node, node.config.get("activation", "linear"), "activation", HEAD_ACTIVATIONS)
    if act == "linear":
        return d
    if d.kind == "head" and b.head and d.n_head == len(b.head) and b.head[-1].activation == "linear":
        # Activation(f)(Dense(linear)(x)) == Dense(f)(x): fold it into the head layer.
        b.head[-1] = DenseSpec(units=b.head[-1].units, activation=act, bias=b.head[-1].bias)
        b.notes.append(f"{node.name}: Activation({act}) folded into the Dense layer before it")
        return d
    raise b.fail(node, f"Activation({act}) is supported only right after a linear Dense layer")

