"""Vector activations per ISA against float64, including special values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rnninfer import _core
from rnninfer.reference import activation

ACTS = ["linear", "relu", "tanh", "sigmoid", "hard_sigmoid", "hard_sigmoid_keras2", "elu", "selu",
        "softplus", "softsign", "swish", "gelu", "exponential", "relu6", "leaky_relu", "mish", "hard_swish"]

# Max absolute error allowed (relative for exponential), as documented in activations-inl.h.
ABS_TOL = 4e-7


def grid() -> np.ndarray:
    # Dense around 0 and the polynomial switch points, plus large values; an
    # odd length exercises every masked tail.
    return np.concatenate([
        np.linspace(-12, 12, 4001), np.linspace(-0.7, 0.7, 777), [0.625, -0.625, 1e-8, -1e-8],
        np.linspace(-90, 90, 181),
    ]).astype(np.float32)


@pytest.mark.parametrize("act", ACTS)
def test_accuracy(isa, act):
    x = grid()
    if act == "exponential":
        x = x[np.abs(x) < 80]
    got = _core._testing.activate(isa, act, x).astype(np.float64)
    want = activation(act, x.astype(np.float64))
    if act == "exponential":
        np.testing.assert_allclose(got, want, rtol=3e-7)
    else:
        # Unbounded functions: the error is relative to max(1, |x|, |f(x)|),
        # since x * g(x) forms scale g's error by |x|.
        unbounded = act in ("linear", "relu", "elu", "selu", "softplus", "swish", "gelu", "leaky_relu", "mish",
                            "hard_swish")
        scale = np.maximum(1.0, np.maximum(np.abs(want), np.abs(x))) if unbounded else 1.0
        np.testing.assert_array_less(np.abs(got - want) / scale, ABS_TOL)


@pytest.mark.parametrize("act", ACTS)
def test_special_values(isa, act):
    """NaN propagates; large finite inputs stay accurate; signed zeros are kept where f is odd."""
    x = np.array([0.0, -0.0, np.nan, 1e30, -1e30, 88.0, -88.0, 100.0, -100.0, 3e38, -3e38], np.float32)
    got = _core._testing.activate(isa, act, x)
    assert np.isnan(got[2]), "NaN must propagate"
    keep = ~np.isnan(x)
    if act == "exponential":
        keep &= np.abs(x) < 88.5  # beyond that float32 exp overflows; checked separately
    with np.errstate(over="ignore", invalid="ignore"):
        want = activation(act, x.astype(np.float64))
    np.testing.assert_allclose(got[keep], want[keep], atol=1e-6, rtol=1e-6)
    if act in ("tanh", "softsign", "linear", "leaky_relu"):
        assert math.copysign(1.0, got[1]) == -1.0


@pytest.mark.parametrize("act", ["tanh", "sigmoid", "hard_sigmoid", "hard_sigmoid_keras2", "relu", "relu6"])
def test_infinities_of_bounded_functions(isa, act):
    x = np.array([np.inf, -np.inf], np.float32)
    got = _core._testing.activate(isa, act, x).astype(np.float64)
    want = {"tanh": [1, -1], "sigmoid": [1, 0], "hard_sigmoid": [1, 0], "hard_sigmoid_keras2": [1, 0],
            "relu": [np.inf, 0], "relu6": [6, 0]}[act]
    np.testing.assert_allclose(got, want, atol=1e-37, rtol=0)


def test_large_inputs_do_not_overflow(isa):
    x = np.array([89.0, 1e4, -1e4, 3.4e38, -3.4e38], np.float32)
    for act in ("sigmoid", "tanh", "softplus", "mish", "elu"):
        got = _core._testing.activate(isa, act, x)
        assert not np.isnan(got).any(), act


def test_unknown_activation_and_isa():
    with pytest.raises(ValueError, match="unknown activation"):
        _core._testing.activate("scalar", "swishy", np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="ISA"):
        _core._testing.activate("sse9", "tanh", np.zeros(3, np.float32))


def _relative_error(isa: str, act: str, x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float32)
    got = _core._testing.activate(isa, act, x).astype(np.float64)
    xd = x.astype(np.float64)
    # Direct float64 forms: accurate in relative terms in the ranges tested.
    want = 1.0 / (1.0 + np.exp(-xd)) if act == "sigmoid" else np.tanh(xd)
    return np.abs(got - want) / np.abs(want)


def test_sigmoid_keeps_relative_accuracy_in_the_negative_tail(isa):
    """1 / (1 + e^-x) never cancels: tiny gate values keep their digits (activations-inl.h)."""
    x = -np.geomspace(1.0, 87.9, 20001)
    # The scalar table's unfused range reduction rounds n * ln2 first (bits lost where |n| is large).
    bound = 5e-6 if isa == "scalar" else 4e-7
    assert _relative_error(isa, "sigmoid", x).max() < bound


def test_tanh_keeps_relative_accuracy_near_zero(isa):
    """The expm1 form has no cancellation at small |x|: tanh(x) ~ x keeps its digits."""
    x = np.concatenate([np.geomspace(1e-30, 2.0, 20001), -np.geomspace(1e-30, 2.0, 20001)])
    assert _relative_error(isa, "tanh", x).max() < 3e-7


def test_gate_functions_below_the_clamp(isa):
    """sigmoid stops at sigmoid(-88) = 6.1e-39 (absolute error < 1e-38); tanh saturates exactly."""
    x = np.array([-88.0, -88.5, -100.0, -1e30, -np.inf], np.float32)
    got = _core._testing.activate(isa, "sigmoid", x).astype(np.float64)
    assert (got >= 0).all()
    assert (got < 1e-38).all()
    assert (_core._testing.activate(isa, "swish", x[1:4]) == 0).all()
    assert np.isnan(_core._testing.activate(isa, "swish", x[4:]))[0]
    big = np.array([9.1, 44.0, 50.0, 1e30], np.float32)
    np.testing.assert_array_equal(_core._testing.activate(isa, "tanh", big), 1.0)
    np.testing.assert_array_equal(_core._testing.activate(isa, "tanh", -big), -1.0)
    np.testing.assert_array_equal(_core._testing.activate(isa, "sigmoid", np.array([17.5, 88.0, 1e30], np.float32)), 1.0)


def test_gate_functions_same_bits_in_every_lane(isa):
    """The reciprocal estimate and scaling give one value per input whatever the lane or tail."""
    rng = np.random.default_rng(3)
    x = (rng.standard_normal(4099) * 8).astype(np.float32)
    for act in ("sigmoid", "tanh"):
        whole = _core._testing.activate(isa, act, x)
        one_by_one = np.concatenate([_core._testing.activate(isa, act, x[i:i + 1]) for i in range(200)])
        shifted = _core._testing.activate(isa, act, x[3:])
        np.testing.assert_array_equal(whole[:200], one_by_one)
        np.testing.assert_array_equal(whole[3:], shifted)
