"""A Keras model saved with stateful=True: its streams carry the state Keras carried."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import framework

import rnninfer

keras = framework("keras")
L = keras.layers


@pytest.mark.parametrize("cell", ["LSTM", "GRU", "SimpleRNN"])
def test_stateful_keras_model_streams_like_keras(cell: str, tmp_path: Path) -> None:
    i = keras.Input(batch_shape=(1, None), dtype="int32")
    x = L.Embedding(50, 6)(i)
    x = getattr(L, cell)(7, stateful=True, return_sequences=True)(x)
    x = getattr(L, cell)(5, stateful=True)(x)
    kmodel = keras.Model(i, L.Dense(2, activation="softmax")(x))
    rng = np.random.default_rng(3)
    kmodel.set_weights([rng.standard_normal(w.shape).astype(np.float32) * 0.4 for w in kmodel.get_weights()])
    path = tmp_path / "stateful.keras"
    kmodel.save(path)
    with pytest.warns(UserWarning, match="stateful"):
        model = rnninfer.from_keras(path)
    # Keras carries the state from call to call; a stream does the same.
    for layer in kmodel.layers:
        if hasattr(layer, "reset_state") and getattr(layer, "stateful", False):
            layer.reset_state()
    stream = model.stream()
    for chunk in ([4, 9, 1], [7], [33, 2, 8, 8], [0, 5]):
        want = np.asarray(kmodel(np.array([chunk], np.int32), training=False))[0]
        np.testing.assert_allclose(stream.feed(chunk), want, atol=1e-5)
