"""The benchmark report: the verdict, the noise flags, the results folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from rnninfer.bench import machine, report, runner


def _st(median: float, p99: float | None = None) -> dict[str, Any]:
    return {"median_ms": median, "p99_ms": p99 if p99 is not None else median * 1.2}


def _res(engines: dict[str, Any], load: dict[str, Any] | None = None) -> dict[str, Any]:
    case = {"name": "m-T64-b1-t1", "model": "m", "T": 64, "batch": 1, "threads": 1, "engines": engines}
    return {"cases": [case], "skipped_engines": {}, "load": load or {}}


def test_compare_names_the_faster_engine_and_the_factor() -> None:
    assert report.compare("rnninfer", 1.0, "pytorch", 2.5) == "rnninfer 2.50x faster than pytorch"
    assert report.compare("rnninfer", 3.0, "onnxruntime", 1.5) == "onnxruntime 2.00x faster than rnninfer"
    assert report.compare("rnninfer", 1.0, "openvino", 1.01) == "rnninfer and openvino about the same"


def test_verdict_pairs_reduced_precision_peers_with_rnninfers_of_the_same_precision() -> None:
    res = _res({"rnninfer": _st(1.0), "rnninfer-int8": _st(0.4), "pytorch": _st(2.0),
                "onnxruntime-int8": _st(0.5), "openvino-bf16": _st(0.8)})
    text = "\n".join(report.verdict_lines(res))
    assert "rnninfer 2.00x faster than pytorch (1.000 vs 2.000 ms)" in text
    assert "rnninfer-int8 1.25x faster than onnxruntime-int8" in text
    # no rnninfer-bf16 in this run: the bf16 peer is compared with fp32 rnninfer
    assert "openvino-bf16 1.25x faster than rnninfer (1.000 vs 0.800 ms)" in text
    assert "rnninfer-int8 2.50x faster than rnninfer" not in text  # the verdict is about peers


def test_verdict_without_peers_says_how_to_install_them() -> None:
    res = _res({"rnninfer": _st(1.0)})
    res["skipped_engines"] = {"pytorch": "not installed (torch)"}
    text = "\n".join(report.verdict_lines(res))
    assert "no peer framework timed" in text
    assert "pip install 'rnninfer[bench]'" in text


def test_noise_flags_tails_other_load_and_steal() -> None:
    quiet = _res({"rnninfer": _st(1.0, 1.3)}, {"other_cores": 0.05, "cpus": 2, "steal_pct": 0.1})
    assert report.noise_lines(quiet)[0].startswith("Noise: none flagged")
    noisy = _res({"rnninfer": _st(1.0, 3.5)}, {"other_cores": 1.4, "cpus": 2, "steal_pct": 6.0,
                                               "loadavg_1m_before": 3.9, "loadavg_1m_after": 6.3})
    text = "\n".join(report.noise_lines(noisy))
    assert "unreliable" in text
    assert "1.40 of the machine's 2 cores" in text
    assert "6.0 % of CPU time" in text
    assert "m-T64-b1-t1 rnninfer (3.5x)" in text


def test_other_load_subtracts_the_benchmarks_own_cpu_time() -> None:
    before = {"wall": 0.0, "own_s": 1.0, "busy_s": 10.0, "steal_s": 0.0, "total_s": 100.0, "loadavg_1m": 1.0}
    after = {"wall": 10.0, "own_s": 11.0, "busy_s": 25.0, "steal_s": 1.0, "total_s": 120.0, "loadavg_1m": 2.0}
    load = machine.other_load(before, after, cpus=2)
    assert load["own_cores"] == pytest.approx(1.0)
    assert load["other_cores"] == pytest.approx(0.5)
    assert load["steal_pct"] == pytest.approx(5.0)
    snap = machine.cpu_snapshot()
    assert snap["own_s"] >= 0
    assert machine.other_load(snap, machine.cpu_snapshot(), 2).get("other_cores", 0.0) >= 0


def test_results_go_outside_the_current_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RNNINFER_BENCH_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert runner.results_dir() == tmp_path / "cache" / "rnninfer" / "bench"
    monkeypatch.setenv("RNNINFER_BENCH_DIR", str(tmp_path / "mine"))
    assert runner.results_dir() == tmp_path / "mine"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.delenv("RNNINFER_BENCH_DIR")
    assert runner.results_dir() == Path.home() / ".cache" / "rnninfer" / "bench"
