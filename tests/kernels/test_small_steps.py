"""Recurrent step kernels at small H, per ISA, through ``_core._testing.recurrent_step``.

The step kernels pick a different path by row count (one row group, a
smaller tail group, several unit tiles per pass for lone rows, tiles outer for
many rows, K chunks past the L1 chunk). Every path must give each row the
same bits, and all must agree with a float64 step.
"""

from __future__ import annotations

import numpy as np
import pytest

from rnninfer import _core

T = _core._testing

# Below, at and above one vector of every ISA (8 AVX2, 16 AVX-512 lanes), odd
# sizes, and 96 / 128 whose LSTM K runs past one L1 chunk of a tile.
HIDDEN = (1, 3, 7, 8, 15, 16, 17, 31, 32, 33, 48, 64, 96, 128)
# Rows: alone, every group tail (1-3 past a group of 4), whole groups, many.
ROWS = (1, 2, 3, 4, 5, 6, 7, 9, 13, 64)
CELLS = (("lstm", 4, True), ("gru", 3, True), ("gru", 3, False), ("rnn", 1, True))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _reference(cell: str, reset_after: bool, w: np.ndarray, xp: np.ndarray, h: np.ndarray,
               c: np.ndarray, b_hn: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """One step in float64 (docs/format.md's equations; xp holds W_x x + biases)."""
    w, xp, h, c, b_hn = (a.astype(np.float64) for a in (w, xp, h, c, b_hn))
    H = h.shape[1]
    if cell == "lstm":
        g = xp + h @ w.T
        i, f, gg, o = (g[:, k * H:(k + 1) * H] for k in range(4))
        c2 = _sigmoid(f) * c + _sigmoid(i) * np.tanh(gg)
        return _sigmoid(o) * np.tanh(c2), c2
    if cell == "rnn":
        return np.tanh(xp + h @ w.T), None
    r = _sigmoid(xp[:, :H] + h @ w[:H].T)
    z = _sigmoid(xp[:, H:2 * H] + h @ w[H:2 * H].T)
    if reset_after:
        n = np.tanh(xp[:, 2 * H:] + r * (h @ w[2 * H:].T + b_hn))
    else:
        n = np.tanh(xp[:, 2 * H:] + (r * h) @ w[2 * H:].T)
    return (1.0 - z) * n + z * h, None


def _inputs(rng: np.random.Generator, G: int, H: int, n: int) -> tuple[np.ndarray, ...]:
    # Weights scaled like a trained layer (sums of order 1), so the check is
    # not lost in saturated gates.
    w = (rng.standard_normal((G * H, H)) / np.sqrt(H)).astype(np.float32)
    xp = rng.standard_normal((n, G * H)).astype(np.float32)
    h = rng.uniform(-1, 1, (n, H)).astype(np.float32)
    c = rng.standard_normal((n, H)).astype(np.float32)
    b_hn = rng.standard_normal(H).astype(np.float32)
    return w, xp, h, c, b_hn


def _step(isa: str, cell: str, reset_after: bool, w: np.ndarray, xp: np.ndarray, h: np.ndarray,
          c: np.ndarray, b_hn: np.ndarray, *, backward: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    hn, cn, _ = T.recurrent_step(isa, cell, w, xp, h, c if cell == "lstm" else None,
                                 b_hn if cell == "gru" and reset_after else None,
                                 reset_after=reset_after, tiles_backward=backward)
    return hn, cn


@pytest.mark.parametrize(("cell", "G", "reset_after"), CELLS, ids=["lstm", "gru", "gru_rb", "rnn"])
@pytest.mark.parametrize("H", HIDDEN)
def test_rows_same_bits_on_every_path_and_match_float64(isa, rng, cell, G, reset_after, H):
    w, xp, h, c, b_hn = _inputs(rng, G, H, max(ROWS))
    full_h, full_c = _step(isa, cell, reset_after, w, xp, h, c, b_hn)
    ref_h, ref_c = _reference(cell, reset_after, w, xp, h, c, b_hn)
    np.testing.assert_allclose(full_h, ref_h, atol=2e-5, rtol=0)
    if ref_c is not None:
        assert full_c is not None
        np.testing.assert_allclose(full_c, ref_c, atol=2e-5, rtol=0)
    # Each prefix of the rows runs a different path (groups, tails, tiles per
    # pass, tiles outer), with the unit tiles visited first to last or last to
    # first (the engine alternates per step); each row must keep its bits, and
    # a reversed batch puts every row in another group position.
    for n in ROWS:
        for backward in (False, True):
            hn, cn = _step(isa, cell, reset_after, w, xp[:n], h[:n], c[:n], b_hn, backward=backward)
            np.testing.assert_array_equal(hn, full_h[:n], err_msg=f"rows={n} backward={backward}")
            if cn is not None:
                assert full_c is not None
                np.testing.assert_array_equal(cn, full_c[:n], err_msg=f"rows={n} backward={backward}")
    rev = slice(None, None, -1)
    hn, cn = _step(isa, cell, reset_after, w, xp[rev], h[rev], c[rev], b_hn)
    np.testing.assert_array_equal(hn[rev], full_h)
    if cn is not None:
        assert full_c is not None
        np.testing.assert_array_equal(cn[rev], full_c)


# Layer input widths for the fused input projection: a token model's
# embedding, a hidden width below, at and past one vector, odd ones.
IN_WIDTHS = (1, 5, 16, 33, 64)


@pytest.mark.parametrize(("cell", "G", "reset_after"), [c for c in CELLS if c[2] or c[0] != "gru"],
                         ids=["lstm", "gru", "rnn"])
@pytest.mark.parametrize("H", HIDDEN)
def test_fused_input_projection_gives_the_gemms_bits(isa, rng, cell, G, reset_after, H):
    # StepArgs::wx: the step computes x W_x^T + b per unit tile itself. The
    # engine mixes it with the gemm path (by batch size), so every row must get
    # exactly the bits of the gemm's xp, on every row path, with and without bias.
    n = max(ROWS)
    w, _, h, c, b_hn = _inputs(rng, G, H, n)
    for In in IN_WIDTHS:
        w_ih = (rng.standard_normal((G * H, In)) / np.sqrt(In)).astype(np.float32)
        x = rng.standard_normal((n, In)).astype(np.float32)
        for bias in (rng.standard_normal(G * H).astype(np.float32), None):
            kw = {"reset_after": reset_after, "w_ih": w_ih, "bias": bias}
            args = (c if cell == "lstm" else None, b_hn if cell == "gru" else None)
            ref_h, ref_c, _ = T.recurrent_step(isa, cell, w, None, h, *args, x=x, **kw)
            for rows in ROWS:
                for backward in (False, True):
                    hn, cn, _ = T.recurrent_step(isa, cell, w, None, h[:rows],
                                                 c[:rows] if cell == "lstm" else None, args[1],
                                                 x=x[:rows], fused=True, tiles_backward=backward, **kw)
                    msg = f"In={In} bias={bias is not None} rows={rows} backward={backward}"
                    np.testing.assert_array_equal(hn, ref_h[:rows], err_msg=msg)
                    if cn is not None:
                        np.testing.assert_array_equal(cn, ref_c[:rows], err_msg=msg)
    # And the gemm path is the float64 step of W_x x + b.
    xp = x.astype(np.float64) @ w_ih.T.astype(np.float64)
    ref = _reference(cell, reset_after, w, xp.astype(np.float32), h, c, b_hn)[0]
    np.testing.assert_allclose(ref_h, ref, atol=2e-5, rtol=0)


def test_fused_input_projection_rejects_what_it_cannot_do():
    w = np.zeros((6, 2), np.float32)
    h = np.zeros((1, 2), np.float32)
    x = np.zeros((1, 3), np.float32)
    w_ih = np.zeros((6, 3), np.float32)
    with pytest.raises(ValueError, match="reset_after"):
        T.recurrent_step("scalar", "gru", w, None, h, reset_after=False, w_ih=w_ih, x=x, fused=True)
    with pytest.raises(ValueError, match="not both"):
        T.recurrent_step("scalar", "gru", w, np.zeros((1, 6), np.float32), h, w_ih=w_ih, x=x)
    with pytest.raises(ValueError, match="needs w_ih"):
        T.recurrent_step("scalar", "gru", w, np.zeros((1, 6), np.float32), h, fused=True)
    with pytest.raises(ValueError, match="x has"):
        T.recurrent_step("scalar", "gru", w, None, h, w_ih=w_ih, x=np.zeros((1, 4), np.float32))


@pytest.mark.parametrize("H", [16, 32, 64])
def test_non_default_activations_keep_row_bits(isa, rng, H):
    # The generic-activation body takes the same paths as the sigmoid/tanh one.
    w, xp, h, c, _ = _inputs(rng, 4, H, 9)
    kw = {"activation": "relu", "recurrent_activation": "hard_sigmoid"}
    full, _, _ = T.recurrent_step(isa, "lstm", w, xp, h, c, **kw)
    for n in (1, 3, 4, 5):
        part, _, _ = T.recurrent_step(isa, "lstm", w, xp[:n], h[:n], c[:n], **kw)
        np.testing.assert_array_equal(part, full[:n])
    # The same with the input projection fused into the step.
    w_ih = (rng.standard_normal((4 * H, 8)) / np.sqrt(8)).astype(np.float32)
    x = rng.standard_normal((9, 8)).astype(np.float32)
    full, _, _ = T.recurrent_step(isa, "lstm", w, None, h, c, w_ih=w_ih, x=x, **kw)
    for n in (1, 3, 4, 5, 9):
        part, _, _ = T.recurrent_step(isa, "lstm", w, None, h[:n], c[:n], w_ih=w_ih, x=x[:n], fused=True, **kw)
        np.testing.assert_array_equal(part, full[:n])


def _lstm_cell(isa: str, xi: np.ndarray, xf: np.ndarray, xg: np.ndarray, xo: np.ndarray,
               c_prev: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(h, c) of one LSTM step with zero recurrent weights: the gate sums are xp exactly."""
    H, n = 16, xi.size
    xp = np.zeros((n, 4 * H), np.float32)
    for g, v in enumerate((xi, xf, xg, xo)):
        xp[:, g * H:(g + 1) * H] = v[:, None]
    c0 = np.repeat(c_prev[:, None], H, 1).astype(np.float32)
    hn, cn, _ = T.recurrent_step(isa, "lstm", np.zeros((4 * H, H), np.float32), xp,
                                 np.zeros((n, H), np.float32), c0)
    return hn[:, 0], cn[:, 0]


def test_lstm_cell_products_are_accurate_everywhere(isa, rng):
    # The cell's products i * g and o * tanh(c) through the step kernel (gate
    # sums set exactly by xp, zero recurrent weights): as accurate as the
    # functions' contracts promise, from 0 to the clamps, infinities and NaN
    # (AVX-512 forms each with one reciprocal, sigmoid_times_tanh).
    edges = [0.0, 1e-30, 1e-7, 1e-3, 0.1, 0.5, 1, 2, 5, 9, 20, 44, 50, 87, 88, 89, 100, 1e30, np.inf]
    grid = np.array(sorted({s * e for e in edges for s in (1.0, -1.0)}), np.float32)
    dense = np.concatenate([rng.uniform(-20, 20, 200), rng.standard_normal(200) * 3]).astype(np.float32)
    vals = np.concatenate([grid, dense])

    def sig(x: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore"):
            return 1.0 / (1.0 + np.exp(-x.astype(np.float64)))

    # Rows of the scalar table's sigmoid lose relative accuracy below -8
    # (activations-inl.h): 2e-6 there, 5e-7 on the SIMD tables.
    rel_tol = 2e-6 if isa == "scalar" else 5e-7
    y, x = (a.ravel() for a in np.meshgrid(vals, vals))
    # c = sigmoid(i) * tanh(g): the forget gate closed (f = -inf), c_prev = 0.
    _, c = _lstm_cell(isa, y, np.full_like(y, -np.inf), x, np.zeros_like(y), np.zeros_like(y))
    ref = sig(y) * np.tanh(x.astype(np.float64))
    # h = sigmoid(o) * tanh(c): f open, i closed, so c = c_prev (finite values).
    cp = np.where(np.isfinite(x), x, 0).astype(np.float32)
    h, c2 = _lstm_cell(isa, np.full_like(y, -np.inf), np.full_like(y, np.inf), np.zeros_like(y), y, cp)
    ref2 = sig(y) * np.tanh(c2.astype(np.float64))
    for got, want in ((c, ref), (h, ref2)):
        assert not np.isnan(got).any()
        err = np.abs(got - want)
        assert err.max() <= 3e-7
        big = np.abs(want) > 1e-30
        assert (err[big] / np.abs(want[big])).max() <= rel_tol
    nan = np.float32(np.nan)
    h, c = _lstm_cell(isa, np.array([nan, 0], np.float32), np.zeros(2, np.float32),
                      np.array([0, nan], np.float32), np.zeros(2, np.float32), np.zeros(2, np.float32))
    assert np.isnan(c).all()
    assert np.isnan(h).all()


def test_recurrent_step_rejects_bad_shapes():
    w = np.zeros((8, 2), np.float32)
    with pytest.raises(ValueError, match="cell"):
        T.recurrent_step("scalar", "lstmx", w, np.zeros((1, 8), np.float32), np.zeros((1, 2), np.float32))
    with pytest.raises(ValueError, match="xp"):
        T.recurrent_step("scalar", "lstm", w, np.zeros((1, 7), np.float32), np.zeros((1, 2), np.float32),
                         np.zeros((1, 2), np.float32))
    with pytest.raises(ValueError, match="reps"):
        T.recurrent_step("scalar", "rnn", np.zeros((2, 2), np.float32), np.zeros((1, 2), np.float32),
                         np.zeros((1, 2), np.float32), reps=0)


def test_fma_chain_probe_times_every_isa(isa):
    s = T.fma_chain_seconds(isa, 100_000)
    # A dependent FMA (or mul + add) takes a few cycles: well above 0.05 ns,
    # well below a microsecond on anything that runs this suite.
    assert 5e-11 < s < 1e-6
    with pytest.raises(ValueError, match="n must be"):
        T.fma_chain_seconds(isa, 0)
