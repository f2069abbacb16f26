"""Measure this machine in the run itself: CPU, cache bandwidth, fp32 FMA peak, versions.

Nothing is compiled: the numbers are what NumPy (and the OpenBLAS it ships)
can reach, which makes them *achievable* figures, not datasheet ones.

Bandwidth (single core, read): for a buffer of ``S`` bytes we take the best of

* ``np.maximum.reduce`` over a stride-0 view that repeats the buffer ``R``
  times (one call streams ``R * S`` bytes, so NumPy's call overhead is
  amortised; NumPy's AVX-512 max-reduce loop has no loop-carried dependence
  on a single accumulator), and
* ``np.dot(W, x)`` (OpenBLAS sgemv on a ``(S / 4 / K, K)`` float32 matrix),
  which is exactly the recurrent matrix-vector product of a batch-1 step;
  the cost of a tiny sgemv call is subtracted as call overhead.

On a Zen 4/5 core both reach about 100-130 GB/s at every size that fits in the
caches (32 KiB to 8 MiB): that is NumPy's loop throughput, below the L1/L2
bandwidth the hardware has. The batch-1 "machine limit" built from it is
therefore an optimistic *bound a NumPy-level engine could reach*; an engine
that streams at true L2 bandwidth can exceed 100 % of it. The figure is
reported alongside so readers can judge.

Peak (fp32 FMA): a 2048 x 2048 float32 GEMM with ``n`` threads, best of
several trials, best of NumPy/OpenBLAS, ONNX Runtime MLAS and ``torch.mm``
(those installed; see :func:`_peak_one`). This is the achievable-peak proxy.

Each measurement runs in a fresh subprocess so that the BLAS thread count is
fixed before NumPy loads. Run ``python bench/machine.py`` to print a report.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from importlib import metadata
from typing import Any

KIB = 1024
MIB = 1024 * KIB
#: Default bandwidth sweep (bytes): 256 KiB ... 8 MiB, plus 64 MiB for DRAM context.
SWEEP_SIZES = (256 * KIB, 512 * KIB, 1 * MIB, 2 * MIB, 4 * MIB, 8 * MIB, 64 * MIB)
#: Bytes streamed by one stride-0 max-reduce call (amortises NumPy call overhead).
_STREAM_PER_CALL = 32 * MIB
_GEMV_COLS = 256
_SGEMM_N = 2048
#: Python packages whose versions every results file records.
VERSIONED_PACKAGES = (
    "numpy", "torch", "onnxruntime", "onnx", "tensorflow", "tensorflow-cpu", "keras",
    "tqdm", "matplotlib",
)


# ---- CPU description -------------------------------------------------------------------
def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


def _caches() -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    base = "/sys/devices/system/cpu/cpu0/cache"
    try:
        entries = sorted(os.listdir(base))
    except OSError:
        return out
    for entry in entries:
        if entry.startswith("index"):
            d = os.path.join(base, entry)
            out.append({
                "level": _read(os.path.join(d, "level")),
                "type": _read(os.path.join(d, "type")),
                "size": _read(os.path.join(d, "size")),
                "shared_cpu_list": _read(os.path.join(d, "shared_cpu_list")),
            })
    return out


def cpu_info() -> dict[str, Any]:
    """CPU model, family, caches, SIMD flags and usable cores (Linux; best effort elsewhere)."""
    info: dict[str, Any] = {
        "machine": platform.machine(),
        "system": f"{platform.system()} {platform.release()}",
        "logical_cpus": os.cpu_count(),
    }
    try:
        info["usable_cpus"] = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        info["usable_cpus"] = os.cpu_count()
    block: dict[str, str] = {}
    for line in _read("/proc/cpuinfo").splitlines():
        if not line.strip():
            if block:
                break
            continue
        key, _, value = line.partition(":")
        block[key.strip()] = value.strip()
    info["model_name"] = block.get("model name", platform.processor())
    for key in ("vendor_id", "cpu family", "model", "stepping", "cpu MHz"):
        if key in block:
            info[key.replace(" ", "_")] = block[key]
    flags = block.get("flags", "").split()
    wanted = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512dq", "avx512bw", "avx512vl",
              "avx512_vnni", "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_tile", "amx_bf16")
    info["simd_flags"] = [f for f in wanted if f in flags]
    info["hypervisor"] = "hypervisor" in flags
    info["caches"] = _caches()
    return info


def versions(packages: Iterable[str] = VERSIONED_PACKAGES) -> dict[str, str]:
    """Installed versions of the given distributions (without importing them)."""
    out = {"python": platform.python_version()}
    for name in packages:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


# ---- measurements (run inside a subprocess with BLAS threads pinned) -----------------------
def _bandwidth_one(size: int, trials: int) -> dict[str, float]:
    """Best and median single-core read bandwidth (bytes/s) for one buffer size."""
    import numpy as np
    from numpy.lib.stride_tricks import as_strided

    n = max(_GEMV_COLS, size // 4 // _GEMV_COLS * _GEMV_COLS)
    buf = np.random.default_rng(0).random(n, dtype=np.float32)
    nbytes = buf.nbytes
    reps = max(1, _STREAM_PER_CALL // nbytes)
    view = as_strided(buf, shape=(reps, n), strides=(0, buf.itemsize))
    w = buf.reshape(-1, _GEMV_COLS)
    x = np.ones(_GEMV_COLS, dtype=np.float32)
    tiny_w, tiny_x = np.ones((8, 8), np.float32), np.ones(8, np.float32)

    def timed(fn: Any, calls: int) -> list[float]:
        for _ in range(3):
            fn()
        ts: list[float] = []
        for _ in range(calls):
            t0 = time.perf_counter_ns()
            fn()
            ts.append(float(time.perf_counter_ns() - t0))
        return ts

    stream = timed(lambda: np.maximum.reduce(view, axis=None), trials)
    gemv_calls = max(20, min(2000, (64 * MIB) // nbytes))
    overhead = float(np.median(timed(lambda: np.dot(tiny_w, tiny_x), 200)))
    gemv = [max(t - overhead, 1.0) for t in timed(lambda: np.dot(w, x), gemv_calls)]
    stream_bytes = float(nbytes * reps) * 1e9  # timings are in ns; results in bytes/s
    res = {
        "bytes": float(nbytes),
        "maxreduce_best": stream_bytes / min(stream),
        "maxreduce_median": stream_bytes / float(np.median(stream)),
        "sgemv_best": nbytes * 1e9 / min(gemv),
        "sgemv_median": nbytes * 1e9 / float(np.median(gemv)),
        "sgemv_call_overhead_ns": overhead,
    }
    res["best"] = max(res["maxreduce_best"], res["sgemv_best"])
    res["median"] = max(res["maxreduce_median"], res["sgemv_median"])
    return res


def _time_best(fn: Any, trials: int) -> tuple[float, float]:
    """(best, median) seconds of ``fn()`` over ``trials`` calls after one warm-up call."""
    import numpy as np

    fn()
    ts = []
    for _ in range(trials):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return min(ts), float(np.median(ts))


def _peak_one(trials: int, threads: int) -> dict[str, Any]:
    """Best and median sgemm throughput (FLOP/s) at ``threads``, best over the installed GEMMs.

    OpenBLAS (NumPy) always; ONNX Runtime's MLAS and PyTorch's ``torch.mm``
    when installed. On AMD CPUs OpenBLAS builds may fall back to AVX2 kernels
    and MKL avoids AVX-512, while MLAS dispatches on CPUID features, so the
    best of them is the closer proxy for the achievable fp32 FMA peak.
    """
    import numpy as np

    rng = np.random.default_rng(0)
    a = rng.random((_SGEMM_N, _SGEMM_N), dtype=np.float32)
    b = rng.random((_SGEMM_N, _SGEMM_N), dtype=np.float32)
    flops = 2.0 * _SGEMM_N**3
    methods: dict[str, dict[str, float]] = {}

    def record(name: str, fn: Any) -> None:
        best, med = _time_best(fn, trials)
        methods[name] = {"best": flops / best, "median": flops / med}

    record("numpy_openblas", lambda: np.dot(a, b))
    try:
        import onnx
        import onnxruntime as ort
        from onnx import TensorProto, helper

        shape = [_SGEMM_N, _SGEMM_N]
        graph = helper.make_graph(
            [helper.make_node("MatMul", ["a", "b"], ["c"])], "sgemm",
            [helper.make_tensor_value_info("a", TensorProto.FLOAT, shape),
             helper.make_tensor_value_info("b", TensorProto.FLOAT, shape)],
            [helper.make_tensor_value_info("c", TensorProto.FLOAT, shape)],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = min(model.ir_version, 9)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        feeds = {"a": a, "b": b}
        record("onnxruntime_mlas", lambda: sess.run(None, feeds))
        del onnx
    except ImportError:
        pass
    try:
        import torch

        torch.set_num_threads(threads)
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        record("torch_mm", lambda: torch.mm(ta, tb))
    except ImportError:
        pass
    best = max(methods, key=lambda k: methods[k]["best"])
    return {"best": methods[best]["best"], "median": methods[best]["median"], "method": best,
            "n": float(_SGEMM_N), "methods": methods}


def _blas_name() -> str:
    import numpy as np

    try:
        cfg = np.show_config(mode="dicts")
        blas = cfg["Build Dependencies"]["blas"]
        return f"{blas.get('name')} {blas.get('version')}"
    except Exception:  # noqa: BLE001 (numpy config layout varies by version)
        return "unknown"


def _sub(args: Sequence[str], threads: int) -> dict[str, Any]:
    """Run ``machine.py`` ``args`` in a subprocess with all BLAS/OpenMP pools at ``threads``."""
    env = dict(os.environ)
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), *args],
        env=env, capture_output=True, text=True, check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"machine measurement {args} failed:\n{proc.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def measure(
    threads: Sequence[int] = (1, 2),
    sizes: Iterable[int] = SWEEP_SIZES,
    *,
    trials: int = 15,
) -> dict[str, Any]:
    """Describe and measure this machine.

    Args:
        threads: thread counts for which the sgemm peak is measured.
        sizes: buffer sizes (bytes) for the single-core bandwidth sweep; the
            benchmark adds the exact per-core recurrent-weight sizes it needs.
        trials: timed calls per measurement.

    Returns:
        ``{"cpu", "versions", "blas", "bandwidth": {size: {...}}, "peak": {threads: {...}}, "method"}``
        with bandwidth in bytes/s and peak in FLOP/s (JSON-ready; keys are strings).
    """
    size_list = sorted({int(s) for s in sizes})
    bw = _sub(["_bandwidth", "--trials", str(trials), "--sizes", ",".join(map(str, size_list))], 1)
    peak = {str(t): _sub(["_peak", "--trials", str(max(5, trials // 2))], t)["peak"] for t in threads}
    return {
        "cpu": cpu_info(),
        "versions": versions(),
        "blas": bw["blas"],
        "bandwidth": bw["bandwidth"],
        "peak": peak,
        "method": {
            "bandwidth": "single core; best of numpy maximum.reduce over a stride-0 repeated view and "
                         "OpenBLAS sgemv minus call overhead; n threads assumed to give n x the "
                         "single-core bandwidth at size/n",
            "peak": f"sgemm {_SGEMM_N}x{_SGEMM_N} float32 with n threads, best trial of the best of "
                    "numpy/OpenBLAS, onnxruntime MLAS MatMul and torch.mm (those installed)",
        },
    }


def merge(first: Mapping[str, Any], second: Mapping[str, Any]) -> dict[str, Any]:
    """Combine two measurements of the same machine, keeping the best figure of each.

    On a shared machine a neighbour's load only ever slows a measurement down,
    so the better of two runs (e.g. before and after the benchmark) is the
    closer estimate of what the hardware can do.
    """
    out = dict(first)
    for table in ("bandwidth", "peak"):
        merged: dict[str, Any] = {}
        for key, a in first[table].items():
            b = second[table].get(key, a)
            merged[key] = dict(a if a["best"] >= b["best"] else b)
            merged[key]["runs_best"] = [a["best"], b["best"]]
        out[table] = merged
    return out


# ---- other load on the machine during a run ---------------------------------------------------
def cpu_snapshot() -> dict[str, float]:
    """CPU time so far: the whole machine's (``/proc/stat``: busy and steal) and this process
    tree's (itself and its waited-for children), with the wall clock and load average."""
    import resource

    snap: dict[str, float] = {"wall": time.monotonic()}
    own = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        ru = resource.getrusage(who)
        own += ru.ru_utime + ru.ru_stime
    snap["own_s"] = own
    fields = _read("/proc/stat").splitlines()[:1]
    if fields and fields[0].startswith("cpu "):
        ticks = [float(v) for v in fields[0].split()[1:]]
        hz = float(os.sysconf("SC_CLK_TCK"))
        # user nice system idle iowait irq softirq steal [guest guest_nice: already in user/nice]
        idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0.0)
        steal = ticks[7] if len(ticks) > 7 else 0.0
        total = sum(ticks[:8])
        snap.update(busy_s=(total - idle - steal) / hz, steal_s=steal / hz, total_s=total / hz)
    load = _read("/proc/loadavg").split()
    if load:
        snap["loadavg_1m"] = float(load[0])
    return snap


def other_load(before: Mapping[str, float], after: Mapping[str, float], cpus: int) -> dict[str, Any]:
    """What else used the CPUs between two :func:`cpu_snapshot` s (Linux; empty elsewhere).

    ``other_cores``: the average number of cores busy with work that was not this benchmark
    (machine busy time minus the benchmark's own CPU time, per second of wall time);
    ``steal_pct``: the share of CPU time the hypervisor gave to other guests.
    """
    if "busy_s" not in before or "busy_s" not in after:
        return {}
    wall = max(1e-9, after["wall"] - before["wall"])
    busy = after["busy_s"] - before["busy_s"]
    own = after["own_s"] - before["own_s"]
    total = max(1e-9, after["total_s"] - before["total_s"])
    return {
        "wall_s": wall,
        "cpus": cpus,
        "own_cores": own / wall,
        "other_cores": max(0.0, busy - own) / wall,
        "steal_pct": 100.0 * (after["steal_s"] - before["steal_s"]) / total,
        "loadavg_1m_before": before.get("loadavg_1m"),
        "loadavg_1m_after": after.get("loadavg_1m"),
    }


# ---- machine limit -----------------------------------------------------------------------
def bandwidth_at(machine: Mapping[str, Any], nbytes: int, threads: int = 1) -> float:
    """Read bandwidth (bytes/s) for ``threads`` cores streaming ``nbytes`` split between them.

    Uses the measured size closest (in log scale) to ``nbytes / threads`` and
    assumes the cores stream their shares independently (private L2 caches).
    """
    table = machine["bandwidth"]
    per_core = max(1.0, nbytes / threads)
    key = min(table, key=lambda k: abs(math.log(float(k)) - math.log(per_core)))
    return float(table[key]["best"]) * threads


def peak_at(machine: Mapping[str, Any], threads: int) -> float:
    """Measured fp32 FLOP/s for ``threads`` (nearest measured thread count, scaled linearly)."""
    table = machine["peak"]
    if str(threads) in table:
        return float(table[str(threads)]["best"])
    key = min(table, key=lambda k: abs(int(k) - threads))
    return float(table[key]["best"]) * threads / int(key)


def recurrent_bytes(spec: Any) -> list[int]:
    """Recurrent weight bytes one step of each layer-direction streams (fp32)."""
    from rnninfer.format.manifest import GATES

    out = []
    for layer in spec.layers:
        g = GATES[layer.cell] * layer.units
        per_dir = g * layer.direction_width * 4 + layer.proj_size * layer.units * 4
        out += [per_dir] * layer.num_directions
    return out


def machine_limit(spec: Any, T: int, batch: int, threads: int, machine: Mapping[str, Any]) -> dict[str, Any]:
    """Lower bound on one ``predict`` call's time on this machine (seconds, with its terms).

    Per layer and direction, every step runs the recurrent product: it must
    stream the layer's recurrent weights (``G*H x P`` fp32, plus ``w_hr``) at
    the measured bandwidth, and do ``2 * G*H*P * batch`` FLOPs at the measured
    peak; the step costs the larger of the two (roofline). The input
    projections are GEMMs over all steps at peak: ``2 * G*H * in * T * batch``
    FLOPs. The head adds its GEMM FLOPs. Pointwise work and the embedding
    gather are ignored, so this is optimistic: 100 % of it is the limit.
    """
    from rnninfer.format.manifest import GATES

    peak = peak_at(machine, threads)
    rec_bw_s = 0.0
    rec_flop_s = 0.0
    rec_s = 0.0
    in_flops = 0.0
    width = spec.input.width
    for layer in spec.layers:
        g = GATES[layer.cell] * layer.units
        p = layer.direction_width
        nbytes = g * p * 4 + layer.proj_size * layer.units * 4
        step_flops = 2.0 * batch * (g * p + layer.proj_size * layer.units)
        for _ in range(layer.num_directions):
            t_bw = nbytes / bandwidth_at(machine, nbytes, threads)
            t_fl = step_flops / peak
            rec_bw_s += T * t_bw
            rec_flop_s += T * t_fl
            rec_s += T * max(t_bw, t_fl)
            in_flops += 2.0 * g * width * T * batch
        width = layer.output_width
    head_flops = 0.0
    for dense in spec.head:
        head_flops += 2.0 * dense.units * width * batch * (T if spec.readout == "sequence" else 1)
        width = dense.units
    total = rec_s + (in_flops + head_flops) / peak
    return {
        "seconds": total,
        "recurrent_s": rec_s,
        "recurrent_bandwidth_s": rec_bw_s,
        "recurrent_flops_s": rec_flop_s,
        "input_projection_s": in_flops / peak,
        "head_s": head_flops / peak,
        "peak_flops": peak,
        "bound": "bandwidth" if rec_bw_s >= rec_flop_s else "flops",
    }


# ---- CLI -----------------------------------------------------------------------------------
def _format(machine: Mapping[str, Any]) -> str:
    cpu = machine["cpu"]
    lines = [(f"CPU: {cpu.get('model_name')} (family {cpu.get('cpu_family')}, model {cpu.get('model')}), "
              f"{cpu.get('usable_cpus')} usable cores, SIMD: {' '.join(cpu.get('simd_flags', []))}"),
             f"BLAS: {machine['blas']}", "single-core read bandwidth (best / median, GB/s):"]
    for size, r in sorted(machine["bandwidth"].items(), key=lambda kv: int(kv[0])):
        lines.append(f"  {int(size) / KIB:8.0f} KiB  {r['best'] / 1e9:7.1f} / {r['median'] / 1e9:7.1f}"
                     f"   (max-reduce {r['maxreduce_best'] / 1e9:.1f}, sgemv {r['sgemv_best'] / 1e9:.1f})")
    for t, r in machine["peak"].items():
        each = ", ".join(f"{k} {v['best'] / 1e9:.0f}" for k, v in r.get("methods", {}).items())
        lines.append(f"sgemm peak, {t} thread(s): {r['best'] / 1e9:.1f} GFLOP/s (median {r['median'] / 1e9:.1f};"
                     f" {each})")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """``python bench/machine.py [--threads 1,2] [--json]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("mode", nargs="?", default="report", choices=["report", "_bandwidth", "_peak"])
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--sizes", default=",".join(map(str, SWEEP_SIZES)))
    parser.add_argument("--trials", type=int, default=15)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a text report")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    if args.mode == "_bandwidth":
        table = {str(s): _bandwidth_one(s, args.trials) for s in sizes}
        print(json.dumps({"bandwidth": table, "blas": _blas_name()}))
        return 0
    if args.mode == "_peak":
        print(json.dumps({"peak": _peak_one(args.trials, int(os.environ.get("OPENBLAS_NUM_THREADS", "1")))}))
        return 0
    threads = [int(t) for t in args.threads.split(",") if t]
    machine = measure(threads, sizes, trials=args.trials)
    print(json.dumps(machine, indent=1) if args.json else _format(machine))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
