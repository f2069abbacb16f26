"""Reduced-precision weights (bf16, int8): accuracy bounds, determinism, file form, API.

Bounds are the ones documented in docs/precision.md (measured there with
bench/precision_accuracy.py) with headroom for other CPUs/ISAs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import random_inputs, reference_outputs
from test_engine import ARCHS, TOL, _zero_frac

import rnninfer
from rnninfer import ModelFormatError, _core
from rnninfer.cli import main as cli_main
from rnninfer.format import precision as prec
from rnninfer.layers import GRU, LSTM, Dense, Embedding, Features
from rnninfer.model import Model

DATA = Path(__file__).parent / "data"
ISAS: list[str] = list(_core._testing.available_isas())
REDUCED = ("bf16", "int8")
#: Max |reduced - fp32| over every ARCHS model (docs/precision.md, with headroom).
MAX_DIFF = {"bf16": 1e-2, "int8": 2.5e-2}
#: Max mean |reduced - fp32| over every ARCHS model.
MEAN_DIFF = {"bf16": 2e-3, "int8": 4e-3}
#: Documented bounds on changed decisions of the trained marker model.
MAX_FLIPS = {"bf16": 0.005, "int8": 0.01}
#: Max |engine - float64 reference on the effective weights| when the recurrent
#: products round (bf16) or quantise (int8) the activations every step
#: (dot-product kernels, docs/precision.md; measured 3.5e-3 / 5.9e-3; bounded like the
#: distance to fp32).
ACT_REF_TOL = {"bf16": 1e-2, "int8": 2.5e-2}
#: Kernel tables whose recurrent products use dot-product instructions, and
#: the activation precision each uses per weight precision (docs/precision.md).
DOT_TABLES = {"avx512_bf16": {"fp32": "fp32", "bf16": "bf16", "int8": "int8"}}


def ref_tol(model: Model) -> float:
    """Tolerance to the effective-weight reference for this model's kernels."""
    acts = model.recurrent_activations
    return TOL if acts == "fp32" else ACT_REF_TOL[acts]


@pytest.mark.parametrize("precision", REDUCED)
@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_reduced_matches_reference_and_fp32(arch, precision, isa, make_model, rng):
    """The engine computes exactly the effective weights' function (1e-5 to float64),
    and stays within the documented distance of the fp32 model."""
    layers = ARCHS[arch]
    base = make_model(layers, seed=7, isa=isa)
    model = base.with_precision(precision)
    assert model.precision == precision
    assert model.isa == isa
    assert model.recurrent_activations == DOT_TABLES.get(isa, {}).get(precision, "fp32")
    xs = random_inputs(model, rng, 6, max_len=20, zero_frac=_zero_frac(layers))
    for x, ref, ref32 in zip(xs, reference_outputs(model, xs), reference_outputs(base, xs)):
        out = model.predict(x)
        np.testing.assert_allclose(out, ref, atol=ref_tol(model), rtol=0)
        np.testing.assert_allclose(out, ref32, atol=MAX_DIFF[precision], rtol=0)


@pytest.mark.parametrize("precision", REDUCED)
def test_mean_difference_to_fp32(precision, isa, make_model):
    worst = 0.0
    for arch in sorted(ARCHS):
        layers = ARCHS[arch]
        base = make_model(layers, seed=7, isa=isa)
        xs = random_inputs(base, np.random.default_rng(0), 32, max_len=30, zero_frac=_zero_frac(layers))
        d = np.abs(base.with_precision(precision).predict(list(xs)) - base.predict(list(xs)))
        worst = max(worst, float(d.mean()))
    assert worst <= MEAN_DIFF[precision]


def test_reduced_weights_really_differ(make_model, rng):
    """Guards the tests above: a precision that silently stayed fp32 would pass them."""
    base = make_model(ARCHS["lstm2_sigmoid"], seed=7)
    xs = random_inputs(base, rng, 4, max_len=20)
    ref = base.predict(list(xs))
    for p in REDUCED:
        m = base.with_precision(p)
        assert m.stored_tensors["layers.0.fwd.w_hh"].dtype == {"bf16": np.uint16, "int8": np.int8}[p]
        assert not np.array_equal(m.tensors["layers.0.fwd.w_hh"], base.tensors["layers.0.fwd.w_hh"])
        assert not np.array_equal(m.predict(list(xs)), ref)


@pytest.mark.parametrize("precision", REDUCED)
@pytest.mark.parametrize("arch", ["lstm2_sigmoid", "lstm_proj_bidir", "gru_before_bidir_seq", "gru_after",
                                  "rnn_relu_seq", "wide_tail", "mask_zero"])
def test_batch_composition_is_bitwise_invariant(arch, precision, isa, make_model, rng):
    layers = ARCHS[arch]
    model = make_model(layers, seed=3, isa=isa).with_precision(precision)
    xs = random_inputs(model, rng, 9, max_len=19, zero_frac=_zero_frac(layers))
    alone = [model.predict(x) for x in xs]
    ragged = model.predict(list(xs))
    shuffled = model.predict(list(xs)[::-1] + list(xs)[:3])
    for i, x in enumerate(xs):
        n = len(x)
        got = [ragged[i], shuffled[len(xs) - 1 - i]]
        if i < 3:
            got.append(shuffled[len(xs) + i])
        for g in got:
            assert np.array_equal(g[:n] if model.returns_sequences else g, alone[i])


@pytest.mark.parametrize("precision", REDUCED)
@pytest.mark.parametrize("arch", ["bidir_concat", "gru_before_bidir_seq"])
def test_threads_do_not_change_bits(arch, precision, isa, make_model, rng):
    layers = ARCHS[arch]
    xs = random_inputs(make_model(layers), rng, 9, max_len=40)
    outs = [make_model(layers, seed=1, threads=t, isa=isa).with_precision(precision).predict(list(xs))
            for t in (1, 2, 3)]
    for out in outs[1:]:
        assert np.array_equal(out, outs[0])


def test_precision_is_a_property_of_the_packed_weights(tmp_path, rng):
    """Models of one file in three precisions live side by side in one process."""
    model = rnninfer.build([Embedding(40, 8), LSTM(16, return_sequences=True), GRU(12), Dense(2)], seed=5)
    model.save(tmp_path / "m.npz")
    xs = [list(rng.integers(0, 40, size=n)) for n in (3, 17, 9)]
    fp32_before = model.predict(xs)
    models = {p: rnninfer.load(tmp_path / "m.npz", precision=p) for p in prec.PRECISIONS}
    outs = {p: m.predict(xs) for p, m in models.items()}
    assert np.array_equal(outs["fp32"], fp32_before)
    assert np.array_equal(models["fp32"].predict(xs), fp32_before)
    for p in REDUCED:
        assert models[p].precision == p
        assert not np.array_equal(outs[p], fp32_before)
        np.testing.assert_allclose(outs[p], fp32_before, atol=MAX_DIFF[p])
    assert rnninfer.load(tmp_path / "m.npz").precision == "fp32"


@pytest.mark.parametrize("precision", REDUCED)
def test_v2_round_trip_keeps_stored_weights(precision, tmp_path, rng):
    model = rnninfer.build([Features(3), LSTM(9, proj_size=4, bidirectional=True), Dense(2, "softmax")],
                           seed=2, precision=precision)
    model.save(tmp_path / "r.npz")
    back = rnninfer.load(tmp_path / "r.npz")
    assert back.precision == precision
    assert back.stored_tensors.keys() == model.stored_tensors.keys()
    for k, v in model.stored_tensors.items():
        assert back.stored_tensors[k].dtype == v.dtype
        assert np.array_equal(back.stored_tensors[k], v)
    xs = [rng.standard_normal((n, 3)).astype(np.float32) for n in (4, 11)]
    assert np.array_equal(back.predict(xs), model.predict(xs))
    with np.load(tmp_path / "r.npz") as z:
        manifest = json.loads(z["__manifest__"].tobytes())
    assert manifest["format_version"] == 2
    assert manifest["precision"] == precision
    assert manifest["tensors"]["layers.0.bwd.w_hh"]["dtype"] == {"bf16": "bfloat16", "int8": "int8"}[precision]
    if precision == "int8":
        assert manifest["tensors"]["layers.0.bwd.w_hh_scale"] == {"shape": [36], "dtype": "float32"}


def test_bf16_file_loaded_as_fp32_widens_exactly(tmp_path, rng):
    model = rnninfer.build([Embedding(30, 5), GRU(7, reset_after=False), Dense(2)], seed=4, precision="bf16")
    model.save(tmp_path / "b.npz")
    wide = rnninfer.load(tmp_path / "b.npz", precision="fp32")
    assert wide.precision == "fp32"
    stored = model.stored_tensors["layers.0.fwd.w_hh"]
    w = wide.tensors["layers.0.fwd.w_hh"]
    assert w.dtype == np.float32
    assert np.array_equal(w.view(np.uint32) >> 16, stored)
    assert not (w.view(np.uint32) & 0xFFFF).any()
    xs = [list(rng.integers(0, 30, size=n)) for n in (5, 12)]
    for isa in ISAS:
        narrow = Model(model.spec, dict(model.stored_tensors), isa=isa)
        same = Model(wide.spec, dict(wide.stored_tensors), isa=isa)
        if narrow.recurrent_activations == "fp32":
            # Same values, same fp32 arithmetic (bf16 is widened exactly before the FMA).
            assert np.array_equal(same.predict(xs), narrow.predict(xs))
        else:  # vdpbf16ps also rounds the activations
            np.testing.assert_allclose(same.predict(xs), narrow.predict(xs), atol=MAX_DIFF["bf16"])
    wide.save(tmp_path / "w.npz")
    with np.load(tmp_path / "w.npz") as z:
        assert z["layers.0.fwd.w_hh"].dtype == np.float32


@pytest.mark.parametrize("name", ["tokens_lstm_bf16", "features_int8", "tokens_fp32"])
def test_golden_v2_files_load_and_predict(name: str) -> None:
    model = rnninfer.load(DATA / "format_v2" / f"{name}.npz")
    with np.load(DATA / "format_v2" / f"{name}.expected.npz") as z:
        assert model.precision == str(z["precision"])
        out = model.predict(z["inputs"], lengths=z["lengths"])
        np.testing.assert_allclose(out, z["expected"], atol=ref_tol(model), rtol=0)


def test_trained_model_decisions_barely_change():
    with np.load(DATA / "trained" / "marker_eval.npz") as z:
        x, labels, logits32 = z["inputs"].astype(np.int64), z["labels"], z["fp32_logits"]
    base = rnninfer.load(DATA / "trained" / "marker_lstm.npz", threads=1)
    out32 = base.predict(x)[:, 0]
    np.testing.assert_allclose(out32, logits32, atol=1e-4)
    assert ((out32 > 0) == (labels > 0)).mean() >= 0.97  # the model really learned the task
    for isa in ISAS:
        for p in REDUCED:
            out = Model(base.spec, dict(base.stored_tensors), threads=1, precision=p, isa=isa).predict(x)[:, 0]
            assert ((out > 0) != (out32 > 0)).mean() <= MAX_FLIPS[p], (isa, p)


def test_bad_precision_names_raise():
    layers = [Embedding(10, 3), GRU(4)]
    for bad in ("fp16", "FP32", "int4", "", 8):
        with pytest.raises(ValueError, match="precision"):
            rnninfer.build(layers, seed=0, precision=bad)  # type: ignore[arg-type]
    model = rnninfer.build(layers, seed=0)
    with pytest.raises(ValueError, match="precision"):
        Model(model.spec, dict(model.tensors), precision="half")
    with pytest.raises(ValueError, match="precision"):
        model.with_precision("bfloat16")


def test_bf16_rounding_is_nearest_even():
    one = np.float32(1.0)
    ulp = np.float32(2.0 ** -7)  # bf16 spacing at 1.0
    vals = np.array([one, one + ulp / 2, one + 3 * ulp / 2, one + ulp / 2 + np.float32(2.0 ** -20), -one - ulp / 2],
                    dtype=np.float32)
    got = prec.from_bf16(prec.to_bf16(vals))
    np.testing.assert_array_equal(got, np.array([1.0, 1.0, 1.0 + 2 * ulp, 1.0 + ulp, -1.0], dtype=np.float32))


def test_int8_quantisation_is_symmetric_per_row():
    w = np.array([[0.5, -1.0, 0.25], [0.0, 0.0, 0.0], [3.0, 1.5, -0.75]], dtype=np.float32)
    q, s = prec.quantize_int8(w)
    assert q.dtype == np.int8
    assert s.dtype == np.float32
    np.testing.assert_array_equal(np.abs(q).max(axis=1), [127, 0, 127])
    np.testing.assert_allclose(s, [1.0 / 127, 0.0, 3.0 / 127], rtol=1e-7)
    np.testing.assert_allclose(prec.dequantize_int8(q, s), w, atol=s.max() / 2 + 1e-7)


def _rewrite(src: Path, dst: Path, edit) -> Path:
    with np.load(src, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    manifest = json.loads(arrays.pop("__manifest__").tobytes())
    edit(manifest, arrays)
    np.savez(dst, __manifest__=np.frombuffer(json.dumps(manifest).encode(), dtype=np.uint8), **arrays)
    return dst


def test_reduced_file_faults_raise_model_format_error(tmp_path):
    rnninfer.build([Embedding(10, 3), GRU(4)], seed=0, precision="int8").save(tmp_path / "q.npz")

    def as_v1(m, a):
        m["format_version"] = 1

    def drop_scale(m, a):
        del a["layers.0.fwd.w_hh_scale"], m["tensors"]["layers.0.fwd.w_hh_scale"]

    def minus_128(m, a):
        a["layers.0.fwd.w_hh"] = a["layers.0.fwd.w_hh"].copy()
        a["layers.0.fwd.w_hh"][0, 0] = -128

    def mixed(m, a):
        a["layers.0.fwd.w_ih"] = a["layers.0.fwd.w_ih"].astype(np.float32)
        m["tensors"]["layers.0.fwd.w_ih"]["dtype"] = "float32"

    def wrong_declared(m, a):
        m["precision"] = "bf16"

    for edit, match in [(as_v1, "format version 1"), (drop_scale, "w_hh_scale"), (minus_128, "-128"),
                        (mixed, "mix precisions"), (wrong_declared, "manifest precision")]:
        path = _rewrite(tmp_path / "q.npz", tmp_path / f"{edit.__name__}.npz", edit)
        with pytest.raises(ModelFormatError, match=match):
            rnninfer.load(path)


def test_cli_convert_precision(tmp_path, capsys):
    src = tmp_path / "m.npz"
    rnninfer.build([Embedding(10, 3), LSTM(5), Dense(1)], seed=0).save(src)
    # convert reads framework checkpoints; the CLI's precision path is the same for info/predict
    assert cli_main(["info", str(src), "--precision", "int8"]) == 0
    assert "precision: int8" in capsys.readouterr().out
    assert cli_main(["predict", str(src), "--tokens", "1,2,3", "--precision", "bf16"]) == 0


@pytest.mark.parametrize("precision", REDUCED)
@pytest.mark.parametrize("arch", ["lstm2_sigmoid", "gru_before_bidir_seq", "rnn_relu_seq", "wide_tail"])
def test_dot_kernels_agree_with_widen_kernels(arch, precision, make_model, rng):
    """Where the CPU runs a dot-product table, it stays close to the widen-in-registers path."""
    dots = [i for i in ISAS if DOT_TABLES.get(i, {}).get(precision, "fp32") != "fp32"]
    if not dots:
        pytest.skip("no dot-product kernel table for this precision on this CPU")
    layers = ARCHS[arch]
    xs = random_inputs(make_model(layers), rng, 12, max_len=25, zero_frac=_zero_frac(layers))
    widen = make_model(layers, seed=5, isa="scalar").with_precision(precision).predict(list(xs))
    for isa in dots:
        out = make_model(layers, seed=5, isa=isa).with_precision(precision).predict(list(xs))
        assert not np.array_equal(out, widen)  # really a different product
        np.testing.assert_allclose(out, widen, atol=ACT_REF_TOL[precision], rtol=0)


@pytest.mark.parametrize("precision", REDUCED)
@pytest.mark.parametrize("units", [1, 15, 16, 17, 31, 33, 64, 65])
def test_every_width_is_batch_invariant(units, precision, isa, make_model, rng):
    """K not a multiple of the pair/quad/vector sizes, unit tails, rows in groups and alone;
    one row with 1000x larger inputs must not change the others (per-row quantisation)."""
    from rnninfer.layers import RNN
    layers = [Features(3), LSTM(units, return_sequences=True), RNN(units, activation="relu"), Dense(2)]
    model = make_model(layers, seed=units, isa=isa).with_precision(precision)
    xs = [rng.standard_normal((n, 3)).astype(np.float32) for n in (7, 3, 9, 1, 9, 5, 2, 8)]
    alone = [model.predict(x) for x in xs]
    loud = [x * np.float32(1000.0) if i == 2 else x for i, x in enumerate(xs)]
    n = len(xs)
    for batch, where in ((xs, list(range(n))), (xs[::-1], [n - 1 - i for i in range(n)]), (loud, list(range(n)))):
        out = model.predict(batch)
        for i in range(n):
            if batch is loud and i == 2:
                continue
            assert np.array_equal(out[where[i]], alone[i]), i


@pytest.mark.parametrize("precision", REDUCED)
@pytest.mark.parametrize("features", [300, 4100])
def test_wide_inputs_many_rows(features, precision, isa, make_model, rng):
    """Input projections over many rows (the dot-product gemm converts rows in blocks)
    and K beyond kDotGemmMaxK (packed plain): reference, fp32 distance, batch invariance."""
    layers = [Features(features), GRU(8, return_sequences=True), LSTM(5), Dense(2)]
    base = make_model(layers, seed=features, isa=isa)
    model = base.with_precision(precision)
    lengths = rng.integers(20, 31, size=40) if features < 1000 else rng.integers(1, 6, size=5)
    xs = [rng.standard_normal((int(n), features)).astype(np.float32) for n in lengths]
    out = model.predict(xs)
    ref = np.stack(reference_outputs(model, xs))
    np.testing.assert_allclose(out, ref, atol=ref_tol(model), rtol=0)
    np.testing.assert_allclose(out, base.predict(xs), atol=MAX_DIFF[precision], rtol=0)
    for i in (0, len(xs) - 1):
        assert np.array_equal(model.predict(xs[i]), out[i])


@pytest.mark.parametrize("precision", ["fp32", *REDUCED])
@pytest.mark.parametrize("units", [32, 40, 72])
def test_one_row_projections_match_many_row_ones(units, precision, isa, make_model, rng):
    """A one-step feed projects one row: the gemms run several column panels at
    once for it (whole panel groups, then single panels and a column tail).
    Its bits are those of the many-row projections predict runs."""
    layers = [Features(24), LSTM(units, return_sequences=True), GRU(units, return_sequences=True), Dense(3)]
    model = make_model(layers, seed=units, isa=isa).with_precision(precision)
    x = rng.standard_normal((9, 24)).astype(np.float32)
    s = model.stream()
    fed = np.concatenate([s.feed(x[t:t + 1]) for t in range(len(x))])
    assert np.array_equal(fed, model.predict(x))
