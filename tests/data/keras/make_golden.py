"""Write the golden Keras files used by ``tests/converters/test_keras.py``.

Run from the repository root with TensorFlow, Keras 3 and tf_keras installed::

    python tests/data/keras/make_golden.py

Each model file ``<name>.keras`` / ``<name>.h5`` gets a ``<name>.npz`` next to
it holding the input batch ``x`` (padded), its ``lengths``, the framework's
output ``y`` for that batch and the ``keras_version`` that wrote the file. The
models are tiny so the whole directory stays far below 300 KB.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

HERE = Path(__file__).resolve().parent
VOCAB = 30


def _randomize(model: Any, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for w in model.weights:
        w.assign(rng.normal(0.0, 0.6, size=tuple(w.shape)).astype("float32"))


def _tokens(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.array([3, 9, 1, 6])
    x = np.zeros((len(lengths), 9), dtype=np.int32)
    for i, n in enumerate(lengths):
        x[i, :n] = rng.integers(1, VOCAB, size=n)
    x[1, 4] = 0  # an interior masked token
    return x, lengths


def _save(name: str, y: np.ndarray, x: np.ndarray, lengths: np.ndarray, version: str) -> None:
    np.savez(
        HERE / f"{name}.npz", x=x, lengths=lengths, y=y.astype(np.float64), keras_version=np.str_(version)
    )


def keras3() -> None:
    import keras

    L = keras.layers
    keras.utils.set_random_seed(1)
    model = keras.Sequential(
        [
            keras.Input((None,), dtype="int32"),
            L.Embedding(VOCAB, 4, mask_zero=True),
            L.LSTM(6, return_sequences=True, recurrent_activation="hard_sigmoid"),
            L.Bidirectional(L.GRU(5)),
            L.Dense(1, activation="sigmoid"),
        ]
    )
    _randomize(model, 11)
    x, lengths = _tokens(np.random.default_rng(2))
    y = np.asarray(model(x, training=False))
    model.save(HERE / "k3_sentiment.keras")
    model.save(HERE / "k3_sentiment.h5")
    _save("k3_sentiment", y, x, lengths, keras.__version__)

    i = keras.Input((None, 3))
    h = L.Masking(mask_value=0.0)(i)
    a = L.GRU(4, return_sequences=True, reset_after=False)(h)
    b = L.SimpleRNN(4, return_sequences=True)(a)
    s = L.Add()([a, b])
    o = L.TimeDistributed(L.Dense(2, activation="softmax"))(s)
    model = keras.Model(i, o)
    _randomize(model, 12)
    rng = np.random.default_rng(3)
    lengths = np.array([5, 2, 7])
    xf = np.zeros((3, 7, 3), dtype=np.float32)
    for k, n in enumerate(lengths):
        xf[k, :n] = rng.normal(size=(n, 3))
    y = np.asarray(model(xf, training=False))
    # Rows past each length are masked; the converted model gives zeros there.
    y = y * (np.arange(7)[None, :, None] < lengths[:, None, None])
    model.save(HERE / "k3_features.keras")
    _save("k3_features", y, xf, lengths, keras.__version__)


def keras2() -> None:
    import tf_keras

    K = tf_keras.layers
    tf_keras.utils.set_random_seed(1)
    model = tf_keras.Sequential(
        [
            K.Embedding(VOCAB, 4, mask_zero=True, input_shape=(None,)),
            K.LSTM(6, return_sequences=True, recurrent_activation="hard_sigmoid"),
            K.Bidirectional(K.GRU(5, reset_after=False), merge_mode="sum"),
            K.Dense(1, activation="sigmoid"),
        ]
    )
    _randomize(model, 21)
    x, lengths = _tokens(np.random.default_rng(4))
    y = np.asarray(model(x, training=False))
    model.save(HERE / "k2_sentiment.h5")
    _save("k2_sentiment", y, x, lengths, tf_keras.__version__)


if __name__ == "__main__":
    keras3()
    keras2()
    total = sum(p.stat().st_size for p in HERE.iterdir())
    print(f"golden files written to {HERE} ({total} bytes)")
