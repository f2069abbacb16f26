"""Shared fixtures: seeded rng, every compiled ISA, model factories."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

from rnninfer import _core
from rnninfer.layers import Layer, complete_tensors, make_spec
from rnninfer.model import Model

settings.register_profile(
    "ci",
    deadline=None,
    max_examples=25,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile(
    "dev", deadline=None, max_examples=10, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

ISAS: list[str] = list(_core._testing.available_isas())


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded generator, fresh per test."""
    return np.random.default_rng(12345)


@pytest.fixture(params=ISAS)
def isa(request: pytest.FixtureRequest) -> str:
    """Every kernel ISA compiled in and runnable on this CPU."""
    return str(request.param)


MakeModel = Callable[..., Model]


@pytest.fixture
def make_model() -> MakeModel:
    """Build a model from layers with seeded random weights, optionally on one ISA."""

    def make(
        layers: Sequence[Layer], *, seed: int = 0, isa: str | None = None, threads: int = 1,
        weights: dict[str, np.ndarray] | None = None,
    ) -> Model:
        spec = make_spec(layers)
        return Model(spec, complete_tensors(spec, weights, seed), threads=threads, isa=isa)

    return make
