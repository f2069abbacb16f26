"""Parity and error tests for the Keras converter (``rnninfer.converters.keras``).

Every model is built in real Keras (Keras 3, and Keras 2 through ``tf_keras``),
saved as ``.keras`` and ``.h5``, converted, and compared with
``keras_model(x, training=False)`` at the SPEC's 1e-5 absolute tolerance on
single sequences, ragged batches and padded batches.

``Model.predict`` is compared with Keras, and with the float64 reference
executor as a debugging aid.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import framework

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
keras = framework("keras")
framework("tensorflow")

import rnninfer
from rnninfer.converters.base import Converted
from rnninfer.converters.keras import convert_keras
from rnninfer.errors import ModelFormatError
from rnninfer.model import Model
from rnninfer.reference import run_sequence

# Keras/TensorFlow themselves emit these under NumPy 2; they are not ours to fix.
pytestmark = [
    pytest.mark.filterwarnings(
        "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
    ),
]

TOL = 1e-5
DATA = Path(__file__).resolve().parent.parent / "data" / "keras"
L = keras.layers
VOCAB = 50


# ---- running a converted model ---------------------------------------------------------
def _ref_predict(conv: Converted, x: Any, lengths: Sequence[int] | None = None) -> np.ndarray:
    """What ``Model.predict`` must return, computed with the float64 reference."""
    spec, tensors, _ = conv
    seq_out = spec.readout == "sequence"
    if isinstance(x, np.ndarray) and (x.ndim == 1 or (x.ndim == 2 and spec.input.kind == "features")):
        return run_sequence(spec, tensors, x)
    rows = list(x) if lengths is None else [r[:n] for r, n in zip(x, lengths)]
    outs = [run_sequence(spec, tensors, np.asarray(r)) for r in rows]
    if not seq_out:
        return np.stack(outs)
    width = x.shape[1] if isinstance(x, np.ndarray) else max(len(r) for r in rows)
    full = np.zeros((len(outs), width, outs[0].shape[-1]))
    for i, o in enumerate(outs):
        full[i, : len(o)] = o
    return full


def predict(conv: Converted, x: Any, lengths: Sequence[int] | None = None) -> np.ndarray:
    """``Model.predict`` on the converted model, checked against the float64 reference too."""
    want = _ref_predict(conv, x, lengths)
    model = Model(conv.spec, conv.tensors, producer=conv.producer)
    got = model.predict(x, lengths=None if lengths is None else np.asarray(lengths))
    np.testing.assert_allclose(got, want, atol=TOL, err_msg="engine disagrees with the reference")
    return np.asarray(got)


MAX_ERR = [0.0]


def assert_close(got: np.ndarray, want: np.ndarray, what: str) -> None:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    err = float(np.max(np.abs(got - want))) if got.size else 0.0
    MAX_ERR[0] = max(MAX_ERR[0], err)
    assert err <= TOL, f"{what}: max abs error {err:.3g} > {TOL}"


def kcall(model: Any, x: np.ndarray) -> np.ndarray:
    return np.asarray(model(x, training=False), dtype=np.float64)


def randomize(model: Any, seed: int, scale: float = 0.4) -> None:
    """Give every weight random values so biases and all gates are exercised."""
    rng = np.random.default_rng(seed)
    for w in model.weights:
        w.assign(rng.normal(0.0, scale, size=tuple(w.shape)).astype("float32"))


# ---- model zoo (Keras 3) -----------------------------------------------------------------
def tok_input() -> Any:
    return keras.Input((None,), dtype="int32")


def m_worked_example() -> Any:
    return keras.Sequential(
        [
            keras.Input((None,), dtype="int32"),
            L.Embedding(VOCAB, 8, mask_zero=True),
            L.LSTM(16, return_sequences=True),
            L.LSTM(16),
            L.Dense(1, activation="sigmoid"),
        ]
    )


def m_gru_reset_before() -> Any:
    i = tok_input()
    x = L.Embedding(VOCAB, 6)(i)
    x = L.GRU(8, return_sequences=True, reset_after=False)(x)
    x = L.GRU(5, reset_after=True, go_backwards=True)(x)
    x = L.Dense(4)(x)
    return keras.Model(i, L.Activation("softmax")(x))


def m_bidir_masked() -> Any:
    i = tok_input()
    x = L.Embedding(VOCAB, 6, mask_zero=True)(i)
    x = L.Bidirectional(L.GRU(6, return_sequences=True))(x)
    x = L.Bidirectional(L.LSTM(5), merge_mode="ave")(x)
    return keras.Model(i, L.Dense(2, activation="tanh")(x))


def m_bidir_seq() -> Any:
    i = tok_input()
    x = L.Embedding(VOCAB, 6, mask_zero=True)(i)
    x = L.Bidirectional(L.SimpleRNN(4, return_sequences=True), merge_mode="sum")(x)
    x = L.Bidirectional(L.LSTM(4, return_sequences=True), merge_mode="mul")(x)
    return keras.Model(i, L.TimeDistributed(L.Dense(3))(x))


def m_rnn_options() -> Any:
    return keras.Sequential(
        [
            keras.Input((None,), dtype="int32"),
            L.Embedding(VOCAB, 5),
            L.SimpleRNN(6, activation="relu", use_bias=False, return_sequences=True, unroll=False),
            L.SimpleRNN(4, go_backwards=True, dropout=0.3, recurrent_dropout=0.2),
            L.Dense(3, activation="relu"),
            L.Dense(2, activation="log_softmax"),
        ]
    )


def m_masking_features() -> Any:
    i = keras.Input((None, 3))
    x = L.Masking(mask_value=0.0)(i)
    x = L.LSTM(7, return_sequences=True, recurrent_activation="hard_sigmoid")(x)
    x = L.GRU(5, return_sequences=True, activation="softsign", recurrent_activation="hard_sigmoid")(x)
    x = L.GlobalAveragePooling1D()(x)
    return keras.Model(i, L.Dense(2, activation="sigmoid")(x))


def m_residual() -> Any:
    i = tok_input()
    e = L.Embedding(VOCAB, 8, mask_zero=True)(i)
    x = L.LSTM(8, return_sequences=True)(e)
    x = L.Add()([e, x])
    y = L.GRU(8, return_sequences=True)(x)
    y = L.Add()([x, y])
    y = L.Bidirectional(L.LSTM(4, return_sequences=True))(y)
    z = L.GlobalAveragePooling1D()(L.Dropout(0.2)(y))
    return keras.Model(i, L.Dense(1, activation="sigmoid")(z))


def m_per_step_head() -> Any:
    i = tok_input()
    x = L.Embedding(VOCAB, 6, mask_zero=True)(i)
    x = L.SpatialDropout1D(0.2)(x)
    x = L.GaussianNoise(0.1)(x)
    x = L.LSTM(6, return_sequences=True, activation="elu")(x)
    x = L.GaussianDropout(0.1)(x)
    x = L.AlphaDropout(0.1)(x)
    x = L.ActivityRegularization(l1=0.01)(x)
    x = L.Dense(5, activation="swish")(x)
    x = L.TimeDistributed(L.Dense(3, activation="softmax"))(x)
    return keras.Model(i, x)


def m_maxpool_features() -> Any:
    i = keras.Input((None, 4))
    x = L.GRU(6, return_sequences=True)(i)
    x = L.SimpleRNN(5, return_sequences=True, activation="tanh")(x)
    x = L.GlobalMaxPooling1D()(x)
    x = L.Dense(3, use_bias=False)(x)
    return keras.Model(i, L.Activation("sigmoid")(x))


def m_sequence_no_head() -> Any:
    i = keras.Input((None, 3))
    x = L.Masking(mask_value=-1.0)(i)
    x = L.Bidirectional(L.GRU(4, return_sequences=True, reset_after=False))(x)
    return keras.Model(i, x)


ZOO: dict[str, Callable[[], Any]] = {
    "worked_example": m_worked_example,
    "gru_reset_before": m_gru_reset_before,
    "bidir_masked": m_bidir_masked,
    "bidir_seq": m_bidir_seq,
    "rnn_options": m_rnn_options,
    "masking_features": m_masking_features,
    "residual": m_residual,
    "per_step_head": m_per_step_head,
    "maxpool_features": m_maxpool_features,
    "sequence_no_head": m_sequence_no_head,
}


# ---- inputs ----------------------------------------------------------------------------
LENGTHS = (1, 4, 7, 12)


def token_seqs(rng: np.random.Generator, interior_zeros: bool) -> list[np.ndarray]:
    seqs = [rng.integers(1, VOCAB, size=n) for n in LENGTHS]
    if interior_zeros:
        seqs[2][3] = 0  # mask_zero skips token 0 wherever it occurs
        seqs[3][[0, 5]] = 0
    return seqs


def make_inputs(model: Any, spec: Any, rng: np.random.Generator) -> list[np.ndarray]:
    inp = spec.input
    if inp.kind == "tokens":
        return token_seqs(rng, inp.mask_zero)
    seqs = [rng.normal(size=(n, inp.features)).astype(np.float32) for n in LENGTHS]
    if inp.mask_value is not None:
        seqs[2][3] = inp.mask_value
        seqs[3][0] = inp.mask_value
    return seqs


def valid_steps(spec: Any, seq: np.ndarray) -> np.ndarray:
    inp = spec.input
    if inp.kind == "tokens":
        return seq != 0 if inp.mask_zero else np.ones(len(seq), bool)
    if inp.mask_value is None:
        return np.ones(len(seq), bool)
    return ~np.all(seq == inp.mask_value, axis=-1)


def pad(seqs: list[np.ndarray], width: int, value: float, pre: bool) -> np.ndarray:
    shape = (len(seqs), width, *seqs[0].shape[1:])
    out = np.full(shape, value, dtype=seqs[0].dtype)
    for i, s in enumerate(seqs):
        if pre:
            out[i, width - len(s) :] = s
        else:
            out[i, : len(s)] = s
    return out


def compare(
    spec: Any, got: np.ndarray, want: np.ndarray, seqs: list[np.ndarray], offsets: Sequence[int], what: str
) -> None:
    """Compare batch outputs; for sequence outputs only at each sequence's valid steps."""
    if spec.readout != "sequence":
        assert_close(got, want, what)
        return
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    for i, (s, off) in enumerate(zip(seqs, offsets)):
        v = valid_steps(spec, s)
        rows = off + np.flatnonzero(v)
        assert_close(got[i, rows], want[i, rows], f"{what}[{i}]")
        skipped = np.setdiff1d(np.arange(got.shape[1]), rows)
        # SPEC: rnninfer gives zero rows at skipped steps and past the length.
        assert np.all(got[i, skipped] == 0), f"{what}[{i}]: nonzero rows at skipped steps"


# ---- fixtures ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Any, dict[str, Converted]]]:
    """Every zoo model, saved in both formats and converted from all three sources."""
    root = tmp_path_factory.mktemp("keras_zoo")
    out: dict[str, tuple[Any, dict[str, Converted]]] = {}
    for k, (name, build) in enumerate(ZOO.items()):
        keras.utils.set_random_seed(k)
        model = build()
        randomize(model, seed=100 + k)
        model.save(root / f"{name}.keras")
        model.save(root / f"{name}.h5")
        convs = {
            "keras": convert_keras(root / f"{name}.keras"),
            "h5": convert_keras(str(root / f"{name}.h5")),
            "memory": convert_keras(model),
        }
        out[name] = (model, convs)
    return out


SOURCES = ("keras", "h5", "memory")


# ---- parity tests ------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(ZOO))
def test_parity_each_sequence_and_ragged(zoo: Any, name: str) -> None:
    model, convs = zoo[name]
    spec = convs["keras"].spec
    rng = np.random.default_rng(7)
    seqs = make_inputs(model, spec, rng)
    singles = [kcall(model, s[None])[0] for s in seqs]
    for src in SOURCES:
        conv = convs[src]
        for i, (s, want) in enumerate(zip(seqs, singles)):
            got = predict(conv, s)
            compare(spec, got[None], want[None], [s], [0], f"{name}/{src}/single {i}")
        # A ragged batch must give each sequence exactly what it gives alone.
        got = predict(conv, [s.tolist() if s.ndim == 1 else s for s in seqs])
        T = max(LENGTHS)
        if spec.readout == "sequence":
            want = np.zeros((len(seqs), T, singles[0].shape[-1]))
            for i, w in enumerate(singles):
                want[i, : len(w)] = w
        else:
            want = np.stack(singles)
        compare(spec, got, want, seqs, [0] * len(seqs), f"{name}/{src}/ragged")


@pytest.mark.parametrize("name", [n for n in ZOO if n != "maxpool_features"])
def test_parity_padded_batches(zoo: Any, name: str) -> None:
    model, convs = zoo[name]
    conv = convs["keras"]
    spec = conv.spec
    seqs = make_inputs(model, spec, np.random.default_rng(11))
    T = max(LENGTHS)
    inp = spec.input
    masked = inp.mask_zero or inp.mask_value is not None
    pad_value = 0 if inp.kind == "tokens" else (inp.mask_value if inp.mask_value is not None else 0.0)
    # Post-padding: Keras sees the padded array, rnninfer the array and the lengths.
    post = pad(seqs, T, pad_value, pre=False)
    if masked:
        want = kcall(model, post)
    else:  # without a mask Keras would run over the padding; its per-sequence answers are the truth
        want = _stack_singles(model, seqs, spec, T, pre=False)
    got = predict(conv, post, lengths=[len(s) for s in seqs])
    compare(spec, got, want, seqs, [0] * len(seqs), f"{name}/post-padded")
    if masked:
        # Pre-padding: the mask hides the leading padding, so rnninfer gets the
        # same rows at full length and skips the masked steps itself.
        pre = pad(seqs, T, pad_value, pre=True)
        got = predict(conv, pre)
        compare(spec, got, kcall(model, pre), seqs, [T - len(s) for s in seqs], f"{name}/pre-padded")


def _stack_singles(model: Any, seqs: list[np.ndarray], spec: Any, T: int, pre: bool) -> np.ndarray:
    singles = [kcall(model, s[None])[0] for s in seqs]
    if spec.readout != "sequence":
        return np.stack(singles)
    out = np.zeros((len(seqs), T, singles[0].shape[-1]))
    for i, w in enumerate(singles):
        out[i, : len(w)] = w
    return out


def test_spec_of_worked_example(zoo: Any) -> None:
    spec, tensors, producer = zoo["worked_example"][1]["keras"]
    assert spec.input.kind == "tokens"
    assert spec.input.mask_zero
    assert spec.input.vocab_size == VOCAB
    assert [(x.cell, x.units, x.direction) for x in spec.layers] == [("lstm", 16, "forward")] * 2
    assert spec.readout == "last"
    assert spec.head[0].activation == "sigmoid"
    assert producer["converter"] == "keras"
    assert producer["framework"] == "keras"
    assert producer["framework_version"] == keras.__version__
    assert producer["source"] == "worked_example.keras"
    assert tensors["layers.0.fwd.w_ih"].shape == (64, 8)
    assert all(t.dtype == np.float32 for t in tensors.values())


def test_residual_links_and_options_are_recognised(zoo: Any) -> None:
    spec = zoo["residual"][1]["h5"].spec
    assert [x.residual_from for x in spec.layers] == [-1, 0, None]
    assert spec.readout == "mean"
    spec = zoo["gru_reset_before"][1]["keras"].spec
    assert [x.reset_after for x in spec.layers] == [False, True]
    assert spec.layers[1].direction == "backward"
    assert spec.head[0].activation == "softmax"  # Activation layer folded into Dense
    spec = zoo["masking_features"][1]["memory"].spec
    assert spec.input.kind == "features"
    assert spec.input.mask_value == 0.0
    assert spec.layers[0].recurrent_activation == "hard_sigmoid"  # Keras 3 definition
    spec = zoo["bidir_seq"][1]["keras"].spec
    assert [x.merge for x in spec.layers] == ["sum", "mul"]
    assert spec.readout == "sequence"


def test_gru_reset_after_false_bias_layout(zoo: Any) -> None:
    """Keras' single GRU bias goes to b_ih (gates reordered z,r,h -> r,z,n); b_hh is zero."""
    model, convs = zoo["gru_reset_before"]
    tensors = convs["keras"].tensors
    gru = next(layer for layer in model.layers if isinstance(layer, L.GRU))
    kernel, _, bias = (np.asarray(w) for w in gru.get_weights())
    H = 8
    assert bias.shape == (3 * H,)
    np.testing.assert_array_equal(tensors["layers.0.fwd.b_ih"][:H], bias[H : 2 * H])
    np.testing.assert_array_equal(tensors["layers.0.fwd.b_ih"][H : 2 * H], bias[:H])
    np.testing.assert_array_equal(tensors["layers.0.fwd.w_ih"][2 * H :], kernel[:, 2 * H :].T)
    assert not tensors["layers.0.fwd.b_hh"].any()


# ---- Keras 2 (tf_keras) ------------------------------------------------------------------
@pytest.fixture(scope="module")
def tfk() -> Any:
    return framework("tf_keras")


def k2_models(tfk: Any) -> dict[str, Any]:
    K = tfk.layers
    seq = tfk.Sequential(
        [
            K.Embedding(VOCAB, 6, mask_zero=True, input_shape=(None,)),
            K.LSTM(7, return_sequences=True, recurrent_activation="hard_sigmoid"),
            K.Bidirectional(K.GRU(5, reset_after=False, recurrent_activation="hard_sigmoid")),
            K.Dense(2, activation="softmax"),
        ]
    )
    i = tfk.Input((None, 3))
    x = K.Masking(mask_value=0.0)(i)
    x = K.GRU(6, return_sequences=True)(x)
    y = K.SimpleRNN(6, return_sequences=True)(x)
    y = K.Add()([x, y])
    y = K.TimeDistributed(K.Dense(2))(y)
    func = tfk.Model(i, y)
    return {"k2_sequential": seq, "k2_functional": func}


@pytest.mark.parametrize("name", ["k2_sequential", "k2_functional"])
def test_keras2_h5_and_memory(tfk: Any, tmp_path: Path, name: str) -> None:
    tfk.utils.set_random_seed(3)
    model = k2_models(tfk)[name]
    randomize(model, seed=5, scale=0.8)  # large enough that hard_sigmoid's clip matters
    path = tmp_path / f"{name}.h5"
    with pytest.warns(UserWarning, match="legacy"):
        model.save(path)
    for src in (path, model):
        spec, _tensors, producer = conv = convert_keras(src)
        assert producer["framework_version"].startswith("2.")
        if name == "k2_sequential":
            assert spec.layers[0].recurrent_activation == "hard_sigmoid_keras2"
            assert any("hard_sigmoid" in n for n in producer["notes"])
        seqs = make_inputs(model, spec, np.random.default_rng(2))
        T = max(LENGTHS)
        padded = pad(seqs, T, 0 if spec.input.kind == "tokens" else 0.0, pre=False)
        want = np.asarray(model(padded, training=False), np.float64)
        compare(spec, predict(conv, padded, lengths=[len(s) for s in seqs]), want, seqs, [0] * 4, name)
        pre = pad(seqs, T, 0 if spec.input.kind == "tokens" else 0.0, pre=True)
        want = np.asarray(model(pre, training=False), np.float64)
        compare(spec, predict(conv, pre), want, seqs, [T - len(s) for s in seqs], name + "/pre")


def test_hard_sigmoid_differs_between_keras_versions(tfk: Any) -> None:
    """The two definitions really differ, so reading the version matters."""
    x = np.array([-2.6, -1.0, 0.7, 2.6], np.float32)
    k3 = np.asarray(keras.activations.hard_sigmoid(x))
    k2 = np.asarray(tfk.activations.hard_sigmoid(tfk.backend.constant(x)))
    np.testing.assert_allclose(k3, np.clip(x / 6 + 0.5, 0, 1), atol=1e-7)
    np.testing.assert_allclose(k2, np.clip(0.2 * x + 0.5, 0, 1), atol=1e-7)
    assert np.abs(k3 - k2).max() > 0.05


# ---- golden files ------------------------------------------------------------------------
GOLDEN = sorted(p.name for p in DATA.glob("*") if p.suffix in (".keras", ".h5"))


def test_golden_files_exist() -> None:
    assert {"k2_sentiment.h5", "k3_sentiment.keras", "k3_sentiment.h5", "k3_features.keras"} <= set(GOLDEN)
    assert sum(p.stat().st_size for p in DATA.iterdir()) < 300_000


@pytest.mark.parametrize("fname", GOLDEN)
def test_golden_file_matches_stored_output(fname: str) -> None:
    expected = np.load(DATA / (Path(fname).stem + ".npz"))
    conv = convert_keras(DATA / fname)
    assert conv.producer["framework_version"] == str(expected["keras_version"])
    x, lengths, want = expected["x"], expected["lengths"], expected["y"]
    got = predict(conv, x, lengths=lengths)
    assert_close(got, want, fname)


def test_files_convert_without_tensorflow_or_keras() -> None:
    """Reading files needs numpy and h5py only (SPEC §1)."""
    code = textwrap.dedent(
        f"""
        import sys
        for mod in ("tensorflow", "keras", "tf_keras", "torch", "jax"):
            sys.modules[mod] = None
        import numpy as np
        from rnninfer.converters.keras import convert_keras
        from rnninfer.reference import run_sequence
        for name in {GOLDEN!r}:
            spec, tensors, producer = convert_keras({str(DATA)!r} + "/" + name)
            run_sequence(spec, tensors, np.ones((3,), int) if spec.input.kind == "tokens"
                         else np.ones((3, spec.input.features)))
        assert not any(m in sys.modules and sys.modules[m] is not None
                       for m in ("tensorflow", "keras", "tf_keras"))
        print("ok", len({GOLDEN!r}))
        """
    )
    env = dict(os.environ)
    pkg = str(Path(rnninfer.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = pkg + os.pathsep + env.get("PYTHONPATH", "")
    r = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, env=env, timeout=120
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"ok {len(GOLDEN)}"


def test_public_from_keras(zoo: Any, tmp_path: Path) -> None:
    model, _ = zoo["worked_example"]
    path = tmp_path / "m.keras"
    model.save(path)
    m = rnninfer.from_keras(str(path))
    x = [5, 3, 0, 9]
    assert_close(m.predict(x), kcall(model, np.array([x]))[0], "from_keras")
    assert rnninfer.from_keras(model).producer["framework"] == "keras"


# ---- unsupported models and options ------------------------------------------------------
def _func(*body: Callable[[Any], Any], features: int | None = None) -> Any:
    i = keras.Input((None, features)) if features else tok_input()
    x = i
    for f in body:
        x = f(x)
    return keras.Model(i, x)


def _emb(mask: bool = False) -> Callable[[Any], Any]:
    return L.Embedding(VOCAB, 4, mask_zero=mask)


UNSUPPORTED: dict[str, tuple[Callable[[], Any], str]] = {
    "conv1d": (
        lambda: _func(_emb(), L.Conv1D(4, 3, name="my_conv"), L.LSTM(3)),
        r"'my_conv' \(Conv1D\) at position \d",
    ),
    "layernorm": (
        lambda: _func(_emb(), L.LSTM(3, return_sequences=True), L.LayerNormalization(name="ln"), L.LSTM(3)),
        r"'ln' \(LayerNormalization\) at position \d",
    ),
    "dense_first": (
        lambda: _func(L.Dense(4, name="pre"), L.LSTM(3), features=3),
        r"'pre' \(Dense\) at position \d.*before",
    ),
    "go_backwards_seq": (
        lambda: _func(_emb(), L.LSTM(3, return_sequences=True, go_backwards=True, name="gb")),
        r"'gb' \(LSTM\).*go_backwards=True with return_sequences=True",
    ),
    "return_state": (
        lambda: _func(_emb(), lambda x: L.GRU(3, return_state=True, name="rs")(x)[0]),
        r"'rs' \(GRU\).*return_state",
    ),
    "merge_none": (
        lambda: _func(_emb(), lambda x: L.Bidirectional(L.LSTM(3), merge_mode=None, name="bi")(x)[0]),
        r"'bi' \(Bidirectional\).*merge_mode",
    ),
    "bad_activation": (
        lambda: _func(_emb(), L.LSTM(3, activation="hard_tanh", name="act")),
        r"'act' \(LSTM\).*activation='hard_tanh'",
    ),
    "no_recurrent": (
        lambda: _func(L.GlobalAveragePooling1D(name="p"), L.Dense(2), features=3),
        r"'p' \(GlobalAveragePooling1D\).*before any recurrent layer",
    ),
    "activation_not_foldable": (
        lambda: _func(_emb(), L.LSTM(3), L.Activation("relu", name="a")),
        r"'a' \(Activation\).*after a linear Dense",
    ),
    "attention": (
        lambda: _func(_emb(), L.LSTM(3, return_sequences=True), lambda x: L.Attention(name="att")([x, x])),
        r"'att' \(Attention\)",
    ),
    "branch_pre_residual": (lambda: _branch_model(), r"before its residual Add"),
    "flatten": (
        lambda: _func(_emb(), L.LSTM(3, return_sequences=True), L.Flatten(name="fl")),
        r"'fl' \(Flatten\)",
    ),
}


def _branch_model() -> Any:
    i = tok_input()
    e = L.Embedding(VOCAB, 4)(i)
    x = L.LSTM(4, return_sequences=True)(e)
    y = L.Add()([e, x])
    z = L.LSTM(4)(x)  # reads the LSTM output before the Add: not expressible
    return keras.Model(i, L.Add()([z, L.GlobalAveragePooling1D()(y)]))


@pytest.mark.parametrize("case", list(UNSUPPORTED))
def test_unsupported_layers_are_named(case: str, tmp_path: Path) -> None:
    build, pattern = UNSUPPORTED[case]
    model = build()
    path = tmp_path / "m.keras"
    model.save(path)
    for src in (path, model):
        with pytest.raises((ValueError, TypeError), match=pattern) as info:
            convert_keras(src)
        assert not isinstance(info.value, ModelFormatError)


def test_error_lists_supported_layers() -> None:
    with pytest.raises(ValueError, match="supported layers: InputLayer, Embedding"):
        convert_keras(UNSUPPORTED["conv1d"][0]())


def test_stateful_layer_warns(tmp_path: Path) -> None:
    i = keras.Input(batch_shape=(1, None), dtype="int32")
    x = L.Embedding(VOCAB, 4)(i)
    x = L.LSTM(5, stateful=True, name="st")(x)
    model = keras.Model(i, L.Dense(1)(x))
    randomize(model, 9)
    path = tmp_path / "s.keras"
    model.save(path)
    with pytest.warns(UserWarning, match=r"'st' \(LSTM\).*stateful.*carried by a stream, model\.stream\(\)"):
        conv = convert_keras(path)
    assert any("stateful=True; model.stream() carries the state" in n for n in conv.producer["notes"])
    seq = np.array([3, 8, 1, 4])
    assert_close(predict(conv, seq), kcall(model, seq[None])[0], "stateful as stateless")


@pytest.mark.filterwarnings("ignore:.*does not support masking:UserWarning")  # Keras' own warning
def test_global_max_pooling_with_mask_warns(tmp_path: Path) -> None:
    model = _func(
        _emb(mask=True), L.LSTM(4, return_sequences=True), L.GlobalMaxPooling1D(name="gmp"), L.Dense(1)
    )
    randomize(model, 4)
    with pytest.warns(UserWarning, match=r"'gmp' \(GlobalMaxPooling1D\).*mask"):
        conv = convert_keras(model)
    # Without masked steps Keras and rnninfer agree.
    seq = np.array([4, 9, 2, 7, 1])
    assert_close(predict(conv, seq), kcall(model, seq[None])[0], "gmp unmasked")


def test_subclassed_and_wrong_types_raise_type_error() -> None:
    class Sub(keras.Model):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = L.LSTM(2)

        def call(self, x: Any) -> Any:
            return self.rnn(x)

    with pytest.raises(TypeError, match="subclassed"):
        convert_keras(Sub())
    with pytest.raises(TypeError, match="expects a path"):
        convert_keras(42)


# ---- corrupt files -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def good_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    root = tmp_path_factory.mktemp("good")
    keras.utils.set_random_seed(0)
    model = m_worked_example()
    model.save(root / "m.keras")
    model.save(root / "m.h5")
    return {"keras": (root / "m.keras").read_bytes(), "h5": (root / "m.h5").read_bytes()}


def _zip_with(members: dict[str, bytes], path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for k, v in members.items():
            zf.writestr(k, v)
    return path


@pytest.mark.parametrize("fmt", ["keras", "h5"])
@pytest.mark.parametrize("cut", [0.1, 0.5, 0.9, 0.999])
def test_truncated_files_raise_model_format_error(
    good_files: dict[str, bytes], tmp_path: Path, fmt: str, cut: float
) -> None:
    data = good_files[fmt]
    path = tmp_path / f"t.{fmt}"
    path.write_bytes(data[: int(len(data) * cut)])
    with pytest.raises(ModelFormatError, match=f"t.{fmt}"):
        convert_keras(path)


@pytest.mark.parametrize("fmt", ["keras", "h5"])
def test_flipped_bytes_never_crash(good_files: dict[str, bytes], tmp_path: Path, fmt: str) -> None:
    """Damaged files give ModelFormatError or, if the damage hits only weights, a valid model."""
    rng = np.random.default_rng(0)
    data = bytearray(good_files[fmt])
    for trial in range(8):
        bad = bytearray(data)
        for pos in rng.integers(8, len(bad), size=16):
            bad[pos] ^= 0xFF
        path = tmp_path / f"f{trial}.{fmt}"
        path.write_bytes(bytes(bad))
        try:
            spec, tensors, _ = convert_keras(path)
        except (ModelFormatError, ValueError):
            continue
        finish_problems = rnninfer.format.spec.validate(spec, tensors)
        assert isinstance(finish_problems, list)


def test_damaged_archives(good_files: dict[str, bytes], tmp_path: Path) -> None:
    with zipfile.ZipFile(__import__("io").BytesIO(good_files["keras"])) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    cases = {
        "garbage.keras": b"this is not a model",
        "noconfig.keras": {k: v for k, v in members.items() if k != "config.json"},
        "noweights.keras": {k: v for k, v in members.items() if k != "model.weights.h5"},
        "badjson.keras": {**members, "config.json": b"{not json"},
        "notobject.keras": {**members, "config.json": b"[1, 2]"},
        "badweights.keras": {**members, "model.weights.h5": b"\x89HDF\r\n\x1a\n" + b"\0" * 100},
        "nolayers.keras": {
            **members,
            "config.json": json.dumps({"class_name": "Sequential", "config": {}}).encode(),
        },
    }
    for name, content in cases.items():
        path = tmp_path / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            _zip_with(content, path)
        with pytest.raises(ModelFormatError, match=name):
            convert_keras(path)


def test_weights_only_h5_is_rejected(tmp_path: Path) -> None:
    model = m_worked_example()
    path = tmp_path / "w.weights.h5"
    model.save_weights(path)
    with pytest.raises(ModelFormatError, match="model_config"):
        convert_keras(path)


def test_report_max_error() -> None:
    """Runs last in this module: the largest error seen must be within tolerance."""
    print(f"largest abs error against Keras: {MAX_ERR[0]:.3g}")
    assert MAX_ERR[0] <= TOL
