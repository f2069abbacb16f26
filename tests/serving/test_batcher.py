"""The Batcher: answers equal ``model.predict`` bit for bit, errors stay with their request,
back-pressure, timeouts, close, asyncio, stats."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import pytest

import rnninfer
from rnninfer.layers import GRU, LSTM, Dense, Embedding, Features

WAIT = 10.0  # bound on every wait in these tests


def _models() -> dict[str, rnninfer.Model]:
    return {
        "tokens-last": rnninfer.build([Embedding(60, 8), LSTM(16), LSTM(12), Dense(3)], seed=1, threads=1),
        "tokens-seq": rnninfer.build([Embedding(60, 8, mask_zero=True), GRU(10, return_sequences=True),
                                      Dense(4)], seed=2, threads=2),
        "features-last": rnninfer.build([Features(5), GRU(9), Dense(2, activation="softmax")],
                                        seed=3, threads=1),
        "features-seq": rnninfer.build([Features(5), LSTM(7, return_sequences=True)], seed=4, threads=1),
    }


MODELS = _models()


def _requests(model: rnninfer.Model, rng: np.random.Generator, n: int) -> list[tuple[Any, Any]]:
    """``n`` requests in every form ``predict`` takes: (x, lengths)."""
    tokens = model.spec.input.kind == "tokens"
    F = model.spec.input.width

    def seq(T: int) -> np.ndarray:
        if tokens:
            return rng.integers(0, 60, size=T)
        return rng.standard_normal((T, F)).astype(np.float32)

    out: list[tuple[Any, Any]] = []
    for i in range(n):
        form = i % 5
        if form == 0:  # one sequence, a list (tokens) or a float64 array
            s = seq(int(rng.integers(1, 20)))
            out.append((s.tolist() if tokens else s.astype(np.float64), None))
        elif form == 1:  # one sequence, an array
            out.append((seq(int(rng.integers(1, 20))), None))
        elif form == 2:  # a ragged batch
            b = int(rng.integers(1, 5))
            seqs = [seq(int(rng.integers(1, 20))) for _ in range(b)]
            out.append(([s.tolist() for s in seqs] if tokens else seqs, None))
        elif form == 3:  # a padded batch with lengths
            b, T = int(rng.integers(1, 5)), int(rng.integers(1, 20))
            arr = np.stack([seq(T) for _ in range(b)])
            out.append((arr, rng.integers(1, T + 1, size=b)))
        else:  # a padded batch at full length
            b, T = int(rng.integers(1, 4)), int(rng.integers(1, 20))
            out.append((np.stack([seq(T) for _ in range(b)]), None))
    return out


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)


@pytest.fixture
def gate() -> Iterator[Callable[..., threading.Event]]:
    """Hold a Batcher's dispatcher inside its next call until the returned event is set.

    ``gate(b)`` holds predict calls, ``gate(b, "_run_feed")`` feed calls.
    """
    events: list[threading.Event] = []

    def install(b: rnninfer.Batcher, method: str = "_run_predict") -> threading.Event:
        release = threading.Event()
        entered = threading.Event()
        events.append(release)
        original = getattr(b, method)

        def held(batch: list[Any]) -> None:
            entered.set()
            release.wait(WAIT)
            original(batch)

        setattr(b, method, held)
        release.entered = entered  # type: ignore[attr-defined]
        return release

    yield install
    for e in events:
        e.set()


def _start(fn: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["result"] = fn()
        except BaseException as e:  # noqa: BLE001 (the test inspects it)
            box["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, box


def _queue_behind_a_held_call(
    b: rnninfer.Batcher, release: threading.Event, hold: Callable[[], Any],
    calls: Sequence[Callable[[], Any]],
) -> tuple[tuple[threading.Thread, dict[str, Any]], list[tuple[threading.Thread, dict[str, Any]]]]:
    """Start ``hold`` and let the gate hold its call; queue ``calls`` behind it, release, join all.

    Returns the held call's and the queued calls' (thread, box) pairs.
    """
    held = _start(hold)
    assert release.entered.wait(WAIT)  # type: ignore[attr-defined]
    started = [_start(fn) for fn in calls]
    _until(lambda: b.queue_depth == len(calls))
    release.set()
    for t, _ in [held, *started]:
        t.join(WAIT)
    return held, started


def _run_clients(client: Callable[[int], None], n: int) -> None:
    """Run ``client(0) ... client(n - 1)`` in n threads at once and wait for them (bounded)."""
    threads = [threading.Thread(target=client, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)


def _until(cond: Callable[[], bool]) -> None:
    end = time.monotonic() + WAIT
    while not cond():
        assert time.monotonic() < end, "condition not reached in time"
        time.sleep(0.001)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_threads_get_predicts_bits(name: str, rng: np.random.Generator) -> None:
    model = MODELS[name]
    reqs = _requests(model, rng, 160)
    expected = [model.predict(x, lengths=lens) for x, lens in reqs]
    got: list[Any] = [None] * len(reqs)
    clients = 32
    barrier = threading.Barrier(clients)
    with rnninfer.Batcher(model, max_batch=16) as b:

        def client(k: int) -> None:
            barrier.wait(WAIT)
            for i in range(k, len(reqs), clients):
                x, lens = reqs[i]
                got[i] = b.predict(x, lengths=lens)

        _run_clients(client, clients)
        stats = b.stats()
    assert all(_same(g, e) for g, e in zip(got, expected))
    assert stats["requests"] == len(reqs)
    assert sum(stats["batch_sizes"].values()) == stats["engine_calls"]
    rows = sum(np.asarray(e).shape[0] if (lens is not None or _is_batch(x)) else 1
               for (x, lens), e in zip(reqs, expected))
    assert sum(k * v for k, v in stats["batch_sizes"].items()) == rows


def _is_batch(x: Any) -> bool:
    if isinstance(x, np.ndarray):
        return x.ndim in (2, 3) and not (x.ndim == 2 and x.dtype.kind == "f")
    return isinstance(x, list) and isinstance(x[0], (list, np.ndarray))


@pytest.mark.parametrize("name", ["tokens-seq", "features-last"])
def test_asyncio_tasks_get_predicts_bits(name: str, rng: np.random.Generator) -> None:
    model = MODELS[name]
    reqs = _requests(model, rng, 96)
    expected = [model.predict(x, lengths=lens) for x, lens in reqs]

    async def main(b: rnninfer.Batcher) -> list[np.ndarray]:
        return await asyncio.gather(*(b.predict_async(x, lengths=lens) for x, lens in reqs))

    with rnninfer.Batcher(model, max_batch=32) as b:
        got = asyncio.run(main(b))
        assert b.stats()["engine_calls"] < len(reqs)  # gathered, not one call each
    assert all(_same(g, e) for g, e in zip(got, expected))


def test_queued_requests_merge_into_one_call(gate: Any, rng: np.random.Generator) -> None:
    model = MODELS["tokens-seq"]
    reqs = _requests(model, rng, 12)
    with rnninfer.Batcher(model, max_batch=64, max_delay_ms=0) as b:
        _, started = _queue_behind_a_held_call(
            b, gate(b), lambda: b.predict([1, 2, 3]),
            [lambda x=x, lens=lens: b.predict(x, lengths=lens) for x, lens in reqs])
        stats = b.stats()
    assert stats["engine_calls"] == 2
    for (x, lens), (_, box) in zip(reqs, started):
        assert _same(box["result"], model.predict(x, lengths=lens))


def test_requests_queued_during_a_call_go_right_after_it(gate: Any) -> None:
    # max_delay_ms does not hold back what is already queued: waiting for more would only move
    # callers from one call to the next.
    model = MODELS["tokens-last"]
    with rnninfer.Batcher(model, max_delay_ms=3000) as b:
        release = gate(b)
        first = _start(lambda: b.predict([[1, 2], [3], [4, 5], [6]]))  # a call of 4 sequences
        assert release.entered.wait(WAIT)
        late = _start(lambda: b.predict([7, 8]))
        _until(lambda: b.queue_depth == 1)
        t0 = time.perf_counter()
        release.set()
        late[0].join(WAIT)
        assert time.perf_counter() - t0 < 1.5
        first[0].join(WAIT)
        assert _same(late[1]["result"], model.predict([7, 8]))
        assert b.stats()["batch_sizes"] == {4: 1, 1: 1}


def test_callers_coming_back_after_a_call_share_the_next_one(gate: Any) -> None:
    # Two callers answered by one call, the queue then empty: the next call waits for both
    # instead of running the first one back alone (which would split them into two groups
    # taking turns, each waiting a whole call for the other).
    model = MODELS["tokens-last"]
    with rnninfer.Batcher(model, max_delay_ms=3000) as b:
        _, rounds = _queue_behind_a_held_call(
            b, gate(b), lambda: b.predict([9]),
            [lambda k=k: [b.predict([k + 1, 2]) for _ in range(4)] for k in range(2)])
        stats = b.stats()
    assert all("result" in box for _, box in rounds)
    # the held call of one, then four calls of both callers' two sequences
    assert stats["batch_sizes"] == {1: 1, 2: 4}


def test_one_int64_sequence_takes_the_short_path_with_the_same_answers_and_errors(gate: Any) -> None:
    model = MODELS["tokens-last"]
    with rnninfer.Batcher(model) as b:
        x = np.array([3, 1, 59, 0], dtype=np.int64)
        assert _same(b.predict(x), model.predict(x))
        assert _same(b.predict(x[::2]), model.predict(x[::2]))  # strided
        for bad in ([3, 60, 1], [3, -1, 1], [2**62, 1]):
            arr = np.array(bad, dtype=np.int64)
            with pytest.raises(ValueError, match="out of range") as mine:
                b.predict(arr)
            with pytest.raises(ValueError, match="out of range") as alone:
                model.predict(arr)
            assert str(mine.value) == str(alone.value)
        with pytest.raises(ValueError, match="padding"):
            b.predict(x, padding="middle")
        with pytest.raises(ValueError, match="length 0"):
            b.predict(np.array([], dtype=np.int64))
        # The caller may reuse its array while the request waits: the request keeps its copy.
        release = gate(b)
        hold = _start(lambda: b.predict([1]))
        assert release.entered.wait(WAIT)
        mine_ = np.array([5, 6, 7], dtype=np.int64)
        waiting = _start(lambda: b.predict(mine_))
        _until(lambda: b.queue_depth == 1)
        mine_[:] = 0
        release.set()
        for t, _ in (hold, waiting):
            t.join(WAIT)
        assert _same(waiting[1]["result"], model.predict([5, 6, 7]))


def test_a_request_beyond_max_batch_runs_alone(rng: np.random.Generator) -> None:
    model = MODELS["tokens-last"]
    x = rng.integers(0, 60, size=(10, 7))
    with rnninfer.Batcher(model, max_batch=4) as b:
        assert _same(b.predict(x), model.predict(x))
        assert b.stats()["batch_sizes"] == {10: 1}


BAD_TOKENS: list[tuple[Any, type[Exception]]] = [
    ([1, 60], ValueError),  # id beyond the vocabulary
    ([1, -1], ValueError),
    ([], ValueError),
    ([[1, 2], []], ValueError),
    ([1.5, 2], TypeError),
    ("abc", TypeError),
    (np.zeros((2, 3), dtype=np.float32), TypeError),
    ([[1, 2], [3, 2**70]], ValueError),
]


@pytest.mark.parametrize(("x", "err"), BAD_TOKENS)
def test_bad_requests_fail_alone(x: Any, err: type[Exception], gate: Any) -> None:
    model = MODELS["tokens-last"]
    with rnninfer.Batcher(model) as b:
        release = gate(b)
        good = [_start(lambda: b.predict([1, 2, 3]))]
        assert release.entered.wait(WAIT)
        good += [_start(lambda i=i: b.predict([i + 2, 2, 3])) for i in range(4)]
        _until(lambda: b.queue_depth == 4)
        with pytest.raises(err):
            b.predict(x)
        release.set()
        for t, _ in good:
            t.join(WAIT)
    for i, (_, box) in enumerate(good):
        assert _same(box["result"], model.predict([i + 1, 2, 3]))


def test_bad_lengths_and_features_fail_alone() -> None:
    model = MODELS["features-last"]
    with rnninfer.Batcher(model) as b:
        x = np.ones((2, 4, 5), dtype=np.float32)
        with pytest.raises(ValueError, match="beyond"):
            b.predict(x, lengths=[4, 5])
        bad = x.copy()
        bad[1, 2, 3] = np.nan
        with pytest.raises(ValueError, match="NaN"):
            b.predict(bad)
        bad[1, 2, 3] = 0
        bad[0, 3, 0] = np.inf
        assert _same(b.predict(bad, lengths=[3, 4]), model.predict(bad, lengths=[3, 4]))
        with pytest.raises(ValueError, match="features"):
            b.predict(np.ones((3, 4)))
        assert b.stats()["errors"] == 0


def test_a_failing_merged_call_falls_back_to_one_by_one(
    gate: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = MODELS["tokens-last"]
    real = model.predict
    engine = model._predict_prepared

    def picky(data: np.ndarray, lengths: np.ndarray | None) -> np.ndarray:
        # An engine-side refusal the per-request checks cannot see: any batch holding token 13.
        if lengths is not None:
            data = np.where(np.arange(data.shape[1])[None, :] < lengths[:, None], data, 0)
        if (data == 13).any():
            raise ValueError("token 13 refused")
        return engine(data, lengths)

    # The Batcher runs checked (and merged) requests with Model._predict_prepared.
    monkeypatch.setattr(model, "_predict_prepared", picky)
    xs = [[1, 2, 3], [4, 13], [5], [[6, 7], [13, 1]], [8, 9, 10, 11]]
    with rnninfer.Batcher(model) as b:
        _, started = _queue_behind_a_held_call(
            b, gate(b), lambda: b.predict([2]), [lambda x=x: b.predict(x) for x in xs])
        stats = b.stats()
    assert stats["fallbacks"] == 1
    assert stats["errors"] == 2
    for x, (_, box) in zip(xs, started):
        flat = [v for s in x for v in (s if isinstance(s, list) else [s])]
        if 13 in flat:
            assert isinstance(box.get("error"), ValueError)
            assert "13" in str(box["error"])
        else:
            assert _same(box["result"], real(x))


def test_full_queue_raises_overloaded_at_once(gate: Any) -> None:
    model = MODELS["tokens-last"]
    with rnninfer.Batcher(model, max_queue=4) as b:
        release = gate(b)
        waiting = [_start(lambda: b.predict([1, 2]))]
        assert release.entered.wait(WAIT)
        waiting += [_start(lambda i=i: b.predict([i + 1])) for i in range(4)]
        _until(lambda: b.queue_depth == 4)
        t0 = time.perf_counter()
        with pytest.raises(rnninfer.Overloaded, match="max_queue"):
            b.predict([3])

        async def refused() -> None:
            await b.predict_async([3])

        with pytest.raises(rnninfer.Overloaded):
            asyncio.run(refused())
        assert time.perf_counter() - t0 < 1.0
        assert b.stats()["rejected"] == 2
        release.set()
        for t, box in waiting:
            t.join(WAIT)
            assert "result" in box
    assert issubclass(rnninfer.Overloaded, RuntimeError)


def test_timeout_drops_a_request_that_has_not_started(
    gate: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = MODELS["tokens-last"]
    seen: list[int] = []
    real = model.predict
    engine = model._predict_prepared

    def counting(data: np.ndarray, lengths: np.ndarray | None) -> np.ndarray:
        seen.append(data.shape[0])
        return engine(data, lengths)

    monkeypatch.setattr(model, "_predict_prepared", counting)
    with rnninfer.Batcher(model) as b:
        release = gate(b)
        first = _start(lambda: b.predict([1, 2], timeout=0.05))  # starts, then is held
        assert release.entered.wait(WAIT)
        with pytest.raises(TimeoutError, match="dropped"):
            b.predict([3, 4], timeout=0.05)

        async def late() -> None:
            await b.predict_async([5], timeout=0.05)

        with pytest.raises(TimeoutError):
            asyncio.run(late())
        assert b.queue_depth == 0
        release.set()
        first[0].join(WAIT)
        assert _same(first[1]["result"], real([1, 2]))  # a started request always finishes
        assert b.predict([7], timeout=5) is not None
        stats = b.stats()
    assert stats["timeouts"] == 2
    assert seen == [1, 1]  # the dropped requests never reached the engine


def test_cancelled_task_is_dropped(gate: Any) -> None:
    model = MODELS["tokens-last"]
    with rnninfer.Batcher(model) as b:
        release = gate(b)
        first = _start(lambda: b.predict([1]))
        assert release.entered.wait(WAIT)

        async def main() -> None:
            task = asyncio.create_task(b.predict_async([2]))
            while b.queue_depth == 0:
                await asyncio.sleep(0.001)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        asyncio.run(main())
        assert b.queue_depth == 0
        release.set()
        first[0].join(WAIT)
        assert b.stats()["engine_calls"] == 1


def test_close_finishes_the_queue_and_refuses_new_work(gate: Any) -> None:
    model = MODELS["tokens-last"]
    b = rnninfer.Batcher(model)
    release = gate(b)
    started = [_start(lambda: b.predict([1, 5]))]
    assert release.entered.wait(WAIT)
    started += [_start(lambda i=i: b.predict([i + 2, 5])) for i in range(5)]
    _until(lambda: b.queue_depth == 5)
    closer = _start(b.close)
    _until(lambda: b.closed)
    with pytest.raises(RuntimeError, match="closed"):
        b.predict([1])
    release.set()
    closer[0].join(WAIT)
    assert not closer[0].is_alive()
    for i, (t, box) in enumerate(started):
        t.join(WAIT)
        assert _same(box["result"], model.predict([i + 1, 5]))
    assert not b._thread.is_alive()
    b.close()  # twice is fine


def test_idle_dispatch_is_immediate_and_costs_no_cpu() -> None:
    model = MODELS["tokens-last"]
    with rnninfer.Batcher(model, max_delay_ms=2000) as b:
        t0 = time.perf_counter()
        for i in range(20):
            b.predict([i + 1, 2, 3])
        # max_delay_ms is a cap on waiting for more work, never a fixed wait.
        assert time.perf_counter() - t0 < 1.5
        c0 = time.process_time()
        time.sleep(0.3)
        assert time.process_time() - c0 < 0.05


def test_stats_report_counts_and_percentiles() -> None:
    model = MODELS["tokens-last"]
    with rnninfer.Batcher(model) as b:
        empty = b.stats()
        for i in range(5):
            b.predict([[i + 1], [2, 3]])
        s = b.stats()
    assert empty["requests"] == 0
    assert empty["queue_wait"] == {"p50_ms": 0.0, "p99_ms": 0.0}
    assert s["requests"] == 5
    assert s["engine_calls"] == 5
    assert s["batch_sizes"] == {2: 5}
    assert s["mean_batch"] == 2.0
    # One caller at a time on an idle Batcher: each ran its own call at once, in its own thread.
    assert s["inline_calls"] == 5
    assert s["queue_wait"] == {"p50_ms": 0.0, "p99_ms": 0.0}
    assert 0 < s["call_latency"]["p50_ms"] <= s["call_latency"]["p99_ms"] < 1e4
    assert s["fixed_cost_ms"] == 1.0  # calls of one size only: nothing fitted yet, the cap holds


def test_the_wait_after_a_call_is_capped_by_the_fitted_fixed_cost(rng: np.random.Generator) -> None:
    model = MODELS["tokens-last"]
    with rnninfer.Batcher(model, max_delay_ms=50) as b:
        for i in range(64):  # calls of 1..4 sequences of 10 steps
            b.predict(rng.integers(0, 60, size=(i % 4 + 1, 10)))
        s = b.stats()
    # A tiny model's fixed cost per call is far below 50 ms (and never negative).
    assert 0 <= s["fixed_cost_ms"] < 5


def test_options_are_checked() -> None:
    model = MODELS["tokens-last"]
    with pytest.raises(TypeError, match="Model"):
        rnninfer.Batcher("model.npz")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_batch"):
        rnninfer.Batcher(model, max_batch=0)
    with pytest.raises(TypeError, match="max_queue"):
        rnninfer.Batcher(model, max_queue=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_delay_ms"):
        rnninfer.Batcher(model, max_delay_ms=-1)
    with rnninfer.Batcher(model) as b:
        with pytest.raises(ValueError, match="timeout"):
            b.predict([1], timeout=-1)
        with pytest.raises(TypeError, match="timeout"):
            b.predict([1], timeout="1")  # type: ignore[arg-type]
        assert "max_batch=64" in repr(b)


# ---- stream feeds ------------------------------------------------------------------------------
STREAM_MODELS = ["tokens-last", "tokens-seq", "features-seq"]


def _chunks(rng: np.random.Generator, seq: np.ndarray) -> list[np.ndarray]:
    cuts = sorted({int(v) for v in rng.integers(1, len(seq), size=3)}) if len(seq) > 1 else []
    return [c for c in np.split(seq, cuts) if len(c)]


def _stream_expected(model: rnninfer.Model, seq: np.ndarray, chunks: list[np.ndarray]) -> list[np.ndarray]:
    """What each feed must return: predict on the prefix (last-state) or the new steps' rows."""
    out, t = [], 0
    whole = model.predict(seq)
    for c in chunks:
        t1 = t + len(c)
        out.append(whole[t:t1] if model.returns_sequences else model.predict(seq[:t1]))
        t = t1
    return out


def _seq(model: rnninfer.Model, rng: np.random.Generator, T: int) -> np.ndarray:
    if model.spec.input.kind == "tokens":
        return rng.integers(1, 60, size=T)
    return rng.standard_normal((T, model.spec.input.width)).astype(np.float32)


@pytest.mark.parametrize("name", STREAM_MODELS)
def test_threads_feeding_streams_get_the_bits_of_predict(name: str, rng: np.random.Generator) -> None:
    model = MODELS[name]
    clients = 32
    seqs = [_seq(model, rng, int(rng.integers(1, 25))) for _ in range(clients)]
    chunks = [_chunks(rng, s) for s in seqs]
    got: list[list[np.ndarray]] = [[] for _ in range(clients)]
    barrier = threading.Barrier(clients)
    with rnninfer.Batcher(model, max_batch=16) as b:

        def client(k: int) -> None:
            stream = model.stream()
            barrier.wait(WAIT)
            for c in chunks[k]:
                got[k].append(b.feed(stream, c.tolist() if c.dtype.kind == "i" else c))
            assert stream.steps == len(seqs[k])

        _run_clients(client, clients)
        stats = b.stats()
    for k in range(clients):
        want = _stream_expected(model, seqs[k], chunks[k])
        assert len(got[k]) == len(want)
        assert all(_same(g, w) for g, w in zip(got[k], want))
    assert stats["requests"] == sum(len(c) for c in chunks)


def test_asyncio_feeds_of_many_streams(rng: np.random.Generator) -> None:
    model = MODELS["tokens-seq"]
    seqs = [_seq(model, rng, int(rng.integers(2, 20))) for _ in range(48)]
    chunks = [_chunks(rng, s) for s in seqs]

    async def one(b: rnninfer.Batcher, k: int) -> list[np.ndarray]:
        stream = model.stream()
        return [await b.feed_async(stream, c) for c in chunks[k]]

    async def main(b: rnninfer.Batcher) -> list[list[np.ndarray]]:
        return await asyncio.gather(*(one(b, k) for k in range(len(seqs))))

    with rnninfer.Batcher(model) as b:
        got = asyncio.run(main(b))
        assert b.stats()["engine_calls"] < b.stats()["requests"]
    for k, s in enumerate(seqs):
        assert all(_same(g, w) for g, w in zip(got[k], _stream_expected(model, s, chunks[k])))


def test_feeds_of_one_stream_keep_their_order_and_others_merge(
    gate: Any, monkeypatch: pytest.MonkeyPatch, rng: np.random.Generator
) -> None:
    model = MODELS["tokens-last"]
    calls: list[int] = []
    real = model.feed_many

    def counting(streams: Any, xs: Any) -> Any:
        calls.append(len(streams))
        assert len({id(s) for s in streams}) == len(streams)  # a stream at most once per call
        return real(streams, xs)

    monkeypatch.setattr(model, "feed_many", counting)
    with rnninfer.Batcher(model) as b:
        release = gate(b, "_run_feed")
        first_stream = model.stream()
        first = _start(lambda: b.feed(first_stream, [1]))
        assert release.entered.wait(WAIT)
        s = model.stream()
        others = [model.stream() for _ in range(5)]
        seq = rng.integers(1, 60, size=9)
        mine = []
        for i, c in enumerate((seq[:2], seq[2:5], seq[5:])):  # queued one after the other
            mine.append(_start(lambda c=c: b.feed(s, c)))
            _until(lambda i=i: b.queue_depth == i + 1)
        theirs = [_start(lambda o=o: b.feed(o, [3, 4])) for o in others]
        _until(lambda: b.queue_depth == 8)
        release.set()
        for t, _ in [first, *mine, *theirs]:
            t.join(WAIT)
    want = _stream_expected(model, seq, [seq[:2], seq[2:5], seq[5:]])
    assert all(_same(box["result"], w) for (_, box), w in zip(mine, want))
    assert all(_same(box["result"], model.predict([3, 4])) for _, box in theirs)
    assert s.steps == 9
    assert calls == [1, 6, 1, 1]


def test_bad_feeds_fail_alone_and_leave_the_stream_unchanged() -> None:
    model = MODELS["tokens-last"]
    other = MODELS["tokens-seq"]
    with rnninfer.Batcher(model) as b:
        s = model.stream()
        b.feed(s, [1, 2])
        for x, err in [([1, 60], ValueError), ([], ValueError), ([1.5], TypeError), ([[1], [2]], ValueError)]:
            with pytest.raises(err):
                b.feed(s, x)
            assert s.steps == 2
        with pytest.raises(TypeError, match="Stream"):
            b.feed("stream", [1])  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="another model"):
            b.feed(other.stream(), [1])
        assert _same(b.feed(s, [3]), model.predict([1, 2, 3]))
    features = MODELS["features-seq"]
    with rnninfer.Batcher(features) as b:
        s = features.stream()
        bad = np.ones((2, 5), dtype=np.float32)
        bad[1, 1] = np.nan
        with pytest.raises(ValueError, match="NaN"):
            b.feed(s, bad)
        assert s.steps == 0


def test_predicts_and_feeds_mix(rng: np.random.Generator) -> None:
    model = MODELS["tokens-seq"]
    xs = [_seq(model, rng, int(rng.integers(1, 12))) for _ in range(40)]
    with rnninfer.Batcher(model) as b:

        def work(k: int) -> None:
            if k % 2:
                assert _same(b.predict(xs[k]), model.predict(xs[k]))
            else:
                s = model.stream()
                assert _same(b.feed(s, xs[k]), model.predict(xs[k]))

        _run_clients(work, len(xs))
        assert b.stats()["requests"] == len(xs)


def test_pre_padded_requests_merge_and_get_predicts_bits(gate: Any, rng: np.random.Generator) -> None:
    model = MODELS["tokens-seq"]  # per-step outputs: each must stay under its own steps
    reqs = []
    for n in (3, 5, 2):
        lens = rng.integers(1, 6, size=n)
        reqs.append((rng.integers(1, 60, size=(n, 5)), lens))
    with rnninfer.Batcher(model, max_batch=64, max_delay_ms=0) as b:
        _, started = _queue_behind_a_held_call(
            b, gate(b), lambda: b.predict([1, 2, 3]),
            [lambda x=x, lens=lens: b.predict(x, lengths=lens, padding="pre") for x, lens in reqs])
        assert b.stats()["engine_calls"] == 2
    for (x, lens), (_, box) in zip(reqs, started):
        assert _same(box["result"], model.predict(x, lengths=lens, padding="pre"))
    with rnninfer.Batcher(model) as b, pytest.raises(ValueError, match="sequence 0, step 4"):
        b.predict(np.array([[1, 2, 3, 4, 99]]), lengths=[2], padding="pre")


# ---- the idle Batcher's inline path ------------------------------------------------------------
def _hold_calls(b: rnninfer.Batcher, n: int) -> list[tuple[threading.Event, threading.Event, list[Any]]]:
    """Hold the Batcher's first ``n`` predict calls, each until its own event is set.

    Returns, per call: (entered, release, [the thread that ran it]).
    """
    holds = [(threading.Event(), threading.Event(), []) for _ in range(n)]
    count = [0]
    original = b._run_predict

    def held(batch: list[Any]) -> None:
        k = count[0]
        count[0] += 1
        if k < n:
            entered, release, thread = holds[k]
            thread.append(threading.current_thread())
            entered.set()
            release.wait(WAIT)
        original(batch)

    b._run_predict = held  # type: ignore[method-assign]
    return holds


def test_an_idle_batcher_runs_a_lone_request_in_its_callers_thread() -> None:
    model = MODELS["tokens-seq"]
    with rnninfer.Batcher(model) as b:
        threads: list[threading.Thread] = []
        original = b._run_predict

        def spy(batch: list[Any]) -> None:
            threads.append(threading.current_thread())
            original(batch)

        b._run_predict = spy  # type: ignore[method-assign]
        for i in range(6):
            x = [[i + 1, 2, 3], [4, 5]] if i % 2 else [i + 1, 0, 7]
            assert _same(b.predict(x), model.predict(x))
        assert _same(b.feed(model.stream(), [1, 2]), model.stream().feed([1, 2]))
        stats = b.stats()
    assert threads == [threading.current_thread()] * 6  # never the dispatcher's thread
    assert stats["inline_calls"] == stats["engine_calls"] == stats["requests"] == 7
    assert stats["batch_sizes"] == {1: 4, 2: 3}


def test_requests_arriving_during_an_inline_call_go_together_right_after_it() -> None:
    model = MODELS["tokens-last"]
    with rnninfer.Batcher(model, max_delay_ms=3000) as b:
        (entered, release, thread), = _hold_calls(b, 1)
        first = _start(lambda: b.predict([1, 2]))
        assert entered.wait(WAIT)
        assert thread == [first[0]]  # the caller's own thread holds the engine
        late = [_start(lambda i=i: b.predict([i + 3, 4])) for i in range(5)]
        _until(lambda: b.queue_depth == 5)  # queued, not run inline beside the call under way
        assert b.stats()["inline_calls"] == 1
        t0 = time.perf_counter()
        release.set()
        for t, _ in late:
            t.join(WAIT)
        assert time.perf_counter() - t0 < 1.5  # dispatched when the inline call ended, no wait
        first[0].join(WAIT)
        stats = b.stats()
    assert _same(first[1]["result"], model.predict([1, 2]))
    for i, (_, box) in enumerate(late):
        assert _same(box["result"], model.predict([i + 3, 4]))
    assert stats["batch_sizes"] == {1: 1, 5: 1}
    assert stats["inline_calls"] == 1


def test_no_inline_call_while_the_dispatcher_has_a_call_or_waits_for_its_callers() -> None:
    model = MODELS["tokens-last"]
    with rnninfer.Batcher(model, max_delay_ms=3000) as b:
        (e0, r0, t0), (e1, r1, t1) = _hold_calls(b, 2)
        a = _start(lambda: b.predict([1]))  # inline, held
        assert e0.wait(WAIT)
        assert t0 == [a[0]]
        c = _start(lambda: b.predict([2]))
        _until(lambda: b.queue_depth == 1)
        r0.set()  # the dispatcher takes the queued request and is held in its call
        assert e1.wait(WAIT)
        assert t1 == [b._thread]
        # The engine is busy with the dispatcher's call: a blocking caller and a coroutine queue.
        d = _start(lambda: b.predict([3]))
        e = _start(lambda: asyncio.run(b.predict_async([4])))
        _until(lambda: b.queue_depth == 2)
        assert b.stats()["inline_calls"] == 1
        r1.set()
        for t, _ in (a, c, d, e):
            t.join(WAIT)
        # After that call of two the dispatcher waits for its two callers to come back: what
        # comes meanwhile is queued for the call it waits to make, not run inline. (What comes
        # before it is back to waiting, while it still hands out answers, went at once, alone:
        # so the test waits for it.)
        _until(lambda: b._sleeping and b._want == 2)
        f = _start(lambda: b.predict([5]))
        g = _start(lambda: b.predict([6]))
        for t, _ in (f, g):
            t.join(WAIT)
        stats = b.stats()
    for k, (_, box) in enumerate((a, c, d, e, f, g)):
        assert _same(box["result"], model.predict([k + 1]))
    assert stats["inline_calls"] == 1
    assert stats["batch_sizes"] == {1: 2, 2: 2}


def test_an_event_loop_runs_cheap_requests_inline_once_the_cost_is_fitted(rng: np.random.Generator) -> None:
    model = MODELS["tokens-seq"]
    xs = [rng.integers(0, 60, size=int(rng.integers(1, 20))) for _ in range(100)]

    async def main(b: rnninfer.Batcher) -> list[np.ndarray]:
        out = []
        for x in xs:
            # The dispatcher may still be handing out the last answer (a loaded machine):
            # only an idle Batcher offers the inline path.
            end = time.monotonic() + WAIT
            while not b._idle:
                assert time.monotonic() < end, "the Batcher did not become idle"
                await asyncio.sleep(0.0005)
            out.append(await b.predict_async(x))
        return out

    # max_delay_ms far above a tiny model's call, however loaded the machine.
    with rnninfer.Batcher(model, max_delay_ms=5000) as b:
        got = asyncio.run(main(b))
        stats = b.stats()
    assert all(_same(g, model.predict(x)) for g, x in zip(got, xs))
    # None before the first fit of the cost (after 32 calls), then every one.
    assert stats["inline_calls"] == len(xs) - 32
    # A call the fitted cost puts above max_delay_ms (with 0: any call) is not made on the
    # event loop's thread; a blocking caller's is (it waits for its answer either way).
    with rnninfer.Batcher(model, max_delay_ms=0) as b:
        got = asyncio.run(main(b))
        assert b.stats()["inline_calls"] == 0
        _until(lambda: b._idle)
        assert _same(b.predict(xs[0]), got[0])
        assert b.stats()["inline_calls"] == 1
    assert all(_same(g, model.predict(x)) for g, x in zip(got, xs))


def test_requests_an_event_loop_makes_in_one_round_go_to_the_dispatcher_together(
    rng: np.random.Generator,
) -> None:
    model = MODELS["tokens-last"]
    xs = [rng.integers(0, 60, size=int(rng.integers(1, 20))) for _ in range(24)]

    async def main(b: rnninfer.Batcher) -> list[np.ndarray]:
        return list(await asyncio.gather(*(b.predict_async(x) for x in xs)))

    with rnninfer.Batcher(model, max_delay_ms=5000) as b:  # (every call counts as cheap)
        for x in xs * 2:
            b.predict(x)  # 48 calls: the cost is fitted
        before = b.stats()
        got = asyncio.run(main(b))
        stats = b.stats()
    assert all(_same(g, model.predict(x)) for g, x in zip(got, xs))
    # The gathered requests reach predict_async in one round of the loop's callbacks (as the
    # requests a server reads at once do): one call of all, not one inline call after another,
    # each blocking the loop.
    assert stats["inline_calls"] == before["inline_calls"]
    assert stats["engine_calls"] - before["engine_calls"] < len(xs) // 4  # (queued in one go: 1 call)


def test_a_gathered_request_can_be_cancelled_and_an_inline_one_starts_at_once() -> None:
    model = MODELS["tokens-last"]

    async def main(b: rnninfer.Batcher) -> None:
        task = asyncio.create_task(b.predict_async([1, 2]))
        other = asyncio.create_task(b.predict_async([3]))
        await asyncio.sleep(0)  # both made their requests in this round, then one is cancelled
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert _same(await other, model.predict([3]))
        # timeout= drops a request that has not started; on an idle Batcher it starts at once.
        assert _same(await b.predict_async([4], timeout=0), model.predict([4]))
        assert _same(b.predict([5], timeout=0), model.predict([5]))

    with rnninfer.Batcher(model) as b:
        for i in range(32):
            b.predict([i % 50 + 1] * (i % 3 + 1))  # the cost is fitted
        before = b.stats()
        asyncio.run(main(b))
        stats = b.stats()
    assert stats["inline_calls"] - before["inline_calls"] == 3  # [3] alone, [4], [5]
    assert stats["requests"] - before["requests"] == 4
    assert stats["timeouts"] == 1
    assert stats["queue_depth"] == 0


def test_an_inline_calls_engine_error_reaches_its_caller_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    model = MODELS["tokens-last"]
    real = model.predict
    engine = model._predict_prepared

    def picky(data: np.ndarray, lengths: np.ndarray | None) -> np.ndarray:
        if 13 in data:
            raise ValueError("token 13 refused")
        return engine(data, lengths)

    monkeypatch.setattr(model, "_predict_prepared", picky)
    with rnninfer.Batcher(model) as b:
        with pytest.raises(ValueError, match="13"):
            b.predict([4, 13])
        assert _same(b.predict([4, 12]), real([4, 12]))
        stats = b.stats()
    assert stats["inline_calls"] == 2
    assert stats["errors"] == 1
