"""Test helpers shared by several test modules (importable thanks to pytest's pythonpath)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

import rnninfer.reference
from rnninfer.model import Model


def random_inputs(
    model: Model, rng: np.random.Generator, n: int, max_len: int = 12, zero_frac: float = 0.0
) -> list[Any]:
    """``n`` random sequences of lengths 1..max_len for ``model``'s input kind."""
    spec = model.spec
    out: list[Any] = []
    for _ in range(n):
        T = int(rng.integers(1, max_len + 1))
        if spec.input.kind == "tokens":
            x = rng.integers(0, spec.input.vocab_size, size=T)
            if zero_frac:
                x[rng.random(T) < zero_frac] = 0
        else:
            x = rng.standard_normal((T, spec.input.features)).astype(np.float32)
            if zero_frac and spec.input.mask_value is not None:
                x[rng.random(T) < zero_frac] = spec.input.mask_value
        out.append(x)
    return out


def reference_outputs(model: Model, xs: Sequence[Any]) -> list[np.ndarray]:
    """float64 oracle outputs for each sequence."""
    return [rnninfer.reference.run_sequence(model.spec, dict(model.tensors), x) for x in xs]


def framework(name: str) -> Any:
    """Import a reference framework for parity tests.

    With ``RNNINFER_REQUIRE_FRAMEWORKS=1`` (set by ``.ci/run``) a missing
    framework is an error, so CI can never pass by skipping parity tests;
    elsewhere the tests are skipped with the reason shown by ``-ra``.
    """
    import importlib
    import os

    import pytest

    if os.environ.get("RNNINFER_REQUIRE_FRAMEWORKS") == "1":
        return importlib.import_module(name)
    return pytest.importorskip(name)
