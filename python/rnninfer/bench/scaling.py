"""Projected wavefront scaling beyond the cores this machine has.

The machine has 2 cores; the scheduler is written for any count. This script
projects how a model would scale on 4, 8 and 16 cores from *measured* unit
costs: it traces real calls (``Engine.trace_tokens``) to get the duration of
every unit of a 2-thread plan (block size and unit kinds are the same for
every thread count above 1 at a given T), takes the median duration per
(unit kind, layer, direction, steps in block), then replays the engine's own
plan for P threads (same units, dependencies and thread assignment, as made
by ``make_plan``) as a discrete-event simulation: each simulated thread runs
its units in the plan's order, each unit starting when its thread is free and
its dependencies are done. Hand-off costs are included only as far as they
show in the measured unit durations; memory bandwidth shared by more cores
is not modelled (the projection is an upper bound of what the plan allows).

    rnninfer bench scaling-projection [--out PREFIX]   (= python -m rnninfer.bench.scaling)
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rnninfer import _core

MODELS: dict[str, dict[str, Any]] = {
    "lstm256x2 (headline)": {"layers": 2, "bidirectional": False},
    "lstm256x4": {"layers": 4, "bidirectional": False},
    "bi-lstm256x2": {"layers": 2, "bidirectional": True},
    "bi-lstm256x4": {"layers": 4, "bidirectional": True},
}


def _build(layers: int, bidirectional: bool, threads: int) -> Any:
    import rnninfer
    from rnninfer.layers import LSTM, Dense, Embedding

    rec = [LSTM(256, bidirectional=bidirectional, return_sequences=i < layers - 1) for i in range(layers)]
    return rnninfer.build([Embedding(20000, 128), *rec, Dense(1, "sigmoid")], seed=0, threads=threads)


def _trace(model: Any, x: np.ndarray, repeats: int) -> tuple[dict[str, Any], list[dict[str, Any]], list[list[Any]]]:
    lengths = np.full(x.shape[0], x.shape[1], dtype=np.int32)
    # Split plans run every unit on all threads at once and are not traced
    # per unit: the projection is of the unit-graph (wavefront) plans.
    runs = [_core._testing.trace_tokens(model._engine, x, lengths, allow_split=False) for _ in range(repeats)]
    _, plan, units, _ = runs[0]
    return plan, units, [r[3] for r in runs]


def _trace_pair(m1: Any, m2: Any, x: np.ndarray, rounds: int) -> tuple[list[list[Any]], Any, Any, list[list[Any]]]:
    """Traces of both models, in alternating rounds of back-to-back calls.

    A burst of other load on the machine (here a kernel thread takes a core
    for tens of milliseconds at times) then hits a few calls of both models
    instead of every call of one. The first call of each round (workers
    waking up, caches holding the other model) is not kept: the projection
    wants steady-state unit costs.
    """
    r1: list[list[Any]] = []
    r2: list[list[Any]] = []
    plan2 = units2 = None
    for _ in range(rounds):
        r1 += _trace(m1, x, 8)[2][1:]
        plan2, units2, r = _trace(m2, x, 8)
        r2 += r[1:]
        time.sleep(0.02)
    return r1, plan2, units2, r2


def _key(u: dict[str, Any], steps: int) -> tuple[Any, ...]:
    return (u["kind"], u["layer"], u["dir"], steps)


def _block_steps(plan: dict[str, Any], u: dict[str, Any], T: int) -> int:
    begin = plan["block_begin"]
    return int(begin[u["block"] + 1] - begin[u["block"]])


def simulate(plan: dict[str, Any], units: list[dict[str, Any]], cost: dict[tuple[Any, ...], float], T: int) -> float:
    """Span (ns) of the plan when every unit takes its measured median cost."""
    per_thread: dict[int, list[int]] = defaultdict(list)
    for i, u in enumerate(units):  # units are in the plan's global order
        per_thread[u["thread"]].append(i)
    finish: list[float | None] = [None] * len(units)
    free = dict.fromkeys(per_thread, 0.0)
    pos = dict.fromkeys(per_thread, 0)
    remaining = len(units)
    while remaining:
        progressed = False
        for t, todo in per_thread.items():
            while pos[t] < len(todo):
                i = todo[pos[t]]
                deps = units[i]["deps"]
                if any(finish[d] is None for d in deps):
                    break
                start = max([free[t]] + [float(finish[d] or 0.0) for d in deps])
                end = start + cost[_key(units[i], _block_steps(plan, units[i], T))]
                finish[i] = end
                free[t] = end
                pos[t] += 1
                remaining -= 1
                progressed = True
        if not progressed:
            raise RuntimeError("plan has a dependency cycle (this is a bug)")
    return max(f for f in finish if f is not None)


def project(T: int = 128, cores: Sequence[int] = (1, 2, 4, 8, 16), rounds: int = 6) -> dict[str, Any]:
    """Measured 1- and 2-thread times and projected spans for ``cores``, per model."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 20000, size=(1, T))
    out: dict[str, Any] = {"T": T, "batch": 1, "cores": list(cores), "models": {}}
    for name, kw in MODELS.items():
        m1, m2 = _build(threads=1, **kw), _build(threads=2, **kw)
        r1, plan2, units2, r2 = _trace_pair(m1, m2, x, rounds)
        measured_1 = statistics.median((max(r[3] for r in rs) - min(r[2] for r in rs)) for rs in r1)
        measured_2 = statistics.median((max(r[3] for r in rs) - min(r[2] for r in rs)) for rs in r2)
        samples: dict[tuple[Any, ...], list[int]] = defaultdict(list)
        for rs in r2:
            for unit, _thread, start, end in rs:
                u = units2[unit]
                samples[_key(u, _block_steps(plan2, u, T))].append(end - start)
        cost = {k: float(statistics.median(v)) for k, v in samples.items()}
        rows = {}
        for p in cores:
            if p == 1:
                rows[p] = {"span_ms": measured_1 / 1e6, "kind": "measured"}
                continue
            plan_p, units_p, _ = _trace(_build(threads=p, **kw), x, 1)
            span = simulate(plan_p, units_p, cost, T)
            rows[p] = {"span_ms": span / 1e6, "kind": "projected", "threads_used": plan_p["threads"],
                       "speedup": measured_1 / span}
        rows[2]["measured_ms"] = measured_2 / 1e6
        rows[2]["measured_speedup"] = measured_1 / measured_2
        out["models"][name] = rows
    return out


def markdown(res: dict[str, Any]) -> str:
    """The projection as a Markdown table."""
    cores = res["cores"]
    lines = [
        f"# Projected wavefront scaling (batch 1, T = {res['T']}, from measured unit costs)",
        "",
        ("Wavefront plans only (`trace_tokens(..., allow_split=False)`); at batch 1 the engine prefers "
         "split plans where layers allow them (see bench/results/headline.md for their measured times)."),
        "",
        "| model | 1 core measured ms | 2 cores measured ms (speedup) | "
        + " | ".join(f"{p} cores projected ms (speedup, threads used)" for p in cores if p > 1) + " |",
        "| --- | ---: | ---: | " + " | ".join("---:" for p in cores if p > 1) + " |",
    ]
    for name, rows in res["models"].items():
        cells = [f"{rows[1]['span_ms']:.3f}", f"{rows[2]['measured_ms']:.3f} ({rows[2]['measured_speedup']:.2f}x)"]
        cells += [f"{rows[p]['span_ms']:.3f} ({rows[p]['speedup']:.2f}x, {rows[p]['threads_used']})" for p in cores if p > 1]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", ("Projected columns replay the engine's own plan for that many threads with the median "
                   "unit durations measured in a 2-thread run; shared-bandwidth limits are not modelled.")]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: see the module docstring."""
    from .runner import results_dir

    p = argparse.ArgumentParser(prog="rnninfer bench scaling-projection", description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=128)
    p.add_argument("--out", default=None, help="output prefix (default: <results dir>/scaling-projection)")
    args = p.parse_args(argv)
    if args.out is None:
        args.out = str(results_dir() / "scaling-projection")
    res = project(T=args.steps)
    text = markdown(res)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out + ".json").write_text(json.dumps(res, indent=1, default=str) + "\n")
    Path(args.out + ".md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
