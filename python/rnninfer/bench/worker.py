"""Worker processes: each hosts the engines of one framework at one thread count.

:class:`Worker` is the runner's handle on one; :func:`main` is the process itself
(``python -m rnninfer.bench.worker GROUP THREADS``).

The runner starts one worker per (framework group, thread count) so
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
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import IO, Any, BinaryIO

import numpy as np

from . import peers


# ---- the runner's side -------------------------------------------------------------------------
class WorkerDied(RuntimeError):
    """A worker process exited or broke the protocol."""


class Worker:
    """One framework group at one thread count, in its own process."""

    def __init__(self, group: str, threads: int, rnninfer_root: str, log_dir: Path) -> None:
        self.group, self.threads = group, threads
        env = dict(os.environ)
        env.update(peers.thread_env(threads))
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (rnninfer_root, os.environ.get("PYTHONPATH", "")) if p
        )
        self.log_path = log_dir / f"worker-{group}-t{threads}.log"
        self._log: IO[bytes] = open(self.log_path, "wb")  # noqa: SIM115 (lives as long as the worker)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rnninfer.bench.worker", group, str(threads)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, env=env,
        )
        ready = self._recv()
        if not ready.get("ok"):
            self.close()
            raise WorkerDied(f"{group} worker could not start: {ready.get('error')}")

    def _recv(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        try:
            reply: dict[str, Any] = pickle.load(self.proc.stdout)
        except (EOFError, pickle.UnpicklingError, OSError) as e:
            raise WorkerDied(f"{self.group} worker (threads={self.threads}) died: {self.log_tail()}") from e
        return reply

    def call(self, op: str, **kw: Any) -> dict[str, Any]:
        """Send one request; raises :class:`WorkerDied` or ``RuntimeError`` on failure."""
        assert self.proc.stdin is not None
        try:
            pickle.dump({"op": op, **kw}, self.proc.stdin, protocol=pickle.HIGHEST_PROTOCOL)
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError) as e:
            raise WorkerDied(f"{self.group} worker died: {self.log_tail()}") from e
        reply = self._recv()
        if not reply.get("ok"):
            raise RuntimeError(f"{self.group} worker: {reply.get('error')}\n{reply.get('traceback', '')}")
        return reply

    def log_tail(self, n: int = 1500) -> str:
        self._log.flush()
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return "(no log)"

    def close(self) -> None:
        """Ask the worker to quit; kill it (by pid) if it does not."""
        try:
            if self.proc.poll() is None and self.proc.stdin is not None:
                pickle.dump({"op": "quit"}, self.proc.stdin)
                self.proc.stdin.flush()
                self.proc.stdin.close()
            self.proc.wait(timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()


# ---- the worker process --------------------------------------------------------------------------
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
