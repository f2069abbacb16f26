"""The serving benchmark: its limits, its checks and a short run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import framework

from rnninfer.bench import streams
from rnninfer.layers import make_spec


def _spec(name: str):  # type: ignore[no-untyped-def]
    case = next(c for c in streams.cases() if c.name == name)
    return make_spec(case.layers, name=name)


def test_headline_token_bytes_and_flops() -> None:
    spec = _spec("one-stream")
    # Embedding row + projection-table row, then w_hh of layer 0, w_ih and w_hh of layer 1, the head.
    rec = 1024 * 256
    assert streams.token_bytes(spec, "fp32") == 4 * (128 + 1024 + 3 * rec + 256)
    assert streams.token_bytes(spec, "bf16") == 4 * (128 + 1024 + 256) + 2 * 3 * rec
    assert streams.token_bytes(spec, "int8") == 4 * (128 + 1024 + 256) + 3 * rec + 3 * 4 * 1024
    assert streams.token_flops(spec) == 2.0 * (3 * rec + 256)
    stac = _spec("stac")
    assert streams.token_flops(stac) == 2.0 * (4 * 512 * 128 + 128)


@pytest.mark.slow
def test_short_serving_run_writes_checked_results(tmp_path: Path) -> None:
    framework("torch")
    framework("onnxruntime")
    res = streams.run_serving(threads=(1,), precisions=("fp32", "int8"), rounds=1, round_ms=2.0, pause_ms=0.0,
                              case_names=("stac",), out=tmp_path / "serving", progress=False)
    doc = json.loads((tmp_path / "serving.json").read_text())
    engines = {(r["engine"], r["precision"]) for r in doc["rows"]}
    assert engines == {("rnninfer", "fp32"), ("rnninfer", "int8"), ("pytorch", "fp32"), ("onnxruntime", "fp32")}
    for r in doc["rows"]:
        assert r["calls"] >= 5
        assert 0 < r["p50_us"] <= r["p99_us"]
        assert r["floor_us"] > 0
        assert np.isfinite(r["sgemm_limit_tokens_per_s"])
    md = (tmp_path / "serving.md").read_text()
    assert "## stac" in md
    assert "p50 / floor" in md
    assert set(res["paths"]) >= {"json", "md"}


def test_rnninfer_check_catches_a_wrong_peer() -> None:
    from rnninfer.layers import complete_tensors
    from rnninfer.model import Model

    spec = _spec("stac")
    model = Model(spec, complete_tensors(spec, None, 0), threads=1)
    inputs = streams._inputs(spec, 3, 2)
    want = np.stack([[model.predict(inputs[:t + 1, b]) for b in range(2)] for t in range(3)])
    streams._check_rnninfer(model, inputs, want)
    with pytest.raises(AssertionError, match="disagrees"):
        streams._check_rnninfer(model, inputs, want + 1e-3)


def test_cli_selects_serving_cases_and_precisions() -> None:
    import argparse

    from rnninfer.bench.command import add_arguments

    p = argparse.ArgumentParser()
    add_arguments(p)
    args = p.parse_args(["--serving", "--cases", "stac", "--precisions", "int8", "--threads", "1"])
    assert (args.suite, args.cases, args.precisions) == ("serving", "stac", "int8")
    defaults = p.parse_args(["--serving"])
    assert defaults.cases == ""
    assert defaults.precisions == "fp32,bf16,int8"


@pytest.mark.parametrize(("kw", "named"), [({"case_names": ("one-streams",)}, "'one-streams'"),
                                          ({"precisions": ("fp16",)}, "'fp16'")])
def test_unknown_case_or_precision_is_named(kw: dict[str, object], named: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=named):
        streams.run_serving(threads=(1,), rounds=1, out=tmp_path / "x", progress=False, **kw)  # type: ignore[arg-type]
