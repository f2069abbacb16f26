"""Convert Keras models (Keras 3 ``.keras``, legacy ``.h5``, in-memory) to rnninfer.

Files are read with :mod:`zipfile`, :mod:`json` and :mod:`h5py` only: neither
TensorFlow nor Keras is imported on the file path, so a deployment box needs
no training framework. An in-memory ``keras.Model`` (Keras 3, or Keras 2 via
``tf_keras``) is read through its own ``get_config()`` / ``get_weights()``.

The model graph (Sequential or Functional) is walked in topological order and
matched against the one shape rnninfer runs::

    Input -> [Embedding | Masking] -> recurrent layers (+ Add residuals)
          -> [readout: last state | GlobalAverage/MaxPooling1D | per-step]
          -> Dense head layers

Anything outside that shape, or an option that would change the numbers,
raises an error naming the layer, its position and the option, so a converted
model never silently differs from the Keras one. See ``docs/keras.md``.
"""

from __future__ import annotations

import io
import json
import os
import re
import sys
import warnings
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ModelFormatError
from ..format.manifest import (
    ELEMENTWISE_ACTIVATIONS,
    HEAD_ACTIVATIONS,
    DenseSpec,
    InputSpec,
    ModelSpec,
    RecurrentSpec,
)
from .base import finish

if TYPE_CHECKING:
    import h5py

    from ..model import Model

__all__ = ["SUPPORTED_LAYERS", "convert_keras", "from_keras"]

Tensors = dict[str, np.ndarray]

_RECURRENT = {"LSTM": "lstm", "GRU": "gru", "SimpleRNN": "rnn"}
#: Layers that do nothing at inference time.
_NO_OPS = (
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
    *_RECURRENT,
    "Bidirectional",
    "Dense",
    "TimeDistributed(Dense)",
    "Add",
    "GlobalAveragePooling1D",
    "GlobalMaxPooling1D",
    "Activation",
    *_NO_OPS,
)
_SUPPORTED_TEXT = ", ".join(SUPPORTED_LAYERS)

#: Keras 3 records the ops that compute masks (``Embedding(mask_zero=True)``,
#: ``Masking``) as graph nodes feeding the layers' ``mask`` arguments; they
#: carry no weights and rnninfer derives the same mask from the input spec
#: (merging two copies of one input mask, as Add does, gives that mask back).
_MASK_OPS = ("NotEqual", "Any", "LogicalOr", "LogicalAnd", "All")

#: Keras activation names -> rnninfer names. ``hard_sigmoid`` is resolved by
#: Keras major version in :func:`_activation` because its definition changed.
_ACTIVATIONS_K3 = {
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
_ACTIVATIONS_K2 = {
    k: v
    for k, v in _ACTIVATIONS_K3.items()
    if k not in ("relu6", "leaky_relu", "hard_silu", "hard_swish", "log_softmax")
}

#: Recurrent-layer config keys that never change inference numbers: weight
#: initialisers, regularisers and constraints act during training only;
#: ``unroll``/``implementation``/``use_cudnn`` choose an equivalent kernel;
#: dropout is off at inference; ``zero_output_for_mask`` only changes output
#: rows at masked steps, which rnninfer defines as zero anyway.
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
_EMBEDDING_IGNORED_KEYS = frozenset(
    {
        "name", "trainable", "dtype", "batch_input_shape", "batch_shape", "input_shape",
        "embeddings_initializer", "embeddings_regularizer", "activity_regularizer",
        "embeddings_constraint", "input_length", "sparse", "build_config",
    }
)  # fmt: skip
_EMBEDDING_HANDLED_KEYS = frozenset({"input_dim", "output_dim", "mask_zero"})

_ZIP_MAGIC = b"PK\x03\x04"
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


# ---- public entry points -------------------------------------------------------------
def from_keras(src: Any) -> Model:
    """Convert a Keras model to an rnninfer :class:`~rnninfer.Model`.

    Args:
        src: path to a Keras 3 ``.keras`` archive or a legacy ``.h5`` file
            (written by Keras 3 or by tf.keras 2.x), or an in-memory Keras 3
            or tf_keras ``Model`` (Sequential or Functional).

    Returns:
        The converted model, validated against the canonical format.

    Raises:
        ModelFormatError: the file is corrupt, truncated or not a Keras model.
        ValueError: a layer or option rnninfer cannot run (named, with its
            position in the model).
        TypeError: ``src`` is neither a path nor a Keras model.
    """
    spec, tensors, producer = convert_keras(src)
    return finish(spec, tensors, producer, source=producer.get("source"))


def convert_keras(src: Any) -> tuple[ModelSpec, Tensors, dict[str, Any]]:
    """Convert a Keras model to a canonical spec and tensors without opening it.

    This is :func:`from_keras` minus the engine: useful to inspect the result
    or to run it through :func:`rnninfer.reference.run_sequence`.

    Args:
        src: as for :func:`from_keras`.

    Returns:
        ``(spec, tensors, producer)``: the model description, its float32
        canonical tensors and the provenance dictionary.

    Raises:
        ModelFormatError, ValueError, TypeError: as for :func:`from_keras`.
    """
    if isinstance(src, (str, os.PathLike)):
        return _convert_file(os.fspath(src))
    return _convert_in_memory(src)


# ---- sources: files ------------------------------------------------------------------
def _convert_file(path: str) -> tuple[ModelSpec, Tensors, dict[str, Any]]:
    name = os.path.basename(path)
    with open(path, "rb") as f:
        head = f.read(8)
    if head.startswith(_ZIP_MAGIC):
        reader: Callable[[str], _Source] = _read_keras_zip
    elif head == _HDF5_MAGIC:
        reader = _read_legacy_h5
    else:
        raise ModelFormatError(
            "not a Keras model file: expected a .keras zip archive or an HDF5 .h5 file", source=name
        )
    try:
        source = reader(path)
    except ModelFormatError as e:
        raise ModelFormatError(e.problems, source=name) from e
    except (OSError, EOFError, KeyError, ValueError, TypeError, zipfile.BadZipFile, RuntimeError) as e:
        raise ModelFormatError(f"cannot read the Keras file: {type(e).__name__}: {e}", source=name) from e
    try:
        return _convert(source, source_name=name)
    finally:
        source.close()


@dataclass
class _Source:
    """A parsed model config plus a way to fetch each layer's weights.

    ``weights(layer_name, class_name, order)`` returns the layer's arrays in
    Keras' own ``layer.get_weights()`` order (for a recurrent layer: kernel,
    recurrent kernel, bias; a Bidirectional layer gives the forward layer's
    then the backward layer's).
    """

    config: dict[str, Any]
    keras_version: str
    weights: Callable[[str, str, int], list[np.ndarray]]
    close: Callable[[], None] = lambda: None


def _keras_zip_names(config: dict[str, Any]) -> dict[str, str]:
    """Map layer names to their groups in a ``.keras`` weights file.

    Keras 3 stores a layer's variables under ``layers/<snake_case(class)>``,
    made unique with ``_1``, ``_2``... in the order of ``model.layers``
    (``saving_lib._save_container_state``), never under the layer's own name.
    """
    used: dict[str, int] = {}
    out: dict[str, str] = {}
    for entry in _layer_entries(config):
        if _is_op(entry):
            continue  # ops are not in model.layers
        base = _snake_case(str(entry.get("class_name", "")))
        if base in used:
            used[base] += 1
            out[str(_entry_name(entry))] = f"{base}_{used[base]}"
        else:
            used[base] = 0
            out[str(_entry_name(entry))] = base
    return out


def _snake_case(name: str) -> str:
    # Same rules as keras.src.utils.naming.to_snake_case.
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def _datasets(group: h5py.Group) -> list[np.ndarray]:
    """All datasets under ``group`` in Keras' variable order (``vars/0``, ``vars/1``...)."""
    import h5py

    found: list[tuple[tuple[Any, ...], np.ndarray]] = []

    def visit(name: str, obj: Any) -> None:
        if isinstance(obj, h5py.Dataset):
            key = tuple((0, int(p)) if p.isdigit() else (1, p) for p in name.split("/"))
            found.append((key, np.asarray(obj[()])))

    group.visititems(visit)
    return [a for _, a in sorted(found, key=lambda t: t[0])]


def _read_keras_zip(path: str) -> _Source:
    import h5py

    with zipfile.ZipFile(path) as zf:
        names = set(zf.namelist())
        if "config.json" not in names:
            raise ModelFormatError("the .keras archive has no config.json")
        config = json.loads(zf.read("config.json").decode("utf-8"))
        version = ""
        if "metadata.json" in names:
            meta = json.loads(zf.read("metadata.json").decode("utf-8"))
            version = str(meta.get("keras_version", "")) if isinstance(meta, dict) else ""
        if "model.weights.h5" not in names:
            other = sorted(n for n in names if n.startswith("model.weights"))
            raise ModelFormatError(
                "the .keras archive has no model.weights.h5"
                + (f" (found {other}; sharded or npz weights are not supported)" if other else "")
            )
        blob = zf.read("model.weights.h5")
    if not isinstance(config, dict):
        raise ModelFormatError("config.json does not hold a JSON object")
    h5 = h5py.File(io.BytesIO(blob), "r")
    groups = _keras_zip_names(config)

    def weights(layer: str, cls: str, order: int) -> list[np.ndarray]:
        path_ = "layers/" + groups.get(layer, _snake_case(cls))
        if path_ not in h5:
            raise ModelFormatError(f"weights of layer {layer!r} ({cls}) not found at {path_!r}")
        g = h5[path_]
        if cls == "Bidirectional":
            if "forward_layer" not in g or "backward_layer" not in g:
                raise ModelFormatError(f"weights of Bidirectional layer {layer!r} are incomplete")
            # Sorted by name "backward_layer" would come first; Keras' own
            # order is forward, then backward.
            return _datasets(g["forward_layer"]) + _datasets(g["backward_layer"])
        return _datasets(g)

    return _Source(config=config, keras_version=version, weights=weights, close=h5.close)


def _attr_str(v: Any) -> str:
    return v.decode("utf-8") if isinstance(v, bytes) else str(v)


def _read_legacy_h5(path: str) -> _Source:
    import h5py

    h5 = h5py.File(path, "r")
    try:
        if "model_config" not in h5.attrs:
            raise ModelFormatError(
                "the .h5 file has no model_config (a weights-only file?); save the whole "
                "model with model.save('model.h5') or use the .keras format"
            )
        config = json.loads(_attr_str(h5.attrs["model_config"]))
        version = _attr_str(h5.attrs.get("keras_version", ""))
        root = h5.get("model_weights", h5)
    except BaseException:
        h5.close()
        raise
    if not isinstance(config, dict):
        h5.close()
        raise ModelFormatError("model_config does not hold a JSON object")

    def weights(layer: str, cls: str, order: int) -> list[np.ndarray]:
        if layer not in root:
            raise ModelFormatError(f"weights of layer {layer!r} ({cls}) not found in the .h5 file")
        g = root[layer]
        names = [_attr_str(n) for n in g.attrs.get("weight_names", [])]
        # weight_names lists the arrays in layer.weights order, which is the
        # order the legacy loader itself relies on.
        return [np.asarray(g[n][()]) for n in names]

    return _Source(config=config, keras_version=version, weights=weights, close=h5.close)


# ---- sources: in-memory models -------------------------------------------------------
def _convert_in_memory(model: Any) -> tuple[ModelSpec, Tensors, dict[str, Any]]:
    # The first Keras class in the MRO tells the framework, also for subclasses.
    keras_cls = next(
        (c for c in type(model).__mro__ if c.__module__.split(".")[0] in ("keras", "tf_keras", "tensorflow")),
        None,
    )
    if keras_cls is None or not hasattr(model, "get_config") or not hasattr(model, "get_layer"):
        raise TypeError(
            "from_keras expects a path to a .keras/.h5 file or a keras.Model, got "
            f"{type(model).__module__}.{type(model).__name__}"
        )
    module = keras_cls.__module__.split(".")[0]
    cls = type(model).__name__
    if cls == "Model":
        cls = "Functional"  # tf.keras functional models are instances of Model
    if cls not in ("Sequential", "Functional"):
        raise TypeError(
            f"only Sequential and Functional Keras models can be converted, got a subclassed "
            f"model {cls!r}; rebuild it with the functional API"
        )
    pkg = sys.modules.get(module)
    version = str(getattr(pkg, "__version__", ""))
    if module == "tensorflow":  # tf.keras of TF < 2.16 is Keras 2 and lives inside TF
        version = str(getattr(getattr(pkg, "keras", None), "__version__", "2"))
    config = {"class_name": cls, "config": model.get_config()}

    def weights(layer: str, cls_: str, order: int) -> list[np.ndarray]:
        return [np.asarray(w) for w in model.get_layer(layer).get_weights()]

    name = f"<in-memory {cls} {getattr(model, 'name', '')!r}>"
    return _convert(_Source(config=config, keras_version=version, weights=weights), source_name=name)


# ---- config helpers ------------------------------------------------------------------
def _layer_entries(config: Mapping[str, Any]) -> list[dict[str, Any]]:
    inner = config.get("config")
    if isinstance(inner, list):  # very old Sequential configs: a bare layer list
        layers: Any = inner
    elif isinstance(inner, dict):
        layers = inner.get("layers")
    else:
        layers = None
    if not isinstance(layers, list) or not all(isinstance(x, dict) for x in layers):
        raise ModelFormatError("the model config has no layer list")
    return layers


def _entry_name(entry: Mapping[str, Any]) -> str:
    cfg = entry.get("config")
    name = entry.get("name") or (cfg.get("name") if isinstance(cfg, dict) else None)
    if not isinstance(name, str):
        raise ModelFormatError(f"a {entry.get('class_name')} layer in the config has no name")
    return name


def _is_op(entry: Mapping[str, Any]) -> bool:
    module = str(entry.get("module") or "")
    return module.startswith("keras.src.ops") or (not module and entry.get("class_name") in _MASK_OPS)


def _major(version: str) -> int:
    m = re.match(r"\s*(\d+)", version)
    return int(m.group(1)) if m else 3


# ---- the graph ---------------------------------------------------------------------
TensorKey = tuple[str, int, int]


@dataclass
class _Node:
    """One call of one layer in the graph, in topological order."""

    name: str
    cls: str
    config: dict[str, Any]
    position: int
    inputs: list[TensorKey]
    mask: TensorKey | None = None
    is_op: bool = False
    constants: list[Any] = field(default_factory=list)

    @property
    def where(self) -> str:
        return f"layer {self.name!r} ({self.cls}) at position {self.position}"


def _graph(config: Mapping[str, Any]) -> tuple[list[_Node], list[TensorKey], list[TensorKey]]:
    """Nodes in order, model inputs and model outputs, from a model config."""
    cls = config.get("class_name")
    entries = _layer_entries(config)
    if cls == "Sequential":
        return _sequential_graph(entries)
    if cls in ("Functional", "Model"):
        inner = config.get("config")
        assert isinstance(inner, dict)
        return _functional_graph(entries, inner)
    raise ValueError(
        f"the top-level model is a {cls!r}; only Sequential and Functional models can be converted"
    )


def _sequential_graph(entries: list[dict[str, Any]]) -> tuple[list[_Node], list[TensorKey], list[TensorKey]]:
    nodes: list[_Node] = []
    prev: TensorKey = ("__input__", 0, 0)
    for pos, entry in enumerate(entries):
        cfg = entry.get("config")
        if not isinstance(cfg, dict):
            raise ModelFormatError(f"layer {pos} of the Sequential config has no config object")
        name = _entry_name(entry)
        cls = str(entry.get("class_name"))
        if cls == "InputLayer":
            continue
        nodes.append(_Node(name, cls, cfg, pos, [prev], is_op=_is_op(entry)))
        prev = (name, 0, 0)
    return nodes, [("__input__", 0, 0)], [prev]


def _tensor_refs(obj: Any, out: list[TensorKey], consts: list[Any]) -> None:
    """Collect Keras 3 ``__keras_tensor__`` references (and constants) from call args."""
    if isinstance(obj, dict) and obj.get("class_name") == "__keras_tensor__":
        hist = obj.get("config", {}).get("keras_history")
        if not (isinstance(hist, list) and len(hist) == 3):
            raise ModelFormatError(f"malformed tensor reference {obj!r}")
        out.append((str(hist[0]), int(hist[1]), int(hist[2])))
    elif isinstance(obj, (list, tuple)):
        for x in obj:
            _tensor_refs(x, out, consts)
    else:
        consts.append(obj)


def _key_list(v: Any) -> list[TensorKey]:
    """``["name", 0, 0]`` or a list of them -> tensor keys."""
    if isinstance(v, list) and len(v) == 3 and isinstance(v[0], str):
        return [(v[0], int(v[1]), int(v[2]))]
    if isinstance(v, list):
        return [k for x in v for k in _key_list(x)]
    raise ModelFormatError(f"malformed model input/output reference {v!r}")


def _functional_graph(
    entries: list[dict[str, Any]], inner: Mapping[str, Any]
) -> tuple[list[_Node], list[TensorKey], list[TensorKey]]:
    nodes: list[_Node] = []
    for pos, entry in enumerate(entries):
        cfg = entry.get("config")
        cfg = cfg if isinstance(cfg, dict) else {}
        name = _entry_name(entry)
        cls = str(entry.get("class_name"))
        inbound = entry.get("inbound_nodes") or []
        if cls == "InputLayer":
            continue
        if not isinstance(inbound, list) or len(inbound) == 0:
            raise ModelFormatError(f"layer {name!r} ({cls}) at position {pos} has no inbound node")
        if len(inbound) > 1:
            raise ValueError(
                f"layer {name!r} ({cls}) at position {pos} is called {len(inbound)} times "
                "(a shared layer); rnninfer runs one linear stack"
            )
        call = inbound[0]
        refs: list[TensorKey] = []
        consts: list[Any] = []
        mask: TensorKey | None = None
        if isinstance(call, dict):  # Keras 3: {"args": [...], "kwargs": {...}}
            _tensor_refs(call.get("args", []), refs, consts)
            for k, v in (call.get("kwargs") or {}).items():
                if k == "mask":
                    m: list[TensorKey] = []
                    _tensor_refs(v, m, [])
                    mask = m[0] if m else None
                elif k == "training" or v is None:
                    continue
                else:
                    raise ValueError(
                        f"layer {name!r} ({cls}) at position {pos} is called with argument "
                        f"{k}={v!r}, which rnninfer does not support"
                    )
        elif isinstance(call, list):  # Keras 2: [["name", node, tensor, {kwargs}], ...]
            for ref in call:
                if not (isinstance(ref, list) and len(ref) >= 3):
                    raise ModelFormatError(f"malformed inbound node of layer {name!r}: {ref!r}")
                refs.append((str(ref[0]), int(ref[1]), int(ref[2])))
                kwargs = ref[3] if len(ref) > 3 and isinstance(ref[3], dict) else {}
                for k, v in kwargs.items():
                    if k not in ("training",) and v is not None:
                        raise ValueError(
                            f"layer {name!r} ({cls}) at position {pos} is called with argument "
                            f"{k}={v!r}, which rnninfer does not support"
                        )
        else:
            raise ModelFormatError(f"malformed inbound node of layer {name!r}: {call!r}")
        nodes.append(_Node(name, cls, cfg, pos, refs, mask, _is_op(entry), consts))
    ins = _key_list(inner.get("input_layers"))
    outs = _key_list(inner.get("output_layers"))
    return nodes, ins, outs


# ---- building the spec ---------------------------------------------------------------
@dataclass
class _Desc:
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
class _Builder:
    source: _Source
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
    max_readout_node: _Node | None = None

    # -- helpers ------------------------------------------------------------------
    def fail(self, node: _Node, problem: str) -> ValueError:
        return ValueError(
            f"{node.where}: {problem}. rnninfer converts Keras models of the form Input -> "
            "[Embedding | Masking] -> LSTM/GRU/SimpleRNN/Bidirectional layers (with optional Add "
            "residuals) -> [GlobalAverage/MaxPooling1D] -> Dense layers; supported layers: "
            f"{_SUPPORTED_TEXT}"
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

    def activation(self, node: _Node, value: Any, option: str, allowed: Sequence[str]) -> str:
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
            table = _ACTIVATIONS_K2 if self.major < 3 else _ACTIVATIONS_K3
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
        self, node: _Node, cfg: Mapping[str, Any], ignored: frozenset[str], handled: frozenset[str]
    ) -> None:
        """Refuse config keys this converter does not know, unless they are off."""
        for k, v in cfg.items():
            if k in ignored or k in handled:
                continue
            if v in (None, False, 0, 0.0, "", [], {}):
                continue  # an unknown option that is switched off cannot change the numbers
            raise self.fail(node, f"option {k}={v!r} is not supported")
        self.check_dtype(node, cfg.get("dtype"))

    def check_dtype(self, node: _Node, dtype: Any) -> None:
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

    def weights(self, node: _Node, expected: int | Sequence[int]) -> list[np.ndarray]:
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
    def expect_shape(node: _Node, a: np.ndarray, shape: tuple[int, ...], what: str) -> None:
        if tuple(a.shape) != shape:
            raise ModelFormatError(f"{node.where}: {what} has shape {tuple(a.shape)}, expected {shape}")


def _convert(source: _Source, *, source_name: str) -> tuple[ModelSpec, Tensors, dict[str, Any]]:
    config = source.config
    try:
        nodes, ins, outs = _graph(config)
    except (KeyError, TypeError, AttributeError) as e:
        raise ModelFormatError(f"malformed model config: {type(e).__name__}: {e}", source=source_name) from e
    if len(ins) != 1 or len(outs) != 1:
        raise ValueError(
            f"the model has {len(ins)} inputs and {len(outs)} outputs; rnninfer runs models with "
            "exactly one input and one output"
        )
    b = _Builder(source, _major(source.keras_version))
    desc: dict[TensorKey, _Desc] = {ins[0]: _Desc("raw")}
    last_key: dict[str, TensorKey] = {}  # "seq"/"head" -> the newest tensor of that phase
    for node in nodes:
        if node.is_op:
            _op_node(b, node, desc)
            continue
        in_descs = []
        for k in node.inputs:
            if k not in desc:
                raise ModelFormatError(f"{node.where}: reads tensor {k} that no earlier layer produces")
            in_descs.append(desc[k])
        if any(d.kind == "mask" for d in in_descs):
            raise b.fail(node, "it computes on a mask tensor")
        if any(d.kind == "seq" and d.gen != b.gen(d.stream) for d in in_descs):
            raise b.fail(
                node,
                "it reads a recurrent output from before its residual Add (a branch); only "
                "the sum may be used further",
            )
        out = _layer_node(b, node, in_descs, last_key)
        key: TensorKey = (node.name, 0, 0)
        desc[key] = out
        if out.kind in ("seq", "head"):
            last_key[out.kind] = key
    final = desc.get(outs[0])
    if final is None:
        raise ModelFormatError(f"the model output {outs[0]} is not produced by any layer")
    spec = _finish_spec(b, final, last_key, outs[0], config)
    producer: dict[str, Any] = {
        "converter": "keras",
        "framework": "keras",
        "framework_version": source.keras_version,
        "source": source_name,
    }
    if b.notes:
        producer["notes"] = list(b.notes)
    return spec, b.tensors, producer


def _op_node(b: _Builder, node: _Node, desc: dict[TensorKey, _Desc]) -> None:
    """A Keras 3 op node: only the mask computations Keras inserts are accepted."""
    if node.cls not in _MASK_OPS:
        raise b.fail(node, f"the operation {node.cls} is not supported")
    for k in node.inputs:
        d = desc.get(k)
        if d is None or d.kind not in ("raw", "mask"):
            raise b.fail(node, "only the mask Keras derives from the model input is supported")
    desc[(node.name, 0, 0)] = _Desc("mask")


def _layer_node(b: _Builder, node: _Node, ins: list[_Desc], last_key: dict[str, TensorKey]) -> _Desc:
    cls, cfg = node.cls, node.config
    if cls == "Add":
        return _add(b, node, ins)
    if len(ins) != 1:
        raise b.fail(node, f"it takes {len(ins)} inputs; only Add may merge tensors")
    d = ins[0]
    if node.mask is not None and not (b.mask_zero or b.mask_value is not None):
        raise b.fail(node, "it is given a mask that does not come from Embedding(mask_zero) or Masking")
    if cls in _NO_OPS:
        b.notes.append(f"{node.name}: {cls} is a no-op at inference")
        return d
    if cls == "Activation":
        return _activation_layer(b, node, d)
    if cls == "Embedding":
        if d.kind != "raw":
            raise b.fail(node, "an Embedding must read the model input directly")
        b.check_keys(node, cfg, _EMBEDDING_IGNORED_KEYS, _EMBEDDING_HANDLED_KEYS)
        (emb,) = b.weights(node, 1)
        if emb.ndim != 2:
            raise ModelFormatError(f"{node.where}: embeddings have shape {emb.shape}, expected 2-D")
        vocab, dim = int(emb.shape[0]), int(emb.shape[1])
        if (cfg.get("input_dim", vocab), cfg.get("output_dim", dim)) != (vocab, dim):
            raise ModelFormatError(
                f"{node.where}: embeddings have shape {emb.shape}, but the config says "
                f"({cfg.get('input_dim')}, {cfg.get('output_dim')})"
            )
        b.kind, b.vocab, b.emb_dim = "tokens", vocab, dim
        b.mask_zero = bool(cfg.get("mask_zero", False))
        b.tensors["embedding.weight"] = emb
        return _Desc("seq", -1)
    if cls == "Masking":
        if d.kind != "raw":
            raise b.fail(node, "Masking is supported only directly on a feature input")
        b.check_dtype(node, cfg.get("dtype"))
        mv = cfg.get("mask_value", 0.0)
        if not isinstance(mv, (int, float)) or isinstance(mv, bool):
            raise b.fail(node, f"mask_value={mv!r} is not a number")
        b.mask_value = float(mv)
        b.kind = "features"
        return _Desc("seq", -1)
    if d.kind == "raw":
        if cls in _RECURRENT or cls == "Bidirectional":
            b.kind = "features"
            d = _Desc("seq", -1)
        else:
            raise b.fail(node, "it is applied to the model input before any recurrent layer")
    if cls in _RECURRENT or cls == "Bidirectional":
        return _recurrent(b, node, d)
    if cls in ("GlobalAveragePooling1D", "GlobalMaxPooling1D"):
        return _pooling(b, node, d)
    if cls == "Dense":
        return _dense(b, node, cfg, d, last_key)
    if cls == "TimeDistributed":
        inner = cfg.get("layer")
        if not (isinstance(inner, dict) and inner.get("class_name") == "Dense"):
            what = inner.get("class_name") if isinstance(inner, dict) else inner
            raise b.fail(node, f"TimeDistributed wraps {what!r}; only TimeDistributed(Dense) is supported")
        if d.kind == "seq" and b.readout is None:
            pass
        elif not (d.kind == "head" and b.readout == "sequence"):
            raise b.fail(node, "TimeDistributed(Dense) must be applied to a sequence")
        return _dense(b, node, inner.get("config") or {}, d, last_key)
    if cls in ("Sequential", "Functional", "Model"):
        raise b.fail(node, "nested models are not supported; flatten the model")
    raise b.fail(node, f"layer class {cls} is not supported")


def _recurrent(b: _Builder, node: _Node, d: _Desc) -> _Desc:
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
        if not (isinstance(inner, dict) and inner.get("class_name") in _RECURRENT):
            what = inner.get("class_name") if isinstance(inner, dict) else inner
            raise b.fail(node, f"Bidirectional wraps {what!r}; supported: {list(_RECURRENT)}")
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
    cell = _RECURRENT[cell_cls]
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
            f"{node.where} is stateful; rnninfer converts it as stateless (every call starts "
            "from a zero state)",
            UserWarning,
            stacklevel=4,
        )
        b.notes.append(f"{node.name}: stateful=True converted as stateless")
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
        return _Desc("head", idx, 0)
    return _Desc("seq", idx)


def _gru_order(a: np.ndarray, units: int) -> np.ndarray:
    """Keras GRU gate blocks z, r, h -> canonical r, z, n along the last axis."""
    z, r, h = (a[..., k * units : (k + 1) * units] for k in range(3))
    return np.concatenate([r, z, h], axis=-1)


def _map_cell(
    b: _Builder, node: _Node, layer: RecurrentSpec, in_width: int, ws: list[np.ndarray], pre: str
) -> None:
    """Keras (in, G*H) kernels -> canonical (G*H, in) tensors of one direction."""
    H = layer.units
    G = {"lstm": 4, "gru": 3, "rnn": 1}[layer.cell]
    kernel, rec = ws[0], ws[1]
    b.expect_shape(node, kernel, (in_width, G * H), "kernel")
    b.expect_shape(node, rec, (H, G * H), "recurrent_kernel")
    zeros = np.zeros(G * H, dtype=kernel.dtype)
    if layer.cell == "gru":
        kernel, rec = _gru_order(kernel, H), _gru_order(rec, H)
    b.tensors[pre + "w_ih"] = kernel.T
    b.tensors[pre + "w_hh"] = rec.T
    if not layer.bias:
        return
    bias = ws[2]
    if layer.cell == "gru" and layer.reset_after:
        b.expect_shape(node, bias, (2, G * H), "bias (reset_after=True)")
        b.tensors[pre + "b_ih"] = _gru_order(bias[0], H)
        b.tensors[pre + "b_hh"] = _gru_order(bias[1], H)
    else:
        # Keras keeps one bias vector here (LSTM, SimpleRNN, GRU reset_after=False):
        # all of it sits on the input side and the recurrent bias is zero.
        b.expect_shape(node, bias, (G * H,), "bias")
        b.tensors[pre + "b_ih"] = _gru_order(bias, H) if layer.cell == "gru" else bias
        b.tensors[pre + "b_hh"] = zeros


def _add(b: _Builder, node: _Node, ins: list[_Desc]) -> _Desc:
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
    return _Desc("seq", top, gen=1)


def _pooling(b: _Builder, node: _Node, d: _Desc) -> _Desc:
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
    return _Desc("head", d.stream, 0)


def _dense(
    b: _Builder, node: _Node, cfg: Mapping[str, Any], d: _Desc, last_key: dict[str, TensorKey]
) -> _Desc:
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
    return _Desc("head", d.stream, len(b.head))


def _activation_layer(b: _Builder, node: _Node, d: _Desc) -> _Desc:
    act = b.activation(node, node.config.get("activation", "linear"), "activation", HEAD_ACTIVATIONS)
    if act == "linear":
        return d
    if d.kind == "head" and b.head and d.n_head == len(b.head) and b.head[-1].activation == "linear":
        # Activation(f)(Dense(linear)(x)) == Dense(f)(x): fold it into the head layer.
        b.head[-1] = DenseSpec(units=b.head[-1].units, activation=act, bias=b.head[-1].bias)
        b.notes.append(f"{node.name}: Activation({act}) folded into the Dense layer before it")
        return d
    raise b.fail(node, f"Activation({act}) is supported only right after a linear Dense layer")


def _finish_spec(
    b: _Builder, final: _Desc, last_key: dict[str, TensorKey], out_key: TensorKey, config: Mapping[str, Any]
) -> ModelSpec:
    if not b.layers:
        raise ValueError(
            f"the model has no recurrent layer (LSTM, GRU, SimpleRNN); supported: {_SUPPORTED_TEXT}"
        )
    if final.kind == "seq":
        if final.stream != b.top_stream() or b.readout is not None or final.gen != b.gen(final.stream):
            raise ValueError("the model output is not the top of its recurrent stack")
        b.readout = "sequence"
    elif final.kind != "head" or final.n_head != len(b.head) or last_key.get("head") != out_key:
        raise ValueError("the model output is not the last layer of its head (branches are not supported)")
    assert b.readout is not None
    if b.kind is None:
        b.kind = "features"
    inner = config.get("config")
    name = inner.get("name", "model") if isinstance(inner, dict) else "model"
    spec = ModelSpec(
        input=InputSpec(
            kind=b.kind,
            vocab_size=b.vocab if b.kind == "tokens" else 0,
            embedding_dim=b.emb_dim if b.kind == "tokens" else 0,
            features=b.features if b.kind == "features" else 0,
            mask_zero=b.mask_zero,
            mask_value=b.mask_value,
        ),
        layers=tuple(b.layers),
        readout=b.readout,
        head=tuple(b.head),
        name=str(name),
    )
    if spec.readout == "last" and spec.layers[-1].residual_from is not None:
        raise ValueError("a residual Add on a layer with return_sequences=False is not supported")
    b.tensors = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in b.tensors.items()}
    return spec
