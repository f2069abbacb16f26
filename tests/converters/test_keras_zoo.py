"""Keras models as people define them: converted in memory (checked against the model) and from files.

``from_keras(model)`` runs the Keras model on a probe input and refuses to
return a model that disagrees; refusals name the layer without raw config
dictionaries; ``summary()`` counts parameters as Keras does.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import framework

keras = framework("keras")
framework("tensorflow")

import rnninfer
from rnninfer.converters.base import finish

# Keras/TensorFlow themselves emit these under NumPy 2; they are not ours to fix.
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)

L = keras.layers
TOL = 1e-5


def sentiment() -> Any:
    return keras.Sequential([
        keras.Input((None,), dtype="int32"), L.Embedding(50, 8), L.LSTM(6, return_sequences=True),
        L.Dropout(0.3), L.LSTM(5), L.Dense(1, activation="sigmoid"),
    ])


def bidirectional_sum() -> Any:
    i = keras.Input((None,), dtype="int32")
    x = L.Embedding(50, 8, mask_zero=True)(i)
    x = L.Bidirectional(L.GRU(6), merge_mode="sum")(x)
    return keras.Model(i, L.Dense(3, activation="softmax")(x))


def tagger() -> Any:
    return keras.Sequential([
        keras.Input((None, 4)), L.Bidirectional(L.SimpleRNN(5, return_sequences=True)),
        L.TimeDistributed(L.Dense(3)),
    ])


def imdb_bidirectional() -> Any:
    """keras.io "Bidirectional LSTM on IMDB", scaled down."""
    i = keras.Input(shape=(None,), dtype="int32")
    x = L.Embedding(50, 8)(i)
    x = L.Bidirectional(L.LSTM(6, return_sequences=True))(x)
    x = L.Bidirectional(L.LSTM(6))(x)
    return keras.Model(i, L.Dense(1, activation="sigmoid")(x))


def char_generation() -> Any:
    """keras.io "Character-level text generation with LSTM": one-hot characters in, softmax out."""
    return keras.Sequential([keras.Input((None, 7)), L.LSTM(8), L.Dense(7, activation="softmax")])


def pooled_gru() -> Any:
    i = keras.Input((None,), dtype="int32")
    x = L.Embedding(50, 8, mask_zero=True)(i)
    x = L.GRU(6, return_sequences=True, reset_after=False)(x)
    x = L.GlobalAveragePooling1D()(x)
    x = L.Dense(5, activation="relu")(x)
    return keras.Model(i, L.Dense(2, activation="log_softmax")(x))


ZOO: dict[str, Callable[[], Any]] = {
    "sentiment": sentiment,
    "bidirectional-sum": bidirectional_sum,
    "tagger": tagger,
    "imdb-bidirectional": imdb_bidirectional,
    "char-generation": char_generation,
    "pooled-gru": pooled_gru,
}


@pytest.mark.parametrize("name", list(ZOO))
def test_zoo_in_memory_and_file_routes_match_keras(name: str, tmp_path: Path) -> None:
    keras.utils.set_random_seed(1)
    km = ZOO[name]()
    path = tmp_path / "m.keras"
    km.save(path)
    rng = np.random.default_rng(0)
    for model in (rnninfer.from_keras(km), rnninfer.from_keras(path)):
        for n in (1, 5, 9):
            if model.spec.input.kind == "tokens":
                x = rng.integers(1, 50, size=n)
                want = np.asarray(km(x[None].astype(np.int32), training=False))[0]
            else:
                x = rng.standard_normal((n, model.spec.input.features)).astype(np.float32)
                want = np.asarray(km(x[None], training=False))[0]
            assert np.max(np.abs(model.predict(x) - want)) <= TOL


def test_in_memory_conversion_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    import rnninfer.converters.keras as conv

    real = conv.convert_keras

    def wrong(src: Any) -> Any:
        spec, tensors, producer = real(src)
        bias = tensors["head.0.bias"].copy()
        bias[0] += 0.01
        return finish(spec, dict(tensors, **{"head.0.bias": bias}), producer)

    monkeypatch.setattr(conv, "convert_keras", wrong)
    keras.utils.set_random_seed(1)
    km = sentiment()
    with pytest.raises(ValueError, match=r"disagrees with the Keras model.*max difference"):
        rnninfer.from_keras(km)
    assert rnninfer.from_keras(km, check=False).spec.head


@pytest.mark.parametrize(
    "layer",
    [L.LSTM(64), L.GRU(64), L.GRU(64, reset_after=False), L.SimpleRNN(64), L.Bidirectional(L.LSTM(32))],
    ids=["lstm", "gru", "gru-reset-before", "simple-rnn", "bi-lstm"],
)
def test_summary_counts_params_as_keras_does(layer: Any) -> None:
    km = keras.Sequential([keras.Input((None, 100)), layer, L.Dense(1)])
    text = rnninfer.from_keras(km).summary()
    assert f" {layer.count_params()} " in text
    assert f"total params: {km.count_params()} (counted as keras counts them)" in text


def test_lstm64_on_100_inputs_counts_42240() -> None:
    km = keras.Sequential([keras.Input((None, 100)), L.LSTM(64)])
    assert " 42240 " in rnninfer.from_keras(km).summary()


def test_seq2seq_decoder_refusal_names_layers_not_configs(tmp_path: Path) -> None:
    enc_in = keras.Input((None,), dtype="int32")
    _, h, c = L.LSTM(6, return_state=True, name="encoder")(L.Embedding(50, 8)(enc_in))
    dec_in = keras.Input((None,), dtype="int32")
    y = L.LSTM(6, name="decoder")(L.Embedding(50, 8)(dec_in), initial_state=[h, c])
    km = keras.Model([enc_in, dec_in], L.Dense(3)(y))
    path = tmp_path / "s2s.keras"
    km.save(path)
    for src in (km, path):
        with pytest.raises(ValueError, match="initial_state") as info:
            rnninfer.from_keras(src)
        text = str(info.value)
        assert "__keras_tensor__" not in text
        assert "keras_history" not in text
        assert "initial_state=[<output of layer 'encoder'>" in text
