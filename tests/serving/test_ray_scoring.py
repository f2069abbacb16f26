"""Batch scoring on a local Ray cluster (examples/ray_batch_scoring.py over rnninfer.serving.ray)."""

from __future__ import annotations

import importlib.util
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import framework

import rnninfer
from rnninfer.layers import GRU, LSTM, Dense, Embedding, Features
from rnninfer.serving.ray import Scorer, resolve_model

# Ray Data warns about its own deprecated settings when it builds its context; not ours to fix.
pytestmark = [pytest.mark.cluster, pytest.mark.filterwarnings(r"ignore::DeprecationWarning:ray\..*")]

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "ray_batch_scoring.py"


def _example() -> Any:
    spec = importlib.util.spec_from_file_location("ray_batch_scoring", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _ray_pids() -> set[int]:
    """Processes of any Ray instance on this machine (workers, raylet, GCS)."""
    out = set()
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{d}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if cmd.startswith(b"ray::") or b"/ray/core/src/ray/" in cmd or b"ray/_private/" in cmd \
                or b"raylet" in cmd.split(b" ")[0] or b"gcs_server" in cmd.split(b" ")[0]:
            out.add(int(d))
    return out


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[Any]:
    ray = framework("ray")
    framework("pyarrow")
    before = _ray_pids()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        yield ray
    finally:
        ray.shutdown()
        # Ray stops its processes asynchronously; none of this instance's may outlive the tests.
        deadline = time.monotonic() + 30
        while (left := _ray_pids() - before) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not left, f"Ray left processes behind: {sorted(left)}"


def _token_model(tmp_path: Path, out: int = 1) -> tuple[rnninfer.Model, Path]:
    act = "sigmoid" if out == 1 else "softmax"
    model = rnninfer.build([Embedding(60, 8), LSTM(12, return_sequences=True), GRU(10), Dense(out, act)],
                           seed=7, threads=1)
    path = tmp_path / "m.npz"
    model.save(path)
    return model, path


def _sequences(n: int, seed: int) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 60, size=int(rng.integers(1, 25))).tolist() for _ in range(n)]


def test_parquet_in_parquet_out_every_score_is_model_predict(ray_cluster: Any, tmp_path: Path) -> None:
    """Two actors (half a CPU each, the other CPU reads and writes), batches of 32 over
    300 ragged sequences: each score has the bits model.predict gives that sequence."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    model, path = _token_model(tmp_path)
    seqs = _sequences(300, 1)
    ids = np.arange(1000, 1300)
    pq.write_table(pa.table({"id": ids, "tokens": seqs}), tmp_path / "in.parquet")
    ex = _example()
    assert ex.main([str(path), str(tmp_path / "in.parquet"), str(tmp_path / "out"), "--actors", "2",
                    "--cpus-per-actor", "0.5", "--batch-size", "32"]) == 0
    assert ray_cluster.is_initialized()  # the example leaves a cluster it did not start running
    got = pq.read_table(tmp_path / "out").to_pydict()
    assert sorted(got) == ["id", "score"]
    assert sorted(got["id"]) == ids.tolist()
    want = dict(zip(ids.tolist(), model.predict(seqs)[:, 0]))
    for i, s in zip(got["id"], got["score"]):
        assert np.float32(s) == want[i], i


def test_jsonl_in_json_out_with_two_outputs(ray_cluster: Any, tmp_path: Path) -> None:
    model, path = _token_model(tmp_path, out=2)
    seqs = _sequences(50, 2)
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"key": f"s{i}", "tokens": s}) + "\n" for i, s in enumerate(seqs)))
    ex = _example()
    assert ex.main([str(path), str(src), str(tmp_path / "out"), "--format", "json", "--actors", "1",
                    "--batch-size", "16"]) == 0
    rows = [json.loads(line) for f in sorted((tmp_path / "out").iterdir()) for line in f.read_text().splitlines()]
    want = model.predict(seqs)
    assert sorted(r["key"] for r in rows) == sorted(f"s{i}" for i in range(50))
    for r in rows:
        np.testing.assert_array_equal(np.asarray(r["score"], dtype=np.float32), want[int(r["key"][1:])])


def test_scorer_outside_ray(tmp_path: Path) -> None:
    """The callable class on a numpy batch as Ray Data hands it over (ragged column: an
    object array of arrays), for tokens and features; threads follow the argument."""
    model, path = _token_model(tmp_path)
    seqs = _sequences(7, 3)
    col = np.empty(len(seqs), dtype=object)
    col[:] = [np.asarray(s) for s in seqs]
    scorer = Scorer(path.read_bytes(), threads=1)
    out = scorer({"tokens": col, "id": np.arange(7)})
    np.testing.assert_array_equal(out["score"], model.predict(seqs)[:, 0])
    np.testing.assert_array_equal(out["id"], np.arange(7))
    assert resolve_model(model, threads=2).threads == 2
    assert resolve_model(model, threads=1) is model
    with pytest.raises(KeyError, match="no column 'tokens'"):
        scorer({"ids": col})
    with pytest.raises(TypeError, match="rnninfer Model"):
        resolve_model(42)

    fmodel = rnninfer.build([Features(3), GRU(4), Dense(2)], seed=0, threads=1)
    rng = np.random.default_rng(0)
    fseqs = [rng.standard_normal((int(rng.integers(1, 6)), 3)) for _ in range(5)]
    fcol = np.empty(5, dtype=object)
    fcol[:] = [np.array(list(s), dtype=object) for s in fseqs]  # list-of-rows column
    fout = Scorer(fmodel, column="x", output="y")({"x": fcol})
    np.testing.assert_array_equal(fout["y"], fmodel.predict([s.astype(np.float32) for s in fseqs]))


def test_threads_follow_the_cpus_ray_assigns(ray_cluster: Any, tmp_path: Path) -> None:
    """In a task or actor, the model runs as many threads as whole CPUs Ray gave it (the
    model comes back by pickle, which carries the threads it was loaded with)."""
    model, _ = _token_model(tmp_path)
    ref = ray_cluster.put(model)
    task = ray_cluster.remote(resolve_model)
    for cpus, threads in ((2, 2), (1, 1), (0.5, 1)):
        got = ray_cluster.get(task.options(num_cpus=cpus).remote(ref))
        assert got.threads == threads
        assert np.array_equal(got.predict([1, 2, 3]), model.predict([1, 2, 3]))
