"""Worker process: hosts the engines of one framework at one thread count.

``runner.py`` starts one worker per (framework group, thread count) so
that every framework sizes its thread pools before it initialises (TensorFlow
cannot change them later) and no two frameworks' pools compete inside one
process. The protocol is pickled dicts: requests on stdin, replies on the
original stdout; the worker points its fd 1 at stderr first, so a library
printing to stdout cannot corrupt the protocol.

Requests (``op``): ``hello``; ``load`` (spec JSON + tensors ``.npz`` path +
engine names: prepares each, reports per-engine success); ``eval`` (one call,
returns the output); ``set_input`` (the timed input; warm-up calls, returns
the estimated latency and the first output of each engine); ``time`` (``n``
timed calls of one engine, returns nanoseconds and, for rnninfer, what its
scheduler did in those calls); ``quit``.
"""

from __future__ import annotations

import gc
import os
import pickle
import sys
import time
import traceback
from typing import Any, BinaryIO

import numpy as np

from rnninfer.bench import peers


class _State:
    def __init__(self, group: str, threads: int) -> None:
        self.group = group
        self.threads = threads
        self.engines: dict[str, peers.Prepared] = {}
        self.x: np.ndarray | None = None


def _timed_calls(run: peers.RunFn, x: np.ndarray, n: int) -> list[int]:
    """``n`` back-to-back calls, each timed; the garbage collector is paused meanwhile."""
    out = [0] * n
    gc.collect()
    gc.disable()
    try:
        for i in range(n):
            t0 = time.perf_counter_ns()
            run(x)
            out[i] = time.perf_counter_ns() - t0
    finally:
        gc.enable()
    return out


def _handle(state: _State, msg: dict[str, Any]) -> dict[str, Any]:
    op = msg["op"]
    if op == "hello":
        return {"pid": os.getpid()}
    if op == "load":
        from rnninfer.format.manifest import ModelSpec

        spec = ModelSpec.from_json_dict(msg["spec"])
        with np.load(msg["tensors"], allow_pickle=False) as z:
            tensors = {k: z[k] for k in z.files}
        state.engines.clear()
        gc.collect()
        report: dict[str, Any] = {}
        for name in msg["engines"]:
            t0 = time.perf_counter()
            try:
                prepared = peers.get(name).prepare(spec, tensors, state.threads)
            except Exception as e:  # noqa: BLE001 (any framework failure is reported, not fatal)
                report[name] = {"ok": False, "error": f"{type(e).__name__}: {e}",
                                "unsupported": isinstance(e, peers.Unsupported),
                                "traceback": traceback.format_exc()}
                continue
            state.engines[name] = prepared
            report[name] = {"ok": True, "version": prepared.version,
                            "prepare_s": time.perf_counter() - t0}
        return {"engines": report}
    if op == "eval":
        return {"out": np.asarray(state.engines[msg["engine"]].run(msg["x"]))}
    if op == "set_input":
        state.x = msg["x"]
        result: dict[str, Any] = {}
        for name, prepared in state.engines.items():
            try:
                t0 = time.perf_counter_ns()
                first = np.asarray(prepared.run(state.x))  # may compile (XLA) or allocate
                first_ns = time.perf_counter_ns() - t0
                limit_ns = msg["max_call_s"] * 1e9
                warm = _timed_calls(prepared.run, state.x, msg["warmup"]) if first_ns < limit_ns else []
                est = float(np.median(warm)) if warm else float(first_ns)
                result[name] = {"ok": True, "out": first, "first_ns": first_ns, "est_ns": est}
            except Exception as e:  # noqa: BLE001 (any framework failure is reported, not fatal)
                result[name] = {"ok": False, "error": f"{type(e).__name__}: {e}",
                                "traceback": traceback.format_exc()}
        return {"engines": result}
    if op == "time":
        assert state.x is not None
        prepared = state.engines[msg["engine"]]
        before = prepared.schedule() if prepared.schedule is not None else None
        reply: dict[str, Any] = {"ns": _timed_calls(prepared.run, state.x, int(msg["n"]))}
        if before is not None and prepared.schedule is not None:
            after = prepared.schedule()
            reply["schedule"] = {k: after[k] - before.get(k, 0) for k in after}
        return reply
    raise ValueError(f"unknown op {op!r}")


def main() -> int:
    """Serve requests until ``quit`` or end of input."""
    group, threads = sys.argv[1], int(sys.argv[2])
    proto_in: BinaryIO = sys.stdin.buffer
    proto_out: BinaryIO = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # stray prints from libraries go to stderr, never into the protocol
    sys.stdout = sys.stderr
    state = _State(group, threads)
    try:
        peers.setup_process(group, threads)
        ready: dict[str, Any] = {"ok": True}
    except Exception as e:  # noqa: BLE001 (any framework failure is reported, not fatal)
        ready = {"ok": False, "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
    pickle.dump(ready, proto_out)
    proto_out.flush()
    while True:
        try:
            msg = pickle.load(proto_in)
        except EOFError:
            return 0
        if msg.get("op") == "quit":
            return 0
        try:
            reply = {"ok": True, **_handle(state, msg)}
        except Exception as e:  # noqa: BLE001 (any framework failure is reported, not fatal)
            reply = {"ok": False, "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
        pickle.dump(reply, proto_out)
        proto_out.flush()


if __name__ == "__main__":
    raise SystemExit(main())
