"""The HTTP service behind ``rnninfer serve``: an ASGI app over one :class:`Batcher`.

Endpoints (``docs/serving.md``)::

    POST   /v1/predict        {"inputs": ..., "lengths": [...]?} -> {"outputs": ...}
    POST   /v1/streams        -> {"id": ...}
    POST   /v1/streams/{id}   {"inputs": ...} -> {"outputs": ..., "steps": n}
    DELETE /v1/streams/{id}   -> {"id": ..., "steps": n}
    GET    /healthz           -> {"status": "ok", ...}
    GET    /metrics           Prometheus text format

Every request is answered: bad input 400 (the message says what), too large
413 (the limit is named), an unknown stream 404, overload or shutdown 503,
anything unexpected 500 — the process never dies of a request. Outputs are
float32 values written as the float64 numbers they equal, so parsing them
back and casting to float32 gives the same bits.

Hot path: ``POST /v1/predict`` and stream feeds go from the ASGI server
straight to their handlers; Starlette routes the other endpoints (and answers
unknown paths and methods). Every endpoint is the same plain ASGI handler
either way, so status codes, limits and metrics do not depend on the route
taken; skipping Starlette's router, middleware and Request/Response objects
saves about a tenth of a millisecond per request, a good part of what the
service adds to ``predict`` at low load.

This module needs the ``serve`` extra (Starlette, uvicorn, prometheus-client;
uvicorn runs on uvloop and httptools when they are installed, as the extra
installs them).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import math
import secrets
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

try:
    import uvicorn
    from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
    from prometheus_client.registry import Collector
    from starlette.applications import Starlette
    from starlette.routing import Route
    from starlette.types import ASGIApp, Receive, Scope, Send
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        f"rnninfer serve needs the 'serve' extra ({e.name} is missing): pip install 'rnninfer[serve]'"
    ) from e

from ..model import Model
from .batcher import Batcher, Overloaded

#: Latency buckets (seconds) of the request histogram: 100 µs to 10 s.
LATENCY_BUCKETS = (1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1.0,
                   2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


@dataclass(frozen=True)
class ServeConfig:
    """The service's limits and batching options (the ``rnninfer serve`` flags).

    Attributes:
        max_batch: most sequences per engine call (``Batcher``).
        max_delay_ms: longest wait for more requests after a call (``Batcher``).
        max_queue: most requests waiting for the engine; beyond it 503.
        queue_timeout_s: a request not started within this answers 503.
        max_tokens: most steps (tokens or feature rows) in one request; 413 beyond.
        max_sequences: most sequences in one request; 413 beyond.
        max_body_bytes: largest request body; 413 beyond.
        max_streams: most live stream sessions; opening one more answers 503.
        stream_idle_s: a stream not fed for this long is closed.
    """

    max_batch: int = 64
    max_delay_ms: float = 1.0
    max_queue: int = 1024
    queue_timeout_s: float = 30.0
    max_tokens: int = 65536
    max_sequences: int = 1024
    max_body_bytes: int = 8 * 1024 * 1024
    max_streams: int = 10000
    stream_idle_s: float = 300.0

    def __post_init__(self) -> None:
        """Reject limits no service could run with."""
        for name in ("max_batch", "max_queue", "max_tokens", "max_sequences", "max_body_bytes", "max_streams"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("queue_timeout_s", "stream_idle_s"):
            v = getattr(self, name)
            if not 0 < v < math.inf:
                raise ValueError(f"{name} must be a positive number of seconds, got {v}")
        if not 0 <= self.max_delay_ms < math.inf:
            raise ValueError(f"max_delay_ms must be >= 0, got {self.max_delay_ms}")


class HTTPError(Exception):
    """An error answered with its own status code and message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _Disconnected(Exception):
    """The client went away before its body was read."""


class Reply(NamedTuple):
    """An endpoint's answer: status, body and content type."""

    status: int
    body: bytes
    media_type: bytes = b"application/json"


# json.dumps with any option builds a new encoder per call; one shared encoder (it keeps no
# state between calls) writes the same text for less per-request CPU.
_ENCODER = json.JSONEncoder(separators=(",", ":"))


def _json(content: Any, status: int = 200) -> Reply:
    return Reply(status, _ENCODER.encode(content).encode())


class _Route:
    """A plain ASGI handler as a Starlette route endpoint (Starlette calls objects as ASGI apps)."""

    __slots__ = ("handle",)

    def __init__(self, handle: ASGIApp) -> None:
        self.handle = handle

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.handle(scope, receive, send)


class _Session:
    __slots__ = ("busy", "last_used", "lock", "stream")

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.lock = asyncio.Lock()
        self.busy = 0
        self.last_used = time.monotonic()


class _BatcherCollector(Collector):
    """Batch sizes, queue depth, engine calls and live streams, read when scraped."""

    def __init__(self, service: Service) -> None:
        self._service = service

    def collect(self) -> Iterator[Any]:
        s = self._service.batcher.stats()
        sizes = s["batch_sizes"]
        buckets, cum = [], 0
        for le in BATCH_BUCKETS:
            cum = sum(v for k, v in sizes.items() if k <= le)
            buckets.append((str(le), cum))
        total = sum(sizes.values())
        buckets.append(("+Inf", total))
        h = HistogramMetricFamily("rnninfer_batch_size", "Sequences per engine call.")
        h.add_metric([], buckets, sum_value=float(sum(k * v for k, v in sizes.items())))
        yield h
        yield CounterMetricFamily("rnninfer_engine_calls", "Engine calls made by the batcher.",
                                  value=s["engine_calls"])
        yield CounterMetricFamily("rnninfer_inline_calls",
                                  "Engine calls an idle batcher ran on the event loop's thread (in engine_calls too).",
                                  value=s["inline_calls"])
        yield CounterMetricFamily("rnninfer_rejected", "Requests refused because the queue was full.",
                                  value=s["rejected"])
        yield CounterMetricFamily("rnninfer_queue_timeouts", "Requests dropped before they started.",
                                  value=s["timeouts"])
        yield GaugeMetricFamily("rnninfer_queue_depth", "Requests waiting for the engine.",
                                value=s["queue_depth"])
        yield GaugeMetricFamily("rnninfer_engine_running_sequences", "Sequences in the engine call under way.",
                                value=s["running"])
        yield GaugeMetricFamily("rnninfer_live_streams", "Open stream sessions.",
                                value=len(self._service.sessions))
        for key in ("queue_wait", "call_latency"):
            g = GaugeMetricFamily(f"rnninfer_{key}_seconds",
                                  f"Batcher {key.replace('_', ' ')} percentiles (last 8192).",
                                  labels=["quantile"])
            g.add_metric(["0.5"], s[key]["p50_ms"] / 1e3)
            g.add_metric(["0.99"], s[key]["p99_ms"] / 1e3)
            yield g


Handler = Callable[[Scope, Receive], Awaitable[Reply]]


class Service:
    """The state behind the app: the model, its Batcher, stream sessions and metrics."""

    def __init__(self, model: Model, config: ServeConfig | None = None) -> None:
        """Start a Batcher for ``model`` with ``config``'s options."""
        self.model = model
        self.config = cfg = config or ServeConfig()
        self.batcher = Batcher(model, max_batch=cfg.max_batch, max_delay_ms=cfg.max_delay_ms,
                               max_queue=cfg.max_queue)
        self.sessions: collections.OrderedDict[str, _Session] = collections.OrderedDict()
        self.tokens = model.spec.input.kind == "tokens"
        self.width = model.spec.input.width
        self.shutting_down = False
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("rnninfer_http_requests", "HTTP requests by endpoint and status.",
                                ["endpoint", "status"], registry=self.registry)
        self.latency = Histogram("rnninfer_http_request_duration_seconds",
                                 "HTTP request latency by endpoint.", ["endpoint"],
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.registry.register(_BatcherCollector(self))

    # ---- plumbing -----------------------------------------------------------------------
    def _endpoint(self, name: str, fn: Handler) -> ASGIApp:
        """Wrap a handler into an ASGI app: every error becomes its own status; count and time it."""
        latency = self.latency.labels(name)
        # Labelled children are looked up once per status, not on every request.
        counters: dict[int, Any] = {}

        async def handle(scope: Scope, receive: Receive, send: Send) -> None:
            t0 = time.perf_counter()
            try:
                response = await fn(scope, receive)
            except HTTPError as e:
                response = _json({"error": str(e)}, e.status)
            except Overloaded as e:
                response = _json({"error": str(e)}, 503)
            except TimeoutError:
                response = _json({"error": "the request waited too long for the engine "
                                           f"(queue_timeout_s={self.config.queue_timeout_s}); retry later"}, 503)
            except (ValueError, TypeError, OverflowError, IndexError) as e:
                response = _json({"error": str(e)}, 400)
            except _Disconnected:
                response = Reply(499, b"")  # nobody reads it
            except RecursionError:
                response = _json({"error": "the JSON nests too deeply"}, 400)
            except RuntimeError as e:
                if self.batcher.closed:
                    response = _json({"error": "the service is shutting down"}, 503)
                else:
                    response = _json({"error": f"internal error: {e}"}, 500)
            except Exception as e:  # noqa: BLE001 (the service never dies of a request)
                response = _json({"error": f"internal error: {type(e).__name__}: {e}"}, 500)
            latency.observe(time.perf_counter() - t0)
            status, body, media_type = response
            counter = counters.get(status)
            if counter is None:
                counter = counters[status] = self.requests.labels(name, str(status))
            counter.inc()
            await send({"type": "http.response.start", "status": status,
                        "headers": [(b"content-type", media_type), (b"content-length", b"%d" % len(body))]})
            await send({"type": "http.response.body", "body": body})

        return handle

    async def _body(self, scope: Scope, receive: Receive) -> Any:
        limit = self.config.max_body_bytes
        declared = None
        for key, value in scope["headers"]:
            if key == b"content-length":  # ASGI servers give header names in lower case
                declared = value.decode("latin-1")
                break
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                raise HTTPError(400, f"bad Content-Length {declared!r}") from None
            if size > limit:
                raise HTTPError(413, f"the body has {size} bytes, more than max_body_bytes={limit}")
        chunks, n = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # http.disconnect
                raise _Disconnected
            chunk = message.get("body", b"")
            n += len(chunk)
            if n > limit:
                raise HTTPError(413, f"the body is larger than max_body_bytes={limit}")
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        raw = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        if not raw:
            return None
        try:
            return json.loads(raw)
        except UnicodeDecodeError as e:
            raise HTTPError(400, f"the body is not UTF-8 JSON: {e}") from None
        except json.JSONDecodeError as e:
            raise HTTPError(400, f"the body is not valid JSON: {e}") from None

    def _inputs(self, body: Any, *, stream: bool) -> tuple[Any, Any]:
        """``(x, lengths)`` for the engine from a JSON body, with the size limits enforced."""
        if not isinstance(body, dict) or "inputs" not in body:
            raise HTTPError(400, 'the body must be a JSON object {"inputs": ...}')
        unknown = set(body) - ({"inputs"} if stream else {"inputs", "lengths"})
        if unknown:
            raise HTTPError(400, f"unknown field(s) {sorted(unknown)}; expected 'inputs'"
                            + ("" if stream else " and optionally 'lengths'"))
        x, lengths = body["inputs"], body.get("lengths")
        if not isinstance(x, list) or not x:
            raise HTTPError(400, "'inputs' must be a non-empty JSON list")
        cfg = self.config
        # Depth of the first element tells one sequence from a batch.
        depth = 1 if not isinstance(x[0], list) else (2 if not x[0] or not isinstance(x[0][0], list) else 3)
        batch = depth == (2 if self.tokens else 3)
        if stream and batch:
            raise HTTPError(400, "a stream takes the steps of one sequence, not a batch")
        if batch:
            if not all(isinstance(s, list) for s in x):
                raise HTTPError(400, "'inputs' mixes sequences with single values")
            nseq, steps = len(x), sum(len(s) for s in x)
        else:
            nseq, steps = 1, len(x)
        if nseq > cfg.max_sequences:
            raise HTTPError(413, f"{nseq} sequences in one request, more than max_sequences={cfg.max_sequences}")
        if steps > cfg.max_tokens:
            raise HTTPError(413, f"{steps} steps in one request, more than max_tokens={cfg.max_tokens}")
        if lengths is not None:
            if not batch:
                raise HTTPError(400, "'lengths' applies to a padded batch (a list of equal-length sequences)")
            if not isinstance(lengths, list) or not all(type(v) is int for v in lengths):
                raise HTTPError(400, "'lengths' must be a list of integers")
        if self.tokens:
            for i, s in enumerate(x if batch else [x]):
                if not all(type(v) is int for v in s):
                    t, v = next((t, v) for t, v in enumerate(s) if type(v) is not int)
                    where = f"sequence {i}, step {t}" if batch else f"step {t}"
                    raise HTTPError(400, f"token ids must be integers, got {json.dumps(v)} at {where}")
            if lengths is not None:
                if len({len(s) for s in x}) != 1:
                    raise HTTPError(400, "with 'lengths', the sequences must be padded to one width")
                try:
                    return np.array(x, dtype=np.int64), np.array(lengths, dtype=np.int64)
                except OverflowError as e:
                    raise HTTPError(400, f"token id out of range: {e}") from None
            # Every id is an int (checked above): straight to int64 arrays, ranges checked by predict.
            try:
                if batch:
                    return [np.array(s, dtype=np.int64) for s in x], None
                return np.array(x, dtype=np.int64), None
            except OverflowError as e:
                raise HTTPError(400, f"token id out of range: {e}") from None
        if depth == 1:
            raise HTTPError(400, f"feature inputs are lists of steps, each a list of {self.width} numbers")
        if batch and lengths is None:
            return [self._features(s, i) for i, s in enumerate(x)], None
        arr = self._features(x, None)
        return arr, (np.array(lengths, dtype=np.int64) if lengths is not None else None)

    def _features(self, x: Any, i: int | None) -> np.ndarray:
        where = "" if i is None else f"sequence {i}: "
        try:
            arr = np.array(x, dtype=np.float64)
        except (ValueError, TypeError) as e:
            raise HTTPError(400, f"{where}features must be numbers in lists of equal length: {e}") from None
        if i is not None and arr.ndim != 2:
            raise HTTPError(400, f"{where}expected (steps, {self.width}) numbers, got {arr.ndim}-D")
        return arr

    # ---- endpoints ------------------------------------------------------------------------
    async def predict(self, scope: Scope, receive: Receive) -> Reply:
        x, lengths = self._inputs(await self._body(scope, receive), stream=False)
        out = await self.batcher.predict_async(x, lengths=lengths, timeout=self.config.queue_timeout_s)
        return _json({"outputs": out.tolist()})

    def _session(self, scope: Scope) -> tuple[str, _Session]:
        sid = scope["path_params"]["id"]
        s = self.sessions.get(sid)
        if s is None or (not s.busy and time.monotonic() - s.last_used > self.config.stream_idle_s):
            raise HTTPError(404, f"no stream {sid!r} (never opened, closed, or expired after "
                                 f"stream_idle_s={self.config.stream_idle_s:g} idle seconds)")
        return sid, s

    async def open_stream(self, scope: Scope, receive: Receive) -> Reply:
        body = await self._body(scope, receive)
        if body not in (None, {}):
            raise HTTPError(400, "POST /v1/streams takes no body (or {})")
        if self.shutting_down:
            raise HTTPError(503, "the service is shutting down")
        if len(self.sessions) >= self.config.max_streams:
            self.expire()
            if len(self.sessions) >= self.config.max_streams:
                raise HTTPError(503, f"{len(self.sessions)} live streams, the most allowed "
                                     f"(max_streams={self.config.max_streams}); close some or retry later")
        stream = self.model.stream()
        sid = secrets.token_urlsafe(16)
        self.sessions[sid] = _Session(stream)
        return _json({"id": sid})

    async def feed_stream(self, scope: Scope, receive: Receive) -> Reply:
        sid, s = self._session(scope)
        s.busy += 1
        try:
            x, _ = self._inputs(await self._body(scope, receive), stream=True)
            async with s.lock:  # one stream's feeds run one at a time, in order
                out = await self.batcher.feed_async(s.stream, x, timeout=self.config.queue_timeout_s)
                steps = int(s.stream.steps)
        finally:
            s.busy -= 1
            s.last_used = time.monotonic()
            if sid in self.sessions:
                self.sessions.move_to_end(sid)
        return _json({"outputs": out.tolist(), "steps": steps})

    async def close_stream(self, scope: Scope, receive: Receive) -> Reply:
        sid, s = self._session(scope)
        del self.sessions[sid]
        return _json({"id": sid, "steps": int(s.stream.steps)})

    async def healthz(self, scope: Scope, receive: Receive) -> Reply:
        if self.shutting_down:
            raise HTTPError(503, "the service is shutting down")
        return _json({"status": "ok", "model": self.model.spec.name, "threads": self.model.threads,
                      "precision": self.model.precision, "queue_depth": self.batcher.queue_depth,
                      "live_streams": len(self.sessions)})

    async def metrics(self, scope: Scope, receive: Receive) -> Reply:
        return Reply(200, generate_latest(self.registry), b"text/plain; version=0.0.4; charset=utf-8")

    # ---- stream expiry and lifespan ----------------------------------------------------------
    def expire(self) -> int:
        """Close streams idle longer than ``stream_idle_s``; returns how many."""
        now = time.monotonic()
        idle = self.config.stream_idle_s
        n = 0
        # Sessions are kept in order of last use, so the expired ones are at the front.
        for _ in range(len(self.sessions)):
            sid, s = next(iter(self.sessions.items()))
            if now - s.last_used <= idle:
                break
            if s.busy:
                self.sessions.move_to_end(sid)
                continue
            del self.sessions[sid]
            n += 1
        return n

    async def _sweep(self) -> None:
        period = min(max(self.config.stream_idle_s / 4, 0.05), 5.0)
        while True:
            await asyncio.sleep(period)
            self.expire()

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        """Expire idle streams while serving; on shutdown finish the queue and stop the Batcher."""
        sweeper = asyncio.create_task(self._sweep())
        try:
            yield
        finally:
            self.shutting_down = True
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
            await asyncio.get_running_loop().run_in_executor(None, self.batcher.close)

    def app(self) -> ASGIApp:
        """The ASGI application: the hot endpoints called directly, the rest routed by Starlette."""
        e = self._endpoint
        predict, feed = e("predict", self.predict), e("streams_feed", self.feed_stream)
        routes = [
            Route("/v1/predict", _Route(predict), methods=["POST"]),
            Route("/v1/streams", _Route(e("streams_open", self.open_stream)), methods=["POST"]),
            Route("/v1/streams/{id}", _Route(feed), methods=["POST"]),
            Route("/v1/streams/{id}", _Route(e("streams_close", self.close_stream)), methods=["DELETE"]),
            Route("/healthz", _Route(e("healthz", self.healthz)), methods=["GET"]),
            Route("/metrics", _Route(e("metrics", self.metrics)), methods=["GET"]),
        ]
        router = Starlette(routes=routes, lifespan=self.lifespan)
        prefix = "/v1/streams/"

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            # Exactly the requests the routes above would send to predict and feed (a
            # mounted app, with a root_path, is left to Starlette's own path handling).
            if scope["type"] == "http" and scope["method"] == "POST" and not scope.get("root_path"):
                path = scope["path"]
                if path == "/v1/predict":
                    await predict(scope, receive, send)
                    return
                if path.startswith(prefix) and len(path) > len(prefix) and "/" not in path[len(prefix):]:
                    scope["path_params"] = {"id": path[len(prefix):]}
                    await feed(scope, receive, send)
                    return
            await router(scope, receive, send)

        return app


def create_app(model: Model, config: ServeConfig | None = None) -> ASGIApp:
    """The ASGI app serving ``model`` (for running under any ASGI server)."""
    return Service(model, config).app()


def _uvicorn_config(app: ASGIApp, shutdown_timeout_s: float) -> uvicorn.Config:
    """The server settings of :func:`serve` (bench/serve_load.py runs a bare app with them too)."""
    return uvicorn.Config(
        app, log_level="warning", access_log=False, lifespan="on",
        timeout_graceful_shutdown=max(1, math.ceil(shutdown_timeout_s)), backlog=2048,
        # uvloop and httptools when installed (the 'serve' extra), else asyncio and h11.
        loop="auto", http="auto",
        # No proxy in front by default: X-Forwarded-* is not trusted, and not parsed per request.
        proxy_headers=False, server_header=False)


def serve(model: Model, *, host: str = "127.0.0.1", port: int = 8000, config: ServeConfig | None = None,
          shutdown_timeout_s: float = 30.0) -> None:
    """Serve ``model`` over HTTP until SIGTERM or SIGINT (then finish in-flight requests).

    Prints ``rnninfer serve: listening on http://HOST:PORT`` once the socket
    accepts connections (``port=0`` picks a free port and prints it).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    sock.listen(2048)
    bound = sock.getsockname()[1]
    app = create_app(model, config)
    server = uvicorn.Server(_uvicorn_config(app, shutdown_timeout_s))
    shown = f"[{host}]" if family == socket.AF_INET6 else host
    print(f"rnninfer serve: {model.spec.name!r} ({model.threads} threads, {model.precision}) "
          f"listening on http://{shown}:{bound}", flush=True)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    print("rnninfer serve: stopped", file=sys.stderr, flush=True)


__all__ = ["HTTPError", "ServeConfig", "Service", "create_app", "serve"]
