"""Small models (H = 16-128) against PyTorch and ONNX Runtime: ``rnninfer bench --small``.

The models people train for text classification are small: the two seed
models of issue 18 and a grid over H, cell, depth and batch, all timed in one
run (:func:`rnninfer.bench.runner.run_items`, same interleaved protocol as the
other suites, every peer checked against the float64 reference first).

Next to each median the report gives two limits of this machine, each a lower
bound on the call's time (100 % = at the limit):

- **FMA peak**: the FLOPs the model defines (every layer's input projection
  and recurrent product, ``2 * G*H * (in + P) * T * batch``, and the head)
  divided by the fp32 peak measured in the same run (best 2048 x 2048 sgemm of
  NumPy, ONNX Runtime and PyTorch; :mod:`rnninfer.bench.machine`). The first
  layer's projection of a token model counts although rnninfer reads it from
  a precomputed table, so rnninfer may exceed 100 %.
- **latency chain**: ``(T + L - 1) * K_max * t_fma``, where ``t_fma`` is the
  measured latency of one dependent vector FMA of the active kernel table
  (``_core._testing.fma_chain_seconds``), ``K_max`` the largest recurrent
  width and ``L`` the number of layers. Each output element of a step's
  recurrent product is one accumulator summed over K in order (the
  determinism contract), so a step of a layer takes at least ``K * t_fma``;
  layer ``l`` at step ``t`` needs layer ``l - 1`` at ``t`` and itself at
  ``t - 1``, so at least ``T + L - 1`` steps lie on the longest path.
  Activations, the gather and the head are left out: optimistic. It matters
  at batch 1, where there is too little arithmetic to fill the FMA units.
"""

from __future__ import annotations

import argparse
import itertools
from collections.abc import Mapping, Sequence
from typing import Any

from . import cases as bench_cases

#: Sequence length of the seed models (issue 18) and of the grid.
STEPS = 50
#: Embedding(10000, 100) -> LSTM(64, return_sequences) -> LSTM(64) -> Dense(1, sigmoid).
SEED_A = bench_cases.Case(cell="lstm", hidden=64, layers=2, T=STEPS, vocab=10000, embedding=100,
                          head_activation="sigmoid")
#: Embedding(V, 16) -> 3 x LSTM(32) -> Dense(1); V = 10000.
SEED_B = bench_cases.Case(cell="lstm", hidden=32, layers=3, T=STEPS, vocab=10000, embedding=16,
                          head_activation="linear")
GRID_HIDDEN = (16, 32, 64, 128)
GRID_LAYERS = (1, 2, 4)
GRID_BATCHES = (1, 8, 64)
SEED_BATCHES = (1, 64)


def cases(threads: Sequence[int] = (1,), *, grid: bool = True) -> list[bench_cases.Case]:
    """The seed models at batch 1 and 64, then (``grid``) LSTM/GRU x H x layers x batch."""
    out = [bench_cases.Case(**{**seed.to_dict(), "batch": b, "threads": t})
           for t in threads for seed in (SEED_A, SEED_B) for b in SEED_BATCHES]
    if grid:
        out += [
            bench_cases.Case(cell=c, hidden=h, layers=n, T=STEPS, batch=b, threads=t, vocab=10000,
                             embedding=64)
            for t, c, h, n, b in itertools.product(threads, bench_cases.CELLS, GRID_HIDDEN, GRID_LAYERS,
                                                   GRID_BATCHES)
        ]
    return out


def fma_latency_s(isa: str | None = None) -> float:
    """Seconds per dependent vector FMA of ``isa`` (default: the active table); best of 5."""
    from rnninfer import _core

    name = isa or _core.active_isa()
    return min(_core._testing.fma_chain_seconds(name, 2_000_000) for _ in range(5))


def limits(case: Mapping[str, Any], peak_flops: float, t_fma: float) -> dict[str, float]:
    """The FMA-peak and latency-chain limits (seconds) of one case (a :class:`cases.Case` dict)."""
    gates = 4 if case["cell"] == "lstm" else 3
    h, layers, T, batch = case["hidden"], case["layers"], case["T"], case["batch"]
    width = case["embedding"] if case["vocab"] else case["features"]
    flops = 0.0
    for _ in range(layers):
        flops += 2.0 * gates * h * (width + h) * T * batch
        width = h
    flops += 2.0 * case["head"] * width * batch
    return {"flops": flops, "fma_peak_s": flops / peak_flops,
            "latency_chain_s": (T + layers - 1) * h * t_fma, "t_fma_s": t_fma}


def annotate(res: dict[str, Any], t_fma: float) -> None:
    """Add ``small_limits`` and each engine's percentages of them to every case of ``res``."""
    from . import machine as bench_machine

    for case in res["cases"]:
        peak = bench_machine.peak_at(res["machine"], case["threads"])
        lim = limits(case["case"], peak, t_fma)
        case["small_limits"] = lim
        for st in case["engines"].values():
            if "median_ms" in st:
                st["pct_fma_peak"] = 100.0 * lim["fma_peak_s"] * 1e3 / st["median_ms"]
                st["pct_latency_chain"] = 100.0 * lim["latency_chain_s"] * 1e3 / st["median_ms"]


def _best_peer(engines: Mapping[str, Any]) -> tuple[str, float] | None:
    peers = [(n, st["median_ms"]) for n, st in engines.items()
             if n != "rnninfer" and "median_ms" in st and not n.startswith("rnninfer")]
    return min(peers, key=lambda p: p[1]) if peers else None


def markdown(res: Mapping[str, Any]) -> str:
    """The per-case table: medians, the speedup over the best peer and ONNX Runtime, the limits."""
    lines = ["## Small models: medians against the limits", "",
             ("FMA peak = model FLOPs / measured sgemm peak; latency chain = (T + L - 1) x K x "
             f"t_fma, t_fma = {res['cases'][0]['small_limits']['t_fma_s'] * 1e9:.2f} ns "
             "(rnninfer.bench.small). % = limit / median."), "",
             ("| case | rnninfer ms | PyTorch ms | ONNX Runtime ms | vs best peer | vs ORT | "
             "FMA-peak ms | % FMA peak | chain ms | % chain |"),
             "|---|---|---|---|---|---|---|---|---|---|"]
    slower = []
    for case in res["cases"]:
        eng = case["engines"]
        rn = eng.get("rnninfer", {}).get("median_ms")
        pt = eng.get("pytorch", {}).get("median_ms")
        ort = eng.get("onnxruntime", {}).get("median_ms")
        best = _best_peer(eng)
        lim = case["small_limits"]
        vs_best = best[1] / rn if best and rn else None
        if vs_best is not None and vs_best < 1.0:
            slower.append(case["name"])

        def f(v: float | None, spec: str = ".3f") -> str:
            return "-" if v is None else format(v, spec)

        lines.append(
            f"| {case['name']} | {f(rn)} | {f(pt)} | {f(ort)} | {f(vs_best, '.2f')}x | "
            f"{f(ort / rn if ort and rn else None, '.2f')}x | {lim['fma_peak_s'] * 1e3:.3f} | "
            f"{f(eng.get('rnninfer', {}).get('pct_fma_peak'), '.0f')} | {lim['latency_chain_s'] * 1e3:.4f} | "
            f"{f(eng.get('rnninfer', {}).get('pct_latency_chain'), '.0f')} |")
    lines += ["", f"Cases where rnninfer is slower than the best peer: {', '.join(slower) or 'none'}."]
    return "\n".join(lines)


def run(threads: Sequence[int] = (1,), *, grid: bool = True, out: str | None = None,
        **kw: Any) -> dict[str, Any]:
    """Run the suite (all cases in one run, so every comparison is same-run) and write the files."""
    from . import report, runner

    res = runner.run_items(runner.items_from_cases(cases(threads, grid=grid)), mode="small", **kw)
    annotate(res, fma_latency_s())
    res["paths"] = report.write_results(res, out if out is not None else runner._default_out("small"))
    with open(res["paths"]["md"], "a", encoding="utf-8") as fh:
        fh.write("\n" + markdown(res) + "\n")
    return res


def main(args: argparse.Namespace) -> int:
    """``rnninfer bench --small`` / ``--small-seeds`` (the runner's parsed options)."""
    threads = [int(v) for v in args.threads.split(",") if v.strip()]
    res = run(threads, grid=args.suite == "small", out=args.out,
              engines=[e for e in args.engines.split(",") if e], rounds=args.rounds,
              round_ms=args.round_ms, pause_ms=args.pause_ms, max_call_s=args.max_call_s,
              progress=not args.no_progress, keep_samples=args.keep_samples)
    print(markdown(res))
    print("wrote " + ", ".join(res["paths"].values()))
    return 0
