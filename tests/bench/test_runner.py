"""The benchmark report: the same-run thread-scaling section."""

from __future__ import annotations

import dataclasses
from typing import Any

from rnninfer.bench import report, runner


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
    rows = report.scaling_rows(res)
    got = {(r["T"], r["batch"], r["engine"]): r for r in rows}
    assert set(got) == {(64, 1, "rnninfer"), (64, 1, "onnxruntime"), (32, 8, "rnninfer")}
    r = got[(64, 1, "rnninfer")]
    assert r["speedup"] == 1.2 / 0.5
    assert r["p99_1t_ms"] == 1.5
    assert r["p99_ms"] == 0.7
    assert r["rnninfer_vs_engine"] is None
    assert got[(64, 1, "onnxruntime")]["rnninfer_vs_engine"] == 1.0 / 0.5
    text = "\n".join(report.scaling_lines(res))
    assert "## Thread scaling (same run)" in text
    assert "| m | 64 | 1 | 2 | rnninfer | 1.200 / 1.500 | 0.500 / 0.700 | 2.40x | - |" in text


def test_no_scaling_section_without_two_thread_counts() -> None:
    res = {"cases": [_case(64, 1, 1, {"rnninfer": _timed(1.2, 1.5)})]}
    assert report.scaling_rows(res) == []
    assert report.scaling_lines(res) == []


def test_thread_counts_are_timed_in_the_same_rounds(monkeypatch) -> None:
    """Each round times the 1- and 2-thread engines one after the other, so a
    speedup never compares calls made minutes apart."""
    from rnninfer.bench import cases

    timed: list[int] = []
    real_call = runner.Worker.call

    def spy(self: Any, op: str, **kw: Any) -> dict[str, Any]:
        if op == "time":
            timed.append(self.threads)
        return real_call(self, op, **kw)

    monkeypatch.setattr(runner.Worker, "call", spy)
    # The machine's sgemm peak takes seconds to measure; the limits only need numbers.
    fake = {"cpu": {}, "versions": {}, "blas": "-", "method": {},
            "bandwidth": {"65536": {"best": 1e11}}, "peak": {"1": {"best": 1e11}, "2": {"best": 2e11}}}
    monkeypatch.setattr(runner.bench_machine, "measure", lambda *_a, **_k: fake)
    small = cases.Case(hidden=16, layers=1, T=6, vocab=50, embedding=8)
    items = runner.items_from_cases([dataclasses.replace(small, batch=b, threads=t) for t in (1, 2) for b in (1, 3)])
    res = runner.run_items(items, engines=["rnninfer"], rounds=3, round_ms=1, pause_ms=0, warmup=1,
                           progress=False)
    # two call shapes x 3 rounds, each round one 1-thread and one 2-thread timing
    assert len(timed) == 12
    for r in range(6):
        assert sorted(timed[2 * r: 2 * r + 2]) == [1, 2]
    assert [(c["batch"], c["threads"]) for c in res["cases"]] == [(1, 1), (3, 1), (1, 2), (3, 2)]
    for c in res["cases"]:
        e = c["engines"]["rnninfer"]
        assert e["median_ms"] > 0
        # what rnninfer's scheduler did, counted over exactly the timed calls
        assert e["schedule"]["calls"] == e["n"]
        if c["threads"] == 1:
            assert e["schedule"]["one_thread"] == e["n"]
    assert {(r["batch"], r["engine"]) for r in report.scaling_rows(res)} == {(1, "rnninfer"), (3, "rnninfer")}
    plans = [ln for ln in report.schedule_lines(res) if ln.startswith("| emb")]
    assert [ln.split(" | ")[0] for ln in plans] == [f"| {c['name']}" for c in res["cases"] if c["threads"] == 2]
