"""bench/serve_load.py: a short run of the in-process part, and the load client against a real server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import framework

import rnninfer
from rnninfer.layers import LSTM, Dense, Embedding

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "serve_load.py"


def _env() -> dict[str, str]:
    env = dict(os.environ)
    root = str(Path(rnninfer.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


def test_in_process_part_runs_and_writes_results(tmp_path: Path) -> None:
    out = tmp_path / "serve_load"
    r = subprocess.run([sys.executable, str(SCRIPT), "--in-process-only", "--duration", "0.3", "--warmup", "0.1",
                        "--T", "8", "--threads", "1", "--out", str(out)],
                       capture_output=True, text=True, timeout=300, check=False, env=_env())
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(out.with_suffix(".json").read_text())
    ip = res["in_process"]
    for key in ("batcher", "direct"):
        assert ip[key]["seqs_per_s"] > 0
        assert 0 < ip[key]["p50_ms"] <= ip[key]["p99_ms"]
    assert ip["ceiling_seqs_per_s"] > 0
    assert "## In process: 64 client threads" in out.with_suffix(".md").read_text()


def test_load_client_against_a_real_server(tmp_path: Path) -> None:
    framework("starlette")
    framework("uvicorn")
    model = rnninfer.build([Embedding(30, 4), LSTM(8), Dense(1)], seed=0, threads=1)
    path = tmp_path / "m.npz"
    model.save(path)
    bodies = tmp_path / "bodies.json"
    bodies.write_text(json.dumps([json.dumps({"inputs": [i + 1, 2, 3]}) for i in range(8)]))
    proc = subprocess.Popen([sys.executable, "-m", "rnninfer", "serve", str(path), "--port", "0", "--threads", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=_env())
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        port = int(line.rsplit(":", 1)[1])
        for rate in (0.0, 200.0):  # closed loop, then open loop
            spec = {"host": "127.0.0.1", "port": port, "bodies": str(bodies), "concurrency": 4, "duration": 0.5,
                    "warmup": 0.1, "max_requests": 2000, "rate": rate, "drain": 5.0}
            r = subprocess.run([sys.executable, str(SCRIPT), "--client", json.dumps(spec)], capture_output=True,
                               text=True, timeout=120, check=False, env=_env())
            assert r.returncode == 0, r.stderr[-2000:]
            point = json.loads(r.stdout)
            assert point["mode"] == ("open" if rate else "closed")
            assert point["ok"] > 0
            assert set(point["statuses"]) == {"200"}
            assert 0 < point["p50_ms"] <= point["p99_ms"]
            if rate:
                assert point["throughput_rps"] == pytest.approx(rate, rel=0.5)
    finally:
        proc.terminate()
        proc.wait(30)
        if proc.stdout is not None:
            proc.stdout.close()
