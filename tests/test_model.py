"""Model: input forms, bad input (SPEC §5), summary, threads/precision options."""

from __future__ import annotations

import numpy as np
import pytest

import rnninfer
from rnninfer.layers import GRU, LSTM, Dense, Embedding, Features


@pytest.fixture(scope="module")
def tok_model() -> rnninfer.Model:
    return rnninfer.build([Embedding(50, 4), LSTM(6), Dense(3, "softmax")], seed=0)


@pytest.fixture(scope="module")
def seq_model() -> rnninfer.Model:
    return rnninfer.build([Embedding(50, 4), GRU(6, return_sequences=True), Dense(2)], seed=0)


@pytest.fixture(scope="module")
def feat_model() -> rnninfer.Model:
    return rnninfer.build([Features(3), GRU(5), Dense(1, "sigmoid")], seed=0)


# ---- accepted forms -------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.int64,
                                   np.uint64])
def test_any_integer_dtype(tok_model, dtype):
    x = np.array([3, 7, 9, 1], dtype=dtype)
    assert np.array_equal(tok_model.predict(x), tok_model.predict([3, 7, 9, 1]))


def test_int64_arrays_skip_normalising_and_answer_the_same(tok_model, seq_model, monkeypatch):
    """A C-contiguous int64 array is the engine's form: it goes straight in, same bits, same errors."""
    rng = np.random.default_rng(3)
    batch = rng.integers(0, 50, size=(5, 7))
    expect = {id(m): (m.predict(batch.astype(np.int32)), m.predict(batch[2].astype(np.int32)))
              for m in (tok_model, seq_model)}

    def refuse(*args, **kwargs):
        raise AssertionError("prepare() ran for an int64 array")

    monkeypatch.setattr("rnninfer.model.prepare", refuse)
    for m in (tok_model, seq_model):
        many, one = expect[id(m)]
        assert np.array_equal(m.predict(batch), many)
        assert np.array_equal(m.predict(batch[2].copy()), one)
        assert m.predict(batch[2].copy()).shape == one.shape
    bad = batch.copy()
    bad[3, 4] = 50
    with pytest.raises(ValueError, match=r"token id 50 at sequence 3, step 4"):
        tok_model.predict(bad)
    with pytest.raises(ValueError, match=r"token id -2 at sequence 0, step 1"):
        tok_model.predict(np.array([1, -2, 3]))
    monkeypatch.undo()
    # Other layouts and byte orders are normalised first, to the same answers.
    assert np.array_equal(tok_model.predict(np.asfortranarray(batch)), expect[id(tok_model)][0])
    assert np.array_equal(tok_model.predict(batch.astype(">i8")), expect[id(tok_model)][0])
    assert np.array_equal(tok_model.predict(np.repeat(batch, 2, axis=1)[:, ::2]), expect[id(tok_model)][0])


def test_shapes(tok_model, seq_model):
    assert tok_model.predict([1, 2, 3]).shape == (3,)
    assert tok_model.predict([[1, 2, 3], [4]]).shape == (2, 3)
    assert tok_model.predict(np.ones((4, 5), np.int64)).shape == (4, 3)
    assert seq_model.predict([1, 2, 3]).shape == (3, 2)
    assert seq_model.predict([[1, 2, 3], [4]]).shape == (2, 3, 2)
    assert seq_model.predict(np.ones((4, 5), np.int32), lengths=[5, 1, 2, 3]).shape == (4, 5, 2)


def test_tuple_and_numpy_ragged(tok_model):
    a = tok_model.predict(((1, 2), (3,)))
    b = tok_model.predict([np.array([1, 2]), np.array([3], np.int16)])
    assert np.array_equal(a, b)


def test_non_contiguous_input(tok_model):
    x = np.arange(40, dtype=np.int64).reshape(4, 10)[:, ::2]
    assert np.array_equal(tok_model.predict(x), tok_model.predict(np.ascontiguousarray(x)))


def test_features_forms(feat_model, rng):
    xs = [rng.standard_normal((n, 3)) for n in (4, 2)]
    ragged64 = feat_model.predict(xs)
    ragged32 = feat_model.predict([x.astype(np.float32) for x in xs])
    single = feat_model.predict(xs[0])
    assert np.array_equal(ragged64, ragged32)
    assert np.array_equal(ragged64[0], single)
    as_list = feat_model.predict(xs[0].tolist())
    assert np.array_equal(as_list, single)
    padded = np.zeros((2, 4, 3))
    padded[0], padded[1, :2] = xs[0], xs[1]
    assert np.array_equal(feat_model.predict(padded, lengths=[4, 2]), ragged64)


def test_predict_does_not_modify_input(tok_model):
    x = np.array([[1, 2, 3], [4, 5, 6]], dtype=np.int64)
    before = x.copy()
    tok_model.predict(x, lengths=[3, 1])
    assert np.array_equal(x, before)


def test_model_is_immutable(tok_model):
    with pytest.raises(ValueError, match="read-only"):
        tok_model.tensors["head.0.bias"][0] = 1.0
    with pytest.raises(TypeError):
        tok_model.tensors["x"] = np.zeros(1)  # type: ignore[index]


# ---- bad input -------------------------------------------------------------------------
BAD_TOKENS = [
    ([], ValueError, "empty"),
    ([[]], ValueError, "length 0"),
    ([[1, 2], []], ValueError, "sequence 1 has length 0"),
    (np.zeros((0, 3), np.int64), ValueError, "empty batch"),
    (np.zeros((2, 0), np.int64), ValueError, "zero-length"),
    ([1, 50], ValueError, "token id 50"),
    ([1, -1], ValueError, "token id -1"),
    ([[1, 2], [3, 99]], ValueError, r"sequence 1, step 1"),
    (np.array([1.0, 2.0]), TypeError, "integers"),
    ([1.5, 2], TypeError, None),
    ([True, False], TypeError, None),
    (np.array([True, False]), TypeError, "integers"),
    ("abc", TypeError, "x: token input must be a list of ids, a list of sequences, an integer array"),
    (np.zeros((2, 2, 2), np.int64), ValueError, "1-D"),
    ([[1, 2], "x"], TypeError, "element 1"),
    ([[1, [2]]], TypeError, "integers"),
    ([2**40], ValueError, "out of range"),
    (np.array([2**40]), ValueError, "out of range"),
]


@pytest.mark.parametrize(("x", "exc", "msg"), BAD_TOKENS, ids=[str(i) for i in range(len(BAD_TOKENS))])
def test_bad_tokens(tok_model, x, exc, msg):
    with pytest.raises(exc, match=msg):
        tok_model.predict(x)


BAD_LENGTHS = [
    ([3, -1], ValueError, "negative"),
    ([3, 0], ValueError, "length 0"),
    ([3, 5], ValueError, "beyond"),
    ([3], ValueError, "shape"),
    ([[3, 3]], ValueError, "shape"),
    ([3.0, 2.0], TypeError, "integers"),
    (["a", "b"], TypeError, "integers"),
]


@pytest.mark.parametrize(("lengths", "exc", "msg"), BAD_LENGTHS, ids=[str(i) for i in range(len(BAD_LENGTHS))])
def test_bad_lengths(tok_model, lengths, exc, msg):
    with pytest.raises(exc, match=msg):
        tok_model.predict(np.ones((2, 4), np.int64), lengths=lengths)


def test_lengths_only_for_padded(tok_model):
    with pytest.raises(ValueError, match="padded"):
        tok_model.predict([1, 2], lengths=[2])
    with pytest.raises(ValueError, match="ragged"):
        tok_model.predict([[1, 2], [3]], lengths=[2, 1])


def test_padding_past_lengths_is_not_validated_or_read(tok_model):
    x = np.array([[1, 2, -5, 999], [3, 4, 5, 6]])
    out = tok_model.predict(x, lengths=[2, 4])
    assert np.array_equal(out[0], tok_model.predict([1, 2]))


BAD_FEATURES = [
    (np.zeros((3, 4)), ValueError, "expected 3 features"),
    (np.zeros((3,)), ValueError, "got 1-D"),
    (np.zeros((1, 1, 1, 3)), ValueError, "got 4-D"),
    (np.zeros((3, 3), np.int32), TypeError, None),
    (np.zeros((3, 3), np.complex64), TypeError, "float32, float64, float16 or bool"),
    (np.zeros((0, 3, 3)), ValueError, "empty batch"),
    (np.zeros((2, 0, 3)), ValueError, "zero-length"),
    (np.array([[0.0, np.nan, 1.0]]), ValueError, "NaN"),
    (np.array([[0.0, np.inf, 1.0]]), ValueError, "NaN or infinity"),
    (np.array([[0.0, 1e300, 1.0]]), ValueError, "float32 range"),
    ([np.zeros((2, 3)), np.zeros((0, 3))], ValueError, "sequence 1 has length 0"),
    ([np.zeros((2, 3)), np.zeros((2, 4))], ValueError, "sequence 1"),
    ([np.zeros((2, 3)), np.zeros((2, 3), np.int64)], TypeError, "sequence 1"),
    ([], ValueError, "empty"),
    ("abc", TypeError, None),
    ([[0.0, 1.0, 2.0], [1.0]], ValueError, "ragged"),
]


@pytest.mark.parametrize(("x", "exc", "msg"), BAD_FEATURES, ids=[str(i) for i in range(len(BAD_FEATURES))])
def test_bad_features(feat_model, x, exc, msg):
    with pytest.raises(exc, match=msg):
        feat_model.predict(x)


def test_nan_past_length_is_ignored(feat_model):
    x = np.zeros((2, 3, 3))
    x[1, 2] = np.nan
    feat_model.predict(x, lengths=[3, 2])
    with pytest.raises(ValueError, match="sequence 1, step 2"):
        feat_model.predict(x)


def test_engine_checks_its_own_contract(tok_model):
    """Callers bypassing the Python checks get an exception from C++, not a crash."""
    eng = tok_model._engine
    with pytest.raises(ValueError, match="token id 77"):
        eng.predict(np.array([[1, 77]], np.int32), np.array([2], np.int32))
    with pytest.raises(ValueError, match="lengths"):
        eng.predict(np.array([[1, 2]], np.int32), np.array([3], np.int32))
    with pytest.raises(ValueError, match="lengths"):
        eng.predict(np.array([[1, 2]], np.int32), np.array([2, 2], np.int32))
    with pytest.raises(ValueError, match="empty batch"):
        eng.predict(np.zeros((0, 2), np.int32), np.zeros(0, np.int32))
    with pytest.raises(ValueError, match="2-D"):
        eng.predict(np.zeros(3, np.int32), np.ones(1, np.int32))
    with pytest.raises(ValueError, match="token id -3"):
        eng.predict_list([1, -3])
    assert eng.predict_list([1, "2"]) is None  # not its form: the Python side takes it
    assert eng.predict_list([]) is None


# ---- options -----------------------------------------------------------------------------
def test_threads_and_precision_options(tmp_path):
    model = rnninfer.build([Embedding(10, 3), GRU(4)], seed=0, threads=2)
    assert model.threads == 2
    model.save(tmp_path / "m.npz")
    assert rnninfer.load(tmp_path / "m.npz").threads >= 1
    assert rnninfer.load(tmp_path / "m.npz", precision="fp32").precision == "fp32"
    with pytest.raises(ValueError, match="threads"):
        rnninfer.load(tmp_path / "m.npz", threads=0)
    with pytest.raises(TypeError, match="threads"):
        rnninfer.load(tmp_path / "m.npz", threads=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="precision"):
        rnninfer.load(tmp_path / "m.npz", precision="fp8")
    with pytest.raises(ValueError, match="ISA"):
        rnninfer.Model(model.spec, model.tensors, isa="sse9")


def test_summary_and_repr():
    model = rnninfer.build(
        [Embedding(100, 8, mask_zero=True), LSTM(16, bidirectional=True, return_sequences=True),
         GRU(8, reset_after=False), Dense(1, "sigmoid")], seed=0, name="clf")
    text = model.summary()
    for needle in ("Embedding(100, mask_zero)", "LSTM", "bidirectional (concat)", "GRU(reset_after=False)",
                   "Dense(sigmoid)", "(T, 32)", "(1,)", "total params"):
        assert needle in text, needle
    lstm_params = 2 * (64 * 8 + 64 * 16 + 2 * 64)
    assert str(lstm_params) in text
    assert "clf" in repr(model)


def test_isa_reporting():
    assert rnninfer.isa() in rnninfer._core._testing.available_isas()


def test_list_fast_path_matches_array_path(tok_model, seq_model):
    for model in (tok_model, seq_model):
        assert np.array_equal(model.predict([3, 1, 4, 1, 5]), model.predict(np.array([3, 1, 4, 1, 5])))
    with pytest.raises(TypeError, match="sequence 0, step 1 holds str '2'"):
        tok_model.predict([1, "2"])
    with pytest.raises(TypeError, match="sequence 0, step 2 holds bool True"):
        tok_model.predict([1, 2, True])
    with pytest.raises(ValueError, match="step 1 is out of range"):
        tok_model.predict([1, 2**70])


def test_uint64_ids_beyond_int64(tok_model):
    x = np.array([1, 2**63 + 5], dtype=np.uint64)
    with pytest.raises(ValueError, match="token id 9223372036854775813"):
        tok_model.predict(x)
    assert tok_model.predict(np.array([1, 2], np.uint64)).shape == (3,)


# ---- the package's top level ------------------------------------------------------------
def test_top_level_exports(tok_model):
    from rnninfer.serving.batcher import Batcher, Overloaded
    from rnninfer.serving.stream import Stream

    assert all(hasattr(rnninfer, name) for name in rnninfer.__all__)
    assert {"Stream", "Batcher", "Overloaded"} <= set(rnninfer.__all__) <= set(dir(rnninfer))
    assert (rnninfer.Stream, rnninfer.Batcher, rnninfer.Overloaded) == (Stream, Batcher, Overloaded)
    assert isinstance(tok_model.stream(), rnninfer.Stream)
    with pytest.raises(AttributeError, match="no attribute 'Streams'"):
        rnninfer.Streams  # noqa: B018


def test_import_does_not_load_the_engine():
    """``import rnninfer`` (and so the file format and converters) works without ``_core``."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    code = ("import sys, rnninfer; assert 'rnninfer._core' not in sys.modules; "
            "rnninfer.Stream; assert 'rnninfer._core' in sys.modules")
    env = dict(os.environ, PYTHONPATH=str(Path(rnninfer.__file__).parents[1]))
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120, env=env)
