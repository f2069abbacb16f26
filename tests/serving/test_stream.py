"""Streams: feeding in any chunking, alone or beside other streams, gives predict's bits."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rnninfer
from rnninfer import _core
from rnninfer.format.manifest import ELEMENTWISE_ACTIVATIONS
from rnninfer.layers import (
    GRU,
    LSTM,
    RNN,
    Dense,
    Embedding,
    Features,
    GlobalAveragePooling,
    GlobalMaxPooling,
    Layer,
    complete_tensors,
    make_spec,
)
from rnninfer.model import Model
from rnninfer.serving.stream import state_layout

PRECISIONS = ("fp32", "bf16", "int8")
ISAS = list(_core._testing.available_isas())
MakeModel = Callable[..., Model]


@st.composite
def forward_architectures(draw: Any) -> list[Layer]:
    """Random forward-only stacks: every cell kind, activations, projections, residuals, masks."""
    layers: list[Layer] = []
    if draw(st.booleans()):
        layers.append(Embedding(draw(st.integers(2, 30)), draw(st.integers(1, 9)), mask_zero=draw(st.booleans())))
        width = layers[0].dim  # type: ignore[attr-defined]
    else:
        layers.append(Features(draw(st.integers(1, 7)), mask_value=draw(st.sampled_from([None, 0.0]))))
        width = layers[0].features  # type: ignore[attr-defined]
    n = draw(st.integers(1, 3))
    sequences = draw(st.booleans())
    for i in range(n):
        cell = draw(st.sampled_from(["lstm", "gru", "rnn"]))
        units = draw(st.integers(1, 40))
        proj = draw(st.integers(1, units - 1)) if cell == "lstm" and units > 1 and draw(st.booleans()) else 0
        top = i == n - 1
        out_w = proj or units
        # A residual top layer needs a sequence readout (a last-state head cannot follow one).
        residual = i > 0 and out_w == width and (not top or sequences) and draw(st.booleans())
        kw: dict[str, Any] = {
            "return_sequences": True if not top else sequences,
            "residual": residual,
            "bias": draw(st.booleans()),
            "activation": draw(st.sampled_from(["tanh", *ELEMENTWISE_ACTIVATIONS])),
        }
        if cell == "lstm":
            kw["recurrent_activation"] = draw(st.sampled_from(["sigmoid", "hard_sigmoid", "tanh"]))
            layers.append(LSTM(units, proj_size=proj, **kw))
        elif cell == "gru":
            kw["recurrent_activation"] = draw(st.sampled_from(["sigmoid", "hard_sigmoid"]))
            layers.append(GRU(units, reset_after=draw(st.booleans()), **kw))
        else:
            layers.append(RNN(units, **kw))
        width = out_w
    if sequences and draw(st.integers(0, 3)) == 0:
        layers.append(GlobalMaxPooling())
    for _ in range(draw(st.integers(0, 2))):
        layers.append(Dense(draw(st.integers(1, 6)), draw(st.sampled_from(["linear", "relu", "sigmoid", "softmax"]))))
    return layers


def _model(layers: list[Layer], seed: int, **kw: Any) -> Model:
    spec = make_spec(layers)
    return Model(spec, complete_tensors(spec, None, seed), **kw)


def _sequence(model: Model, rng: np.random.Generator, T: int, zero_frac: float = 0.2) -> np.ndarray:
    inp = model.spec.input
    if inp.kind == "tokens":
        x = rng.integers(0, inp.vocab_size, size=T)
        x[rng.random(T) < zero_frac] = 0
        return x
    f = rng.standard_normal((T, inp.features)).astype(np.float32)
    if inp.mask_value is not None:
        f[rng.random(T) < zero_frac] = inp.mask_value
    return f


def _as_input(x: np.ndarray, form: int) -> Any:
    """The chunk in one of the forms a feed takes (list, int64 array, other dtypes)."""
    if x.dtype.kind in "iu":
        return [int(v) for v in x] if form == 0 else x.astype([np.int64, np.int32, np.uint16][form % 3])
    return x if form % 2 == 0 else x.astype(np.float64)


def _cuts(draw: Any, T: int) -> list[int]:
    cuts = sorted(set(draw(st.lists(st.integers(1, max(1, T - 1)), max_size=6)))) if T > 1 else []
    return [0, *[c for c in cuts if 0 < c < T], T]


def _check_chunk(model: Model, x: np.ndarray, a: int, b: int, out: np.ndarray, whole: np.ndarray) -> None:
    if model.returns_sequences:
        np.testing.assert_array_equal(out, whole[a:b])
    else:
        np.testing.assert_array_equal(out, model.predict(x[:b]))


@given(data=st.data(), layers=forward_architectures(), seed=st.integers(0, 2**16),
       isa=st.sampled_from(ISAS), threads=st.sampled_from([1, 2]), precision=st.sampled_from(PRECISIONS))
@settings(max_examples=40)
def test_any_chunking_gives_predicts_bits(
    data: Any, layers: list[Layer], seed: int, isa: str, threads: int, precision: str
) -> None:
    model = _model(layers, seed, isa=isa, threads=threads, precision=precision)
    rng = np.random.default_rng(seed)
    x = _sequence(model, rng, data.draw(st.integers(1, 40)))
    whole = model.predict(x)
    s = model.stream()
    cuts = _cuts(data.draw, len(x))
    for k, (a, b) in enumerate(zip(cuts, cuts[1:])):
        out = s.feed(_as_input(x[a:b], k))
        _check_chunk(model, x, a, b, out, whole)
        assert s.steps == b
    assert all(v.dtype == np.float32 for v in s.state.values())


@given(data=st.data(), layers=forward_architectures(), seed=st.integers(0, 2**16),
       isa=st.sampled_from(ISAS), threads=st.sampled_from([1, 2]), precision=st.sampled_from(PRECISIONS))
@settings(max_examples=30)
def test_feed_many_at_any_positions_gives_predicts_bits(
    data: Any, layers: list[Layer], seed: int, isa: str, threads: int, precision: str
) -> None:
    model = _model(layers, seed, isa=isa, threads=threads, precision=precision)
    rng = np.random.default_rng(seed)
    n = data.draw(st.integers(1, 12))
    xs = [_sequence(model, rng, data.draw(st.integers(1, 20))) for _ in range(n)]
    wholes = [model.predict(x) for x in xs]
    streams = [model.stream() for _ in range(n)]
    pos = [0] * n
    while any(p < len(x) for p, x in zip(pos, xs)):
        # A random subset of the unfinished streams, each by a random chunk;
        # some are fed alone in between.
        live = [i for i in range(n) if pos[i] < len(xs[i])]
        pick = data.draw(st.lists(st.sampled_from(live), min_size=1, unique=True))
        ends = [min(len(xs[i]), pos[i] + data.draw(st.integers(1, 6))) for i in pick]
        if len(pick) == 1 and data.draw(st.booleans()):
            outs = [streams[pick[0]].feed(xs[pick[0]][pos[pick[0]]:ends[0]])]
        else:
            outs = model.feed_many([streams[i] for i in pick],
                                   [_as_input(xs[i][pos[i]:e], i) for i, e in zip(pick, ends)])
        for i, e, out in zip(pick, ends, outs):
            _check_chunk(model, xs[i], pos[i], e, out, wholes[i])
            pos[i] = e
            assert streams[i].steps == e


@pytest.mark.parametrize("threads", [1, 2])
def test_many_streams_one_token_each_use_shards(isa: str, threads: int, make_model: MakeModel) -> None:
    # 64 streams (batch shards at 2 threads) and an LSTM(64) stack (split plans for few streams).
    model = make_model([Embedding(50, 8), LSTM(64), LSTM(64), Dense(3, "softmax")], isa=isa, threads=threads)
    rng = np.random.default_rng(1)
    xs = [rng.integers(0, 50, size=int(rng.integers(1, 9))) for _ in range(64)]
    streams = [model.stream() for _ in xs]
    for t in range(max(map(len, xs))):
        idx = [i for i, x in enumerate(xs) if t < len(x)]
        outs = model.feed_many([streams[i] for i in idx], [[int(xs[i][t])] for i in idx])
        for i, out in zip(idx, outs):
            np.testing.assert_array_equal(out, model.predict(xs[i][:t + 1]))
    few = streams[:2]
    outs = model.feed_many(few, [[1, 2, 3], [4]])
    assert [s.steps for s in few] == [len(xs[0]) + 3, len(xs[1]) + 1]
    np.testing.assert_array_equal(outs[0], model.predict([*xs[0], 1, 2, 3]))


def test_refused_feed_leaves_the_stream_unchanged(make_model: MakeModel) -> None:
    model = make_model([Embedding(20, 4), LSTM(6), Dense(2)])
    s = model.stream()
    s.feed([1, 2, 3])
    before = s.state
    for bad, err in [([4, 20], ValueError), ([4, -1], ValueError), (np.array([4, 99]), ValueError),
                     ([], ValueError), ([1.5], TypeError), (np.array([0.5]), TypeError),
                     ([[1, 2], [3]], ValueError), (np.array([2**63 + 5], np.uint64), ValueError)]:
        with pytest.raises(err):
            s.feed(bad)
        assert s.steps == 3
        for k, v in s.state.items():
            np.testing.assert_array_equal(v, before[k])
    np.testing.assert_array_equal(s.feed([5]), model.predict([1, 2, 3, 5]))
    with pytest.raises(ValueError, match="token id 20 at sequence 0, step 1"):
        s.feed([4, 20])


def test_refused_nan_features_leave_the_stream_unchanged(make_model: MakeModel) -> None:
    model = make_model([Features(3), GRU(5, return_sequences=True), Dense(2)])
    s = model.stream()
    x = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    s.feed(x[:2])
    bad = x[2:].copy()
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match="step 1, feature 2"):
        s.feed(bad)
    with pytest.raises(ValueError, match="NaN or infinity"):
        s.feed(np.full((1, 3), 1e300))  # beyond float32
    with pytest.raises(ValueError, match="features per step"):
        s.feed(np.zeros((1, 4), np.float32))
    assert s.steps == 2
    np.testing.assert_array_equal(s.feed(x[2:]), model.predict(x)[2:])


def test_refused_feed_many_advances_no_stream(make_model: MakeModel) -> None:
    model = make_model([Embedding(20, 4), LSTM(6), Dense(2)], threads=2)
    streams = [model.stream() for _ in range(10)]
    model.feed_many(streams, [[i + 1] for i in range(10)])
    states = [s.state for s in streams]
    xs: list[Any] = [[1, 2]] * 10
    for i, bad in [(9, [1, 20]), (0, [3.0]), (4, []), (5, np.array([1, 50]))]:
        with pytest.raises((ValueError, TypeError)):
            model.feed_many(streams, [*xs[:i], bad, *xs[i + 1:]])
    with pytest.raises(ValueError, match="same stream"):
        model.feed_many([streams[0], streams[1], streams[0]], [[1], [1], [1]])
    with pytest.raises(ValueError, match="one input per stream"):
        model.feed_many(streams, xs[:3])
    with pytest.raises(ValueError, match="another model"):
        model.feed_many([streams[0], make_model([Embedding(20, 4), LSTM(6), Dense(2)]).stream()], [[1], [1]])
    with pytest.raises(TypeError, match="not a Stream"):
        model.feed_many([streams[0], "x"], [[1], [1]])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="xs\\[2\\]"):
        model.feed_many(streams[:3], [[1], [2], [[1], [2]]])
    for s, st_before in zip(streams, states):
        assert s.steps == 1
        for k, v in s.state.items():
            np.testing.assert_array_equal(v, st_before[k])
    outs = model.feed_many(streams, xs)
    for i, out in enumerate(outs):
        np.testing.assert_array_equal(out, model.predict([i + 1, 1, 2]))


def test_state_names_and_resume_on_another_copy(isa: str, make_model: MakeModel) -> None:
    layers = [Embedding(30, 5, mask_zero=True), LSTM(8, proj_size=3), GRU(4, reset_after=False), RNN(6), Dense(2)]
    model = make_model(layers, isa=isa)
    s = model.stream()
    x = [3, 0, 7, 1, 0, 9, 4]
    s.feed(x[:4])
    state = s.state
    assert list(state) == ["layers.0.fwd.h", "layers.0.fwd.c", "layers.1.fwd.h", "layers.2.fwd.h"]
    assert [v.shape for v in state.values()] == [(3,), (8,), (4,), (6,)]
    assert state_layout(model) == {k: v.shape for k, v in state.items()}
    state["layers.0.fwd.h"][:] = 7  # a copy: the stream does not change
    other = make_model(layers, isa=isa).stream(state=s.state)
    np.testing.assert_array_equal(other.feed(x[4:]), model.predict(x))
    assert other.steps == 3
    np.testing.assert_array_equal(s.feed(x[4:]), model.predict(x))
    s.reset()
    assert s.steps == 0
    assert all(not v.any() for v in s.state.values())
    np.testing.assert_array_equal(s.feed(x[:2]), model.predict(x[:2]))


def test_bad_states_are_named(make_model: MakeModel) -> None:
    model = make_model([Features(2), LSTM(4), Dense(1)])
    good = model.stream().state
    cases: list[tuple[dict[str, Any], str]] = [
        ({k: v for k, v in good.items() if k != "layers.0.fwd.c"}, "lacks the entry 'layers.0.fwd.c'"),
        ({**good, "layers.1.fwd.h": np.zeros(4, np.float32)}, "unknown state entry 'layers.1.fwd.h'"),
        ({**good, "layers.0.fwd.h": np.zeros(5, np.float32)}, "'layers.0.fwd.h' has shape \\(5,\\)"),
        ({**good, "layers.0.fwd.h": np.zeros((1, 4), np.float32)}, "'layers.0.fwd.h' has shape"),
        ({**good, "layers.0.fwd.c": np.zeros(4, np.float64)}, "'layers.0.fwd.c' has dtype float64"),
        ({**good, "layers.0.fwd.c": np.array([0, np.nan, 0, 0], np.float32)}, "'layers.0.fwd.c' contains NaN"),
        ({**good, "layers.0.fwd.h": np.array([0, 0, np.inf, 0], np.float32)}, "'layers.0.fwd.h' contains NaN"),
    ]
    for state, msg in cases:
        with pytest.raises(ValueError, match=msg):
            model.stream(state=state)
    with pytest.raises(TypeError):
        model.stream(state=[1, 2])  # type: ignore[arg-type]


@pytest.mark.parametrize(("layers", "msg"), [
    ([Embedding(9, 2), LSTM(3), LSTM(3, bidirectional=True), Dense(1)], "layer 1 reads backwards \\(bidirectional\\)"),
    ([Features(2), GRU(3, go_backwards=True), Dense(1)], "layer 0 reads backwards \\(go_backwards\\)"),
    ([Features(2), GRU(3, return_sequences=True), GlobalAveragePooling(), Dense(1)], "mean readout"),
])
def test_models_that_cannot_stream_say_why(layers: list[Layer], msg: str, make_model: MakeModel) -> None:
    model = make_model(layers)
    with pytest.raises(ValueError, match=msg):
        model.stream()
    with pytest.raises(ValueError, match=msg):
        model.feed_many([], [])


def test_max_readout_carries_its_pool(isa: str, make_model: MakeModel) -> None:
    model = make_model([Embedding(12, 3, mask_zero=True), GRU(5, return_sequences=True), GlobalMaxPooling(),
                        Dense(2)], isa=isa)
    x = [0, 0, 4, 0, 9, 1, 0, 3]
    s = model.stream()
    for a, b in [(0, 1), (1, 2), (2, 5), (5, 6), (6, 8)]:
        np.testing.assert_array_equal(s.feed(x[a:b]), model.predict(x[:b]))
    state = s.state
    assert list(state)[-2:] == ["readout.max", "readout.steps"]
    assert state["readout.steps"].tolist() == [4.0]  # the masked steps are not pooled
    again = model.stream(state=state)
    np.testing.assert_array_equal(again.feed([7]), model.predict([*x, 7]))
    state["readout.max"][:] = -np.inf  # a pool may hold -inf; NaN and steps < 0 are refused
    model.stream(state=state)
    for entry, value, msg in [("readout.max", np.nan, "contains NaN"), ("readout.steps", -1.0, "whole number"),
                              ("readout.steps", 0.5, "whole number")]:
        bad = {**state, entry: np.full_like(state[entry], value)}
        with pytest.raises(ValueError, match=msg):
            model.stream(state=bad)


def test_concurrent_feeds_of_one_stream_are_refused(make_model: MakeModel) -> None:
    import threading

    model = make_model([Embedding(50, 16), LSTM(128), Dense(1)])
    s = model.stream()
    x = list(range(1, 50)) * 40
    errors: list[BaseException] = []

    def feed() -> None:
        for _ in range(20):
            try:
                s.feed(x)
            except RuntimeError as e:
                errors.append(e)

    threads = [threading.Thread(target=feed) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert s.steps == len(x) * (40 - len(errors))
    assert all("another thread" in str(e) for e in errors)


def test_state_resumes_in_another_process(tmp_path: Path, make_model: MakeModel) -> None:
    model = make_model([Embedding(40, 6), LSTM(10), GRU(7, return_sequences=True), Dense(3)], seed=3)
    model.save(tmp_path / "m.npz")
    x = [5, 9, 1, 33, 2, 8]
    s = model.stream()
    s.feed(x[:3])
    np.savez(tmp_path / "state.npz", **s.state)
    script = (
        "import sys, numpy as np, rnninfer\n"
        f"m = rnninfer.load({str(tmp_path / 'm.npz')!r}, threads=1)\n"
        f"st = dict(np.load({str(tmp_path / 'state.npz')!r}))\n"
        f"np.save({str(tmp_path / 'out.npy')!r}, m.stream(state=st).feed({x[3:]!r}))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(rnninfer.__file__).parents[1])}
    subprocess.run([sys.executable, "-c", script], check=True, env=env)
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), model.predict(x)[3:])
