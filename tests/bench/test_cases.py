"""Benchmark case lists."""

from __future__ import annotations

import pytest

from rnninfer.bench import cases


def test_scheduler_suite_has_every_target_at_every_thread_count() -> None:
    got = cases.select("scheduler", (1, 2))
    shapes = {(c.layers, c.bidirectional, c.T, c.batch) for c in got}
    assert shapes == {(2, False, 64, 1), (2, False, 64, 64), (4, False, 128, 1),
                      (2, True, 32, 1), (2, True, 128, 1), (2, True, 512, 1)}
    for shape in shapes:
        assert sorted(c.threads for c in got if (c.layers, c.bidirectional, c.T, c.batch) == shape) == [1, 2]
    assert all(c.hidden == 256 and c.cell == "lstm" for c in got)


def test_unknown_suite_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown suite"):
        cases.select("nope", (1,))
