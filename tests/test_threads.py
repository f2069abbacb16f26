"""The multi-threaded scheduler: same bits for every thread count and plan, and
safe under concurrent calls, errors in other threads, tiny and very long inputs."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from helpers import random_inputs
from hypothesis import given, settings
from hypothesis import strategies as st

import rnninfer
from rnninfer import _core
from rnninfer.layers import GRU, LSTM, RNN, Dense, Embedding, Features, GlobalAveragePooling

ARCHS = {
    # forward stacks: a wavefront over layers at small batch
    "stack4": [Embedding(50, 8), LSTM(16, return_sequences=True), GRU(12, return_sequences=True),
               LSTM(10, return_sequences=True), RNN(9), Dense(2)],
    # bidirectional layers: directions in parallel, layer barriers
    "bidir": [Embedding(50, 8), LSTM(12, bidirectional=True, return_sequences=True),
              GRU(7, bidirectional=True, merge="sum", return_sequences=True), Dense(3)],
    # merges, residuals and masks through finish units
    "residual_masked": [Embedding(50, 6, mask_zero=True), GRU(6, return_sequences=True),
                        GRU(6, residual=True, return_sequences=True),
                        LSTM(3, bidirectional=True, merge="ave", return_sequences=True),
                        GlobalAveragePooling(), Dense(1, "sigmoid")],
    "backward_proj": [Features(5), LSTM(9, proj_size=4, go_backwards=True, return_sequences=True),
                      LSTM(8, proj_size=3)],
    # per-step output: shards must only touch their own sequences' rows
    "sequence_out": [Features(4), GRU(6, return_sequences=True), LSTM(5, return_sequences=True), Dense(2)],
    # widths that let threads split every layer's hidden units (split plans)
    "split64": [Embedding(50, 8, mask_zero=True), LSTM(64, return_sequences=True),
                GRU(64, return_sequences=True, residual=True), RNN(64, go_backwards=True), Dense(2)],
    "split128": [Features(5), LSTM(128, return_sequences=True), GRU(128, return_sequences=True),
                 GlobalAveragePooling(), Dense(1, "sigmoid")],
}


def _model(layers, threads, seed=1, precision=None):
    return rnninfer.build(layers, seed=seed, threads=threads, precision=precision)


@pytest.mark.parametrize("arch", sorted(ARCHS))
@pytest.mark.parametrize("batch", [1, 2, 3, 5, 17])
def test_thread_counts_agree_bitwise(arch, batch, rng):
    layers = ARCHS[arch]
    base = _model(layers, 1)
    xs = random_inputs(base, rng, batch, max_len=70, zero_frac=0.1)
    want = base.predict(list(xs))
    for threads in (2, 3, 4):
        got = _model(layers, threads).predict(list(xs))
        assert np.array_equal(got, want), (arch, batch, threads)


@pytest.mark.parametrize("precision", ["fp32", "bf16", "int8"])
@pytest.mark.parametrize(("arch", "threads"), [("split64", 2), ("split128", 2), ("split128", 4)])
def test_split_plans_are_used_and_exact(arch, threads, precision, rng):
    """Threads splitting hidden units: the plan is really used, and bits match one thread."""
    layers = ARCHS[arch]
    one, many = _model(layers, 1, precision=precision), _model(layers, threads, precision=precision)
    if one.spec.input.kind == "tokens":
        # The first call of a fresh model (later calls may back off to other
        # plans if a barrier waited long on this shared machine; bits agree anyway).
        x = rng.integers(1, 50, size=70)
        out, plan, _, _ = _core._testing.trace_tokens(many._engine, x[None, :], np.array([70], np.int32))
        assert plan["split"] == threads
        assert np.array_equal(out[0], one.predict(x))
        # Small ragged batches (fewer than 4 rows per thread) split too; rows
        # leave the batch mid-block.
        lengths = np.array([70, 65, 33, 16, 3, 1], np.int32)
        xb = rng.integers(1, 50, size=(6, 70))
        out, plan, _, _ = _core._testing.trace_tokens(many._engine, xb, lengths)
        assert plan["split"] == threads
        assert np.array_equal(out, one.predict(xb, lengths=lengths))
    for T in (1, 5, 40, 130):
        x = random_inputs(one, rng, 1, max_len=T, zero_frac=0.2)[0]
        assert np.array_equal(many.predict(x), one.predict(x))


@pytest.mark.parametrize("layers", [
    ARCHS["split64"],
    [Embedding(50, 8), LSTM(128, return_sequences=True), GRU(128), Dense(2)],
], ids=["split64", "lstm-gru-128"])
def test_split_calls_joined_late_are_exact(layers, rng):
    """A worker woken from sleep joins a split call late: the caller has run
    the first units alone (whole width) and the threads split the rest. Every
    switching point gives the same bits."""
    one, two = _model(layers, 1), _model(layers, 2)
    lengths = np.array([70, 52, 33, 3], np.int32)
    xb = rng.integers(1, 50, size=(4, 70))
    want = one.predict(xb, lengths=lengths)
    _, plan, units, _ = _core._testing.trace_tokens(two._engine, xb, lengths)
    assert plan["split"] == 2
    for k in range(len(units) + 1):
        out, plan, _, records = _core._testing.trace_tokens(two._engine, xb, lengths, min_alone_units=k)
        assert plan["split"] == 2
        # units run alone are timed (split units are not): at least the k forced ones
        assert len(records) >= k
        assert np.array_equal(out, want), k


def test_split_plans_stay_exact_on_a_busy_machine(rng):
    """Every core busy with another process: per-step barriers wait for time
    slices, calls may back off to other plans, and the bits never change."""
    import os
    import subprocess
    import sys

    layers = ARCHS["split64"]
    one, two = _model(layers, 1), _model(layers, 2)
    xs = [rng.integers(1, 50, size=int(n)) for n in rng.integers(20, 41, size=6)]
    want = [one.predict(x) for x in xs]
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 2)
    hogs = [subprocess.Popen([sys.executable, "-c", "print('busy', flush=True)\nwhile True: pass"],
                             stdout=subprocess.PIPE, text=True) for _ in range(cpus)]
    try:
        for h in hogs:  # every hog is spinning before the calls start
            assert h.stdout is not None
            assert h.stdout.readline().strip() == "busy"
        for x, w in zip(xs, want):
            assert np.array_equal(two.predict(x), w)
    finally:
        for h in hogs:
            h.kill()
            h.wait()
            if h.stdout is not None:
                h.stdout.close()


def test_split_backoff_is_counted_in_calls_and_doubles():
    """Held-up split calls make calls avoid split plans for a number of calls'
    worth of time, doubling while the cores stay held, capped; a clean split
    call ends the doubling."""
    b = rnninfer._core._testing.SplitBackoff()
    call, strikes, calls = 1_000_000, b.strikes, b.backoff_calls
    assert strikes >= 2
    assert not b.judge(call // 4 - 1, call, 0)  # waits under a quarter of the call are fine
    for _ in range(strikes - 1):
        assert not b.judge(call, call, 0)
    assert not b.judge(0, call, 0)  # a clean call restarts the count
    assert not b.held_off(0)
    now = 10 * call
    for k in range(40):
        for _ in range(strikes - 1):
            assert not b.judge(call // 4, call, now)
        assert b.judge(call // 4, call, now)
        expect = min(calls * call * 2**k, b.max_backoff_ns)
        assert b.until_ns == now + expect, k
        assert b.held_off(now + expect - 1)
        assert not b.held_off(now + expect)
        now += expect
    assert not b.judge(0, call, now)  # clean: the next back-off starts short again
    for _ in range(strikes):
        fired = b.judge(call, 2 * call, now)
    assert fired
    assert b.until_ns == now + calls * 2 * call


def _plan_counts(stats):
    return sum(stats[k] for k in ("one_thread", "shards", "wavefront", "split", "split_late", "split_alone"))


@pytest.mark.parametrize(("arch", "threads", "batch", "kinds"), [
    ("split64", 1, 1, {"one_thread"}),
    ("split64", 2, 1, {"split", "split_late", "split_alone", "wavefront"}),
    ("bidir", 2, 1, {"wavefront"}),
    ("stack4", 2, 17, {"shards"}),
])
def test_schedule_stats_count_every_call(arch, threads, batch, kinds, rng):
    """Each call is counted once, under the plan kind it ran with (shards are
    one call, not one per shard)."""
    m = _model(ARCHS[arch], threads)
    xs = random_inputs(m, rng, batch, max_len=40)
    before = _core._testing.schedule_stats(m._engine)
    assert set(before) == {"calls", "one_thread", "shards", "wavefront", "split", "split_late", "split_alone",
                           "held_off", "backoffs"}
    for _ in range(5):
        m.predict(list(xs))
    stats = {k: v - before[k] for k, v in _core._testing.schedule_stats(m._engine).items()}
    assert stats["calls"] == 5, stats
    assert _plan_counts(stats) == 5, stats
    assert sum(stats[k] for k in kinds) == 5, stats


@pytest.mark.parametrize("arch", ["sequence_out", "residual_masked", "bidir", "split64"])
@pytest.mark.parametrize("threads", [2, 3])
def test_uneven_batch_shards_are_exact(arch, threads, rng):
    """Shards sized for unequal thread speeds (as measured on a loaded
    machine) move sequences between threads; no sequence's bits change."""
    layers = ARCHS[arch]
    one, many = _model(layers, 1), _model(layers, threads)
    skews = ([1.0] * threads, [1.3] + [0.7] * (threads - 1), [0.7] * (threads - 1) + [1.3])
    for batch in (4 * threads, 4 * threads + 5, 33):
        xs = random_inputs(one, rng, batch, max_len=50, zero_frac=0.1)
        want = one.predict(list(xs))
        for speeds in skews:
            _core._testing.set_shard_speeds(many._engine, speeds)
            assert np.array_equal(many.predict(list(xs)), want), (batch, speeds)
            after = _core._testing.shard_speeds(many._engine)
            assert len(after) == threads
            assert all(1 / 1.35 - 1e-9 <= v <= 1.35 + 1e-9 for v in after)


def test_shard_speeds_follow_the_measured_speed(rng):
    """A call moves each thread's estimate halfway toward its measured speed: a
    skew that the threads' equal speeds do not bear out shrinks. (Retried: a
    core taken by another process for most of a call can skew it by itself.)"""
    two = _model(ARCHS["split128"], 2)
    x = rng.standard_normal((32, 40, 5)).astype(np.float32)
    for _ in range(5):
        _core._testing.set_shard_speeds(two._engine, [1.3, 0.7])
        two.predict(x)
        fast, slow = _core._testing.shard_speeds(two._engine)
        if fast < 1.3 - 1e-6 and slow > 0.7 + 1e-6:
            return
    pytest.fail(f"estimates did not move toward equal speeds: {fast}, {slow}")


def test_shard_speed_hook_validated():
    one, two = _model(ARCHS["stack4"], 1), _model(ARCHS["stack4"], 2)
    assert _core._testing.shard_speeds(one._engine) == []
    assert _core._testing.shard_speeds(two._engine) == [1.0, 1.0]
    for bad in ([1.0], [1.0, 0.0], [1.0, float("nan")], [1.0, float("inf")], [1.0, -2.0]):
        with pytest.raises(ValueError, match="shard speeds"):
            _core._testing.set_shard_speeds(two._engine, bad)
    _core._testing.set_shard_speeds(two._engine, [3.0, 1.0])  # normalised to mean 1, then held within the skew bound
    assert _core._testing.shard_speeds(two._engine) == pytest.approx([1.35, 1 / 1.35])


def _split(lengths, speeds, min_rows):
    return rnninfer._core._testing.split_batch_weighted(list(lengths), list(speeds), min_rows)


@settings(max_examples=300, deadline=None)
@given(lengths=st.lists(st.integers(1, 100), min_size=1, max_size=80),
       speeds=st.lists(st.floats(0.5, 2.0), min_size=1, max_size=6),
       min_rows=st.integers(1, 6))
def test_weighted_batch_split_properties(lengths, speeds, min_rows):
    lengths = sorted(lengths, reverse=True)
    b = _split(lengths, speeds, min_rows)
    shards = min(len(speeds), len(lengths))
    assert len(b) == shards + 1
    assert (b[0], b[-1]) == (0, len(lengths))
    sizes = np.diff(b)
    assert sizes.min() >= min(min_rows, len(lengths) // shards)
    if min_rows == 1 and len(lengths) >= 2 * shards:
        # Every boundary is within one sequence of its share of the work,
        # unless it had to leave each shard a sequence.
        prefix = np.concatenate([[0], np.cumsum(lengths)])
        w = np.cumsum(speeds[:shards]) / sum(speeds[:shards]) * prefix[-1]
        for k in range(shards - 1):
            lo, hi = b[k] + 1, len(lengths) - (shards - k - 1)
            if lo < b[k + 1] < hi:
                assert abs(prefix[b[k + 1]] - w[k]) <= max(lengths)


def test_weighted_batch_split_rejects_bad_input():
    for speeds in ([], [1.0, float("nan")], [1.0, 0.0], [1.0, -1.0], [float("inf")]):
        with pytest.raises(ValueError, match="speeds"):
            _split([5, 4], speeds, 1)
    with pytest.raises(ValueError, match="lengths"):
        _split([5, 0], [1.0, 1.0], 1)


def test_weighted_batch_split_examples():
    assert _split([64] * 64, [1, 1], 4) == [0, 32, 64]
    assert _split([64] * 64, [1.3, 0.7], 4) == [0, 42, 64]  # 64 * 1.3 / 2 = 41.6
    assert _split([5] * 8, [3.0, 0.1], 4) == [0, 4, 8]  # min_rows holds against the speeds
    assert _split([5] * 3, [1, 1, 1, 1], 1) == [0, 1, 2, 3]  # no more shards than sequences
    assert _split(list(range(20, 0, -1)), [1, 1, 1], 1) == [0, 4, 9, 20]  # work, not rows


def test_single_sequence_lengths_around_block_edges(rng):
    """Steps just below, at and above block sizes, for wavefront plans."""
    layers = ARCHS["stack4"]
    one, two = _model(layers, 1), _model(layers, 2)
    for T in (1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 47, 48, 49, 63, 64, 65, 191, 192, 193):
        x = rng.integers(0, 50, size=T)
        assert np.array_equal(two.predict(x), one.predict(x)), T


def test_very_long_sequence(rng):
    layers = [Features(3), GRU(8, return_sequences=True), LSTM(8), Dense(1)]
    x = rng.standard_normal((5000, 3)).astype(np.float32)
    assert np.array_equal(_model(layers, 2).predict(x), _model(layers, 1).predict(x))


def test_many_concurrent_callers_share_one_model(rng):
    model = _model(ARCHS["bidir"], 2)
    xs = [random_inputs(model, rng, int(rng.integers(1, 6)), max_len=40) for _ in range(16)]
    want = [model.predict(list(x)) for x in xs]
    with ThreadPoolExecutor(max_workers=8) as pool:
        got = list(pool.map(lambda x: model.predict(list(x)), xs * 4))
    for i, out in enumerate(got):
        assert np.array_equal(out, want[i % len(xs)])


def test_errors_in_other_threads_do_not_disturb_calls(rng):
    model = _model(ARCHS["stack4"], 2)
    good = rng.integers(0, 50, size=60)
    want = model.predict(good)
    bad_inputs = [[1, 50], [], [[1], []], "x", [1.5], np.array([[1, -2]])]
    errors: list[BaseException] = []

    def bad(i: int) -> None:
        try:
            model.predict(bad_inputs[i % len(bad_inputs)])
        except (TypeError, ValueError) as e:
            errors.append(e)

    def ok(_: int) -> np.ndarray:
        return model.predict(good)

    with ThreadPoolExecutor(max_workers=6) as pool:
        futs = [pool.submit(bad if i % 2 else ok, i) for i in range(60)]
        outs = [f.result() for f in futs]
    assert len(errors) == 30
    for i, out in enumerate(outs):
        if i % 2 == 0:
            assert np.array_equal(out, want)


@pytest.mark.skipif(not hasattr(__import__("os"), "sched_setaffinity") or len(__import__("os").sched_getaffinity(0)) < 2,
                    reason="needs Linux CPU affinity and two CPUs")
def test_worker_leaves_the_callers_cpu(rng):
    """Every thread of the process squeezed onto one CPU, as the kernel does
    when it wakes a worker where its caller runs: the worker moves itself to
    another of the pool's CPUs for the call, and is given all of them back
    afterwards. Bits do not change."""
    import contextlib
    import os

    layers = ARCHS["split64"]
    one = _model(layers, 1)
    before = set(os.listdir("/proc/self/task"))
    two = _model(layers, 2)
    workers = sorted(set(os.listdir("/proc/self/task")) - before)
    assert workers
    allowed = os.sched_getaffinity(0)
    cpu = min(allowed)
    # Long calls: on a shared CPU the worker only runs once the scheduler
    # preempts the caller, a few milliseconds into the call.
    x = rng.integers(1, 50, size=3000)
    want = one.predict(x)
    tids = [int(t) for t in os.listdir("/proc/self/task")]
    try:
        for tid in tids:
            with contextlib.suppress(OSError):  # a thread may have exited since
                os.sched_setaffinity(tid, {cpu})
        moved = False
        for _ in range(20):
            assert np.array_equal(two.predict(x), want)
            # moved off `cpu` during a call, then handed the pool's CPUs again
            moved = all(os.sched_getaffinity(int(tid)) == allowed for tid in workers)
            if moved:
                break
        assert moved
    finally:
        for tid in tids:
            with contextlib.suppress(OSError):
                os.sched_setaffinity(tid, allowed)


@pytest.mark.skipif(not __import__("os").path.isdir("/proc/self/task"), reason="reads /proc (Linux)")
def test_pool_threads_sleep_after_calls():
    """Workers do not keep spinning once calls stop (no busy cores between calls)."""
    import os
    import time

    model = _model(ARCHS["stack4"], 2)
    model.predict(list(range(1, 40)))
    time.sleep(0.2)
    pid = os.getpid()
    def cpu_ticks() -> int:
        total = 0
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        return total
    before = cpu_ticks()
    time.sleep(0.5)
    after = cpu_ticks()
    # 0.5 s of one spinning core would be ~50 ticks; allow a little noise.
    assert after - before < 10


def test_threads_option_validated():
    with pytest.raises(ValueError, match="threads"):
        _model(ARCHS["stack4"], 0)
    assert threading.active_count() >= 1


def test_engine_construction_releases_the_gil():
    """Packing and the token projection table run without the GIL: another
    Python thread keeps running in the middle of a long construction."""
    import time

    model = rnninfer.build([Embedding(20000, 128), LSTM(256), Dense(1)], seed=0, threads=1)
    desc, tensors = model.spec.to_json_dict(), dict(model.stored_tensors)
    span: list[float] = []

    def construct() -> None:
        t0 = time.perf_counter()
        _core.Engine(desc, tensors, 1, "")
        span.extend([t0, time.perf_counter()])

    ticks: list[float] = []
    t = threading.Thread(target=construct)
    t.start()
    while t.is_alive():
        ticks.append(time.perf_counter())
    t.join()
    start, end = span
    # Inside the C++ construction (the Python parts before and after it are
    # short): the main thread ran bytecode there.
    lo, hi = start + 0.1 * (end - start), start + 0.9 * (end - start)
    assert end - start > 0.005
    assert any(lo <= x <= hi for x in ticks)
