"""Micro-batching: concurrent callers' requests gathered into one engine call.

A :class:`Batcher` owns one dispatcher thread. Callers (any thread, or asyncio
tasks) validate their own request, queue it and wait; the dispatcher takes what
is queued, runs it as one ragged ``predict`` (or ``feed_many``) call and hands
each caller its own slice of the result.

Why batching never changes an answer here: the engine gives every sequence of a
ragged batch the bits it would get alone (docs/engine.md, "Determinism"), whatever the batch's width
or composition, so a request's slice of the merged output *is* what
``model.predict`` gives for that request alone.

When to dispatch: at once when the engine is idle; requests that arrive
while a call runs are queued for the next one. Right after a call, the
callers it answered usually come straight back, and if the next call left
them out they would wait a whole call for the one after: the callers of a
service split into groups that take turns, each waiting for the other's
call. So the dispatcher waits for them (the sequences queued plus as many as
that call ran, up to ``max_batch``) while they keep arriving: it stops
waiting once no request has come for the engine's fixed cost per call
(fitted from recent calls' times against their sizes; waiting longer would
idle the engine for more than one extra call costs), and never waits longer
than ``max_delay_ms``. A request therefore waits at most for the call in
flight, plus ``max_delay_ms``, plus its own call.

When the dispatcher sleeps with nothing to do, a request gathers nothing by
going through it and the hop there and back costs two thread wake-ups: the
caller's thread makes the call itself (see ``_claim``; an event loop's
thread only for a cheap call that is alone in its round of the loop, see
``_await``), and what arrives meanwhile is queued for the dispatcher's next
call.

Length (about 780 lines): one class, the queue, its lock and the dispatcher
that share them; split, the locking rules would be spread over modules.
"""

from __future__ import annotations

import collections
import contextlib
import math
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..inputs import ArrayLike, Prepared, check_token_range, prepare
from ..model import Model

if TYPE_CHECKING:
    import asyncio

#: Samples kept for the latency percentiles of :meth:`Batcher.stats`.
_SAMPLES = 8192
#: Recent calls the fixed-cost estimate is fitted to, and how often it is refitted.
_FIT_SAMPLES = 256
_FIT_EVERY = 32
#: Least pause in arrivals (seconds) that ends the wait after a call: about one thread wake-up, so
#: that callers coming back one after another are not mistaken for a pause.
_MIN_PAUSE = 1e-4

_QUEUED, _STARTED, _DONE, _DROPPED, _GATHERED = range(5)


class Overloaded(RuntimeError):
    """The :class:`Batcher`'s queue is full; the request was refused without waiting.

    A service answers it with 503 (retry later); nothing of the request ran.
    """


class _Request:
    """One caller's request: its validated input, how to cut its answer out, how to deliver it."""

    __slots__ = ("data", "error", "future", "kind", "lens", "lock", "loop", "n", "prepared", "result",
                 "state", "steps", "stream", "t_enqueued", "width", "x")

    def __init__(self, kind: str, n: int, steps: int) -> None:
        self.kind = kind  # "predict" or "feed"
        self.n = n  # sequences this request adds to a batch
        self.steps = steps  # time steps over its sequences (what its share of a call costs)
        self.data: np.ndarray | None = None
        self.lens: np.ndarray | None = None
        self.prepared: Prepared | None = None  # how to turn its rows of the output into its answer
        self.width = 0
        self.stream: Any = None
        self.x: Any = None
        self.state = _QUEUED
        self.result: Any = None
        self.error: BaseException | None = None
        self.t_enqueued = 0.0
        # Blocking callers wait on a lock the dispatcher releases (cheaper than an Event);
        # asyncio callers on a future resolved through their loop.
        self.lock: threading.Lock | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.future: asyncio.Future[Any] | None = None


def _resolve(requests: list[_Request]) -> None:
    """Resolve the futures of one call's asyncio requests (on their loop's thread)."""
    for r in requests:
        fut = r.future
        if fut is None or fut.done():  # the awaiting task was cancelled
            continue
        if r.error is not None:
            fut.set_exception(r.error)
        else:
            fut.set_result(r.result)


def _check_int(name: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    if int(value) < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    return int(value)


def _check_timeout(timeout: float | None) -> float | None:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a number of seconds or None, got {type(timeout).__name__}")
    if not timeout >= 0 or math.isinf(timeout):
        raise ValueError(f"timeout must be a finite number of seconds >= 0, got {timeout}")
    return float(timeout)


def _percentiles(samples: Sequence[float]) -> dict[str, float]:
    if not samples:
        return {"p50_ms": 0.0, "p99_ms": 0.0}
    p50, p99 = np.percentile(np.asarray(samples, dtype=np.float64), [50, 99]) * 1e3
    return {"p50_ms": float(p50), "p99_ms": float(p99)}


class Batcher:
    """Gathers concurrent requests to one model into ragged engine calls.

    Every answer is exactly what ``model.predict(x)`` (or ``stream.feed(x)``)
    gives for that request alone: same shape, same bits. Use it from many
    threads (:meth:`predict`) or asyncio tasks (:meth:`predict_async`); close
    it with :meth:`close` or a ``with`` block. When it is idle, a request
    runs in its caller's thread, without the hop to the dispatcher and back
    (an event loop's only if the call is cheap; see docs/serving.md).

    Example::

        with rnninfer.Batcher(model, max_batch=64) as batcher:
            y = batcher.predict([12, 7, 99])        # from any thread
            y = await batcher.predict_async([5, 3]) # from a coroutine
    """

    def __init__(self, model: Model, *, max_batch: int = 64, max_delay_ms: float = 1.0,
                 max_queue: int = 1024) -> None:
        """Start the dispatcher thread.

        Args:
            model: the model every request runs on.
            max_batch: most sequences in one engine call (a request with more
                sequences than this runs alone, never split).
            max_delay_ms: the longest the dispatcher waits for more requests
                right after a call before it dispatches what is queued (it
                waits less when the engine's fixed cost per call is lower,
                and never when the engine has been idle); twice it is the
                longest call, by the fitted cost, that an event loop's thread
                makes itself on an idle Batcher.
            max_queue: most requests waiting to start; beyond it a request
                raises :class:`Overloaded` at once.

        Raises:
            TypeError: ``model`` is not a :class:`rnninfer.Model`, or an
                option of the wrong type.
            ValueError: an option out of range.
        """
        if not isinstance(model, Model):
            raise TypeError(f"model must be an rnninfer.Model, got {type(model).__name__}")
        self._model = model
        self._max_batch = _check_int("max_batch", max_batch, 1)
        self._max_queue = _check_int("max_queue", max_queue, 1)
        if isinstance(max_delay_ms, bool) or not isinstance(max_delay_ms, (int, float)):
            raise TypeError(f"max_delay_ms must be a number, got {type(max_delay_ms).__name__}")
        if not 0 <= max_delay_ms < math.inf:
            raise ValueError(f"max_delay_ms must be a finite number >= 0, got {max_delay_ms}")
        self._max_delay = float(max_delay_ms) / 1e3
        spec = model.spec
        self._tokens = spec.input.kind == "tokens"
        self._vocab = spec.input.vocab_size
        self._width = spec.input.width
        self._sequences = model.returns_sequences

        self._lock = threading.Lock()
        # The dispatcher sleeps on this lock (held = no wake-up pending) and is woken by
        # releasing it outside self._lock, so a woken dispatcher never blocks on self._lock.
        self._wake = threading.Lock()
        self._wake.acquire()
        self._queues: dict[str, collections.deque[_Request]] = {
            "predict": collections.deque(), "feed": collections.deque()}
        self._queued = 0  # requests waiting to start (dropped ones excluded)
        self._queued_seqs = 0
        self._closing = False
        self._sleeping = False  # the dispatcher waits on _wake ...
        self._want = 1  # ... until this many sequences are queued
        self._t_last = 0.0  # when the last request was queued
        # The dispatcher sleeps with nothing queued, no call under way and no wait after a call:
        # a request may then run in its caller's thread (see _claim).
        self._idle = False
        self._inline = False  # a caller's thread holds the engine for its own request
        # Per thread, (its running event loop, the requests that loop made in this round of its
        # callbacks while the Batcher was idle), see _await. Thread-local: a loop runs on one
        # thread, and a dict keyed by loops (weak references) would cost microseconds a request.
        self._gathering = threading.local()

        self._running = 0  # sequences in the engine call under way
        self._n_requests = 0
        self._n_calls = 0
        self._n_rejected = 0
        self._n_timeouts = 0
        self._n_errors = 0
        self._n_fallbacks = 0
        self._n_inline = 0
        self._sizes: collections.Counter[int] = collections.Counter()
        self._waits: collections.deque[float] = collections.deque(maxlen=_SAMPLES)
        self._call_times: collections.deque[float] = collections.deque(maxlen=_SAMPLES)
        # (time steps, seconds) of recent calls, for the engine's fixed cost per call and what a
        # request would cost alone. (A ring of steps and seconds; arrays, not tuples, so that a fit
        # takes microseconds.)
        self._fit_n = np.zeros(_FIT_SAMPLES)
        self._fit_t = np.zeros(_FIT_SAMPLES)
        self._n_fits = 0
        self._fixed_cost = self._max_delay  # unknown until calls of different sizes were seen
        # Seconds of a call of s steps ~ cost[0] + cost[1] * max(s, cost[2]); None until the first fit.
        self._cost: tuple[float, float, float] | None = None

        self._thread = threading.Thread(target=self._dispatch_loop, name="rnninfer-batcher", daemon=True)
        self._thread.start()

    # ---- properties ----------------------------------------------------------------------
    @property
    def model(self) -> Model:
        """The model requests run on."""
        return self._model

    @property
    def max_batch(self) -> int:
        """Most sequences in one engine call."""
        return self._max_batch

    @property
    def max_delay_ms(self) -> float:
        """The longest wait for more requests after a call, in milliseconds."""
        return self._max_delay * 1e3

    @property
    def max_queue(self) -> int:
        """Most requests waiting to start."""
        return self._max_queue

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called (no new work is taken)."""
        return self._closing

    @property
    def queue_depth(self) -> int:
        """Requests waiting to start."""
        return self._queued

    # ---- requests ------------------------------------------------------------------------
    def _predict_request(self, x: ArrayLike, lengths: ArrayLike | None, padding: str) -> _Request:
        """Validate ``x`` the way ``model.predict`` does (the same code), in the caller's thread."""
        if (self._tokens and type(x) is np.ndarray and x.dtype == np.int64 and x.ndim == 1 and x.size
                and lengths is None and padding == "post" and x.view(np.uint64).max() < self._vocab):
            # One sequence of valid int64 ids (the service's form): what prepare and
            # check_token_range would make of it, in one reduction and one copy. Anything
            # else, or a bad id, takes the general path and its messages.
            req = _Request("predict", 1, x.size)
            req.data = data = x.reshape(1, -1).copy()  # the caller may reuse x while it waits
            req.width, req.prepared = data.shape[1], Prepared(data, None, True, None)
            return req
        p = prepare(x, lengths, padding, tokens=self._tokens, width=self._width, vocab=self._vocab)
        data = p.data
        if self._tokens:
            # The engine range-checks ids as it reads them; in a merged call a bad id would
            # fail everybody, so each request is checked on its own first.
            check_token_range(data, p.lengths, p.shift, self._vocab)
        if not isinstance(x, (list, tuple)) and np.may_share_memory(data, np.asarray(x)):
            data = data.copy()  # the caller may reuse its array while the request waits
        n, T = int(data.shape[0]), int(data.shape[1])
        req = _Request("predict", n, n * T if p.lengths is None else int(p.lengths.sum()))
        req.data, req.width, req.prepared = data, T, p
        req.lens = p.lengths  # None: every row is full length
        return req

    def _enqueue(self, req: _Request) -> None:
        with self._lock:
            if self._closing:
                raise RuntimeError("the Batcher is closed; it takes no new requests")
            if self._queued >= self._max_queue:
                self._n_rejected += 1
                raise Overloaded(
                    f"the Batcher's queue is full ({self._max_queue} requests waiting, max_queue); "
                    "retry later"
                )
            req.t_enqueued = self._t_last = time.perf_counter()
            self._queues[req.kind].append(req)
            self._queued += 1
            self._queued_seqs += req.n
            self._n_requests += 1
            wake = self._sleeping and self._queued_seqs >= self._want
            if wake:
                self._sleeping = False
        if wake:
            self._signal()

    def _claim(self, req: _Request) -> bool:
        """Take the engine for ``req`` in the caller's own thread, if nothing else wants it.

        Only when the dispatcher sleeps with nothing to do (no request queued, no call
        under way, no wait for callers after a call): handing the request to it would
        cost two thread wake-ups (there and back) and gather nothing. Requests arriving
        meanwhile queue without waking the dispatcher; the end of the call wakes it, and
        they go together in its next call, as they would after a call of the dispatcher.
        A blocking caller waits for its answer whoever runs it: any request is taken. An
        event loop's thread is blocked by the call: see ``_await`` for which it takes.
        """
        # Unlocked reads first: a busy Batcher turns requests away here without taking the lock.
        if not self._idle or self._queued:
            return False
        with self._lock:
            if not self._idle or self._queued or self._closing:
                return False
            self._idle = self._sleeping = False
            self._inline = True
            req.state = _STARTED
            req.t_enqueued = self._t_last = time.perf_counter()
            self._n_requests += 1
            self._n_inline += 1
            self._waits.append(0.0)
        return True

    def _run_inline(self, req: _Request) -> None:
        """Run a request :meth:`_claim` took, here (its answer or its error goes in ``req``)."""
        try:
            if self._run([req], req.n):
                self._fit()  # while this thread still holds the engine (and the ring)
        finally:
            with self._lock:
                self._inline = False
                wake = bool(self._queued) or self._closing
                if not wake:
                    self._idle = self._sleeping = True
                    self._want = 1
            if wake:
                self._signal()  # what arrived meanwhile goes at once
        req.state = _DONE

    def _signal(self) -> None:
        # A lock that is already released means a wake-up is pending: nothing to add.
        with contextlib.suppress(RuntimeError):
            self._wake.release()

    def _drop(self, req: _Request) -> bool:
        """Drop a request that has not started; False when it already runs (or ran)."""
        with self._lock:
            if req.state == _GATHERED:  # not queued yet (see _await): nothing to take back
                req.state = _DROPPED
                self._n_requests += 1
                self._n_timeouts += 1
                return True
            if req.state != _QUEUED:
                return False
            req.state = _DROPPED
            self._queued -= 1
            self._queued_seqs -= req.n
            self._n_timeouts += 1
            return True

    def _wait(self, req: _Request, timeout: float | None) -> Any:
        assert req.lock is not None
        if not req.lock.acquire(timeout=-1 if timeout is None else timeout):
            if self._drop(req):
                raise TimeoutError(f"the request did not start within timeout={timeout} s; it was dropped")
            req.lock.acquire()  # it started: it finishes soon, and its answer is kept
        return self._answer(req)

    @staticmethod
    def _answer(req: _Request) -> Any:
        """A finished request's result, or its error raised."""
        if req.error is not None:
            raise req.error
        return req.result

    def _call(self, req: _Request, timeout: float | None) -> np.ndarray:
        """A blocking caller's request: run inline on an idle Batcher, else queued and awaited."""
        out: np.ndarray
        if self._claim(req):
            self._run_inline(req)
            out = self._answer(req)
        else:
            req.lock = threading.Lock()
            req.lock.acquire()
            self._enqueue(req)
            out = self._wait(req, timeout)
        return out

    def predict(self, x: ArrayLike, *, lengths: ArrayLike | None = None, padding: str = "post",
                timeout: float | None = None) -> np.ndarray:
        """Run ``x`` together with other callers' requests; blocks until the answer is ready.

        Args:
            x: anything ``model.predict`` takes (one sequence, a ragged list,
                a padded array).
            lengths: true lengths of a padded array's rows, as for ``predict``.
            padding: where a padded row's padding sits, as for ``predict``.
            timeout: seconds the request may wait to start; if it has not
                started by then it is dropped and ``TimeoutError`` is raised
                (``None``: no limit). A started request always finishes.

        Returns:
            exactly what ``model.predict(x, lengths=lengths, padding=padding)`` returns.

        Raises:
            TypeError, ValueError: a bad request (only this caller sees it).
            Overloaded: the queue is full.
            TimeoutError: the request did not start within ``timeout``.
            RuntimeError: the Batcher is closed.
        """
        timeout = _check_timeout(timeout)
        return self._call(self._predict_request(x, lengths, padding), timeout)

    async def _await(self, req: _Request, timeout: float | None) -> Any:
        import asyncio

        loop = asyncio.get_running_loop()
        req.loop = loop
        req.future = fut = loop.create_future()
        gathering: tuple[asyncio.AbstractEventLoop, list[_Request]] | None = getattr(
            self._gathering, "group", None)
        if gathering is not None and gathering[0] is loop:  # (another loop's: left by a dead loop)
            req.state = _GATHERED
            gathering[1].append(req)
        elif self._idle and not self._queued and self._cheap(req):
            # The Batcher is idle: this request may run inline, on this thread. Not at once:
            # requests that reached the loop's sockets while it was blocked (by a call like
            # this one) are read together, and their tasks make their requests in one round
            # of the loop's callbacks; run one by one, each would block the loop for the
            # next. So the requests of this round are gathered, and the next round runs a
            # lone one inline and queues several together (_start_gathered).
            req.state = _GATHERED
            group = [req]
            self._gathering.group = (loop, group)
            loop.call_soon(self._start_gathered, group)
        else:
            self._enqueue(req)
        timer = None
        if timeout is not None:
            # A timer on the loop, not wait_for: no extra task per request.
            def expire() -> None:
                if not fut.done() and self._drop(req):
                    fut.set_exception(TimeoutError(
                        f"the request did not start within timeout={timeout} s; it was dropped"))

            timer = loop.call_later(timeout, expire)
        try:
            return await fut
        except asyncio.CancelledError:
            self._drop(req)  # a cancelled caller's request is not run if it has not started
            raise
        finally:
            if timer is not None:
                timer.cancel()

    def _cheap(self, req: _Request) -> bool:
        """An event loop may run ``req`` inline: its call takes at most ``2 * max_delay_ms`` by
        the fitted cost; not before the first fit.

        What the loop's blocking costs others is not the call (requests arriving meanwhile
        would wait for the busy engine anyway) but the loop's absence: they are read after the
        call instead of during it, and other endpoints wait. That is bounded at twice the delay
        the Batcher may add to a request anyway; with the bound at once that delay, a call that
        is about ``max_delay_ms`` long (the headline model's batch-1 call at the default 1 ms)
        flipped between the paths with the machine's speed.
        """
        cost = self._cost
        return cost is not None and cost[0] + cost[1] * max(req.steps, cost[2]) <= 2 * self._max_delay

    def _start_gathered(self, gathered: list[_Request]) -> None:
        """Run the request one round of an event loop's callbacks made inline, or queue its requests."""
        self._gathering.group = None
        # Leave out cancelled ones (their task's _drop, still to run, counts them).
        group = [r for r in gathered if r.state == _GATHERED and not r.future.done()]  # type: ignore[union-attr]
        for r in group:
            r.state = _QUEUED
        if len(group) == 1 and self._claim(group[0]):
            self._run_inline(group[0])
            _resolve(group)
            return
        for r in group:
            try:
                self._enqueue(r)
            except (Overloaded, RuntimeError) as e:
                if r.future is not None and not r.future.done():
                    r.future.set_exception(e)

    async def predict_async(self, x: ArrayLike, *, lengths: ArrayLike | None = None,
                            padding: str = "post", timeout: float | None = None) -> np.ndarray:
        """:meth:`predict` for asyncio: awaits the answer without a thread per request.

        Same arguments, result and errors as :meth:`predict`. Cancelling the
        awaiting task drops the request if it has not started.
        """
        timeout = _check_timeout(timeout)
        req = self._predict_request(x, lengths, padding)
        out: np.ndarray = await self._await(req, timeout)
        return out

    def feed(self, stream: Any, x: ArrayLike, *, timeout: float | None = None) -> np.ndarray:
        """Advance ``stream`` by ``x``, gathered with other streams' feeds into one ``feed_many`` call.

        Feeds of one stream run in the order they were queued.

        Returns:
            exactly what ``stream.feed(x)`` returns.

        Raises:
            TypeError, ValueError: a bad feed (the stream is left unchanged).
            Overloaded, TimeoutError, RuntimeError: as for :meth:`predict`.
        """
        timeout = _check_timeout(timeout)
        return self._call(self._feed_request(stream, x), timeout)

    async def feed_async(self, stream: Any, x: ArrayLike, *, timeout: float | None = None) -> np.ndarray:
        """:meth:`feed` for asyncio (no thread per awaiting request)."""
        timeout = _check_timeout(timeout)
        req = self._feed_request(stream, x)
        out: np.ndarray = await self._await(req, timeout)
        return out

    def _feed_request(self, stream: Any, x: ArrayLike) -> _Request:
        """Validate one feed the way ``Stream.feed`` does, in the caller's thread."""
        from .stream import Stream, _normalise

        if not isinstance(stream, Stream):
            raise TypeError(f"stream must be an rnninfer Stream (model.stream()), got {type(stream).__name__}")
        if stream.model is not self._model:
            raise ValueError("the stream belongs to another model than this Batcher's")
        row = _normalise(self._model, x, "feed")
        if self._tokens:
            lo, hi = int(row.min()), int(row.max())
            if lo < 0 or hi >= self._vocab:
                bad = lo if lo < 0 else hi
                t = int(np.argmax(row == bad))
                raise ValueError(f"feed: token id {bad} at step {t} is out of range "
                                 f"for the vocabulary [0, {self._vocab})")
        req = _Request("feed", 1, len(row))
        req.stream, req.x = stream, row
        return req

    # ---- dispatcher ----------------------------------------------------------------------
    def _take(self) -> list[_Request]:
        """Pop the next batch (caller holds the lock): the older queue's head first, FIFO,
        up to ``max_batch`` sequences (a larger request alone)."""
        heads = [q[0] for q in self._queues.values() if q]
        kind = min(heads, key=lambda r: r.t_enqueued).kind
        q = self._queues[kind]
        batch: list[_Request] = []
        n = 0
        if kind == "predict":
            while q:
                r = q[0]
                if r.state == _DROPPED:
                    q.popleft()
                    continue
                if batch and n + r.n > self._max_batch:
                    break
                q.popleft()
                batch.append(r)
                n += r.n
        else:
            # One stream appears at most once per call; its later feeds wait, in order.
            seen: set[int] = set()
            keep: collections.deque[_Request] = collections.deque()
            while q:
                r = q.popleft()
                if r.state == _DROPPED:
                    continue
                if id(r.stream) in seen or n + r.n > self._max_batch:
                    keep.append(r)
                    seen.add(id(r.stream))
                    continue
                seen.add(id(r.stream))
                batch.append(r)
                n += r.n
            self._queues[kind] = keep
        now = time.perf_counter()
        for r in batch:
            r.state = _STARTED
            self._waits.append(now - r.t_enqueued)
        self._queued -= len(batch)
        self._queued_seqs -= n
        return batch

    def _dispatch_loop(self) -> None:
        want = 0  # sequences worth waiting for right after a call (0: no call just ended)
        t_end = deadline = pause = 0.0
        while True:
            sleep: float | None = None
            with self._lock:
                self._sleeping = self._idle = False
                if want and self._queued_seqs < want and not self._closing:
                    # Wait while requests keep coming: until a pause in arrivals, at most
                    # until the deadline (see the module's docstring).
                    until = min(deadline, max(self._t_last, t_end) + pause)
                    remaining = until - time.perf_counter()
                    if remaining > 0:
                        self._want, self._sleeping = want, True
                        sleep = remaining
                    else:
                        want = 0
                if sleep is None:
                    # Dropped requests may still sit in the deques; _queued counts live ones.
                    if self._inline:
                        # A caller runs its own request (_claim); the end of its call wakes
                        # this thread if anything is queued by then (or close() was called).
                        want = 0
                        sleep = -1.0
                    elif self._queued == 0:
                        if self._closing:
                            return
                        want = 0  # the engine is idle: the next request goes at once
                        self._want, self._sleeping, self._idle = 1, True, True
                        sleep = -1.0  # until woken
                    else:
                        batch = self._take()
            if sleep is not None:
                self._wake.acquire(timeout=sleep)
                continue
            if not batch:
                continue
            n = sum(r.n for r in batch)
            refit = self._run(batch, n)
            self._deliver(batch)
            if refit:  # after the answers are out
                self._fit()
            t_end = time.perf_counter()
            with self._lock:
                # Requests queued during the call go at once: waiting for more would hold them
                # back and move callers from group to group (each move costs a caller a whole
                # extra call). An empty queue means the callers were all in this call: wait
                # for them. (A call of one sequence: its caller's return dispatches at once
                # anyway, so the dispatcher just sleeps until a request comes, with no timer.)
                want = 0 if self._queued or n == 1 else min(n, self._max_batch)
            deadline = t_end + self._max_delay
            pause = min(self._max_delay, max(self._fixed_cost, _MIN_PAUSE))

    def _run(self, batch: list[_Request], n: int) -> bool:
        """Run one call (the caller holds the engine) and count it; True when a refit is due."""
        t0 = time.perf_counter()
        self._running = n
        runner = self._run_predict if batch[0].kind == "predict" else self._run_feed
        errors = 0
        calls = 1
        try:
            runner(batch)
        except Exception as e:  # noqa: BLE001 (each caller gets its own error back)
            if len(batch) == 1:
                batch[0].error = e
                errors = 1
            else:
                # Requests were validated one by one, so this is rare (e.g. memory); run each
                # alone so that every caller gets its own answer or its own error.
                for r in batch:
                    calls += 1
                    try:
                        runner([r])
                    except Exception as e1:  # noqa: BLE001 (delivered to its caller)
                        r.error = e1
                        errors += 1
        elapsed = time.perf_counter() - t0
        self._running = 0
        with self._lock:
            self._n_calls += calls
            self._n_fallbacks += calls > 1
            self._n_errors += errors
            self._sizes[n] += 1
            self._call_times.append(elapsed)
            refit = False
            if calls == 1:
                i = self._n_fits % _FIT_SAMPLES
                self._fit_n[i], self._fit_t[i] = sum(r.steps for r in batch), elapsed
                self._n_fits += 1
                refit = self._n_calls % _FIT_EVERY == 0
        return refit

    def _fit(self) -> None:
        """Fit call time against time steps per call (least squares): the fixed cost per call
        (its intercept) and what a call of s steps costs.

        Called by the thread that holds the engine (the dispatcher before it takes the next
        batch, a caller before it gives its inline call back), so the ring does not change.
        """
        # The closed form, a few times faster than np.polyfit: this thread holds the GIL
        # meanwhile, and the callers just answered need it.
        k = min(self._n_fits, _FIT_SAMPLES)
        n, t = self._fit_n[:k], self._fit_t[:k]
        dn = n - n.mean()
        var = float(dn @ dn)
        if var == 0:
            # One size only (e.g. one client sending alike requests): no line, and no fixed
            # cost to read off; a call of that size costs about the median, and a call of
            # fewer steps is counted as costing as much (an over-estimate, never an under-).
            if n[0] > 0:
                self._cost = (0.0, float(np.median(t)) / float(n[0]), float(n[0]))
            return
        slope = float(dn @ (t - t.mean())) / var
        intercept = float(t.mean()) - slope * float(n.mean())
        self._fixed_cost = min(max(intercept, 0.0), self._max_delay)
        self._cost = (max(intercept, 0.0), max(slope, 0.0), 0.0)

    def _deliver(self, batch: list[_Request]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[_Request]] = {}
        for r in batch:
            r.state = _DONE
            if r.lock is not None:
                r.lock.release()
            elif r.loop is not None:
                by_loop.setdefault(r.loop, []).append(r)
        # One wake-up per event loop and call, however many of its requests the call answered.
        for loop, requests in by_loop.items():
            # A closed loop raises RuntimeError: nobody is waiting for the answer any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_resolve, requests)

    def _run_predict(self, batch: list[_Request]) -> None:
        model = self._model
        if len(batch) == 1:
            r = batch[0]
            # Checked when it was queued (in the engine's form): not normalised again.
            out = model._predict_prepared(r.data, r.lens)  # type: ignore[arg-type]
            r.result = r.prepared.finish(out, self._sequences)  # type: ignore[union-attr]
            return
        total = sum(r.n for r in batch)
        T = max(r.width for r in batch)
        shape = (total, T) if self._tokens else (total, T, self._width)
        data = np.zeros(shape, dtype=np.int64 if self._tokens else np.float32)
        lens = np.empty(total, dtype=np.int32)
        s = 0
        for r in batch:
            data[s:s + r.n, :r.width] = r.data
            lens[s:s + r.n] = r.width if r.lens is None else r.lens
            s += r.n
        out = model._predict_prepared(data, lens)
        s = 0
        for r in batch:
            part = out[s:s + r.n]
            if self._sequences:
                part = part[:, :r.width]  # this request's own T, as predict gives it alone
            r.result = r.prepared.finish(part, self._sequences).copy()  # type: ignore[union-attr]
            s += r.n

    def _run_feed(self, batch: list[_Request]) -> None:
        outs = self._model.feed_many([r.stream for r in batch], [r.x for r in batch])
        for r, out in zip(batch, outs):
            r.result = out

    # ---- lifecycle and stats ---------------------------------------------------------------
    def close(self, *, wait: bool = True) -> None:
        """Refuse new requests, finish every queued one, stop the dispatcher.

        Args:
            wait: block until the queued requests are answered.
        """
        with self._lock:
            self._closing = True
            self._sleeping = False
        self._signal()
        if wait and threading.current_thread() is not self._thread:
            self._thread.join()

    def __enter__(self) -> Batcher:  # noqa: PYI034 (Self needs Python 3.11)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def stats(self) -> dict[str, Any]:
        """Counters and latency percentiles since the Batcher started.

        Returns:
            a dict: ``requests`` (accepted), ``engine_calls``, ``rejected``
            (:class:`Overloaded`), ``timeouts`` (dropped before starting),
            ``errors`` (requests answered with an error by the engine),
            ``fallbacks`` (merged calls that failed and were re-run one request
            at a time), ``inline_calls`` (engine calls an idle Batcher let a
            caller run in its own thread; counted in ``engine_calls`` too),
            ``queue_depth``, ``running`` (sequences in the engine
            call under way), ``batch_sizes`` (sequences per
            engine call -> number of calls), ``mean_batch``, ``queue_wait`` and
            ``call_latency`` (``p50_ms``, ``p99_ms`` over the last 8192), and
            ``fixed_cost_ms``, the fitted fixed cost of one engine call that
            bounds the wait after a call.
        """
        with self._lock:
            sizes = dict(sorted(self._sizes.items()))
            waits = list(self._waits)
            calls = list(self._call_times)
            out: dict[str, Any] = {
                "requests": self._n_requests,
                "engine_calls": self._n_calls,
                "rejected": self._n_rejected,
                "timeouts": self._n_timeouts,
                "errors": self._n_errors,
                "fallbacks": self._n_fallbacks,
                "inline_calls": self._n_inline,
                "queue_depth": self._queued,
                "running": self._running,
            }
        batches = sum(sizes.values())
        out["batch_sizes"] = sizes
        out["mean_batch"] = sum(k * v for k, v in sizes.items()) / batches if batches else 0.0
        out["queue_wait"] = _percentiles(waits)
        out["call_latency"] = _percentiles(calls)
        out["fixed_cost_ms"] = self._fixed_cost * 1e3
        return out

    def __repr__(self) -> str:
        state = "closed" if self._closing else "open"
        return (f"<rnninfer.Batcher {state}: max_batch={self._max_batch}, "
                f"max_delay_ms={self.max_delay_ms:g}, max_queue={self._max_queue}>")


__all__ = ["Batcher", "Overloaded"]
