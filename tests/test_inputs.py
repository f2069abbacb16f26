"""Input forms of ``predict``: padding before or after, array-likes, bool and float16 features."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import rnninfer
from rnninfer.layers import GRU, LSTM, RNN, Dense, Embedding, Features, GlobalAveragePooling, Layer
from rnninfer.model import Model

MODELS: dict[str, list[Layer]] = {
    "last": [Embedding(30, 5), LSTM(6), Dense(2)],
    "backward": [Embedding(30, 5), GRU(6, go_backwards=True)],
    "bidir_seq": [Embedding(30, 5, mask_zero=True), LSTM(4, bidirectional=True, return_sequences=True),
                  Dense(2, activation="tanh")],
    "pool": [Embedding(30, 5), RNN(4, return_sequences=True), GlobalAveragePooling(), Dense(1)],
    "features_seq": [Features(3), GRU(5, bidirectional=True, return_sequences=True)],
    "features_masked": [Features(3, mask_value=0.0), LSTM(4), Dense(1, activation="sigmoid")],
}
LENGTHS = [5, 1, 3, 5, 2]


def _model(name: str) -> Model:
    return rnninfer.build(MODELS[name], seed=1, threads=1)


def _seqs(model: Model, rng: np.random.Generator) -> list[np.ndarray]:
    inp = model.spec.input
    if inp.kind == "tokens":
        return [rng.integers(1, inp.vocab_size, size=n) for n in LENGTHS]
    return [rng.standard_normal((n, inp.features)).astype(np.float32) + 2.0 for n in LENGTHS]


def _pad(seqs: list[np.ndarray], pre: bool, value: Any) -> np.ndarray:
    T = max(len(s) for s in seqs)
    out = np.full((len(seqs), T, *seqs[0].shape[1:]), value, dtype=seqs[0].dtype)
    for i, s in enumerate(seqs):
        if pre:
            out[i, T - len(s):] = s
        else:
            out[i, : len(s)] = s
    return out


@pytest.mark.parametrize("name", sorted(MODELS))
def test_pre_padding_gives_each_sequence_its_own_answer(name: str, rng: np.random.Generator) -> None:
    model = _model(name)
    seqs = _seqs(model, rng)
    alone = [model.predict(s) for s in seqs]
    pad_value = 7 if model.spec.input.kind == "tokens" else 99.0  # never read, so anything
    pre = model.predict(_pad(seqs, True, pad_value), lengths=LENGTHS, padding="pre")
    post = model.predict(_pad(seqs, False, pad_value), lengths=LENGTHS, padding="post")
    T = max(LENGTHS)
    for i, (s, a) in enumerate(zip(seqs, alone)):
        if model.returns_sequences:
            n = len(s)
            assert pre[i, T - n:].tobytes() == a.tobytes()
            assert not pre[i, : T - n].any()  # zero rows under the padding, wherever it sits
            assert post[i, :n].tobytes() == a.tobytes()
            assert not post[i, n:].any()
        else:
            assert pre[i].tobytes() == a.tobytes() == post[i].tobytes()


def test_padding_without_lengths_means_full_rows(rng: np.random.Generator) -> None:
    model = _model("last")
    x = rng.integers(0, 30, size=(3, 4))
    assert model.predict(x, padding="pre").tobytes() == model.predict(x).tobytes()


def test_padding_errors_name_the_argument(rng: np.random.Generator) -> None:
    model = _model("last")
    x = np.array([[0, 0, 3, 40], [1, 2, 3, 4]])
    with pytest.raises(ValueError, match="padding must be 'post' or 'pre', got 'left'"):
        model.predict(x, lengths=[2, 4], padding="left")
    # The message gives the caller's position of the bad id, not the engine's.
    with pytest.raises(ValueError, match="token id 40 at sequence 0, step 3 is out of range"):
        model.predict(x, lengths=[2, 4], padding="pre")
    with pytest.raises(ValueError, match="token id 40 at sequence 0, step 3 is out of range"):
        model.predict(x)
    with pytest.raises(ValueError, match="step 1 is out of range"):
        model.predict(np.array([[9, -1], [1, 2]]), lengths=[1, 2], padding="pre")
    with pytest.raises(ValueError, match="padding must be"):
        model.predict([1, 2], padding="after")
    feat = _model("features_seq")
    x3 = np.zeros((2, 4, 3))
    x3[0, 3, 1] = np.nan
    with pytest.raises(ValueError, match="sequence 0, step 3, feature 1"):
        feat.predict(x3, lengths=[2, 4], padding="pre")
    x3[0, 0, 1] = np.inf  # under the padding: never read
    with pytest.raises(ValueError, match="sequence 0, step 3, feature 1"):
        feat.predict(x3, lengths=[2, 4], padding="pre")


# ---- array-likes --------------------------------------------------------------------------
def test_float16_and_bool_features_widen_exactly(rng: np.random.Generator) -> None:
    model = _model("features_seq")
    x16 = rng.standard_normal((2, 4, 3)).astype(np.float16)
    assert model.predict(x16).tobytes() == model.predict(x16.astype(np.float32)).tobytes()
    xb = rng.random((4, 3)) < 0.5
    assert model.predict(xb).tobytes() == model.predict(xb.astype(np.float32)).tobytes()
    ragged = [xb, xb[:2]]
    assert model.predict(ragged).tobytes() == model.predict([r.astype(np.float32) for r in ragged]).tobytes()
    assert model.predict(xb.tolist()).tobytes() == model.predict(xb.astype(np.float32)).tobytes()
    with pytest.raises(TypeError, match="x: features must be float32, float64, float16 or bool, got dtype int32"):
        model.predict(np.zeros((2, 3), np.int32))
    with pytest.raises(ValueError, match="NaN"):
        model.predict(np.full((2, 3), np.nan, np.float16))


def test_torch_tensors(rng: np.random.Generator) -> None:
    from helpers import framework

    torch = framework("torch")
    tok, feat = _model("bidir_seq"), _model("features_masked")
    ids = rng.integers(0, 30, size=(3, 5))
    lengths = np.array([5, 2, 4])
    assert tok.predict(torch.tensor(ids[0])).tobytes() == tok.predict(ids[0]).tobytes()
    assert (tok.predict(torch.tensor(ids), lengths=torch.tensor(lengths)).tobytes()
            == tok.predict(ids, lengths=lengths).tobytes())
    assert tok.predict([torch.tensor(ids[0]), torch.tensor(ids[1, :2])]).tobytes() == tok.predict(
        [ids[0], ids[1, :2]]).tobytes()
    assert tok.predict(torch.tensor(ids, dtype=torch.int32)).tobytes() == tok.predict(ids).tobytes()
    x = rng.standard_normal((3, 4, 3)).astype(np.float32)
    assert feat.predict(torch.from_numpy(x)).tobytes() == feat.predict(x).tobytes()
    assert feat.predict(torch.from_numpy(x).half()).tobytes() == feat.predict(x.astype(np.float16)).tobytes()
    assert feat.predict(torch.from_numpy(x) > 0).tobytes() == feat.predict((x > 0).astype(np.float32)).tobytes()
    assert feat.predict(torch.from_numpy(x[:, ::2])).tobytes() == feat.predict(x[:, ::2]).tobytes()
    with pytest.raises(TypeError, match="x: cannot convert Tensor to a numpy array"):
        feat.predict(torch.from_numpy(x).requires_grad_())


def test_tensorflow_tensors(rng: np.random.Generator) -> None:
    from helpers import framework

    tf = framework("tensorflow")
    tok, feat = _model("last"), _model("features_seq")
    ids = rng.integers(0, 30, size=(3, 5))
    assert tok.predict(tf.constant(ids)).tobytes() == tok.predict(ids).tobytes()
    assert (tok.predict(tf.constant(ids, dtype=tf.int32), lengths=tf.constant([5, 1, 2])).tobytes()
            == tok.predict(ids, lengths=[5, 1, 2]).tobytes())
    x = rng.standard_normal((2, 4, 3)).astype(np.float32)
    assert feat.predict(tf.constant(x)).tobytes() == feat.predict(x).tobytes()
    assert feat.predict(tf.constant(x, dtype=tf.float16)).tobytes() == feat.predict(x.astype(np.float16)).tobytes()
    assert feat.predict(tf.constant(x > 0)).tobytes() == feat.predict((x > 0).astype(np.float32)).tobytes()


def test_unconvertible_objects_name_the_forms() -> None:
    with pytest.raises(TypeError, match="x: token input must be a list of ids"):
        _model("last").predict({1, 2})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="x: feature input must be a float array"):
        _model("features_seq").predict(object())  # type: ignore[arg-type]


# ---- parity with Keras on pad_sequences batches -----------------------------------------
def _keras_models(keras: Any) -> dict[str, Any]:
    L = keras.layers

    def tok(mask: bool) -> Any:
        return [keras.Input((None,), dtype="int32"), L.Embedding(30, 6, mask_zero=mask)]

    return {
        "masked_stack": keras.Sequential([*tok(True), L.LSTM(8, return_sequences=True), L.LSTM(6),
                                          L.Dense(1, activation="sigmoid")]),
        "masked_bidir_seq": keras.Sequential([*tok(True), L.Bidirectional(L.GRU(5, return_sequences=True)),
                                              L.Dense(3)]),
        "plain_lstm": keras.Sequential([*tok(False), L.LSTM(7), L.Dense(2, activation="softmax")]),
        "plain_backward_gru": keras.Sequential([*tok(False), L.GRU(5, go_backwards=True), L.Dense(1)]),
        "plain_bidir": keras.Sequential([*tok(False), L.Bidirectional(L.LSTM(4)), L.Dense(2)]),
    }


@pytest.fixture(scope="module")
def keras_models() -> dict[str, tuple[Any, Model]]:
    from helpers import framework

    keras = framework("keras")
    framework("tensorflow")
    out = {}
    rng = np.random.default_rng(5)
    for name, km in _keras_models(keras).items():
        for w in km.weights:
            w.assign(rng.normal(0.0, 0.4, size=tuple(w.shape)).astype("float32"))
        out[name] = (km, rnninfer.from_keras(km))
    return out


KERAS_LENGTHS = [6, 2, 4, 1, 6]


@pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")
@pytest.mark.parametrize("name", ["masked_stack", "masked_bidir_seq", "plain_lstm", "plain_backward_gru",
                                  "plain_bidir"])
@pytest.mark.parametrize("padding", ["pre", "post"])
def test_keras_pad_sequences_parity(keras_models: dict[str, tuple[Any, Model]], name: str, padding: str) -> None:
    from helpers import framework

    keras = framework("keras")
    km, model = keras_models[name]
    rng = np.random.default_rng(9)
    seqs = [rng.integers(1, 30, size=n).tolist() for n in KERAS_LENGTHS]
    x = keras.utils.pad_sequences(seqs, padding=padding)  # int32, zeros as padding
    T = x.shape[1]
    got = model.predict(x, lengths=KERAS_LENGTHS, padding=padding)
    # Each sequence alone in Keras is the truth: padding must never be read.
    alone = [np.asarray(km(np.array([s]), training=False))[0] for s in seqs]
    for i, (s, want) in enumerate(zip(seqs, alone)):
        if model.returns_sequences:
            start = T - len(s) if padding == "pre" else 0
            np.testing.assert_allclose(got[i, start:start + len(s)], want, atol=1e-5)
        else:
            np.testing.assert_allclose(got[i], want, atol=1e-5)
    # Without lengths, the padded batch as Keras runs it: masked models skip
    # the zeros themselves; unmasked ones run through them, as Keras does.
    whole = np.asarray(km(x, training=False))
    full = model.predict(x, padding=padding)
    if model.returns_sequences:
        for i, s in enumerate(seqs):
            start = T - len(s) if padding == "pre" else 0
            np.testing.assert_allclose(full[i, start:start + len(s)], whole[i, start:start + len(s)], atol=1e-5)
    else:
        np.testing.assert_allclose(full, whole, atol=1e-5)


def test_check_token_range_names_the_callers_position() -> None:
    from rnninfer.inputs import check_token_range, prepare

    x = np.array([[0, 0, 3, 40], [1, 2, 3, 4]])
    p = prepare(x, [2, 4], "post", tokens=True, width=0, vocab=30)
    check_token_range(p.data, p.lengths, p.shift, 30)  # 40 sits past row 0's length
    full = prepare(x, None, "post", tokens=True, width=0, vocab=30)
    with pytest.raises(ValueError, match="token id 40 at sequence 0, step 3"):
        check_token_range(full.data, full.lengths, full.shift, 30)
    # A pre-padded row: the engine's layout, the caller's step in the message.
    pre = prepare(x, [2, 4], "pre", tokens=True, width=0, vocab=50)
    with pytest.raises(ValueError, match="token id 40 at sequence 0, step 3"):
        check_token_range(pre.data, pre.lengths, pre.shift, 30)
