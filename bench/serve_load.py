"""Load benchmark of the serving half: the Batcher in process, and `rnninfer serve` over HTTP.

Same run, same machine, same threads, the headline model (SPEC §6) with single
T=64 sequences per request:

* In process: 64 client threads through one ``rnninfer.Batcher`` vs the same
  64 threads calling ``model.predict`` directly, against the batch-64 ceiling
  (64 ÷ the median ``predict`` of 64 sequences).
* Over HTTP (loopback only): ``rnninfer serve`` with batching, the same with
  ``--max-batch 1``, and a reference service written the way a PyTorch user
  would (bench/serve_reference_torch.py: FastAPI + the same model in
  PyTorch). Closed-loop clients (each sends, waits, sends again) and
  open-loop clients (Poisson arrivals at a fraction of that server's
  closed-loop throughput, latency counted from the scheduled arrival, so a
  queue that builds up is seen) at concurrency 1, 8 and 64. The load
  generator runs in its own process (this script with ``--client``), on raw
  HTTP/1.1 keep-alive connections to keep its own cost low; it shares the
  machine's cores with the server, as on any one-box test.

Everything is bounded (``--duration`` seconds per point, ``--max-requests``
per point, a hard timeout on every subprocess) and stops by itself.

    python bench/serve_load.py --duration 1 --threads 2              # a short check, writes nothing
    python bench/serve_load.py --out bench/results/serve_load         # the full run: .json .md .png
    python bench/serve_load.py --http-only --servers bare,batching --concurrency 1 --modes closed  # c=1 vs bare uvicorn
    python bench/serve_load.py --in-process-only --skip-direct        # the Batcher against its ceiling
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
CONCURRENCY = (1, 8, 64)
#: --servers: a bare uvicorn app (concurrency 1 only: what the HTTP stack alone costs), rnninfer
#: serve with batching, the same with --max-batch 1, the PyTorch reference.
SERVERS = ("bare", "batching", "batch1", "torch")


# ---- the load generator (runs in its own process) -----------------------------------------------
async def _open(host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(host, port)


async def _call(r: asyncio.StreamReader, w: asyncio.StreamWriter, req: bytes) -> int:
    w.write(req)
    head = await r.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    low = head.lower()
    i = low.find(b"content-length:")
    n = int(low[i + 15: low.find(b"\r\n", i)]) if i >= 0 else 0
    await r.readexactly(n)
    return status


def _requests(spec: dict[str, Any]) -> list[bytes]:
    host = spec["host"]
    bodies = [b.encode() for b in json.loads(Path(spec["bodies"]).read_text())]
    return [(f"POST /v1/predict HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
             f"Content-Length: {len(b)}\r\n\r\n").encode() + b for b in bodies]


def _serial_client(spec: dict[str, Any]) -> dict[str, Any]:
    """One closed-loop connection on a blocking socket: the least client time counted in a latency.

    At concurrency 1 the point is what the *server* adds to ``predict``; an
    asyncio client would add its own loop wake-up and stream parsing to every
    answer, this one a ``recv`` and a header search.
    """
    import socket

    reqs = _requests(spec)
    sock = socket.create_connection((spec["host"], spec["port"]))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    recv, send = sock.recv, sock.sendall
    lat: list[float] = []
    statuses: dict[int, int] = {}
    t0 = time.perf_counter()
    t_warm, t_end = t0 + spec["warmup"], t0 + spec["warmup"] + spec["duration"]
    i = sent = 0
    buf = b""
    last = t_warm
    while sent < spec["max_requests"]:
        start = time.perf_counter()
        if start >= t_end:
            break
        send(reqs[i % len(reqs)])
        sent += 1
        while (h := buf.find(b"\r\n\r\n")) < 0:
            buf += recv(65536)
        head = buf[:h + 2].lower()  # every header line ends in CRLF
        k = head.find(b"content-length:")
        n = int(head[k + 15: head.find(b"\r\n", k)]) if k >= 0 else 0
        while len(buf) < h + 4 + n:
            buf += recv(65536)
        done = time.perf_counter()
        status = int(buf[9:12])
        buf = buf[h + 4 + n:]
        i += 1
        if start >= t_warm:
            statuses[status] = statuses.get(status, 0) + 1
            last = done
            if status == 200:
                lat.append(done - start)
    sock.close()
    a = np.asarray(lat) * 1e3
    return {
        "concurrency": 1, "mode": "closed", "offered_rps": None, "client": "blocking socket",
        "throughput_rps": float(len(lat) / max(last - t_warm, 1e-9)), "ok": len(lat), "statuses": statuses,
        "p50_ms": float(np.percentile(a, 50)) if a.size else None,
        "p99_ms": float(np.percentile(a, 99)) if a.size else None,
    }


async def _client(spec: dict[str, Any]) -> dict[str, Any]:
    host, port = spec["host"], spec["port"]
    reqs = _requests(spec)
    conc, duration, warmup = spec["concurrency"], spec["duration"], spec["warmup"]
    max_requests, rate = spec["max_requests"], spec["rate"]
    conns = [await _open(host, port) for _ in range(conc)]
    lat: list[float] = []
    statuses: dict[int, int] = {}
    counter = [0]
    t0 = time.perf_counter()
    t_warm, t_end = t0 + warmup, t0 + warmup + duration

    last = [t_warm]

    def record(start: float, done: float, status: int) -> None:
        # Requests started in the window count, answered whenever; throughput runs to the last answer.
        if start >= t_warm:
            statuses[status] = statuses.get(status, 0) + 1
            last[0] = max(last[0], done)
            if status == 200:
                lat.append(done - start)

    if rate <= 0:  # closed loop
        async def worker(k: int) -> None:
            r, w = conns[k]
            i = k
            while counter[0] < max_requests:
                start = time.perf_counter()
                # Past the window, go on (up to drain s) until 2 answers per connection were
                # measured: a slow server must not leave the point empty.
                if start >= t_end and (len(lat) >= 2 * conc or start >= t_end + spec["drain"]):
                    return
                status = await _call(r, w, reqs[i % len(reqs)])
                counter[0] += 1
                record(start, time.perf_counter(), status)
                i += conc

        await asyncio.gather(*(worker(k) for k in range(conc)))
    else:  # open loop: Poisson arrivals, latency from the scheduled time
        queue: asyncio.Queue[tuple[float, int] | None] = asyncio.Queue()
        rng = random.Random(1)

        async def producer() -> None:
            t, i = t0, 0
            while i < max_requests:
                t += rng.expovariate(rate)
                if t >= t_end:
                    break
                delay = t - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                queue.put_nowait((t, i))
                i += 1
            for _ in range(conc):
                queue.put_nowait(None)

        async def worker(k: int) -> None:
            r, w = conns[k]
            while (item := await queue.get()) is not None:
                scheduled, i = item
                status = await _call(r, w, reqs[i % len(reqs)])
                record(scheduled, time.perf_counter(), status)  # latency from the scheduled arrival

        try:
            await asyncio.wait_for(asyncio.gather(producer(), *(worker(k) for k in range(conc))),
                                   warmup + duration + spec["drain"])
        except asyncio.TimeoutError:
            statuses[-1] = queue.qsize()  # never sent: the server fell too far behind
    for _, w in conns:
        w.close()
    a = np.asarray(lat) * 1e3
    return {
        "concurrency": conc, "mode": "open" if rate > 0 else "closed", "offered_rps": rate or None,
        "client": "asyncio",
        "throughput_rps": float(len(lat) / max(last[0] - t_warm, duration)), "ok": len(lat), "statuses": statuses,
        "p50_ms": float(np.percentile(a, 50)) if a.size else None,
        "p99_ms": float(np.percentile(a, 99)) if a.size else None,
    }


def client_main(spec_json: str) -> None:
    spec = json.loads(spec_json)
    if spec["concurrency"] == 1 and spec["rate"] <= 0:
        print(json.dumps(_serial_client(spec)), flush=True)
        return
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    print(json.dumps(asyncio.run(_client(spec))), flush=True)


# ---- servers ---------------------------------------------------------------------------------
def bare_main() -> None:
    """A trivial ASGI app under uvicorn with ``rnninfer serve``'s settings: reads the body, answers a
    fixed JSON body of the headline model's size. Its round trip is the part of the service's
    overhead that is the HTTP stack and the client, not rnninfer."""
    import socket

    import uvicorn

    from rnninfer.serving.service import _uvicorn_config

    reply = b'{"outputs":[0.4985196590423584]}'
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(reply))]

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": reply})

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(2048)
    print(f"bare uvicorn: listening on http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
    uvicorn.Server(_uvicorn_config(app, 5.0)).run(sockets=[sock])


class _Server:
    def __init__(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        self.name = name
        self.log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 (closed in stop())
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self.log, text=True, env=env)
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], 120)
        line = self.proc.stdout.readline() if ready else ""
        if "listening on" not in line:
            self.stop()
            self.log.seek(0)
            raise RuntimeError(f"{name} did not start: {line!r}\n{self.log.read()[-3000:]}")
        url = line.rsplit(" ", 1)[-1].strip()
        self.host, self.port = url.split("//")[1].rsplit(":", 1)[0], int(url.rsplit(":", 1)[1])
        self.url = url

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
        self.log.close()


def _post(url: str, body: str) -> Any:
    import urllib.request

    req = urllib.request.Request(url + "/v1/predict", data=body.encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def _thread_env(threads: int) -> dict[str, str]:
    from rnninfer.bench.peers import thread_env

    env = dict(os.environ)
    env.update(thread_env(threads))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE.parent / "python"), env.get("PYTHONPATH")) if p)
    return env


def _predict1_times(model: Any, seqs: list[np.ndarray], seconds: float, gap: float = 0.0) -> list[float]:
    """Seconds of ``model.predict`` of one sequence, for ``seconds`` (at least 5 calls), ``gap``
    seconds apart (0: back to back)."""
    ts: list[float] = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or len(ts) < 5:
        if gap:
            time.sleep(gap)
        t = time.perf_counter()
        model.predict(seqs[len(ts) % len(seqs)])
        ts.append(time.perf_counter() - t)
    return ts


def _inline_counts(url: str) -> tuple[float, float]:
    """The server's engine calls and the inline ones among them (its /metrics)."""
    import urllib.request

    with urllib.request.urlopen(url + "/metrics", timeout=30) as r:
        text = r.read().decode()
    values = dict(line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))
    return float(values["rnninfer_engine_calls_total"]), float(values["rnninfer_inline_calls_total"])


def _measure_server(server: _Server, bodies_path: Path, args: argparse.Namespace,
                    predict1: Any) -> list[dict[str, Any]]:
    points = []
    bare = server.name == "bare uvicorn"
    for c in args.concurrency:
        for mode in args.modes:
            if bare and (c != 1 or mode != "closed"):
                continue
            rate = 0.0
            if mode == "open":
                closed = next((p for p in points if p["concurrency"] == c and p["mode"] == "closed"), None)
                if closed is None:
                    continue
                rate = args.open_fraction * closed["throughput_rps"]
                if rate <= 0:
                    continue
            spec = {"host": server.host, "port": server.port, "bodies": str(bodies_path), "concurrency": c,
                    "duration": args.duration, "warmup": args.warmup, "max_requests": args.max_requests,
                    "rate": rate, "drain": 10.0}
            # At concurrency 1, predict itself is timed right before and after the point (this
            # process, the server idle): what the service adds is read against the machine's
            # state of the moment.
            serial = c == 1 and rate <= 0 and not bare
            before = predict1() if serial else []
            counts = None if bare or server.name.startswith("PyTorch") else _inline_counts(server.url)
            r = subprocess.run([sys.executable, __file__, "--client", json.dumps(spec)], capture_output=True,
                               text=True, timeout=args.warmup + args.duration + 60, check=False,
                               env=_thread_env(1))
            if r.returncode != 0:
                raise RuntimeError(f"load client failed: {r.stderr[-2000:]}")
            point = json.loads(r.stdout.strip().splitlines()[-1])
            point["server"] = server.name
            if counts is not None:  # (the warm-up's calls included)
                calls, inline = (b - a for a, b in zip(counts, _inline_counts(server.url)))
                point["engine_calls"], point["inline_calls"] = calls, inline
            if serial:
                point["predict1_ms"] = float(np.median(before + predict1())) * 1e3
                # The service's engine calls come one HTTP round trip apart, not back to back
                # (the engine's workers sleep in between, the cores go to other processes):
                # predict at that pace too, for reading the overhead both ways.
                if point["p50_ms"]:
                    gap = max(point["p50_ms"] - point["predict1_ms"], 0.0) / 1e3
                    point["predict1_spaced_ms"] = float(np.median(predict1(gap))) * 1e3
            points.append(point)
            print(f"  {server.name:<28} {mode:<6} c={c:<3} {point['throughput_rps']:8.0f} req/s  "
                  f"p50 {point['p50_ms'] or float('nan'):7.2f} ms  p99 {point['p99_ms'] or float('nan'):7.2f} ms"
                  f"  {point['statuses']}"
                  + (f"  inline {point['inline_calls']:.0f}/{point['engine_calls']:.0f} calls" if counts else ""),
                  flush=True)
    return points


# ---- in process ------------------------------------------------------------------------------
def _in_process(model: Any, seqs: list[np.ndarray], args: argparse.Namespace) -> dict[str, Any]:
    import rnninfer

    batch = np.stack(seqs[:64])
    for _ in range(3):
        model.predict(batch)
        model.predict(seqs[0])

    def ceiling() -> dict[str, float]:
        ts = []
        end = time.perf_counter() + args.duration
        while time.perf_counter() < end or len(ts) < 5:
            t = time.perf_counter()
            model.predict(batch)
            ts.append(time.perf_counter() - t)
        med = float(np.median(ts))
        return {"median_batch64_ms": med * 1e3, "seqs_per_s": 64 / med}

    def single() -> float:
        return float(np.median(_predict1_times(model, seqs, min(args.duration, 1.0)))) * 1e3

    def clients(call: Any, n: int = 64) -> dict[str, float]:
        lat: list[list[float]] = [[] for _ in range(n)]
        barrier = threading.Barrier(n + 1)
        t_warm = [0.0]
        stop = threading.Event()

        def run(k: int) -> None:
            mine = lat[k]
            i = k
            barrier.wait()
            while not stop.is_set():
                t = time.perf_counter()
                call(seqs[i % len(seqs)])
                done = time.perf_counter()
                if t >= t_warm[0]:
                    mine.append(done - t)
                i += n

        ths = [threading.Thread(target=run, args=(k,), daemon=True) for k in range(n)]
        for t in ths:
            t.start()
        t_warm[0] = time.perf_counter() + args.warmup
        barrier.wait()
        time.sleep(args.warmup + args.duration)
        stop.set()
        for t in ths:
            t.join(60)
        a = np.concatenate([np.asarray(x) for x in lat]) * 1e3
        return {"seqs_per_s": a.size / args.duration, "p50_ms": float(np.percentile(a, 50)),
                "p99_ms": float(np.percentile(a, 99))}

    predict_1 = single()
    if args.http_only:  # what the HTTP overhead at concurrency 1 is measured against, nothing more
        return {"threads": model.threads, "median_predict1_ms": predict_1}
    first = ceiling()
    direct = None if args.skip_direct else clients(model.predict)
    with rnninfer.Batcher(model, max_batch=64, max_delay_ms=args.max_delay_ms) as b:
        batched = clients(b.predict)
        stats = b.stats()
    second = ceiling()
    med = float(np.median([first["median_batch64_ms"], second["median_batch64_ms"]]))
    ceil = 64 / (med / 1e3)
    return {
        "threads": model.threads, "ceiling_seqs_per_s": ceil, "median_batch64_ms": med,
        "median_predict1_ms": predict_1, "direct": direct, "batcher": batched,
        "batcher_stats": {k: stats[k] for k in ("engine_calls", "mean_batch", "queue_wait", "call_latency")},
        "batcher_vs_ceiling": batched["seqs_per_s"] / ceil,
        "batcher_vs_direct": batched["seqs_per_s"] / direct["seqs_per_s"] if direct else None,
        # The issue's bound, max_delay_ms + 2 x one batch call, read two ways: with the median of
        # the Batcher's own calls (smaller than batch-64 calls when the callers take turns in
        # two groups), and with the median batch-64 call of the ceiling.
        "p99_bound_ms": args.max_delay_ms + 2 * stats["call_latency"]["p50_ms"],
        "p99_bound_batch64_ms": args.max_delay_ms + 2 * med,
        "batch_sizes": stats["batch_sizes"],
    }


# ---- report ----------------------------------------------------------------------------------
def _fmt(v: Any, f: str = ".2f") -> str:
    return "-" if v is None else format(v, f)


def _in_process_md(res: dict[str, Any]) -> list[str]:
    ip = res["in_process"]
    if "batcher" not in ip:
        return [f"One `predict` of one sequence: {ip['median_predict1_ms']:.3f} ms (median).", ""]
    direct = ip["direct"] or {}
    return [
        "## In process: 64 client threads",
        "",
        "| | sequences/s | p50 ms | p99 ms |",
        "| --- | ---: | ---: | ---: |",
        (f"| batch-64 ceiling (64 ÷ median predict of 64 = {ip['median_batch64_ms']:.2f} ms) | "
        f"{ip['ceiling_seqs_per_s']:.0f} | | |"),
        (f"| `Batcher.predict` (max_delay_ms={res['max_delay_ms']}) | {ip['batcher']['seqs_per_s']:.0f} | "
        f"{ip['batcher']['p50_ms']:.2f} | {ip['batcher']['p99_ms']:.2f} |"),
        (f"| `model.predict` directly | {_fmt(direct.get('seqs_per_s'), '.0f')} | "
        f"{_fmt(direct.get('p50_ms'))} | {_fmt(direct.get('p99_ms'))} |"),
        "",
        (f"Batcher: {ip['batcher_vs_ceiling']:.0%} of the ceiling (target ≥ 85 %), "
        f"{_fmt(ip['batcher_vs_direct'], '.1f')}× the direct calls; p99 {ip['batcher']['p99_ms']:.2f} ms vs "
        f"the bound max_delay_ms + 2 × one batch call = {ip['p99_bound_ms']:.2f} ms with the median of "
        f"the Batcher's own calls ({ip['batcher_stats']['call_latency']['p50_ms']:.2f} ms, mean batch "
        f"{ip['batcher_stats']['mean_batch']:.1f}), {ip['p99_bound_batch64_ms']:.2f} ms with the median "
        f"batch-64 call. One `predict` of one sequence: {ip['median_predict1_ms']:.3f} ms (median)."),
        "",
    ]


def markdown(res: dict[str, Any]) -> str:
    lines = [
        "# Serving load benchmark",
        "",
        (f"{res['machine']}; headline model (Embedding(20000, 128) → 2 × LSTM(256) → Dense(1, sigmoid)), "
        f"one T={res['T']} sequence per request, {res['threads']} engine threads, "
        f"{res['duration']} s per point after {res['warmup']} s warm-up; `python bench/serve_load.py "
        f"{res['argv']}`."),
        "",
        *_in_process_md(res),
    ]
    if res["http"]:
        lines += [
            "## Over HTTP (loopback)",
            "",
            "| server | clients | concurrency | offered req/s | req/s | p50 ms | p99 ms | non-200 |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
    for p in res["http"]:
        bad = sum(v for k, v in p["statuses"].items() if str(k) != "200")
        lines.append(f"| {p['server']} | {p['mode']} | {p['concurrency']} | {_fmt(p['offered_rps'], '.0f')} | "
                     f"{p['throughput_rps']:.0f} | {_fmt(p['p50_ms'])} | {_fmt(p['p99_ms'])} | {bad} |")
    s = res["summary"]
    if "speedup_vs_torch_c64" in s:
        lines += [
            "",
            (f"At concurrency 64 (closed loop): rnninfer serve {s['speedup_vs_torch_c64']:.1f}× the PyTorch "
             f"service's throughput (target ≥ 3×), p99 {_fmt(s['p99_rnninfer_c64'])} ms vs "
             f"{_fmt(s['p99_torch_c64'])} ms."),
        ]
    if "overhead_c1_us" in s:
        lines += [
            "",
            (f"At concurrency 1 the service adds {s['overhead_c1_us']:.0f} µs p50 over `predict` itself "
             f"(target ≤ 250 µs): {s['c1_p50_ms']:.3f} ms p50 over HTTP, measured with one keep-alive "
             "connection on a blocking socket in its own process (it shares the cores), against "
             f"{s['c1_predict1_ms']:.3f} ms for `predict` of the same sequences in this process "
             "(median of back-to-back calls, timed right before and after that point)."),
        ]
        if "overhead_c1_spaced_us" in s:
            lines[-1] += (f" Against `predict` called at the HTTP pace (calls {s['c1_p50_ms'] - s['c1_predict1_ms']:.3f}"
                          f" ms apart): {s['c1_predict1_spaced_ms']:.3f} ms, so {s['overhead_c1_spaced_us']:.0f} µs added.")
        if "c1_bare_p50_us" in s:
            lines[-1] += (f" A bare uvicorn app (same settings, a fixed answer) takes {s['c1_bare_p50_us']:.0f} µs p50"
                          f" per round trip in this run: rnninfer adds {s['overhead_c1_beyond_bare_us']:.0f} µs to it.")
        if "c1_inline_fraction" in s:
            lines[-1] += (f" {s['c1_inline_fraction']:.0%} of that point's engine calls ran on the event loop's"
                          " thread (the idle Batcher's inline path).")
    return "\n".join(lines) + "\n"


def plot(res: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, mode in zip(axes, ("closed", "open")):
        for name in dict.fromkeys(p["server"] for p in res["http"]):
            pts = [p for p in res["http"] if p["server"] == name and p["mode"] == mode and p["p50_ms"]]
            if not pts:
                continue
            x = [p["throughput_rps"] for p in pts]
            line, = ax.plot(x, [p["p99_ms"] for p in pts], marker="o", label=f"{name} p99")
            ax.plot(x, [p["p50_ms"] for p in pts], marker="x", ls="--", color=line.get_color(),
                    label=f"{name} p50")
            for p in pts:
                ax.annotate(f"c={p['concurrency']}", (p["throughput_rps"], p["p99_ms"]), fontsize=7,
                            textcoords="offset points", xytext=(3, 3))
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("throughput (requests/s)")
        ax.set_title(f"{mode}-loop clients")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("latency (ms)")
    for ax in axes:  # a run of closed-loop clients only leaves the open-loop panel empty
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.suptitle(f"HTTP serving, headline model, T={res['T']}, {res['threads']} threads")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


# ---- main ------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--client", help=argparse.SUPPRESS)
    p.add_argument("--bare-server", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=2, help="engine threads of every server (default 2)")
    p.add_argument("--duration", type=float, default=3.0, help="seconds measured per point (default 3)")
    p.add_argument("--warmup", type=float, default=0.5, help="seconds before each point (default 0.5)")
    p.add_argument("--max-requests", type=int, default=50000, help="most requests per point")
    p.add_argument("--concurrency", type=lambda s: [int(v) for v in s.split(",")], default=list(CONCURRENCY))
    p.add_argument("--open-fraction", type=float, default=0.8,
                   help="open-loop offered rate, as a fraction of the same server's closed-loop rate")
    p.add_argument("--max-delay-ms", type=float, default=1.0)
    p.add_argument("--T", type=int, default=64, help="sequence length (default 64)")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch reference service")
    p.add_argument("--servers", type=lambda s: s.split(","), default=list(SERVERS),
                   help=f"HTTP servers to measure, of {','.join(SERVERS)} (default: all)")
    p.add_argument("--modes", type=lambda s: s.split(","), default=["closed", "open"],
                   help="closed,open (default both; open needs closed at the same concurrency)")
    p.add_argument("--in-process-only", action="store_true", help="skip the HTTP part")
    p.add_argument("--http-only", action="store_true",
                   help="skip the in-process clients (predict of one sequence is still measured)")
    p.add_argument("--skip-direct", action="store_true",
                   help="in process, skip the 64 threads calling predict directly")
    p.add_argument("--out", help="write PREFIX.json, PREFIX.md, PREFIX.png (default: print only)")
    args = p.parse_args(argv)
    if args.client:
        client_main(args.client)
        return 0
    if args.bare_server:
        bare_main()
        return 0
    if unknown := set(args.servers) - set(SERVERS):
        p.error(f"unknown --servers {sorted(unknown)}; choose from {','.join(SERVERS)}")
    if unknown := set(args.modes) - {"closed", "open"}:
        p.error(f"unknown --modes {sorted(unknown)}")
    if args.in_process_only and args.http_only:
        p.error("--in-process-only and --http-only exclude each other")

    import dataclasses

    import rnninfer
    from rnninfer.bench import cases, machine

    case = dataclasses.replace(cases.HEADLINE_MODEL, T=args.T, threads=args.threads)
    rng = np.random.default_rng(0)
    model = rnninfer.build(case.layer_list(), seed=0, name=case.model_label, threads=args.threads)
    seqs = [rng.integers(0, case.vocab, size=args.T) for _ in range(256)]
    cpu = machine.cpu_info()
    res: dict[str, Any] = {
        "machine": f"{cpu.get('model_name', '?')}, {cpu.get('usable_cpus')} usable CPUs, isa {rnninfer.isa()}",
        "versions": machine.versions(), "threads": args.threads, "T": args.T, "duration": args.duration,
        "warmup": args.warmup, "max_delay_ms": args.max_delay_ms, "case": case.to_dict(),
        "argv": " ".join(sys.argv[1:] if argv is None else argv),
    }
    print("in process: ceiling, 64 threads direct, 64 threads through the Batcher", flush=True)
    res["in_process"] = _in_process(model, seqs, args)
    print(json.dumps(res["in_process"], indent=1), flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "headline.npz"
        model.save(path)
        bodies = Path(tmp) / "bodies.json"
        bodies.write_text(json.dumps([json.dumps({"inputs": s.tolist()}) for s in seqs]))
        env = _thread_env(args.threads)
        serve = [sys.executable, "-m", "rnninfer", "serve", str(path), "--port", "0", "--threads",
                 str(args.threads), "--max-delay-ms", str(args.max_delay_ms)]
        commands = {
            "bare": ("bare uvicorn", [sys.executable, __file__, "--bare-server"]),
            "batching": ("rnninfer serve", serve),
            "batch1": ("rnninfer serve --max-batch 1", [*serve, "--max-batch", "1"]),
            "torch": ("PyTorch + FastAPI", [sys.executable, str(HERE / "serve_reference_torch.py"),
                                            str(path), "--port", "0", "--threads", str(args.threads)]),
        }
        servers = [commands[k] for k in SERVERS if k in args.servers and not (k == "torch" and args.no_torch)]
        res["http"] = []
        if args.in_process_only:
            servers = []
        expected = [model.predict(s) for s in seqs[:8]]
        for name, cmd in servers:
            server = _Server(name, cmd, env)
            try:
                for s, e in zip(seqs[:8] if name != "bare uvicorn" else [], expected):  # a wrong server is never timed
                    got = np.asarray(_post(server.url, json.dumps({"inputs": s.tolist()}))["outputs"],
                                     dtype=np.float32)
                    exact = name.startswith("rnninfer")
                    ok = np.array_equal(got, e) if exact else np.allclose(got, e, atol=1e-5, rtol=0)
                    if not ok:
                        raise AssertionError(f"{name} answers {got} where predict gives {e}")
                res["http"] += _measure_server(
                    server, bodies, args,
                    lambda gap=0.0: _predict1_times(model, seqs, min(args.duration, 1.0), gap))
            finally:
                server.stop()

    def point(server: str, c: int) -> dict[str, Any] | None:
        return next((q for q in res["http"] if q["server"] == server and q["concurrency"] == c
                     and q["mode"] == "closed"), None)

    ours, torch_, one = point("rnninfer serve", 64), point("PyTorch + FastAPI", 64), point("rnninfer serve", 1)
    bare = point("bare uvicorn", 1)
    summary: dict[str, Any] = {}
    if ours and torch_ and torch_["throughput_rps"] > 0:
        summary["speedup_vs_torch_c64"] = ours["throughput_rps"] / torch_["throughput_rps"]
        summary["p99_rnninfer_c64"], summary["p99_torch_c64"] = ours["p99_ms"], torch_["p99_ms"]
    if one and one["p50_ms"]:
        summary["c1_p50_ms"] = one["p50_ms"]
        summary["c1_predict1_ms"] = one.get("predict1_ms", res["in_process"]["median_predict1_ms"])
        summary["overhead_c1_us"] = (one["p50_ms"] - summary["c1_predict1_ms"]) * 1e3
        if "predict1_spaced_ms" in one:
            summary["c1_predict1_spaced_ms"] = one["predict1_spaced_ms"]
            summary["overhead_c1_spaced_us"] = (one["p50_ms"] - one["predict1_spaced_ms"]) * 1e3
        if bare and bare["p50_ms"]:
            summary["c1_bare_p50_us"] = bare["p50_ms"] * 1e3
            summary["overhead_c1_beyond_bare_us"] = summary["overhead_c1_us"] - bare["p50_ms"] * 1e3
        if "inline_calls" in one:
            summary["c1_inline_fraction"] = one["inline_calls"] / max(one["engine_calls"], 1)
    res["summary"] = summary
    md = markdown(res)
    print(md)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".json").write_text(json.dumps(res, indent=1))
        out.with_suffix(".md").write_text(md)
        if plot(res, out.with_suffix(".png")):
            print(f"wrote {out}.json, .md, .png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
