"""The benchmark report: the same-run thread-scaling section."""

from __future__ import annotations

from typing import Any

from rnninfer.bench import runner


def _case(T: int, batch: int, threads: int, engines: dict[str, Any]) -> dict[str, Any]:
    return {"model": "m", "T": T, "batch": batch, "threads": threads, "engines": engines}


def _timed(median: float, p99: float) -> dict[str, Any]:
    return {"median_ms": median, "p99_ms": p99}


def test_scaling_rows_pair_each_case_with_its_one_thread_twin() -> None:
    res = {"cases": [
        _case(64, 1, 1, {"rnninfer": _timed(1.2, 1.5), "onnxruntime": _timed(1.8, 2.0)}),
        _case(64, 1, 2, {"rnninfer": _timed(0.5, 0.7), "onnxruntime": _timed(1.0, 1.4)}),
        # no 1-thread twin for batch 64: no row
        _case(64, 64, 2, {"rnninfer": _timed(20.0, 22.0)}),
        # an engine that failed at 1 thread: no row for it
        _case(32, 8, 1, {"rnninfer": _timed(4.0, 4.4), "pytorch": {"status": "failed"}}),
        _case(32, 8, 2, {"rnninfer": _timed(2.5, 2.6), "pytorch": _timed(3.0, 3.3)}),
    ]}
    rows = runner.scaling_rows(res)
    got = {(r["T"], r["batch"], r["engine"]): r for r in rows}
    assert set(got) == {(64, 1, "rnninfer"), (64, 1, "onnxruntime"), (32, 8, "rnninfer")}
    r = got[(64, 1, "rnninfer")]
    assert r["speedup"] == 1.2 / 0.5
    assert r["p99_1t_ms"] == 1.5
    assert r["p99_ms"] == 0.7
    assert r["rnninfer_vs_engine"] is None
    assert got[(64, 1, "onnxruntime")]["rnninfer_vs_engine"] == 1.0 / 0.5
    text = "\n".join(runner.scaling_lines(res))
    assert "## Thread scaling (same run)" in text
    assert "| m | 64 | 1 | 2 | rnninfer | 1.200 / 1.500 | 0.500 / 0.700 | 2.40x | - |" in text


def test_no_scaling_section_without_two_thread_counts() -> None:
    res = {"cases": [_case(64, 1, 1, {"rnninfer": _timed(1.2, 1.5)})]}
    assert runner.scaling_rows(res) == []
    assert runner.scaling_lines(res) == []
