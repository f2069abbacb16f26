"""Latency and throughput of ``predict``: rnninfer against PyTorch, ONNX Runtime and Keras.

Usage::

    python -m rnninfer.bench --headline            # the headline model (default)
    python -m rnninfer.bench --quick --threads 1   # small grid slice
    python -m rnninfer.bench --grid --rounds 10    # the whole grid (hours)
    python -m rnninfer.bench --engines rnninfer,pytorch --out ./rnninfer-bench-results/mine

Protocol: every engine runs in the same run, on the same machine,
the same model with the same weights, the same input and the same thread
count. Each framework lives in its own worker process per thread count (see
``worker.py``), all alive for the whole run. Before timing, every engine's output is checked against the
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

import dataclasses
import datetime as _dt
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import cases as bench_cases
from . import machine as bench_machine
from . import peers
from .report import write_results
from .worker import Worker, WorkerDied

SCHEMA = "rnninfer-bench-predict/1"


def results_dir() -> Path:
    """Where a run's files go without ``--out``: ``$RNNINFER_BENCH_DIR``, else the per-user
    cache (``$XDG_CACHE_HOME/rnninfer/bench``, by default ``~/.cache/rnninfer/bench``) -- never
    the current folder, so a run inside a checkout leaves no untracked files."""
    env = os.environ.get("RNNINFER_BENCH_DIR")
    if env:
        return Path(env)
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "rnninfer" / "bench"
_SMALL_BATCH, _SMALL_T = 2, 12


def _rnninfer_root() -> str:
    """Directory holding the ``rnninfer`` package, for the workers' import path."""
    import rnninfer

    return str(Path(rnninfer.__file__).resolve().parent.parent)


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
    if any(p.group in ("torch", "onnxruntime") for p in wanted if p.name in skipped):
        prog.write("(pip install 'rnninfer[bench]' brings PyTorch and ONNX Runtime; 'rnninfer[bench-all]' "
                   "adds OpenVINO and TensorFlow/Keras)")
    load_before = bench_machine.cpu_snapshot()

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
    workers: dict[tuple[str, int], Worker | str] = {}
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
                if isinstance(w, Worker):
                    w.close()
        prog.describe("measuring machine again")
        machine = bench_machine.merge(machine, bench_machine.measure(thread_counts, sorted(sizes)))
        for i, result in results.items():
            _apply_limit(result, specs[items[i].model_key], machine)
    finally:
        prog.close()
    load = bench_machine.other_load(load_before, bench_machine.cpu_snapshot(), os.cpu_count() or 1)
    failed = any(st.get("status") in ("failed", "wrong output") for r in results.values()
                 for st in r["engines"].values())
    if not failed:
        shutil.rmtree(log_dir, ignore_errors=True)
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
        "load": load,
        "worker_logs": str(log_dir) if failed else None,
    }


def _report_order(items: Sequence[Item]) -> list[int]:
    """Indices of ``items`` in report order: thread count, then model, then the given order."""
    first: dict[Any, int] = {}
    for i, it in enumerate(items):
        first.setdefault(it.model_key, i)
    return sorted(range(len(items)), key=lambda i: (items[i].threads, first[items[i].model_key], i))


def _prepare(
    spec: Any, tensors_path: str, tensors: Mapping[str, np.ndarray], small: np.ndarray, small_ref: np.ndarray,
    available: Sequence[peers.Peer], skipped: Mapping[str, str], workers: dict[tuple[str, int], Worker | str],
    threads: int, rnninfer_root: str, log_dir: Path, engine_versions: dict[str, str], prog: _Progress,
) -> tuple[dict[str, dict[str, Any]], dict[str, Worker]]:
    """Load one model into every framework's worker for ``threads`` and check its output."""
    status: dict[str, dict[str, Any]] = {n: {"status": "skipped", "reason": why} for n, why in skipped.items()}
    active: dict[str, Worker] = {}
    for group in dict.fromkeys(p.group for p in available):
        names = [p.name for p in available if p.group == group]
        w = workers.get((group, threads))
        if w is None:
            try:
                w = Worker(group, threads, rnninfer_root, log_dir)
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
                def call_eval(x: np.ndarray, n: str = n, w: Worker = w) -> np.ndarray:
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
    workers: dict[tuple[str, int], Worker | str], rnninfer_root: str, log_dir: Path,
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
    active: dict[int, dict[str, Worker]] = {}
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
    model_status: Mapping[int, Mapping[str, dict[str, Any]]], active: Mapping[int, Mapping[str, Worker]],
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
    """The headline model: Embedding(20000,128) -> 2 x LSTM(256) -> Dense(1, sigmoid), T=64.

    Batch 1 and 64, each thread count, rnninfer and every installed peer (none
    is required). Writes ``<results dir>/headline-<time>.{json,md,png}`` (or
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
