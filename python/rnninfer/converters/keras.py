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

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import ModelFormatError
from ..format.manifest import InputSpec, ModelSpec
from .base import Converted, Probe, finish
from .keras_files import KerasSource, read_keras
from .keras_graph import MASK_OPS, Node, TensorKey, graph, keras_major
from .keras_layers import (
    EMBEDDING_HANDLED_KEYS,
    EMBEDDING_IGNORED_KEYS,
    NO_OPS,
    RECURRENT,
    SUPPORTED_LAYERS,
    SUPPORTED_TEXT,
    Builder,
    Desc,
    Tensors,
    map_activation,
    map_add,
    map_dense,
    map_pooling,
    map_recurrent,
)

__all__ = ["SUPPORTED_LAYERS", "convert_keras", "keras_probe"]


def convert_keras(src: Any) -> Converted:
    """Convert a Keras model to a validated canonical spec and tensors.

    :func:`rnninfer.from_keras` opens the result as a ``Model``; this is the
    part without the engine (e.g. to run it through
    :func:`rnninfer.reference.run_sequence`).

    Args:
        src: path to a Keras 3 ``.keras`` archive or a legacy ``.h5`` file
            (written by Keras 3 or by tf.keras 2.x), or an in-memory Keras 3
            or tf_keras ``Model`` (Sequential or Functional).

    Returns:
        a :class:`~rnninfer.converters.base.Converted`, checked once, that
        unpacks as ``(spec, tensors, producer)``: the model description, its
        float32 canonical tensors (read-only) and the provenance dictionary.

    Raises:
        ModelFormatError: the file is corrupt, truncated or not a Keras model.
        ValueError: a layer or option rnninfer cannot run (named, with its
            position in the model).
        TypeError: ``src`` is neither a path nor a Keras model.
    """
    source, name = read_keras(src)
    try:
        spec, tensors, producer = _convert(source, source_name=name)
    finally:
        source.close()
    return finish(spec, tensors, producer, source=producer.get("source"))


def keras_probe(model: Any, spec: ModelSpec) -> Probe | None:
    """The in-memory Keras ``model``'s own output on a small random input.

    ``None`` for a stateful model (the call would change its carried state)
    or one that cannot run on the input: then there is nothing to compare with.
    """
    layers = list(getattr(model, "layers", []))
    layers += [getattr(x, n) for x in layers for n in ("forward_layer", "backward_layer") if hasattr(x, n)]
    if any(getattr(x, "stateful", False) for x in layers):
        return None  # calling it would change the state the user's model carries
    rng = np.random.default_rng(0)
    if spec.input.kind == "tokens":
        # Token 0 is left out: with mask_zero it is skipped, which is tested elsewhere.
        x = rng.integers(1, max(spec.input.vocab_size, 2), size=(2, 6)).astype(np.int32)
    else:
        x = rng.standard_normal((2, 6, spec.input.features)).astype(np.float32)
    try:
        y = np.asarray(model(x, training=False), dtype=np.float64)
    except Exception:  # noqa: BLE001 - any failure of the source means: no probe
        return None
    want = (2, 6, spec.output_width) if spec.readout == "sequence" else (2, spec.output_width)
    if y.shape != want:
        return None
    return Probe.whole(x, y)


def _convert(source: KerasSource, *, source_name: str) -> tuple[ModelSpec, Tensors, dict[str, Any]]:
    config = source.config
    try:
        nodes, ins, outs = graph(config)
    except (KeyError, TypeError, AttributeError) as e:
        raise ModelFormatError(f"malformed model config: {type(e).__name__}: {e}", source=source_name) from e
    if len(ins) != 1 or len(outs) != 1:
        raise ValueError(
            f"the model has {len(ins)} inputs and {len(outs)} outputs; rnninfer runs models with "
            "exactly one input and one output"
        )
    b = Builder(source, keras_major(source.keras_version))
    desc: dict[TensorKey, Desc] = {ins[0]: Desc("raw")}
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


def _op_node(b: Builder, node: Node, desc: dict[TensorKey, Desc]) -> None:
    """A Keras 3 op node: only the mask computations Keras inserts are accepted."""
    if node.cls not in MASK_OPS:
        raise b.fail(node, f"the operation {node.cls} is not supported")
    for k in node.inputs:
        d = desc.get(k)
        if d is None or d.kind not in ("raw", "mask"):
            raise b.fail(node, "only the mask Keras derives from the model input is supported")
    desc[(node.name, 0, 0)] = Desc("mask")


def _layer_node(b: Builder, node: Node, ins: list[Desc], last_key: dict[str, TensorKey]) -> Desc:
    cls, cfg = node.cls, node.config
    if cls == "Add":
        return map_add(b, node, ins)
    if len(ins) != 1:
        raise b.fail(node, f"it takes {len(ins)} inputs; only Add may merge tensors")
    d = ins[0]
    if node.mask is not None and not (b.mask_zero or b.mask_value is not None):
        raise b.fail(node, "it is given a mask that does not come from Embedding(mask_zero) or Masking")
    if cls in NO_OPS:
        b.notes.append(f"{node.name}: {cls} is a no-op at inference")
        return d
    if cls == "Activation":
        return map_activation(b, node, d)
    if cls == "Embedding":
        if d.kind != "raw":
            raise b.fail(node, "an Embedding must read the model input directly")
        b.check_keys(node, cfg, EMBEDDING_IGNORED_KEYS, EMBEDDING_HANDLED_KEYS)
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
        return Desc("seq", -1)
    if cls == "Masking":
        if d.kind != "raw":
            raise b.fail(node, "Masking is supported only directly on a feature input")
        b.check_dtype(node, cfg.get("dtype"))
        mv = cfg.get("mask_value", 0.0)
        if not isinstance(mv, (int, float)) or isinstance(mv, bool):
            raise b.fail(node, f"mask_value={mv!r} is not a number")
        b.mask_value = float(mv)
        b.kind = "features"
        return Desc("seq", -1)
    if d.kind == "raw":
        if cls in RECURRENT or cls == "Bidirectional":
            b.kind = "features"
            d = Desc("seq", -1)
        else:
            raise b.fail(node, "it is applied to the model input before any recurrent layer")
    if cls in RECURRENT or cls == "Bidirectional":
        return map_recurrent(b, node, d)
    if cls in ("GlobalAveragePooling1D", "GlobalMaxPooling1D"):
        return map_pooling(b, node, d)
    if cls == "Dense":
        return map_dense(b, node, cfg, d, last_key)
    if cls == "TimeDistributed":
        inner = cfg.get("layer")
        if not (isinstance(inner, dict) and inner.get("class_name") == "Dense"):
            what = inner.get("class_name") if isinstance(inner, dict) else inner
            raise b.fail(node, f"TimeDistributed wraps {what!r}; only TimeDistributed(Dense) is supported")
        if d.kind == "seq" and b.readout is None:
            pass
        elif not (d.kind == "head" and b.readout == "sequence"):
            raise b.fail(node, "TimeDistributed(Dense) must be applied to a sequence")
        return map_dense(b, node, inner.get("config") or {}, d, last_key)
    if cls in ("Sequential", "Functional", "Model"):
        raise b.fail(node, "nested models are not supported; flatten the model")
    raise b.fail(node, f"layer class {cls} is not supported")


def _finish_spec(
    b: Builder, final: Desc, last_key: dict[str, TensorKey], out_key: TensorKey, config: Mapping[str, Any]
) -> ModelSpec:
    if not b.layers:
        raise ValueError(
            f"the model has no recurrent layer (LSTM, GRU, SimpleRNN); supported: {SUPPORTED_TEXT}"
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


