"""Shipping models to workers: pickle, deepcopy, bytes and file objects (SPEC §7)."""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import copy
import functools
import http.server
import io
import json
import multiprocessing
import pickle
import threading
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import rnninfer
from rnninfer.layers import GRU, LSTM, RNN, Dense, Embedding, Features, GlobalMaxPooling, Layer
from rnninfer.model import Model

KINDS: dict[str, list[Layer]] = {
    "lstm": [Embedding(50, 6), LSTM(8), LSTM(8), Dense(3, activation="softmax")],
    "lstm_proj_bidir": [Embedding(50, 6, mask_zero=True), LSTM(8, proj_size=4, bidirectional=True), Dense(1)],
    "gru": [Embedding(50, 6), GRU(7, reset_after=False, bidirectional=True, merge="sum"), Dense(2)],
    "gru_seq": [Features(5, mask_value=0.0), GRU(6, return_sequences=True), Dense(2, activation="tanh")],
    "rnn_residual": [Features(4), RNN(4, activation="relu"), RNN(4, residual=True, return_sequences=True),
                     GlobalMaxPooling(), Dense(1, activation="sigmoid")],
    "backward": [Embedding(50, 6), LSTM(5, go_backwards=True)],
}


def _build(kind: str, precision: str, threads: int | None = 1) -> Model:
    return rnninfer.build(KINDS[kind], seed=3, precision=precision, threads=threads)


def _inputs(model: Model, rng: np.random.Generator) -> list[Any]:
    spec = model.spec
    if spec.input.kind == "tokens":
        return [rng.integers(0, spec.input.vocab_size, size=int(n)).tolist() for n in (1, 4, 9)]
    return [rng.standard_normal((int(n), spec.input.features)).astype(np.float32) for n in (1, 4, 9)]


def _same_model(a: Model, b: Model, rng: np.random.Generator) -> None:
    assert a.spec == b.spec
    assert a.precision == b.precision
    assert set(a.stored_tensors) == set(b.stored_tensors)
    for name, t in a.stored_tensors.items():
        u = b.stored_tensors[name]
        assert u.dtype == t.dtype, name
        assert u.tobytes() == t.tobytes(), name
    xs = _inputs(a, rng)
    for x in xs:
        assert a.predict(x).tobytes() == b.predict(x).tobytes()
    assert a.predict(xs).tobytes() == b.predict(xs).tobytes()


@pytest.mark.parametrize("precision", ["fp32", "bf16", "int8"])
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_pickle_deepcopy_bytes_keep_the_bits(kind: str, precision: str, rng: np.random.Generator) -> None:
    m = _build(kind, precision)
    for proto in (2, pickle.HIGHEST_PROTOCOL):
        _same_model(m, pickle.loads(pickle.dumps(m, protocol=proto)), rng)
    _same_model(m, copy.deepcopy(m), rng)
    data = m.to_bytes()
    for src in (data, bytearray(data), memoryview(data), io.BytesIO(data)):
        _same_model(m, rnninfer.load(src), rng)


def test_pickle_carries_the_file_and_load_options_only() -> None:
    m = _build("lstm", "int8", threads=2)
    func, args = m.__reduce__()
    assert args == (m.to_bytes(), 2, "int8", None)
    # The payload is an ordinary model file, loadable without pickle.
    assert rnninfer.load(args[0]).precision == "int8"
    restored = func(*args)
    assert restored.threads == 2
    assert restored.precision == "int8"


def test_threads_none_is_resolved_again_after_unpickling(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RNNINFER_NUM_THREADS", "1")
    m = _build("gru", "fp32", threads=None)
    assert m.threads == 1
    monkeypatch.setenv("RNNINFER_NUM_THREADS", "3")
    assert pickle.loads(pickle.dumps(m)).threads == 3
    explicit = _build("gru", "fp32", threads=2)
    assert pickle.loads(pickle.dumps(explicit)).threads == 2


def test_forced_isa_survives_a_deepcopy(isa: str, rng: np.random.Generator) -> None:
    spec, tensors = _build("lstm", "fp32").spec, _build("lstm", "fp32").stored_tensors
    m = Model(spec, tensors, threads=1, isa=isa)
    c = copy.deepcopy(m)
    assert c.isa == m.isa
    _same_model(m, c, rng)


def test_save_to_file_object_and_path(tmp_path: Path, rng: np.random.Generator) -> None:
    m = _build("gru_seq", "bf16")
    buf = io.BytesIO()
    m.save(buf)
    m.save(tmp_path / "m.npz")
    assert buf.getvalue() == (tmp_path / "m.npz").read_bytes() == m.to_bytes()
    with open(tmp_path / "m.npz", "rb") as f:
        _same_model(m, rnninfer.load(f), rng)
        assert not f.closed
    _same_model(m, rnninfer.load(str(tmp_path / "m.npz")), rng)


def test_bad_sources_name_the_expected_forms(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="path, the file's bytes"):
        rnninfer.load(12)  # type: ignore[arg-type]
    (tmp_path / "m.npz").write_bytes(_build("lstm", "fp32").to_bytes())
    with open(tmp_path / "m.npz", encoding="latin-1") as text, pytest.raises(TypeError, match="binary mode"):
        rnninfer.load(text)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="binary file object"):
        _build("lstm", "fp32").save(12)  # type: ignore[arg-type]


def _flips(data: bytes, n: int, seed: int) -> Iterator[bytes]:
    r = np.random.default_rng(seed)
    for _ in range(n):
        b = bytearray(data)
        for pos in r.integers(0, len(b), size=int(r.integers(1, 4))):
            b[int(pos)] ^= int(r.integers(1, 256))
        yield bytes(b)


def _rewrite_manifest(data: bytes, edit: Any) -> bytes:
    src = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            raw = src.read(info)
            if info.filename == "__manifest__.npy":
                arr = np.load(io.BytesIO(raw))
                manifest = json.loads(arr.tobytes())
                edit(manifest)
                buf = io.BytesIO()
                np.save(buf, np.frombuffer(json.dumps(manifest).encode(), np.uint8))
                raw = buf.getvalue()
            dst.writestr(info.filename, raw)
    return out.getvalue()


def _set(path: list[Any], value: Any) -> Any:
    def edit(m: dict[str, Any]) -> None:
        node = m
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return edit


MANIFEST_DAMAGE = [
    _set(["model", "layers", 0, "units"], "eight"),
    _set(["model", "layers", 0, "units"], 10**12),
    _set(["model", "layers", 0, "residual_from"], [1]),
    _set(["model", "layers", 0, "cell"], {"lstm": 1}),
    _set(["model", "layers"], {"0": 1}),
    _set(["model", "input"], None),
    _set(["model", "input", "vocab_size"], -5),
    _set(["model", "readout"], ["last"]),
    _set(["model", "head", 0, "activation"], 7),
    _set(["model", "head"], "dense"),
    _set(["model"], []),
    _set(["tensors"], []),
    _set(["tensors", "embedding.weight"], {"shape": "big", "dtype": "int8"}),
    _set(["precision"], {"x": 1}),
    _set(["format_version"], "2"),
]


@pytest.mark.parametrize("edit", range(len(MANIFEST_DAMAGE)))
def test_damaged_manifest_gives_model_format_error(edit: int) -> None:
    data = _rewrite_manifest(_build("lstm", "int8").to_bytes(), MANIFEST_DAMAGE[edit])
    with pytest.raises(rnninfer.ModelFormatError):
        rnninfer.load(data)


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_corrupt_bytes_give_model_format_error_only(precision: str) -> None:
    data = _build("lstm_proj_bidir", precision).to_bytes()
    cuts = [0, 1, 4, 30, len(data) // 3, len(data) // 2, len(data) - 22, len(data) - 1]
    damaged = [data[:n] for n in cuts] + list(_flips(data, 60, seed=7))
    for bad in damaged:
        for src in (bad, io.BytesIO(bad)):
            # Loading may succeed (a flip in a zip comment) or fail, but only this way.
            with contextlib.suppress(rnninfer.ModelFormatError):
                rnninfer.load(src)


class _Handler(http.server.BaseHTTPRequestHandler):
    payload = b""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(self.payload)))
        self.end_headers()
        self.wfile.write(self.payload)

    def log_message(self, *args: Any) -> None:
        pass


def test_model_from_an_http_response(rng: np.random.Generator) -> None:
    m = _build("gru", "int8")
    handler = type("H", (_Handler,), {"payload": m.to_bytes()})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/model.npz"
        with urllib.request.urlopen(url, timeout=30) as response:  # a streamed body
            _same_model(m, rnninfer.load(response), rng)
        with urllib.request.urlopen(url, timeout=30) as response:  # downloaded bytes
            _same_model(m, rnninfer.load(response.read()), rng)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.mark.slow
@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_process_pools_run_shipped_models(method: str) -> None:
    if method not in multiprocessing.get_all_start_methods():
        pytest.skip(f"{method} is not available on this platform")
    models = [_build("lstm", "fp32"), _build("gru_seq", "bf16"), _build("rnn_residual", "int8")]
    r = np.random.default_rng(0)
    jobs = [(m, _inputs(m, r)) for m in models]
    ctx = multiprocessing.get_context(method)
    with cf.ProcessPoolExecutor(max_workers=2, mp_context=ctx) as pool:
        # The bound method pickles the model (file bytes + options) with it.
        futures = [(m, x, pool.submit(m.predict, x)) for m, xs in jobs for x in [xs, xs[0]]]
        for m, x, fut in futures:
            assert fut.result(timeout=120).tobytes() == m.predict(x).tobytes()
        got = list(pool.map(functools.partial(Model.predict, models[0]), jobs[0][1], timeout=120))
        assert [g.tobytes() for g in got] == [models[0].predict(x).tobytes() for x in jobs[0][1]]
