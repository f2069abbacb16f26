"""`rnninfer serve` over real HTTP: a subprocess on a free loopback port, always stopped.

Answers equal ``model.predict`` bit for bit under concurrent clients; every bad
request is a 4xx with a message and leaves the server healthy; limits, overload,
disconnecting clients, metrics, SIGTERM under load.
"""

from __future__ import annotations

import asyncio
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from helpers import framework

import rnninfer
from rnninfer.layers import GRU, LSTM, Dense, Embedding, Features

httpx = framework("httpx")
framework("starlette")
framework("uvicorn")
framework("prometheus_client")

START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0


class Server:
    """A running ``python -m rnninfer serve`` subprocess."""

    def __init__(self, model_path: Path, *args: str, log: Path) -> None:
        self.log = log
        self._err = open(log, "w")  # noqa: SIM115 (closed in stop())
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rnninfer", "serve", str(model_path), "--port", "0", "--threads", "1",
             *args],
            stdout=subprocess.PIPE, stderr=self._err, text=True,
        )
        line = self._readline(START_TIMEOUT)
        if "listening on" not in line:
            self.stop()
            raise RuntimeError(f"server did not start: {line!r}\n{self.stderr()}")
        self.url = line.rsplit(" ", 1)[-1].strip()
        self.port = int(self.url.rsplit(":", 1)[-1])

    def _readline(self, timeout: float) -> str:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        return self.proc.stdout.readline() if ready else ""

    def stderr(self) -> str:
        return self.log.read_text()[-3000:]

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(STOP_TIMEOUT)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._err.close()
        return int(self.proc.returncode)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("serve-models")
    models = {
        "tokens": rnninfer.build([Embedding(50, 8), LSTM(16), Dense(3)], seed=1, name="tokens"),
        "features-seq": rnninfer.build([Features(4), GRU(8, return_sequences=True), Dense(2)], seed=2,
                                       name="features-seq"),
        "slow": rnninfer.build([Embedding(50, 32), LSTM(192), LSTM(192), Dense(1, activation="sigmoid")],
                               seed=3, name="slow"),
    }
    out = {}
    for k, m in models.items():
        out[k] = d / f"{k}.npz"
        m.save(out[k])
    return out


StartServer = Callable[..., Server]


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[StartServer]:
    """Start servers for one test; every one is stopped afterwards, whatever happened."""
    servers: list[Server] = []

    def start(path: Path, *args: str) -> Server:
        s = Server(path, *args, log=tmp_path / f"server{len(servers)}.log")
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.stop()


@pytest.fixture(scope="module")
def tokens_server(files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = Server(files["tokens"], "--max-batch", "16",
               log=tmp_path_factory.mktemp("log") / "tokens.log")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def features_server(files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = Server(files["features-seq"], log=tmp_path_factory.mktemp("log") / "features.log")
    yield s
    s.stop()


def _model(path: Path) -> rnninfer.Model:
    return rnninfer.load(path, threads=1)


def _post(url: str, body: Any, **kw: Any) -> Any:
    content = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return httpx.post(url, content=content, headers={"content-type": "application/json"}, timeout=30, **kw)


def _requests_for(model: rnninfer.Model, rng: np.random.Generator, n: int) -> list[dict[str, Any]]:
    tokens = model.spec.input.kind == "tokens"
    F = model.spec.input.width

    def seq(T: int) -> list[Any]:
        if tokens:
            return [int(v) for v in rng.integers(0, 50, size=T)]
        return rng.standard_normal((T, F)).astype(np.float32).tolist()

    out: list[dict[str, Any]] = []
    for i in range(n):
        if i % 3 == 0:
            out.append({"inputs": seq(int(rng.integers(1, 15)))})
        elif i % 3 == 1:
            out.append({"inputs": [seq(int(rng.integers(1, 15))) for _ in range(int(rng.integers(1, 4)))]})
        else:
            b, T = int(rng.integers(1, 4)), int(rng.integers(2, 12))
            out.append({"inputs": [seq(T) for _ in range(b)],
                        "lengths": [int(v) for v in rng.integers(1, T + 1, size=b)]})
    return out


def _expected(model: rnninfer.Model, body: dict[str, Any]) -> np.ndarray:
    x = body["inputs"]
    tokens = model.spec.input.kind == "tokens"
    if "lengths" in body:
        arr = np.array(x, dtype=np.int64 if tokens else np.float64)
        return model.predict(arr, lengths=body["lengths"])
    if not tokens:
        x = np.array(x, dtype=np.float64) if not isinstance(x[0][0], list) else [np.array(s) for s in x]
    return model.predict(x)


def _check_same(answer: Any, expected: np.ndarray) -> None:
    got = np.array(answer["outputs"], dtype=np.float32)
    assert got.shape == expected.shape
    assert np.array_equal(got, expected)  # JSON round-trips float32 exactly


def test_threads_over_http_get_predicts_bits(tokens_server: Server, files: dict[str, Path],
                                             rng: np.random.Generator) -> None:
    model = _model(files["tokens"])
    bodies = _requests_for(model, rng, 128)
    answers: list[Any] = [None] * len(bodies)
    clients = 32
    barrier = threading.Barrier(clients)

    def client(k: int) -> None:
        with httpx.Client(base_url=tokens_server.url, timeout=30) as c:
            barrier.wait(30)
            for i in range(k, len(bodies), clients):
                r = c.post("/v1/predict", json=bodies[i])
                answers[i] = (r.status_code, r.json())

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for body, (status, answer) in zip(bodies, answers):
        assert status == 200, answer
        _check_same(answer, _expected(model, body))


def test_one_client_at_a_time_is_answered_on_the_event_loop(tokens_server: Server, files: dict[str, Path],
                                                            rng: np.random.Generator) -> None:
    # One request at a time finds the Batcher idle: once its cost is fitted (after 32 calls), the
    # event loop runs each call itself instead of handing it to the dispatcher thread and back.
    model = _model(files["tokens"])
    bodies = _requests_for(model, rng, 48)
    calls, inline = (_metric(tokens_server.url, f"rnninfer_{k}_total") for k in ("engine_calls", "inline_calls"))
    with httpx.Client(base_url=tokens_server.url, timeout=30) as c:
        for body in bodies:
            r = c.post("/v1/predict", json=body)
            assert r.status_code == 200, r.text
            _check_same(r.json(), _expected(model, body))
    assert _metric(tokens_server.url, "rnninfer_engine_calls_total") - calls == len(bodies)
    assert _metric(tokens_server.url, "rnninfer_inline_calls_total") - inline >= len(bodies) - 32


def test_asyncio_clients_get_predicts_bits(features_server: Server, files: dict[str, Path],
                                           rng: np.random.Generator) -> None:
    server = features_server
    model = _model(files["features-seq"])
    bodies = _requests_for(model, rng, 96)

    async def main() -> list[Any]:
        async with httpx.AsyncClient(base_url=server.url, timeout=30,
                                     limits=httpx.Limits(max_connections=48)) as c:
            rs = await asyncio.gather(*(c.post("/v1/predict", json=b) for b in bodies))
            return [(r.status_code, r.json()) for r in rs]

    for body, (status, answer) in zip(bodies, asyncio.run(main())):
        assert status == 200, answer
        _check_same(answer, _expected(model, body))
    assert _metric(server.url, 'rnninfer_http_requests_total{endpoint="predict",status="200"}') >= 96


BAD: list[tuple[Any, str]] = [
    (b"{not json", "not valid JSON"),
    (b"\x80abc", "not UTF-8"),
    ([1, 2, 3], '{"inputs": ...}'),
    ({"input": [1, 2]}, '{"inputs": ...}'),
    ({"inputs": [1, 2], "extra": 1}, "unknown field"),
    ({"inputs": []}, "non-empty"),
    ({"inputs": "1 2 3"}, "non-empty JSON list"),
    ({"inputs": [1, 50]}, "out of range"),
    ({"inputs": [1, -3]}, "out of range"),
    ({"inputs": [1, 2.5]}, "integers"),
    ({"inputs": [1, True]}, "integers"),
    ({"inputs": [1, None]}, "integers"),
    ({"inputs": [1, 10**30]}, "out of range"),
    ({"inputs": [[1, 2], []]}, "length 0"),
    ({"inputs": [[1, 2], 3]}, "mixes"),
    ({"inputs": [[1, 2], [3, 4]], "lengths": [2, 3]}, "beyond"),
    ({"inputs": [[1, 2], [3, 4]], "lengths": [2, 0]}, "length 0"),
    ({"inputs": [[1, 2], [3]], "lengths": [2, 1]}, "padded"),
    ({"inputs": [[1, 2], [3, 4]], "lengths": "2"}, "lengths"),
    ({"inputs": [1, 2], "lengths": [2]}, "padded batch"),
    ({"inputs": [[[1]]]}, "token"),
    (b"[" * 100000 + b"]" * 100000, "nest"),
]


@pytest.mark.parametrize(("body", "message"), BAD)
def test_bad_requests_get_400_with_the_message(tokens_server: Server, body: Any, message: str) -> None:
    r = _post(tokens_server.url + "/v1/predict", body)
    assert r.status_code == 400, r.text
    assert message in r.json()["error"]
    assert httpx.get(tokens_server.url + "/healthz", timeout=30).status_code == 200


def test_bad_feature_requests(features_server: Server, files: dict[str, Path]) -> None:
    url = features_server.url + "/v1/predict"
    for body, message in [
        ({"inputs": [1.0, 2.0]}, "lists of steps"),
        ({"inputs": [[1.0, 2.0]]}, "expected 4 features"),
        ({"inputs": [[1.0, 2.0, 3.0, "x"]]}, "numbers"),
        ({"inputs": [[1.0, 2.0, 3.0]], "lengths": [1]}, "padded batch"),
        (b'{"inputs": [[1.0, 2.0, 3.0, NaN]]}', "NaN"),
        (b'{"inputs": [[1.0, 2.0, 3.0, 1e400]]}', "NaN or infinity"),
        ({"inputs": [[[1.0, 2.0, 3.0, 4.0]], [[1.0, 2.0]]]}, "sequence 1"),
        ({"inputs": [[[1.0, 2.0, 3.0, 4.0]], [1.0, 2.0, 3.0, 4.0]]}, "sequence 1"),
    ]:
        r = _post(url, body)
        assert r.status_code == 400, (body, r.text)
        assert message in r.json()["error"], (body, r.text)
    good = {"inputs": [[1.0, 2.0, 3.0, 4.0], [0.5, 0.25, 0.0, -1.0]]}
    _check_same(_post(url, good).json(), _expected(_model(files["features-seq"]), good))


def test_size_limits_answer_413_naming_the_limit(start_server: StartServer, files: dict[str, Path]) -> None:
    server = start_server(files["tokens"], "--max-tokens", "40", "--max-sequences", "4",
                          "--max-body-bytes", "3000")
    url = server.url + "/v1/predict"
    r = _post(url, {"inputs": list(range(1, 42))})
    assert (r.status_code, "max_tokens=40") == (413, r.json()["error"][-len("max_tokens=40"):])
    r = _post(url, {"inputs": [[1]] * 5})
    assert r.status_code == 413
    assert "max_sequences=4" in r.json()["error"]
    r = _post(url, b'{"inputs": [' + b" " * 3000 + b"1]}")
    assert r.status_code == 413
    assert "max_body_bytes=3000" in r.json()["error"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit holds while reading
        yield b'{"inputs": ['
        for _ in range(100):
            yield b" " * 100
        yield b"1]}"

    r = httpx.post(url, content=chunks(), timeout=30)
    assert r.status_code == 413
    assert "max_body_bytes=3000" in r.json()["error"]
    assert _post(url, {"inputs": list(range(1, 41))}).status_code == 200


def test_unknown_paths_and_streams_404(tokens_server: Server) -> None:
    assert httpx.get(tokens_server.url + "/v2/nothing", timeout=30).status_code == 404
    r = _post(tokens_server.url + "/v1/streams/nope", {"inputs": [1]})
    assert r.status_code == 404
    assert "nope" in r.json()["error"]
    assert httpx.delete(tokens_server.url + "/v1/streams/nope", timeout=30).status_code == 404
    assert httpx.get(tokens_server.url + "/v1/predict", timeout=30).status_code == 405


def test_the_hot_path_answers_like_a_routed_endpoint(tokens_server: Server) -> None:
    # POST /v1/predict and feeds skip Starlette's router; their answers carry the same headers,
    # and the paths next to them are still routed (404, 405, the trailing-slash redirect).
    url = tokens_server.url
    r = _post(url + "/v1/predict", {"inputs": [1, 2]})
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert int(r.headers["content-length"]) == len(r.content)
    assert "server" not in r.headers
    sid = _post(url + "/v1/streams", {}).json()["id"]
    r = _post(f"{url}/v1/streams/{sid}", {"inputs": [1, 2]})
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert _post(f"{url}/v1/streams/{sid}/more", {"inputs": [1]}).status_code == 404
    assert httpx.put(f"{url}/v1/streams/{sid}", json={"inputs": [1]}, timeout=30).status_code == 405
    assert httpx.delete(f"{url}/v1/streams/{sid}", timeout=30).status_code == 200  # the server is shared
    r = httpx.post(url + "/v1/predict/", json={"inputs": [1]}, timeout=30, follow_redirects=False)
    assert r.status_code == 307
    assert r.headers["location"].endswith("/v1/predict")


def test_overload_answers_503_and_the_rest_are_right(start_server: StartServer, files: dict[str, Path],
                                                      rng: np.random.Generator) -> None:
    server = start_server(files["slow"], "--max-queue", "1", "--max-batch", "1")
    model = _model(files["slow"])
    bodies = [{"inputs": [int(v) for v in rng.integers(0, 50, size=40)]} for _ in range(64)]

    async def main() -> list[Any]:
        async with httpx.AsyncClient(base_url=server.url, timeout=60,
                                     limits=httpx.Limits(max_connections=64)) as c:
            rs = await asyncio.gather(*(c.post("/v1/predict", json=b) for b in bodies))
            return [(r.status_code, r.json()) for r in rs]

    answers = asyncio.run(main())
    statuses = [s for s, _ in answers]
    assert set(statuses) == {200, 503}
    for body, (status, answer) in zip(bodies, answers):
        if status == 503:
            assert "max_queue" in answer["error"]
        else:
            _check_same(answer, _expected(model, body))
    metrics = httpx.get(server.url + "/metrics", timeout=30).text
    assert f'rnninfer_http_requests_total{{endpoint="predict",status="503"}} {statuses.count(503)}.0' in metrics
    assert "rnninfer_rejected_total" in metrics


def _raw(port: int, data: bytes, *, read: bool) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        if not read:
            return b""
        s.shutdown(socket.SHUT_WR)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


def test_clients_that_disconnect_do_no_harm(tokens_server: Server, files: dict[str, Path]) -> None:
    server = tokens_server
    body = json.dumps({"inputs": [[1, 2, 3] * 30] * 64}).encode()
    head = (f"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    for _ in range(5):
        _raw(server.port, head + body[: len(body) // 2], read=False)  # gone mid-body
        _raw(server.port, head + body, read=False)  # gone before the answer
        _raw(server.port, b"GARBAGE\r\n\r\n", read=False)
    assert b"400" in _raw(server.port, b"NOT HTTP AT ALL\r\n\r\n", read=True).split(b"\r\n")[0]
    time.sleep(0.3)
    r = _post(server.url + "/v1/predict", {"inputs": [1, 2, 3]})
    assert r.status_code == 200
    _check_same(r.json(), _model(files["tokens"]).predict([1, 2, 3]))
    assert server.proc.poll() is None


def test_metrics_and_healthz(tokens_server: Server) -> None:
    for _ in range(3):
        assert _post(tokens_server.url + "/v1/predict", {"inputs": [[1, 2], [3]]}).status_code == 200
    h = httpx.get(tokens_server.url + "/healthz", timeout=30).json()
    assert h["status"] == "ok"
    assert h["model"] == "tokens"
    assert h["threads"] == 1
    text = httpx.get(tokens_server.url + "/metrics", timeout=30).text
    for name in ("rnninfer_http_requests_total", "rnninfer_http_request_duration_seconds_bucket",
                 "rnninfer_batch_size_bucket", "rnninfer_queue_depth", "rnninfer_live_streams",
                 "rnninfer_engine_calls_total", "rnninfer_inline_calls_total", "rnninfer_queue_wait_seconds"):
        assert name in text, name
    assert 'rnninfer_batch_size_bucket{le="+Inf"}' in text


def _metric(url: str, name: str) -> float:
    for line in httpx.get(url + "/metrics", timeout=30).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def test_sigterm_under_load_finishes_in_flight_requests(start_server: StartServer,
                                                        files: dict[str, Path]) -> None:
    server = start_server(files["slow"])
    model = _model(files["slow"])
    big = {"inputs": [[int(v) % 50 for v in range(i, i + 120)] for i in range(256)]}
    small = {"inputs": [1, 2, 3, 4]}
    stop = threading.Event()
    statuses: list[int] = []

    def load_client() -> None:
        with httpx.Client(base_url=server.url, timeout=30) as c:
            while not stop.is_set():
                try:
                    r = c.post("/v1/predict", json=small)
                except httpx.TransportError:
                    return  # the server stopped listening
                statuses.append(r.status_code)
                if r.status_code == 200:
                    _check_same(r.json(), model.predict(small["inputs"]))

    loaders = [threading.Thread(target=load_client) for _ in range(8)]
    for t in loaders:
        t.start()
    body = json.dumps(big).encode()
    deadline = time.monotonic() + 60
    while len(statuses) < 20:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    with socket.create_connection(("127.0.0.1", server.port), timeout=60) as sock:
        sock.sendall(f"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
        # SIGTERM once the big request is inside the engine (256 sequences in the running call).
        while _metric(server.url, "rnninfer_engine_running_sequences") < 256:
            assert time.monotonic() < deadline
            time.sleep(0.002)
        server.proc.send_signal(signal.SIGTERM)
        answer = b""
        while chunk := sock.recv(1 << 16):
            answer += chunk
    stop.set()
    for t in loaders:
        t.join(60)
    assert server.proc.wait(STOP_TIMEOUT) in (0, -signal.SIGTERM)
    head, _, payload = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), answer[:300]
    _check_same(json.loads(payload), model.predict(big["inputs"]))
    assert statuses.count(200) >= 20
    assert set(statuses) <= {200, 503}
    assert "Traceback" not in server.stderr()


def test_serve_without_the_extra_names_it(files: dict[str, Path]) -> None:
    code = ("import sys; sys.modules['starlette'] = None\n"
            "from rnninfer.cli import main\n"
            f"raise SystemExit(main(['serve', {str(files['tokens'])!r}]))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 2
    assert r.stderr.startswith("rnninfer serve: error: ")
    assert "'serve' extra" in r.stderr
    assert "pip install 'rnninfer[serve]'" in r.stderr


def test_bad_options_are_errors_not_tracebacks(files: dict[str, Path]) -> None:
    r = subprocess.run([sys.executable, "-m", "rnninfer", "serve", str(files["tokens"]), "--max-batch", "0"],
                       capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 2
    assert "max_batch must be >= 1" in r.stderr
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        r = subprocess.run([sys.executable, "-m", "rnninfer", "serve", str(files["tokens"]), "--port", str(port)],
                           capture_output=True, text=True, timeout=60, check=False, env=dict(os.environ))
    assert r.returncode == 2
    assert "cannot listen" in r.stderr


# ---- stream sessions -----------------------------------------------------------------------------
def test_stream_sessions_fed_in_chunks(tokens_server: Server, files: dict[str, Path],
                                       rng: np.random.Generator) -> None:
    model = _model(files["tokens"])
    url = tokens_server.url

    def session(seq: list[int], cuts: list[int]) -> None:
        with httpx.Client(base_url=url, timeout=30) as c:
            r = c.post("/v1/streams")
            assert r.status_code == 200
            sid = r.json()["id"]
            t = 0
            for t1 in [*cuts, len(seq)]:
                r = c.post(f"/v1/streams/{sid}", json={"inputs": seq[t:t1]})
                assert r.status_code == 200, r.text
                assert r.json()["steps"] == t1
                _check_same(r.json(), model.predict(seq[:t1]))
                t = t1
            r = c.delete(f"/v1/streams/{sid}")
            assert r.json() == {"id": sid, "steps": len(seq)}
            assert c.post(f"/v1/streams/{sid}", json={"inputs": [1]}).status_code == 404
            assert c.delete(f"/v1/streams/{sid}").status_code == 404

    seqs = [[int(v) for v in rng.integers(0, 50, size=int(rng.integers(3, 20)))] for _ in range(32)]
    threads = [threading.Thread(target=session, args=(s, sorted({1, len(s) // 2}))) for s in seqs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert _metric(url, "rnninfer_live_streams") == 0


def test_stream_errors(tokens_server: Server, files: dict[str, Path]) -> None:
    url = tokens_server.url
    sid = _post(url + "/v1/streams", b"").json()["id"]
    for body, message in [({"inputs": [[1, 2], [3]]}, "one sequence"), ({"inputs": [1, 99]}, "out of range"),
                          ({"inputs": [1, 2], "lengths": [2]}, "unknown field"), ({"inputs": []}, "non-empty")]:
        r = _post(f"{url}/v1/streams/{sid}", body)
        assert r.status_code == 400, r.text
        assert message in r.json()["error"]
    r = _post(f"{url}/v1/streams/{sid}", {"inputs": [4, 5]})
    assert r.json()["steps"] == 2  # the refused feeds changed nothing
    _check_same(r.json(), _model(files["tokens"]).predict([4, 5]))
    assert _post(url + "/v1/streams", {"state": 1}).status_code == 400
    assert httpx.delete(f"{url}/v1/streams/{sid}", timeout=30).status_code == 200


def test_streams_expire_and_are_capped(start_server: StartServer, files: dict[str, Path]) -> None:
    server = start_server(files["features-seq"], "--stream-idle-s", "1.5", "--max-streams", "3")
    url = server.url
    model = _model(files["features-seq"])
    ids = [_post(url + "/v1/streams", b"").json()["id"] for _ in range(3)]
    r = _post(url + "/v1/streams", b"")
    assert r.status_code == 503
    assert "max_streams=3" in r.json()["error"]
    x = [[0.5, -1.0, 2.0, 0.25], [1.0, 1.0, 1.0, 1.0], [0.0, 0.1, 0.2, 0.3]]
    r = _post(f"{url}/v1/streams/{ids[0]}", {"inputs": x[:2]})
    _check_same(r.json(), model.predict(np.array(x[:2])))
    r = _post(f"{url}/v1/streams/{ids[0]}", {"inputs": x[2:]})
    _check_same(r.json(), model.predict(np.array(x))[2:])
    deadline = time.monotonic() + 30
    while _metric(url, "rnninfer_live_streams") > 0:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    r = _post(f"{url}/v1/streams/{ids[0]}", {"inputs": x[:1]})
    assert r.status_code == 404
    assert "expired" in r.json()["error"]
    assert _post(url + "/v1/streams", b"").status_code == 200


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the server's RSS from /proc")
def test_ten_thousand_abandoned_streams_cost_bounded_memory(start_server: StartServer,
                                                            files: dict[str, Path]) -> None:
    server = start_server(files["slow"], "--stream-idle-s", "1", "--max-streams", "4000")
    req = b"POST /v1/streams HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"

    def open_many(n: int) -> list[int]:
        # Pipelined on keep-alive connections: 10,000 opens in a few seconds.
        with socket.create_connection(("127.0.0.1", server.port), timeout=60) as s:
            s.sendall(req * n)
            data = b""
            while data.count(b"HTTP/1.1 ") < n:
                chunk = s.recv(1 << 16)
                assert chunk, "connection closed early"
                data += chunk
        return [int(part[:3]) for part in data.split(b"HTTP/1.1 ")[1:]]

    statuses: list[int] = []
    rss: list[int] = []
    for _ in range(2):  # 2 x 5,000: the second round must not grow the process much
        box: list[list[int]] = []
        ths = [threading.Thread(target=lambda b=box: b.append(open_many(625))) for _ in range(8)]
        for t in ths:
            t.start()
        for t in ths:
            t.join(120)
        statuses += [v for b in box for v in b]
        assert _metric(server.url, "rnninfer_live_streams") <= 4000
        deadline = time.monotonic() + 30
        while _metric(server.url, "rnninfer_live_streams") > 0:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        rss.append(_rss_kib(server.proc.pid))
    assert len(statuses) == 10000
    assert set(statuses) <= {200, 503}
    assert statuses.count(200) >= 4000
    assert rss[1] - rss[0] < 20 * 1024, rss  # KiB: no per-stream leak
    assert _post(server.url + "/v1/predict", {"inputs": [1, 2]}).status_code == 200
