"""The C++ engine against the float64 reference, for every layer kind and ISA."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import random_inputs, reference_outputs

from rnninfer.layers import (
    GRU,
    LSTM,
    RNN,
    Dense,
    Embedding,
    Features,
    GlobalAveragePooling,
    GlobalMaxPooling,
)

TOL = 1e-5

ARCHS = {
    "lstm2_sigmoid": [Embedding(40, 8), LSTM(16, return_sequences=True), LSTM(16), Dense(1, "sigmoid")],
    "lstm_proj": [Embedding(40, 8), LSTM(13, proj_size=5, return_sequences=True), LSTM(7, proj_size=2)],
    "lstm_proj_bidir": [Features(3), LSTM(9, proj_size=4, bidirectional=True), Dense(2, "softmax")],
    "gru_after": [Embedding(40, 6), GRU(11), Dense(3, "softmax")],
    "gru_before": [Embedding(40, 6), GRU(11, reset_after=False), Dense(3, "log_softmax")],
    "gru_before_bidir_seq": [
        Features(5), GRU(7, reset_after=False, bidirectional=True, return_sequences=True), Dense(2)
    ],
    "rnn_tanh": [Features(4), RNN(10), Dense(1)],
    "rnn_relu_seq": [Features(4), RNN(10, activation="relu", return_sequences=True)],
    "bidir_concat": [Embedding(30, 5), LSTM(6, bidirectional=True, return_sequences=True), LSTM(6, bidirectional=True)],
    "bidir_sum": [Embedding(30, 5), GRU(6, bidirectional=True, merge="sum"), Dense(2, "tanh")],
    "bidir_mul_seq": [Embedding(30, 5), LSTM(6, bidirectional=True, merge="mul", return_sequences=True), Dense(2, "relu")],
    "bidir_ave": [Features(3), RNN(6, bidirectional=True, merge="ave"), Dense(2)],
    "backward": [Embedding(30, 5), LSTM(6, go_backwards=True)],
    "backward_seq": [Features(3), GRU(6, go_backwards=True, return_sequences=True)],
    "residual": [
        Embedding(30, 8), LSTM(8, return_sequences=True), LSTM(8, residual=True, return_sequences=True),
        LSTM(8, residual=-1, return_sequences=True), GlobalAveragePooling(), Dense(1, "sigmoid"),
    ],
    "residual_bidir": [
        Features(6), GRU(3, bidirectional=True, return_sequences=True),
        GRU(3, bidirectional=True, residual=True, return_sequences=True), GlobalMaxPooling(),
    ],
    "no_bias": [Embedding(30, 5), LSTM(7, bias=False), Dense(2, bias=False)],
    "keras_acts": [
        Features(4), LSTM(9, activation="relu", recurrent_activation="hard_sigmoid", return_sequences=True),
        GRU(9, recurrent_activation="hard_sigmoid_keras2", activation="softsign"), Dense(3, "elu"),
    ],
    "deep_head": [Embedding(30, 5), GRU(8), Dense(6, "relu"), Dense(5, "gelu"), Dense(4, "swish"), Dense(2, "softmax")],
    "wide_tail": [Features(3), LSTM(37, return_sequences=True), GRU(33)],  # odd widths hit SIMD tails
    "mask_zero": [Embedding(20, 4, mask_zero=True), LSTM(5, bidirectional=True, return_sequences=True), GRU(5), Dense(1)],
    "mask_zero_seq": [Embedding(20, 4, mask_zero=True), GRU(5, return_sequences=True), Dense(2)],
    "mask_value": [Features(3, mask_value=0.0), LSTM(5, return_sequences=True), GlobalAveragePooling()],
}

HEAD_ACTS = ["linear", "relu", "tanh", "sigmoid", "hard_sigmoid", "hard_sigmoid_keras2", "elu", "selu",
             "softplus", "softsign", "swish", "gelu", "exponential", "relu6", "leaky_relu", "mish",
             "hard_swish", "softmax", "log_softmax"]


def _zero_frac(layers: list) -> float:
    first = layers[0]
    return 0.25 if getattr(first, "mask_zero", False) or getattr(first, "mask_value", None) is not None else 0.0


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_matches_reference(arch, isa, make_model, rng):
    layers = ARCHS[arch]
    model = make_model(layers, seed=7, isa=isa)
    assert model.isa == isa
    xs = random_inputs(model, rng, 6, max_len=20, zero_frac=_zero_frac(layers))
    refs = reference_outputs(model, xs)
    for x, ref in zip(xs, refs):
        out = model.predict(x)
        assert out.shape == ref.shape
        assert out.dtype == np.float32
        np.testing.assert_allclose(out, ref, atol=TOL, rtol=0)


@pytest.mark.parametrize("arch", sorted(ARCHS))
@pytest.mark.parametrize("rows", [7, 12])
def test_batch_forms_agree_bitwise(arch, rows, isa, make_model, rng):
    """A sequence gives the same bits alone, in a ragged batch and padded with lengths.

    From 8 sequences on, small layers compute their input projections inside
    the step kernels instead of one gemm per block (layer_exec.cc,
    kFusedMinRows): 12 rows take that path, 7 the gemm's, a lone sequence
    its own.
    """
    layers = ARCHS[arch]
    model = make_model(layers, seed=3, isa=isa)
    xs = random_inputs(model, rng, rows, max_len=19, zero_frac=_zero_frac(layers))
    alone = [model.predict(x) for x in xs]
    ragged = model.predict(list(xs))
    T = max(len(x) for x in xs) + 3
    lengths = np.array([len(x) for x in xs])
    if model.spec.input.kind == "tokens":
        padded = np.full((len(xs), T), 7, dtype=np.int64)  # junk past each length must be ignored
        for i, x in enumerate(xs):
            padded[i, : len(x)] = x
    else:
        padded = np.full((len(xs), T, model.spec.input.features), 5.0, dtype=np.float32)
        for i, x in enumerate(xs):
            padded[i, : len(x)] = x
    padded_out = model.predict(padded, lengths=lengths)
    for i, x in enumerate(xs):
        if model.returns_sequences:
            assert np.array_equal(ragged[i, : len(x)], alone[i])
            assert np.array_equal(padded_out[i, : len(x)], alone[i])
            assert not ragged[i, len(x):].any()
            assert not padded_out[i, len(x):].any()
            assert padded_out.shape[1] == T
        else:
            assert np.array_equal(ragged[i], alone[i])
            assert np.array_equal(padded_out[i], alone[i])


@pytest.mark.parametrize("arch", ["lstm2_sigmoid", "bidir_concat", "gru_after", "mask_zero"])
def test_gathered_blocks_agree_bitwise(arch, isa, make_model, rng):
    """Token models over many time blocks and row groups: the step kernels
    prefetch the next block's table rows (forward and backward directions),
    a hint that must change no bit and read only rows of this call."""
    layers = ARCHS[arch]
    model = make_model(layers, seed=11, isa=isa)
    xs = random_inputs(model, rng, 21, max_len=70, zero_frac=_zero_frac(layers))
    xs[0] = np.concatenate([xs[0], xs[1], xs[2]])[:70]  # at least one sequence spans every block
    batch = model.predict(list(xs))
    for i, x in enumerate(xs):
        assert np.array_equal(batch[i], model.predict(x))


@pytest.mark.parametrize("act", HEAD_ACTS)
def test_head_activations(act, isa, make_model, rng):
    model = make_model([Features(3), GRU(4), Dense(5, act)], seed=1, isa=isa)
    xs = random_inputs(model, rng, 3)
    for x, ref in zip(xs, reference_outputs(model, xs)):
        np.testing.assert_allclose(model.predict(x), ref, atol=TOL, rtol=1e-6)


@pytest.mark.parametrize("act", ["relu", "sigmoid", "hard_sigmoid", "elu", "selu", "softplus", "swish",
                                 "gelu", "linear", "relu6", "leaky_relu", "mish", "hard_swish", "softsign"])
def test_cell_activations(act, isa, make_model, rng):
    model = make_model(
        [Features(3), LSTM(6, activation=act, return_sequences=True), GRU(5, recurrent_activation=act),
         Dense(2)], seed=2, isa=isa,
    )
    xs = random_inputs(model, rng, 3)
    for x, ref in zip(xs, reference_outputs(model, xs)):
        np.testing.assert_allclose(model.predict(x), ref, atol=TOL, rtol=1e-5)


def test_masked_steps_keep_state_and_output_zero(make_model):
    """Token 0 with mask_zero is skipped: inserting zeros anywhere changes nothing but the zero rows."""
    model = make_model([Embedding(20, 4, mask_zero=True), LSTM(5, bidirectional=True, return_sequences=True)])
    x = np.array([3, 4, 5, 6])
    xz = np.array([0, 3, 0, 4, 5, 0, 0, 6, 0])
    a, b = model.predict(x), model.predict(xz)
    keep = xz != 0
    np.testing.assert_array_equal(b[keep], a)
    assert not b[~keep].any()


def test_all_masked_sequence_gives_head_of_zero_state(make_model):
    model = make_model([Embedding(20, 4, mask_zero=True), LSTM(5), Dense(2)], seed=4)
    out = model.predict([0, 0, 0])
    bias = model.tensors["head.0.bias"]
    np.testing.assert_allclose(out, bias, atol=1e-7)


def test_causal_forward_model(make_model, rng):
    """Forward-only: outputs at t do not depend on inputs after t."""
    model = make_model([Embedding(30, 4), LSTM(6, return_sequences=True), GRU(5, return_sequences=True)])
    x = rng.integers(0, 30, size=15)
    full = model.predict(x)
    for t in (1, 7, 14):
        np.testing.assert_array_equal(model.predict(x[:t]), full[:t])


def test_long_sequence(make_model, rng, isa):
    model = make_model([Features(2), GRU(8), Dense(1, "sigmoid")], isa=isa)
    x = rng.standard_normal((700, 2)).astype(np.float32)
    ref = reference_outputs(model, [x])[0]
    np.testing.assert_allclose(model.predict(x), ref, atol=TOL)


def test_isas_agree_closely(make_model, rng):
    """Every ISA computes the same function; they may differ only in the last bits."""
    layers = ARCHS["lstm2_sigmoid"]
    xs = random_inputs(make_model(layers), rng, 4, max_len=30)
    outs = {isa: make_model(layers, seed=5, isa=isa).predict(list(xs)) for isa in
            __import__("rnninfer")._core._testing.available_isas()}
    base = outs["scalar"]
    for out in outs.values():
        np.testing.assert_allclose(out, base, atol=2e-6)


def test_threads_do_not_change_bits(make_model, rng):
    layers = ARCHS["bidir_concat"]
    xs = random_inputs(make_model(layers), rng, 9, max_len=40)
    outs = [make_model(layers, seed=1, threads=t).predict(list(xs)) for t in (1, 2, 3)]
    for out in outs[1:]:
        assert np.array_equal(out, outs[0])


def test_deterministic_repeat_and_duplicates(make_model, rng):
    model = make_model(ARCHS["gru_after"])
    xs = random_inputs(model, rng, 5, max_len=25)
    a = model.predict(list(xs))
    b = model.predict(list(xs) + list(xs)[::-1])
    assert np.array_equal(a, b[:5])
    assert np.array_equal(a[::-1], b[5:])


def test_concurrent_calls_from_threads(make_model, rng):
    """One model, many Python threads at once: each call gets its own answer."""
    from concurrent.futures import ThreadPoolExecutor

    model = make_model(ARCHS["lstm2_sigmoid"], seed=9)
    xs = random_inputs(model, rng, 24, max_len=30)
    expected = [model.predict(x) for x in xs]
    with ThreadPoolExecutor(max_workers=6) as pool:
        got = list(pool.map(model.predict, xs * 3))
    for i, out in enumerate(got):
        assert np.array_equal(out, expected[i % len(xs)])
