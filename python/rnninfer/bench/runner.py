"""Latency and throughput of ``predict``: rnninfer against PyTorch, ONNX Runtime and Keras.

Usage::

    python -m rnninfer.bench --headline            # SPEC §6 headline (default)
    python -m rnninfer.bench --quick --threads 1   # small grid slice
    python -m rnninfer.bench --grid --rounds 10    # the whole grid (hours)
    python -m rnninfer.bench --engines rnninfer,pytorch --out bench/results/mine

Protocol (SPEC §6): every engine runs in the same run, on the same machine,
the same model with the same weights, the same input and the same thread
count. Each framework lives in its own worker process per thread count (see
``_worker.py``), all alive for the whole run. Before timing, every engine's output is checked against the
float64 reference (``rnninfer.reference``) on a small batch and on the first
and last rows of the timed batch; an engine that disagrees by more than
``1e-4`` is reported, never timed. Timing is done in interleaved rounds: in
each round every engine, at every thread count of the run, makes a calibrated
number of back-to-back calls (about ``--round-ms`` of work), in a rotating
order, with a pause between engines so one framework's spinning thread pool does not steal from the next
(PyTorch's OpenMP workers keep spinning for several milliseconds after a call;
with 0-5 ms pauses they set rnninfer's 2-thread p99 at batch 1 to ~4.6 ms
instead of ~0.8 ms, hence 50 ms). Timing the thread counts in the same rounds
matters on a shared machine: the host's slow and fast phases last minutes
(the headline batch-64 call at 1 thread moved between 36 and 45 ms within an
hour here), so 1- and 2-thread cases timed one after the other, as this
runner did before, could show any thread speedup. Per-call latencies from all rounds give median, p99 and
throughput. The machine limit comes from ``machine.py``, measured in the same
run. Results go to ``<out>.json``, ``<out>.md`` and ``<out>.png``.

:func:`run_headline` is what ``rnninfer bench`` calls; :func:`run_spec`
benchmarks any model given as a spec and tensors.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import json
import os
import pickle
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

from . import cases as bench_cases
from . import machine as bench_machine
from . import peers


def results_dir() -> Path:
    """Where results go by default: ``bench/results`` in a source checkout, else ``./rnninfer-bench``."""
    here = Path.cwd() / "bench" / "results"
    return here if here.is_dir() else Path.cwd() / "rnninfer-bench"

SCHEMA = "rnninfer-bench-predict/1"
_SMALL_BATCH, _SMALL_T = 2, 12


def _rnninfer_root() -> str:
    """Directory holding the ``rnninfer`` package, for the workers' import path."""
    import rnninfer

    return str(Path(rnninfer.__file__).resolve().parent.parent)


# ---- progress --------------------------------------------------------------------------------
class _Progress:
    """tqdm when installed, otherwise a plain text progress line on stderr."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.done, self.enabled = total, 0, enabled
        self._bar: Any = None
        self._last = -1.0
        if enabled:
            try:
                from tqdm import tqdm

                self._bar = tqdm(total=total, unit="round", dynamic_ncols=True, file=sys.stderr)
            except ImportError:
                self._bar = None

    def describe(self, text: str) -> None:
        if self._bar is not None:
            self._bar.set_description(text)
        elif self.enabled:
            print(f"[bench] {text}", file=sys.stderr, flush=True)

    def update(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
        elif self.enabled:
            frac = self.done / max(1, self.total)
            if frac - self._last >= 0.1 or self.done == self.total:
                self._last = frac
                print(f"[bench] {self.done}/{self.total} rounds ({100 * frac:.0f} %)", file=sys.stderr, flush=True)

    def write(self, text: str) -> None:
        if self._bar is not None:
            self._bar.write(text, file=sys.stderr)
        elif self.enabled:
            print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


# ---- workers ---------------------------------------------------------------------------------
class WorkerDied(RuntimeError):
    """A worker process exited or broke the protocol."""


class _Worker:
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
            [sys.executable, "-m", "rnninfer.bench._worker", group, str(threads)],
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


# ---- what is benchmarked ------------------------------------------------------------------------
@dataclasses.dataclass
class Item:
    """One model at one call shape: what a row group of the results describes."""

    name: str
    model_label: str
    model_key: Any
    spec_fn: Callable[[], Any]
    tensors_fn: Callable[[Any], dict[str, np.ndarray]]
    T: int
    batch: int
    threads: int
    case: dict[str, Any]


def items_from_cases(case_list: Iterable[bench_cases.Case], seed: int = 0) -> list[Item]:
    """Wrap :class:`cases.Case` objects (random weights drawn from ``seed``)."""
    from rnninfer.layers import random_tensors

    out = []
    for c in case_list:
        out.append(Item(
            name=c.name, model_label=c.model_label, model_key=c.model_key(), spec_fn=c.spec,
            tensors_fn=lambda spec: random_tensors(spec, seed), T=c.T, batch=c.batch,
            threads=c.threads, case=c.to_dict(),
        ))
    return out


def _summary(ns: Sequence[int], batch: int) -> dict[str, float]:
    a = np.asarray(ns, dtype=np.float64) / 1e6
    med = float(np.median(a))
    return {
        "n": int(a.size), "median_ms": med, "p99_ms": float(np.percentile(a, 99)),
        "p90_ms": float(np.percentile(a, 90)), "mean_ms": float(a.mean()), "min_ms": float(a.min()),
        "max_ms": float(a.max()), "throughput_seq_s": batch / (med / 1e3),
    }


def run_items(
    items: Sequence[Item],
    *,
    engines: Sequence[str] | None = None,
    rounds: int = 20,
    round_ms: float = 100.0,
    pause_ms: float = 50.0,
    warmup: int = 3,
    max_call_s: float = 10.0,
    seed: int = 0,
    progress: bool = True,
    keep_samples: bool = False,
    mode: str = "custom",
) -> dict[str, Any]:
    """Benchmark ``items`` with every available engine; returns the results document."""
    rnninfer_root = _rnninfer_root()
    wanted = [peers.get(n) for n in (engines or peers.PEER_NAMES)]
    available: list[peers.Peer] = []
    skipped: dict[str, str] = {}
    for p in wanted:
        miss = p.missing()
        if miss:
            skipped[p.name] = f"not installed ({', '.join(miss)})"
        else:
            available.append(p)
    prog = _Progress(total=len(items) * rounds, enabled=progress)
    for name, why in skipped.items():
        prog.write(f"skipping {name}: {why}")

    # machine: bandwidth at the per-core share of every layer's recurrent weights
    sizes = set(bench_machine.SWEEP_SIZES)
    specs: dict[Any, Any] = {}
    for it in items:
        if it.model_key not in specs:
            specs[it.model_key] = it.spec_fn()
        for nbytes in bench_machine.recurrent_bytes(specs[it.model_key]):
            sizes.add(max(4096, nbytes // it.threads // 4096 * 4096))
    prog.describe("measuring machine")
    thread_counts = sorted({it.threads for it in items})
    machine = bench_machine.measure(thread_counts, sorted(sizes))

    results: dict[int, dict[str, Any]] = {}
    engine_versions: dict[str, str] = {}
    log_dir = Path(tempfile.mkdtemp(prefix="rnninfer-bench-"))
    rng = np.random.default_rng(seed)
    # One worker per framework group and thread count, all alive for the whole
    # run: a model's cases at every thread count are timed in the same rounds.
    workers: dict[tuple[str, int], _Worker | str] = {}
    try:
        try:
            by_model: dict[Any, list[int]] = {}
            for i, it in enumerate(items):
                by_model.setdefault(it.model_key, []).append(i)
            for key, idxs in by_model.items():
                done = _run_model(
                    specs[key], [items[i] for i in idxs], available, skipped, workers, rnninfer_root, log_dir,
                    machine, engine_versions, prog, rng,
                    rounds=rounds, round_ms=round_ms, pause_ms=pause_ms, warmup=warmup,
                    max_call_s=max_call_s, keep_samples=keep_samples,
                )
                results.update(zip(idxs, done))
        finally:
            for w in workers.values():
                if isinstance(w, _Worker):
                    w.close()
        prog.describe("measuring machine again")
        machine = bench_machine.merge(machine, bench_machine.measure(thread_counts, sorted(sizes)))
        for i, result in results.items():
            _apply_limit(result, specs[items[i].model_key], machine)
    finally:
        prog.close()
    rn = engine_versions.get("rnninfer", "")
    return {
        "schema": SCHEMA,
        "mode": mode,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": sys.argv,
        "settings": {"rounds": rounds, "round_ms": round_ms, "pause_ms": pause_ms, "warmup": warmup,
                     "check_tolerance": peers.CHECK_TOLERANCE, "seed": seed},
        "rnninfer": {"version": rn, "isa": rn[rn.find("(") + 1: rn.find(")")] if "(" in rn else None,
                     "RNNINFER_ISA": os.environ.get("RNNINFER_ISA")},
        "engines": engine_versions,
        "skipped_engines": skipped,
        "machine": machine,
        "cases": [results[i] for i in _report_order(items)],
        "worker_logs": str(log_dir),
    }


def _report_order(items: Sequence[Item]) -> list[int]:
    """Indices of ``items`` in report order: thread count, then model, then the given order."""
    first: dict[Any, int] = {}
    for i, it in enumerate(items):
        first.setdefault(it.model_key, i)
    return sorted(range(len(items)), key=lambda i: (items[i].threads, first[items[i].model_key], i))


def _prepare(
    spec: Any, tensors_path: str, tensors: Mapping[str, np.ndarray], small: np.ndarray, small_ref: np.ndarray,
    available: Sequence[peers.Peer], skipped: Mapping[str, str], workers: dict[tuple[str, int], _Worker | str],
    threads: int, rnninfer_root: str, log_dir: Path, engine_versions: dict[str, str], prog: _Progress,
) -> tuple[dict[str, dict[str, Any]], dict[str, _Worker]]:
    """Load one model into every framework's worker for ``threads`` and check its output."""
    status: dict[str, dict[str, Any]] = {n: {"status": "skipped", "reason": why} for n, why in skipped.items()}
    active: dict[str, _Worker] = {}
    for group in dict.fromkeys(p.group for p in available):
        names = [p.name for p in available if p.group == group]
        w = workers.get((group, threads))
        if w is None:
            try:
                w = _Worker(group, threads, rnninfer_root, log_dir)
            except WorkerDied as e:
                w = str(e)
            workers[(group, threads)] = w
        if isinstance(w, str):
            for n in names:
                status[n] = {"status": "failed", "reason": w}
            continue
        try:
            rep = w.call("load", spec=spec.to_json_dict(), tensors=tensors_path, engines=names)["engines"]
        except (WorkerDied, RuntimeError) as e:
            for n in names:
                status[n] = {"status": "failed", "reason": str(e)[:2000]}
            continue
        for n in names:
            r = rep[n]
            if not r["ok"]:
                kind = "unsupported" if r.get("unsupported") else "failed"
                status[n] = {"status": kind, "reason": r["error"]}
                prog.write(f"{n} (threads={threads}): {kind}: {r['error']}")
                continue
            engine_versions[n] = r["version"]
            try:
                def call_eval(x: np.ndarray, n: str = n, w: _Worker = w) -> np.ndarray:
                    return np.asarray(w.call("eval", engine=n, x=x)["out"])

                err = peers.check(call_eval, spec, tensors, small, ref=small_ref, tol=peers.get(n).tolerance)
            except (peers.WrongOutput, RuntimeError, WorkerDied) as e:
                status[n] = {"status": "wrong output", "reason": str(e)[:2000]}
                prog.write(f"{n} (threads={threads}): NOT TIMED, wrong output on the check batch: {e}")
                continue
            status[n] = {"status": "ok", "version": r["version"], "prepare_s": r["prepare_s"],
                         "check_max_abs_err": err}
            active[n] = w
    return status, active


def _run_model(
    spec: Any, group_items: Sequence[Item], available: Sequence[peers.Peer], skipped: Mapping[str, str],
    workers: dict[tuple[str, int], _Worker | str], rnninfer_root: str, log_dir: Path,
    machine: Mapping[str, Any], engine_versions: dict[str, str], prog: _Progress,
    rng: np.random.Generator, *, rounds: int, round_ms: float, pause_ms: float, warmup: int,
    max_call_s: float, keep_samples: bool,
) -> list[dict[str, Any]]:
    """Prepare one model in every worker (each thread count), then time each of
    its call shapes, all thread counts in the same interleaved rounds."""
    label = group_items[0].model_label
    prog.describe(f"{label}: preparing")
    tensors = group_items[0].tensors_fn(spec)
    status: dict[int, dict[str, dict[str, Any]]] = {}
    active: dict[int, dict[str, _Worker]] = {}
    with tempfile.TemporaryDirectory(prefix="rnninfer-bench-model-") as tmp:
        path = os.path.join(tmp, "tensors.npz")
        np.savez(path, **tensors)  # type: ignore[arg-type]
        small = peers.sample_input(spec, _SMALL_BATCH, min(_SMALL_T, group_items[0].T), int(rng.integers(1 << 31)))
        small_ref = peers.reference_outputs(spec, tensors, small)
        for threads in sorted({it.threads for it in group_items}):
            status[threads], active[threads] = _prepare(
                spec, path, tensors, small, small_ref, available, skipped, workers, threads, rnninfer_root,
                log_dir, engine_versions, prog)
    shapes: dict[tuple[int, int], list[int]] = {}
    for i, it in enumerate(group_items):
        shapes.setdefault((it.batch, it.T), []).append(i)
    out: dict[int, dict[str, Any]] = {}
    for idxs in shapes.values():
        its = [group_items[i] for i in idxs]
        out.update(zip(idxs, _run_shape(its, spec, tensors, status, active, prog, rng, rounds=rounds,
                                        round_ms=round_ms, pause_ms=pause_ms, warmup=warmup,
                                        max_call_s=max_call_s, keep_samples=keep_samples)))
    return [out[i] for i in range(len(group_items))]


def _run_shape(
    its: Sequence[Item], spec: Any, tensors: Mapping[str, np.ndarray],
    model_status: Mapping[int, Mapping[str, dict[str, Any]]], active: Mapping[int, Mapping[str, _Worker]],
    prog: _Progress, rng: np.random.Generator,
    *, rounds: int, round_ms: float, pause_ms: float, warmup: int, max_call_s: float, keep_samples: bool,
) -> list[dict[str, Any]]:
    """Interleaved timing rounds of every active engine, at every thread count of
    ``its`` (one model, one batch size and length), on the same input.

    Every round times each (engine, threads) pair once, in a rotating order, so
    an engine's speedup from more threads compares calls made seconds apart,
    not minutes: the host's slow and fast phases then fall on both sides.
    """
    it0 = its[0]
    prog.describe(f"{it0.name}: warm-up")
    status = {it.threads: {n: dict(s) for n, s in model_status[it.threads].items()} for it in its}
    x = peers.sample_input(spec, it0.batch, it0.T, int(rng.integers(1 << 31)))
    rows = sorted({0, it0.batch - 1})
    ref = peers.reference_outputs(spec, tensors, x, rows)
    calls: dict[tuple[str, int], int] = {}
    for it in its:
        t, act = it.threads, active[it.threads]
        for w in dict.fromkeys(act.values()):
            names = [n for n, ww in act.items() if ww is w]
            try:
                rep = w.call("set_input", x=x, warmup=warmup, max_call_s=max_call_s)["engines"]
            except (WorkerDied, RuntimeError) as e:
                for n in names:
                    status[t][n].update(status="failed", reason=str(e)[:2000])
                continue
            for n in names:
                r = rep[n]
                if not r["ok"]:
                    status[t][n].update(status="failed", reason=r["error"])
                    continue
                err = peers.max_abs_error(np.asarray(r["out"])[rows], ref)
                status[t][n]["timed_check_max_abs_err"] = err
                if not err <= peers.get(n).tolerance:
                    status[t][n].update(status="wrong output", reason=f"timed batch rows {rows}: max error {err:.3g}")
                    prog.write(f"{n}: NOT TIMED on {it.name}: wrong output (error {err:.3g})")
                    continue
                if r["est_ns"] > max_call_s * 1e9:
                    status[t][n].update(status="too slow", reason=f"one call takes {r['est_ns'] / 1e9:.1f} s")
                    continue
                calls[(n, t)] = int(np.clip(round(round_ms * 1e6 / max(r["est_ns"], 1.0)), 1, 10000))
    samples: dict[tuple[str, int], list[int]] = {k: [] for k in calls}
    schedule: dict[tuple[str, int], dict[str, int]] = {}
    order = list(calls)
    prog.describe(it0.name.rsplit("-t", 1)[0] if len(its) > 1 else it0.name)
    for r_i in range(rounds):
        k = r_i % max(1, len(order))
        for key in order[k:] + order[:k]:
            if key not in samples:
                continue
            n, t = key
            try:
                rep = active[t][n].call("time", engine=n, n=calls[key])
                samples[key] += rep["ns"]
                if "schedule" in rep:
                    acc = schedule.setdefault(key, {})
                    for k, v in rep["schedule"].items():
                        acc[k] = acc.get(k, 0) + v
            except (WorkerDied, RuntimeError) as e:
                status[t][n].update(status="failed", reason=f"during timing: {str(e)[:2000]}")
                del samples[key]
            time.sleep(pause_ms / 1e3)
        prog.update(len(its))
    for (n, t), ns in samples.items():
        if not ns:
            continue
        st = status[t][n]
        st.update(_summary(ns, it0.batch))
        st["calls_per_round"] = calls[(n, t)]
        if (n, t) in schedule:
            st["schedule"] = schedule[(n, t)]
        if keep_samples:
            st["samples_ns"] = list(ns)
    return [{
        "name": it.name, "model": it.model_label, "T": it.T, "batch": it.batch, "threads": it.threads,
        "case": it.case, "recurrent_weight_bytes": bench_machine.recurrent_bytes(spec),
        "engines": status[it.threads],
    } for it in its]


def _apply_limit(result: dict[str, Any], spec: Any, machine: Mapping[str, Any]) -> None:
    """Add the machine limit, each engine's fraction of it and the speedups to one case result."""
    limit = bench_machine.machine_limit(spec, result["T"], result["batch"], result["threads"], machine)
    result["limit"] = {**limit, "ms": limit["seconds"] * 1e3}
    status = result["engines"]
    for st in status.values():
        if "median_ms" in st:
            st["pct_of_limit"] = 100.0 * result["limit"]["ms"] / st["median_ms"]
    base = status.get("rnninfer", {}).get("median_ms")
    base_p99 = status.get("rnninfer", {}).get("p99_ms")
    for n, st in status.items():
        if base and "median_ms" in st and n != "rnninfer":
            st["rnninfer_speedup"] = st["median_ms"] / base
            st["rnninfer_speedup_p99"] = st["p99_ms"] / base_p99 if base_p99 else None


# ---- reports ---------------------------------------------------------------------------------------
def _fmt(v: Any, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def markdown(res: Mapping[str, Any]) -> str:
    """The results as a Markdown report (header, machine, one table row per case and engine)."""
    m = res["machine"]
    cpu = m["cpu"]
    lines = [
        f"# rnninfer predict benchmark ({res['mode']})", "",
        (f"- run: {res['created']}; rounds {res['settings']['rounds']} x ~{res['settings']['round_ms']:g} ms "
         f"per engine, interleaved; check tolerance {res['settings']['check_tolerance']:g}"),
        (f"- CPU: {cpu.get('model_name')} (family {cpu.get('cpu_family')}, model {cpu.get('model')}), "
         f"{cpu.get('usable_cpus')} usable cores, SIMD {' '.join(cpu.get('simd_flags', []))}"
         + (" (virtual machine)" if cpu.get("hypervisor") else "")),
        f"- rnninfer: {res['rnninfer']['version'] or 'not run'}",
    ]
    for n, v in res["engines"].items():
        if n != "rnninfer":
            lines.append(f"- {n}: {v}")
    for n, why in res["skipped_engines"].items():
        lines.append(f"- {n}: skipped, {why}")
    bw = m["bandwidth"]
    bw_txt = ", ".join(f"{int(k) // 1024} KiB {v['best'] / 1e9:.0f}" for k, v in
                       sorted(bw.items(), key=lambda kv: int(kv[0])))
    peak_txt = ", ".join(f"{k} thr {v['best'] / 1e9:.0f}" for k, v in m["peak"].items())
    lines += [
        f"- measured single-core read bandwidth (GB/s, numpy best-of): {bw_txt}",
        f"- measured fp32 sgemm peak (GFLOP/s): {peak_txt}",
        "",
        ("Columns: median / p99 = per-call latency; seq/s = batch / median; "
         "speedup = this engine's median / rnninfer's median (>1: rnninfer faster); "
         "limit = machine lower bound for the call (see bench/README.md); "
         "% limit = limit / median; n = timed calls."),
        "",
        "| case | engine | median ms | p99 ms | seq/s | rnninfer speedup | limit ms | % limit | n | max err |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for c in res["cases"]:
        for n, st in c["engines"].items():
            if "median_ms" in st:
                err = max(st.get("check_max_abs_err", 0.0), st.get("timed_check_max_abs_err", 0.0))
                lines.append(
                    f"| {c['name']} | {n} | {st['median_ms']:.3f} | {st['p99_ms']:.3f} | "
                    f"{st['throughput_seq_s']:.0f} | {_fmt(st.get('rnninfer_speedup'), '.2f')} | "
                    f"{c['limit']['ms']:.3f} | {st['pct_of_limit']:.0f} % | {st['n']} | {err:.1e} |"
                )
            elif st.get("status") != "skipped":
                lines.append(f"| {c['name']} | {n} | {st.get('status')}: {str(st.get('reason', ''))[:120]} "
                             "| | | | | | | |")
    lines.append("")
    lines += schedule_lines(res)
    lines += scaling_lines(res)
    return "\n".join(lines)


_PLAN_COLUMNS = (("split", "split"), ("split_late", "split, joined late"), ("split_alone", "split, ran alone"),
                 ("wavefront", "wavefront"), ("shards", "shards"), ("one_thread", "one thread"),
                 ("held_off", "held off"), ("backoffs", "back-offs"))


def schedule_lines(res: Mapping[str, Any]) -> list[str]:
    """How rnninfer's scheduler ran the timed multi-threaded calls (plan kinds,
    split back-offs), one row per case: which plan a median came from."""
    rows = [(c["name"], c["engines"]["rnninfer"]["schedule"]) for c in res["cases"]
            if c["threads"] > 1 and "schedule" in c["engines"].get("rnninfer", {})]
    if not rows:
        return []
    lines = ["## rnninfer's plans in the timed calls", "",
             ("Calls per plan kind (split: threads split every layer's hidden units, joined late: the caller ran "
              "the first units alone while a worker woke; held off: planned without split plans after threads "
              "were held up at step barriers; back-offs: how often that began). See docs/engine.md."), "",
             "| case | calls | " + " | ".join(t for _, t in _PLAN_COLUMNS) + " |",
             "| --- | ---: | " + " | ".join("---:" for _ in _PLAN_COLUMNS) + " |"]
    for name, sched in rows:
        lines.append(f"| {name} | {sched.get('calls', 0)} | "
                     + " | ".join(str(sched.get(k, 0)) for k, _ in _PLAN_COLUMNS) + " |")
    return [*lines, ""]


def scaling_rows(res: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Same-run thread scaling: every case timed at 1 thread and at more, per engine.

    One row per (case at ``n > 1`` threads, engine) whose 1-thread twin (same
    model, ``T`` and batch) was timed too: medians and p99 at both counts, the
    speedup of the medians, and rnninfer's speedup over the engine at ``n``.
    """
    by_key = {(c["model"], c["T"], c["batch"], c["threads"]): c for c in res["cases"]}
    rows = []
    for c in res["cases"]:
        if c["threads"] == 1:
            continue
        one = by_key.get((c["model"], c["T"], c["batch"], 1))
        if one is None:
            continue
        ours = c["engines"].get("rnninfer", {}).get("median_ms")
        for n, st in c["engines"].items():
            st1 = one["engines"].get(n, {})
            if "median_ms" not in st or "median_ms" not in st1:
                continue
            rows.append({
                "model": c["model"], "T": c["T"], "batch": c["batch"], "threads": c["threads"], "engine": n,
                "median_1t_ms": st1["median_ms"], "p99_1t_ms": st1["p99_ms"],
                "median_ms": st["median_ms"], "p99_ms": st["p99_ms"],
                "speedup": st1["median_ms"] / st["median_ms"],
                "rnninfer_vs_engine": (st["median_ms"] / ours) if ours and n != "rnninfer" else None,
            })
    return rows


def scaling_lines(res: Mapping[str, Any]) -> list[str]:
    """The Markdown section for :func:`scaling_rows` (empty when no case ran at 1 and more threads)."""
    rows = scaling_rows(res)
    if not rows:
        return []
    lines = [
        "## Thread scaling (same run)", "",
        ("speedup = median at 1 thread / median at n threads; vs rnninfer = this engine's median / "
         "rnninfer's median at n threads."), "",
        ("| model | T | batch | n | engine | 1 thread median / p99 ms | n threads median / p99 ms | speedup "
         "| vs rnninfer |"),
        "| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['T']} | {r['batch']} | {r['threads']} | {r['engine']} | "
            f"{r['median_1t_ms']:.3f} / {r['p99_1t_ms']:.3f} | {r['median_ms']:.3f} / {r['p99_ms']:.3f} | "
            f"{r['speedup']:.2f}x | {_fmt(r['rnninfer_vs_engine'], '.2f')} |"
        )
    lines.append("")
    return lines


def plot(res: Mapping[str, Any], path: Path) -> bool:
    """Save a PNG: grouped bars (median, p99 whisker, limit mark) or, for many cases, speedups."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    cases = res["cases"]
    names = list(dict.fromkeys(n for c in cases for n, st in c["engines"].items() if "median_ms" in st))
    if not cases or not names:
        return False
    fig, ax = plt.subplots(figsize=(max(7.0, 1.6 * len(cases) + 2), 4.8))
    if len(cases) <= 16:
        width = 0.8 / len(names)
        for j, n in enumerate(names):
            xs, med, lo, hi = [], [], [], []
            for i, c in enumerate(cases):
                st = c["engines"].get(n, {})
                if "median_ms" in st:
                    xs.append(i + (j - (len(names) - 1) / 2) * width)
                    med.append(st["median_ms"])
                    lo.append(0.0)
                    hi.append(st["p99_ms"] - st["median_ms"])
            ax.bar(xs, med, width, yerr=[lo, hi], capsize=2, label=n)
        for i, c in enumerate(cases):
            ax.hlines(c["limit"]["ms"], i - 0.42, i + 0.42, colors="k", linestyles="dashed", linewidth=1)
        ax.set_xticks(range(len(cases)))
        ax.set_xticklabels([c["name"].split("-", 2)[-1] for c in cases], rotation=20, ha="right")
        ax.set_ylabel("latency per call, ms (median, whisker to p99; dashed: machine limit)")
    else:
        for n in names:
            if n == "rnninfer":
                continue
            ys = [c["engines"].get(n, {}).get("rnninfer_speedup", np.nan) for c in cases]
            ax.plot(range(len(cases)), ys, marker="o", linestyle="", label=n)
        ax.axhline(1.0, color="k", linewidth=1)
        ax.set_xlabel("case index (see the .md table)")
        ax.set_ylabel("peer median / rnninfer median")
    ax.set_yscale("log")
    ax.set_title(f"rnninfer predict ({res['mode']}): {res['machine']['cpu'].get('model_name')}, "
                 f"{res['rnninfer']['version']}", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def write_results(res: dict[str, Any], out: str | os.PathLike[str]) -> dict[str, str]:
    """Write ``<out>.json``, ``<out>.md`` and ``<out>.png``; returns their paths."""
    base = Path(out)
    base.parent.mkdir(parents=True, exist_ok=True)
    paths = {"json": str(base.with_suffix(".json")), "md": str(base.with_suffix(".md"))}
    res["outputs"] = paths
    Path(paths["md"]).write_text(markdown(res))
    png = base.with_suffix(".png")
    if plot(res, png):
        paths["png"] = str(png)
    Path(paths["json"]).write_text(json.dumps(res, indent=1, default=float) + "\n")
    return paths


def _default_out(mode: str) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return results_dir() / f"{mode}-{stamp}"


# ---- entry points ----------------------------------------------------------------------------------
def run_cases(
    case_list: Sequence[bench_cases.Case], *, out: str | os.PathLike[str] | None = None, mode: str = "custom",
    **kw: Any,
) -> dict[str, Any]:
    """Benchmark :class:`cases.Case` objects and write the result files (``out`` prefix)."""
    res = run_items(items_from_cases(case_list, seed=kw.get("seed", 0)), mode=mode, **kw)
    res["paths"] = write_results(res, out if out is not None else _default_out(mode))
    return res


def run_headline(
    progress: bool = True, *, threads: Sequence[int] = (1, 2), rounds: int = 20,
    engines: Sequence[str] | None = None, out: str | os.PathLike[str] | None = None, **kw: Any,
) -> dict[str, Any]:
    """SPEC §6 headline: Embedding(20000,128) -> 2 x LSTM(256) -> Dense(1, sigmoid), T=64.

    Batch 1 and 64, each thread count, rnninfer and every installed peer (none
    is required). Writes ``bench/results/headline-<time>.{json,md,png}`` (or
    ``out``) and returns the results document; ``res["paths"]`` names the
    files and :func:`markdown` renders the table.
    """
    return run_cases(bench_cases.headline(threads), out=out, mode="headline", progress=progress,
                     rounds=rounds, engines=engines, keep_samples=True, **kw)


def run_spec(
    spec: Any, tensors: Mapping[str, np.ndarray], *, T: int = 64, batches: Sequence[int] = (1, 64),
    threads: Sequence[int] = (1,), out: str | os.PathLike[str] | None = None, label: str | None = None,
    **kw: Any,
) -> dict[str, Any]:
    """Benchmark an arbitrary model (e.g. a loaded file) with every installed peer that can express it."""
    name = label or spec.name
    items = [
        Item(name=f"{name}-T{T}-b{b}-t{t}", model_label=name, model_key=("spec", name),
             spec_fn=lambda: spec, tensors_fn=lambda _s: dict(tensors), T=T, batch=b, threads=t,
             case={"model": name, "T": T, "batch": b, "threads": t})
        for t in threads for b in batches
    ]
    res = run_items(items, mode="model", **kw)
    res["paths"] = write_results(res, out if out is not None else _default_out("model"))
    return res


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The benchmark's options (shared by ``rnninfer bench`` and ``python -m rnninfer.bench``)."""
    p.add_argument("model", nargs="?", default=None,
                   help="a model file to time (default: the SPEC §6 headline model, built with seed 0)")
    suite = p.add_mutually_exclusive_group()
    suite.add_argument("--headline", dest="suite", action="store_const", const="headline",
                       help="SPEC §6 headline case (default)")
    suite.add_argument("--quick", dest="suite", action="store_const", const="quick", help="small grid slice")
    suite.add_argument("--grid", dest="suite", action="store_const", const="grid", help="the full grid (slow)")
    suite.add_argument("--kernels", dest="suite", action="store_const", const="kernels",
                       help="headline, GRU T=128 and the per-call floor (1 layer, H=16, T=1)")
    suite.add_argument("--scaling", dest="suite", action="store_const", const="scaling",
                       help="thread scaling: layers 1/2/4, bidirectional, batch 1/8/64, T 32/128/512")
    suite.add_argument("--scheduler", dest="suite", action="store_const", const="scheduler",
                       help="the scheduler's targets: headline b1/b64, 4-layer T=128 b1, "
                            "bidirectional 2-layer b1 at T 32/128/512")
    suite.add_argument("--serving", dest="suite", action="store_const", const="serving",
                       help="streams fed token by token against PyTorch/ONNX Runtime step models "
                            "(bench/streams.py; takes --threads, --rounds, --round-ms, --pause-ms, --out)")
    suite.add_argument("--small", dest="suite", action="store_const", const="small",
                       help="small models (H 16-128): the two seed models and a grid, against the "
                            "FMA-peak and latency-chain limits (rnninfer.bench.small)")
    suite.add_argument("--small-seeds", dest="suite", action="store_const", const="small-seeds",
                       help="the --small suite's two seed models only")
    p.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    p.add_argument("--steps", type=int, default=64, help="sequence length when timing a model file")
    p.add_argument("--batches", default="1,64", help="batch sizes when timing a model file")
    p.add_argument("--rounds", type=int, default=20, help="interleaved timing rounds (default 20)")
    p.add_argument("--round-ms", type=float, default=100.0, help="work per engine per round (default 100)")
    p.add_argument("--pause-ms", type=float, default=50.0, help="pause between engines (default 50)")
    p.add_argument("--engines", default=",".join(peers.PEER_NAMES),
                   help=f"comma-separated subset of {','.join(peers.PEER_NAMES)}")
    p.add_argument("--max-call-s", type=float, default=10.0, help="skip an engine slower than this per call")
    p.add_argument("--keep-samples", action="store_true", help="store every latency sample in the JSON")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--out", default=None, help="output prefix (default bench/results/<suite>-<time> "
                                                "in a checkout, else ./rnninfer-bench/...)")


def _round_trip_headline() -> None:
    """The headline model built, saved, loaded and run: the product path end to end."""
    import rnninfer
    from rnninfer.layers import LSTM, Dense, Embedding

    model = rnninfer.build(
        [Embedding(20000, 128), LSTM(256, return_sequences=True), LSTM(256), Dense(1, "sigmoid")],
        seed=0, name="headline",
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "headline.npz"
        model.save(path)
        size_mb = path.stat().st_size / 2**20
        loaded = rnninfer.load(path)
    x = np.random.default_rng(0).integers(0, 20000, size=64)
    y = loaded.predict(x)
    if not np.array_equal(y, model.predict(x)):
        raise RuntimeError("the reloaded headline model disagrees with the built one")
    for _ in range(10):
        loaded.predict(x)
    times = []
    for _ in range(50):
        t0 = time.perf_counter()
        loaded.predict(x)
        times.append(time.perf_counter() - t0)
    ms = float(np.median(times)) * 1e3
    print(f"headline model: built (seed 0), saved ({size_mb:.1f} MiB) and loaded back; "
          f"predict(T=64) = {float(y[0]):.6f}; median {ms:.3f} ms per call on {loaded.threads} thread(s), "
          f"isa {loaded.isa}")


def main(args: argparse.Namespace) -> int:
    """Run the benchmark described by parsed :func:`add_arguments` options."""
    if args.suite == "serving":
        from . import streams

        return streams.main(args)
    if args.suite in ("small", "small-seeds"):
        from . import small

        return small.main(args)
    threads = _ints(args.threads)
    engines = [e for e in args.engines.split(",") if e]
    common = {"engines": engines, "rounds": args.rounds, "round_ms": args.round_ms, "pause_ms": args.pause_ms,
                  "max_call_s": args.max_call_s, "progress": not args.no_progress}
    if args.model is not None:
        import rnninfer

        model = rnninfer.load(args.model)
        res = run_spec(model.spec, dict(model.tensors), T=args.steps, batches=_ints(args.batches),
                       threads=threads, out=args.out, keep_samples=args.keep_samples, **common)
    else:
        mode = args.suite or "headline"
        _round_trip_headline()
        case_list = bench_cases.select(mode, threads)
        res = run_cases(case_list, out=args.out, mode=mode,
                        keep_samples=args.keep_samples or mode == "headline", **common)
    print(markdown(res))
    print("wrote " + ", ".join(res["paths"].values()))
    return 0


def cli_main(argv: Sequence[str] | None = None) -> int:
    """``python -m rnninfer.bench`` / ``bench/bench_predict.py``."""
    p = argparse.ArgumentParser(description="rnninfer predict benchmark against PyTorch, ONNX Runtime, Keras")
    add_arguments(p)
    return main(p.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(cli_main())
