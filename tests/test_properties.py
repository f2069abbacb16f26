"""Property tests over random architectures (hypothesis)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from helpers import reference_outputs
from hypothesis import given
from hypothesis import strategies as st

import rnninfer
from rnninfer import _core
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
)

ISAS = _core._testing.available_isas()


@st.composite
def architectures(draw: Any) -> list[Layer]:
    layers: list[Layer] = []
    if draw(st.booleans()):
        layers.append(Embedding(draw(st.integers(2, 30)), draw(st.integers(1, 9)), mask_zero=draw(st.booleans())))
    else:
        layers.append(Features(draw(st.integers(1, 7)), mask_value=draw(st.sampled_from([None, 0.0]))))
    n = draw(st.integers(1, 3))
    widths = [layers[0].dim if isinstance(layers[0], Embedding) else layers[0].features]  # type: ignore[union-attr]
    for i in range(n):
        cell = draw(st.sampled_from(["lstm", "gru", "rnn"]))
        units = draw(st.integers(1, 40))
        bidir = draw(st.booleans())
        merge = draw(st.sampled_from(["concat", "sum", "mul", "ave"]))
        backwards = not bidir and draw(st.booleans())
        proj = draw(st.integers(0, units - 1)) if cell == "lstm" and units > 1 and draw(st.booleans()) else 0
        top = i == n - 1
        rs = True if not top else draw(st.booleans())
        width_dir = proj or units
        out_w = 2 * width_dir if bidir and merge == "concat" else width_dir
        residual: bool | int = False
        if i > 0 and out_w == widths[-1] and draw(st.booleans()) and not (top and not rs):
            residual = True
        kw = {"bidirectional": bidir, "merge": merge, "go_backwards": backwards, "return_sequences": rs,
                  "residual": residual, "bias": draw(st.booleans())}
        if cell == "lstm":
            layers.append(LSTM(units, proj_size=proj, **kw))  # type: ignore[arg-type]
        elif cell == "gru":
            layers.append(GRU(units, reset_after=draw(st.booleans()), **kw))  # type: ignore[arg-type]
        else:
            layers.append(RNN(units, activation=draw(st.sampled_from(["tanh", "relu"])), **kw))  # type: ignore[arg-type]
        widths.append(out_w)
    if rs and draw(st.booleans()):
        layers.append(draw(st.sampled_from([GlobalAveragePooling(), GlobalMaxPooling()])))
    for _ in range(draw(st.integers(0, 2))):
        layers.append(Dense(draw(st.integers(1, 6)), draw(st.sampled_from(["linear", "relu", "sigmoid", "softmax", "tanh"]))))
    return layers


@st.composite
def model_and_inputs(draw: Any) -> tuple[rnninfer.Model, list[Any]]:
    layers = draw(architectures())
    isa = draw(st.sampled_from(ISAS))
    model = rnninfer.Model(*_spec_and_tensors(layers, draw(st.integers(0, 2**16))), isa=isa)
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    xs: list[Any] = []
    for _ in range(draw(st.integers(1, 5))):
        T = draw(st.integers(1, 24))
        if model.spec.input.kind == "tokens":
            xs.append(rng.integers(0, model.spec.input.vocab_size, size=T))
        else:
            x = rng.standard_normal((T, model.spec.input.features)).astype(np.float32)
            if model.spec.input.mask_value is not None:
                x[rng.random(T) < 0.2] = 0.0
            xs.append(x)
    return model, xs


def _spec_and_tensors(layers: list[Layer], seed: int) -> tuple[Any, dict[str, np.ndarray]]:
    from rnninfer.layers import make_spec, random_tensors

    spec = make_spec(layers)
    return spec, random_tensors(spec, seed)


@given(model_and_inputs())
def test_engine_matches_reference(case: tuple[rnninfer.Model, list[Any]]) -> None:
    model, xs = case
    for x, ref in zip(xs, reference_outputs(model, xs)):
        np.testing.assert_allclose(model.predict(x), ref, atol=1e-5, rtol=1e-5)


@given(model_and_inputs(), st.randoms(use_true_random=False))
def test_batch_composition_invariance(case: tuple[rnninfer.Model, list[Any]], rand: Any) -> None:
    model, xs = case
    alone = [model.predict(x) for x in xs]
    idx = list(range(len(xs))) * 2
    rand.shuffle(idx)
    batch = model.predict([xs[i] for i in idx])
    for j, i in enumerate(idx):
        got = batch[j][: len(xs[i])] if model.returns_sequences else batch[j]
        assert np.array_equal(got, alone[i])


@given(case=model_and_inputs())
def test_save_load_round_trip(case: tuple[rnninfer.Model, list[Any]], tmp_path_factory: Any) -> None:
    model, xs = case
    path = Path(tmp_path_factory.mktemp("rt")) / "m.npz"
    model.save(path)
    again = rnninfer.load(path)
    assert again.spec == model.spec
    again = rnninfer.Model(again.spec, again.tensors, isa=model.isa)
    assert np.array_equal(again.predict(list(xs)), model.predict(list(xs)))


@given(model_and_inputs(), st.integers(2, 4))
def test_thread_count_does_not_change_bits(case: tuple[rnninfer.Model, list[Any]], threads: int) -> None:
    model, xs = case
    other = rnninfer.Model(model.spec, model.tensors, threads=threads, isa=model.isa)
    assert np.array_equal(other.predict(list(xs)), model.predict(list(xs)))


@given(st.data())
def test_bad_input_raises_never_crashes(data: Any) -> None:
    model = rnninfer.build([Embedding(10, 3), GRU(4)], seed=0)
    x = data.draw(st.one_of(
        st.lists(st.one_of(st.integers(-2**63, 2**63), st.floats(), st.text(max_size=2), st.none()), max_size=5),
        st.lists(st.lists(st.integers(-20, 20), max_size=4), max_size=4),
        st.integers(), st.text(), st.none(),
    ))
    try:
        out = model.predict(x)
    except (TypeError, ValueError):
        return
    assert np.isfinite(out).all()
