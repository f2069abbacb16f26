"""Keras 3 on TensorFlow as a benchmark engine: a ``keras.Sequential`` with the same weights."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .base import Prepared, Tensors, check_supported


def configure_tensorflow(threads: int) -> None:
    """Size TensorFlow's thread pools; possible only before it initialises."""
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError as e:
        if tf.config.threading.get_intra_op_parallelism_threads() != threads:
            raise RuntimeError(
                f"TensorFlow is already initialised with "
                f"{tf.config.threading.get_intra_op_parallelism_threads()} intra-op threads; "
                f"run each thread count in its own process ({e})"
            ) from e


def _gate_blocks(w: np.ndarray, order: Sequence[int], gates: int) -> np.ndarray:
    """Reorder the gate blocks along axis 0 of a canonical ``(G*H, ...)`` tensor."""
    blocks = np.split(np.asarray(w), gates, axis=0)
    return np.concatenate([blocks[i] for i in order], axis=0)


def _keras_cell_weights(layer: Any, tensors: Tensors, pre: str) -> list[np.ndarray]:
    """Keras weights of one direction from canonical tensors (transpose, gate reorder)."""
    gates = {"lstm": 4, "gru": 3, "rnn": 1}[layer.cell]
    # Keras LSTM gates i,f,c,o = canonical i,f,g,o; Keras GRU z,r,h vs canonical r,z,n.
    order = (1, 0, 2) if layer.cell == "gru" else tuple(range(gates))
    w_ih = _gate_blocks(tensors[pre + "w_ih"], order, gates)
    w_hh = _gate_blocks(tensors[pre + "w_hh"], order, gates)
    out = [w_ih.T.copy(), w_hh.T.copy()]
    if layer.bias:
        b_ih = _gate_blocks(tensors[pre + "b_ih"], order, gates)
        b_hh = _gate_blocks(tensors[pre + "b_hh"], order, gates)
        # GRU reset_after keeps both biases (2, 3H); LSTM/SimpleRNN have one (summed).
        out.append(np.stack([b_ih, b_hh]) if layer.cell == "gru" else b_ih + b_hh)
    return [np.asarray(w, dtype=np.float32) for w in out]


def keras_model(spec: Any, tensors: Tensors) -> Any:
    """A ``keras.Sequential`` computing ``spec`` with weights set from ``tensors``."""
    check_supported(spec, "keras")
    import keras

    inp = spec.input
    layers: list[Any] = []
    if inp.kind == "tokens":
        layers.append(keras.Input(shape=(None,), dtype="int32"))
        emb = keras.layers.Embedding(inp.vocab_size, inp.embedding_dim)
        layers.append(emb)
    else:
        layers.append(keras.Input(shape=(None, inp.features), dtype="float32"))
    weights: list[tuple[Any, list[np.ndarray]]] = []
    if inp.kind == "tokens":
        weights.append((layers[-1], [np.asarray(tensors["embedding.weight"])]))
    n = len(spec.layers)
    for i, layer in enumerate(spec.layers):
        kw: dict[str, Any] = {
            "return_sequences": i < n - 1 or spec.readout == "sequence",
            "activation": layer.activation, "use_bias": layer.bias,
        }
        if layer.cell == "lstm":
            cell = keras.layers.LSTM(layer.units, recurrent_activation=layer.recurrent_activation, **kw)
        elif layer.cell == "gru":
            cell = keras.layers.GRU(layer.units, recurrent_activation=layer.recurrent_activation,
                                    reset_after=True, **kw)
        else:
            cell = keras.layers.SimpleRNN(layer.units, **kw)
        w = _keras_cell_weights(layer, tensors, f"layers.{i}.fwd.")
        if layer.num_directions == 2:
            cell = keras.layers.Bidirectional(cell, merge_mode="concat")
            w += _keras_cell_weights(layer, tensors, f"layers.{i}.bwd.")
        layers.append(cell)
        weights.append((cell, w))
    for j, dense in enumerate(spec.head):
        d = keras.layers.Dense(dense.units, activation=dense.activation, use_bias=dense.bias)
        w = [np.asarray(tensors[f"head.{j}.weight"]).T.copy()]
        if dense.bias:
            w.append(np.asarray(tensors[f"head.{j}.bias"]))
        layers.append(d)
        weights.append((d, w))
    model = keras.Sequential(layers)
    for lay, w in weights:
        lay.set_weights(w)
    return model


def _keras_input(spec: Any, x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.int32 if spec.input.kind == "tokens" else np.float32)


def _keras_version() -> str:
    import keras
    import tensorflow as tf

    return f"keras {keras.__version__} / tensorflow {tf.__version__}"


def prepare_keras_xla(spec: Any, tensors: Tensors, threads: int) -> Prepared:
    """Keras model called through ``tf.function(jit_compile=True)`` (XLA)."""
    configure_tensorflow(threads)
    import tensorflow as tf

    model = keras_model(spec, tensors)
    fn = tf.function(lambda x: model(x, training=False), jit_compile=True, reduce_retracing=False)

    def run(x: np.ndarray) -> np.ndarray:
        out: np.ndarray = fn(tf.constant(_keras_input(spec, x))).numpy()
        return out

    return Prepared(run, f"{_keras_version()} (tf.function jit_compile=True)")


def prepare_keras_eager(spec: Any, tensors: Tensors, threads: int) -> Prepared:
    """Keras model called eagerly, ``model(x, training=False)``."""
    configure_tensorflow(threads)
    model = keras_model(spec, tensors)

    def run(x: np.ndarray) -> np.ndarray:
        out: np.ndarray = np.asarray(model(_keras_input(spec, x), training=False))
        return out

    return Prepared(run, f"{_keras_version()} (eager model(x, training=False))")
