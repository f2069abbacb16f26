"""The benchmark's rnninfer engines: each computes what the model computes."""

from __future__ import annotations

import numpy as np
import pytest

import rnninfer
from rnninfer.bench import peers
from rnninfer.layers import GRU, LSTM, Dense, Embedding, Features


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("batch", [1, 2, 5])
def test_percore_reference_equals_the_model(threads: int, batch: int) -> None:
    """One 1-thread model per thread, each on a slice of the batch: the same
    bits as one model on the whole batch, rows in order (also when there are
    fewer sequences than threads)."""
    model = rnninfer.build([Embedding(40, 6), LSTM(8, return_sequences=True), GRU(5), Dense(2)], seed=3)
    x = np.random.default_rng(batch).integers(0, 40, size=(batch, 9))
    run = peers.get("rnninfer-percore").prepare(model.spec, dict(model.tensors), threads).run
    assert np.array_equal(run(x), model.predict(x))


def test_percore_reference_takes_features_and_sequence_outputs() -> None:
    model = rnninfer.build([Features(3), GRU(4, return_sequences=True), Dense(2)], seed=0)
    x = np.random.default_rng(0).standard_normal((5, 7, 3)).astype(np.float32)
    run = peers.get("rnninfer-percore").prepare(model.spec, dict(model.tensors), 2).run
    assert np.array_equal(run(x), model.predict(x))


def test_percore_reference_rejects_an_empty_batch_like_the_model() -> None:
    model = rnninfer.build([Embedding(40, 6), GRU(5), Dense(2)], seed=0)
    run = peers.get("rnninfer-percore").prepare(model.spec, dict(model.tensors), 2).run
    x = np.zeros((0, 4), np.int64)
    with pytest.raises(ValueError, match="empty batch"):
        model.predict(x)
    with pytest.raises(ValueError, match="empty batch"):
        run(x)
