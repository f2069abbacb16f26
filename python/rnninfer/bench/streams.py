"""Serving benchmark (``rnninfer bench --serving``): streams fed token by token.

Three cases, each engine and thread count timed in the same process in
interleaved rounds (a rotating order, a pause between engines so that one
framework's spinning threads do not steal from the next), outputs checked
before anything is timed:

* ``one-stream``: the headline model, one stream fed one token per
  call; p50 and p99 per token. rnninfer: ``Stream.feed([tok])`` at fp32,
  bf16 and int8 weights. PyTorch: ``rnn(emb(tok), (h, c))`` with the carried
  state under ``inference_mode``. ONNX Runtime: the same step module exported
  with the state as inputs and outputs, the state fed back each call.
  Beside the medians: the per-token bandwidth floor (bytes of weights one
  token streams / the single-core read bandwidth measured in the run).
* ``256-streams``: the headline model, 256 streams advanced one token each
  per round (``Model.feed_many``) against the peers' step model on a batch of
  256; tokens/s beside the sgemm-bound limit (the FLOPs of one token / the
  sgemm peak measured in the run).
* ``stac``: 2 x LSTM(128) on 128 float features, Dense(1), one step per
  feed, batch 1 (the shape of STAC-ML Markets' LSTM).

Peers run fp32 weights only (their reduced-precision paths are other
models); rnninfer's bf16/int8 rows are checked against their own ``predict``
bits. Results: ``<out>.json``, ``<out>.md``, ``<out>.png``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import machine as bench_machine
from . import peers

PRECISIONS = ("fp32", "bf16", "int8")
#: Largest difference between rnninfer fp32 and a peer's outputs accepted before timing.
TOLERANCE = 1e-4
HEADLINE_STREAMS = 256


@dataclass
class Config:
    """One timed engine configuration of a case."""

    case: str
    engine: str  # rnninfer / pytorch / onnxruntime
    threads: int
    precision: str
    call: Callable[[], Any]
    tokens_per_call: int
    version: str = ""
    before: Callable[[], None] | None = None  # run before each round's calls (thread pools)
    samples: list[float] = field(default_factory=list)  # seconds per call


@dataclass
class Case:
    """A model and how one call advances its streams."""

    name: str
    layers: list[Any]
    batch: int  # streams per call
    description: str


def cases() -> list[Case]:
    """The three serving cases."""
    from rnninfer.layers import LSTM, Dense, Embedding, Features

    headline = [Embedding(20000, 128), LSTM(256, return_sequences=True), LSTM(256), Dense(1, "sigmoid")]
    return [
        Case("one-stream", headline, 1, "headline model, one stream, one token per feed"),
        Case("256-streams", headline, HEADLINE_STREAMS,
             f"headline model, {HEADLINE_STREAMS} streams advanced one token each per call"),
        Case("stac", [Features(128), LSTM(128, return_sequences=True), LSTM(128), Dense(1)], 1,
             "2 x LSTM(128) on 128 float features, one step per feed, batch 1"),
    ]


# ---- the peers' step models ---------------------------------------------------------------
def _torch_step(spec: Any, tensors: Mapping[str, np.ndarray]) -> Any:
    """``step(x, h, c) -> (y, h, c)``: the PyTorch module of ``spec`` run one step from a state."""
    import torch
    from torch import nn

    net = peers.torch_module(spec, tensors)
    if len(net.rnns) != 1 or not isinstance(net.rnns[0], nn.LSTM):
        raise peers.Unsupported("the serving peers take a uniform LSTM stack")

    class Step(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, ...]:
            z = self.net.embedding(x) if self.net.embedding is not None else x
            _, (hn, cn) = self.net.rnns[0](z, (h, c))
            y = hn[-1]
            for lin, act in zip(self.net.linears, self.net.activations):
                y = act(lin(y))
            return y, hn, cn

    return Step().eval()


def _onnx_step(step: Any, spec: Any, threads: int, tmp: str) -> Any:
    import torch

    layers, units = len(spec.layers), spec.layers[0].units
    x = (torch.zeros((2, 1), dtype=torch.int64) if spec.input.kind == "tokens"
         else torch.zeros((2, 1, spec.input.features)))
    h = torch.zeros((layers, 2, units))
    path = os.path.join(tmp, f"{spec.name}-step-{threads}.onnx")
    if not os.path.exists(path):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(step, (x, h, h.clone()), path, dynamo=False, opset_version=17,
                              input_names=["x", "h", "c"], output_names=["y", "hn", "cn"],
                              dynamic_axes={"x": {0: "b"}, "h": {1: "b"}, "c": {1: "b"}, "y": {0: "b"},
                                            "hn": {1: "b"}, "cn": {1: "b"}})
    return peers.cpu_session(path, threads)


class _Feeder:
    """A peer's carried state and its next inputs: one call advances every stream one step."""

    def __init__(self, spec: Any, batch: int, inputs: np.ndarray) -> None:
        self.inputs = inputs[:, :batch]  # (steps, batch) ids or (steps, batch, F) features
        self.t = 0
        shape = (len(spec.layers), batch, spec.layers[0].units)
        self.h = np.zeros(shape, np.float32)
        self.c = np.zeros(shape, np.float32)

    def next_x(self) -> np.ndarray:
        x: np.ndarray = self.inputs[self.t % len(self.inputs)]
        self.t += 1
        return np.ascontiguousarray(x[:, None] if x.ndim == 1 else x[:, None, :])


def _inputs(spec: Any, steps: int, batch: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if spec.input.kind == "tokens":
        ids: np.ndarray = rng.integers(1, spec.input.vocab_size, size=(steps, batch))
        return ids
    feats: np.ndarray = rng.standard_normal((steps, batch, spec.input.features)).astype(np.float32)
    return feats


# ---- configurations -------------------------------------------------------------------------
def _rnninfer_configs(case: Case, spec: Any, tensors: Mapping[str, np.ndarray], threads: Sequence[int],
                      precisions: Sequence[str], inputs: np.ndarray, check: np.ndarray | None) -> list[Config]:
    import rnninfer
    from rnninfer.model import Model

    out = []
    for t in threads:
        for p in precisions:
            model = Model(spec, dict(tensors), threads=t, precision=p)
            streams = [model.stream() for _ in range(case.batch)]
            _check_rnninfer(model, inputs, check if p == "fp32" else None)
            tok = spec.input.kind == "tokens"
            call: Callable[[], Any]
            if case.batch == 1:
                xs = [[int(v)] for v in inputs[:, 0]] if tok else [inputs[i, :1] for i in range(len(inputs))]
                call = _cycle(streams[0].feed, xs)
            else:
                rounds = [[[int(v)] for v in row] if tok else [row[i:i + 1] for i in range(len(row))]
                          for row in inputs]
                call = _cycle(_feeder_of_many(model, streams), rounds)
            version = f"rnninfer {rnninfer.__version__} ({model.isa}, {p} weights, {model.recurrent_activations} activations)"
            out.append(Config(case.name, "rnninfer", t, p, call, case.batch, version))
    return out


def _feeder_of_many(model: Any, streams: list[Any]) -> Callable[[Any], Any]:
    def feed(xs: Any) -> Any:
        return model.feed_many(streams, xs)

    return feed


def _cycle(fn: Callable[[Any], Any], args: list[Any]) -> Callable[[], Any]:
    """A call of fn on the next of ``args``, round and round."""
    state = {"t": 0}

    def call() -> Any:
        state["t"] += 1
        return fn(args[state["t"] % len(args)])

    return call


def _check_rnninfer(model: Any, inputs: np.ndarray, want: np.ndarray | None) -> None:
    """Streams fed step by step give predict's bits on every prefix (and the peers' values at fp32)."""
    steps = min(8, len(inputs))
    batch = min(4, inputs.shape[1])
    streams = [model.stream() for _ in range(batch)]
    for t in range(steps):
        outs = model.feed_many(streams, [inputs[t, b:b + 1] for b in range(batch)])
        for b in range(batch):
            if not np.array_equal(outs[b], model.predict(inputs[:t + 1, b])):
                raise peers.WrongOutput(f"rnninfer ({model.precision}): stream output differs from predict")
            if want is not None and np.abs(outs[b] - want[t, b]).max() > TOLERANCE:
                raise peers.WrongOutput("rnninfer fp32 disagrees with PyTorch's step model")


def _peer_configs(case: Case, spec: Any, tensors: Mapping[str, np.ndarray], threads: Sequence[int],
                  engines: Sequence[str], inputs: np.ndarray, tmp: str) -> tuple[list[Config], np.ndarray | None]:
    """PyTorch and ONNX Runtime configurations, and PyTorch's outputs for the first steps (the check)."""
    out: list[Config] = []
    try:
        import torch

        step = _torch_step(spec, tensors)
    except (ImportError, peers.Unsupported):
        return out, None
    # Reference outputs for the check: PyTorch's step model from the zero state.
    ref = _Feeder(spec, inputs.shape[1], inputs)
    want = []
    with torch.inference_mode():
        for _ in range(min(8, len(inputs))):
            y, h, c = step(torch.from_numpy(ref.next_x()), torch.from_numpy(ref.h), torch.from_numpy(ref.c))
            ref.h, ref.c = h.numpy(), c.numpy()
            want.append(y.numpy())
    want_arr = np.stack(want)
    for t in threads:
        if "pytorch" in engines:
            f = _Feeder(spec, case.batch, inputs)

            def call(f: _Feeder = f) -> Any:
                with torch.inference_mode():
                    y, h, c = step(torch.from_numpy(f.next_x()), torch.from_numpy(f.h), torch.from_numpy(f.c))
                f.h, f.c = h.numpy(), c.numpy()
                return y

            out.append(Config(case.name, "pytorch", t, "fp32", call, case.batch,
                              f"torch {torch.__version__} (eager, inference_mode, carried (h, c))",
                              before=_torch_threads(t)))
        if "onnxruntime" in engines:
            try:
                import onnxruntime as ort

                sess = _onnx_step(step, spec, t, tmp)
            except ImportError:
                continue
            g = _Feeder(spec, inputs.shape[1], inputs)
            for k in range(len(want)):  # the check: the same steps as PyTorch
                y, g.h, g.c = sess.run(None, {"x": g.next_x(), "h": g.h, "c": g.c})
                if np.abs(y - want[k]).max() > TOLERANCE:
                    raise peers.WrongOutput("ONNX Runtime's step model disagrees with PyTorch's")
            f = _Feeder(spec, case.batch, inputs)

            def run_ort(f: _Feeder = f, sess: Any = sess) -> Any:
                y, f.h, f.c = sess.run(None, {"x": f.next_x(), "h": f.h, "c": f.c})
                return y

            out.append(Config(case.name, "onnxruntime", t, "fp32", run_ort, case.batch,
                              f"onnxruntime {ort.__version__} (CPU EP, step model, state as inputs/outputs)"))
    return out, want_arr


def _torch_threads(n: int) -> Callable[[], None]:
    def set_threads() -> None:
        import torch

        torch.set_num_threads(n)

    return set_threads


# ---- limits ---------------------------------------------------------------------------------
def token_bytes(spec: Any, precision: str) -> int:
    """Bytes of weights one token of one stream streams (table row or input projection,
    recurrent weights, projection, head)."""
    from rnninfer.format.manifest import GATES

    eb = {"fp32": 4, "bf16": 2, "int8": 1}[precision]
    total = 0
    width = spec.input.width
    for i, layer in enumerate(spec.layers):
        gh = GATES[layer.cell] * layer.units
        if i == 0 and spec.input.kind == "tokens":
            total += 4 * (width + gh)  # the embedding row and the projection table row
        else:
            total += gh * width * eb + (4 * gh if precision == "int8" else 0)
        total += gh * layer.direction_width * eb + (4 * gh if precision == "int8" else 0)
        total += 4 * layer.proj_size * layer.units
        width = layer.output_width
    for dense in spec.head:
        total += 4 * dense.units * width
        width = dense.units
    return total


def token_flops(spec: Any) -> float:
    """FLOPs of one token (multiply-adds x 2; the first layer of a token model is a table lookup)."""
    from rnninfer.format.manifest import GATES

    flops = 0.0
    width = spec.input.width
    for i, layer in enumerate(spec.layers):
        gh = GATES[layer.cell] * layer.units
        if not (i == 0 and spec.input.kind == "tokens"):
            flops += 2.0 * gh * width
        flops += 2.0 * (gh * layer.direction_width + layer.proj_size * layer.units)
        width = layer.output_width
    for dense in spec.head:
        flops += 2.0 * dense.units * width
        width = dense.units
    return flops


# ---- timing -------------------------------------------------------------------------------
def _time(configs: list[Config], rounds: int, round_ms: float, pause_ms: float, progress: bool) -> None:
    # Calibrate calls per round from a few warm calls.
    calls: dict[int, int] = {}
    for i, cfg in enumerate(configs):
        if cfg.before is not None:
            cfg.before()
        for _ in range(5):
            cfg.call()
        t0 = time.perf_counter()
        for _ in range(10):
            cfg.call()
        per = max((time.perf_counter() - t0) / 10, 1e-7)
        calls[i] = max(5, int(round_ms / 1e3 / per))
    order = list(range(len(configs)))
    for r in range(rounds):
        for i in order[r % len(order):] + order[:r % len(order)]:
            cfg = configs[i]
            if cfg.before is not None:
                cfg.before()
            for _ in range(3):
                cfg.call()
            for _ in range(calls[i]):
                t0 = time.perf_counter_ns()
                cfg.call()
                cfg.samples.append((time.perf_counter_ns() - t0) * 1e-9)
            time.sleep(pause_ms / 1e3)
        if progress:
            print(f"  round {r + 1}/{rounds}", flush=True)


def run_serving(
    *, threads: Sequence[int] = (1, 2), precisions: Sequence[str] = PRECISIONS, rounds: int = 15,
    round_ms: float = 60.0, pause_ms: float = 50.0, engines: Sequence[str] = ("rnninfer", "pytorch", "onnxruntime"),
    case_names: Sequence[str] | None = None, out: str | os.PathLike[str] | None = None, progress: bool = True,
) -> dict[str, Any]:
    """Run the serving cases and write ``<out>.{json,md,png}``; returns the results document."""
    from rnninfer.layers import complete_tensors, make_spec

    known = [c.name for c in cases()]
    unknown = [n for n in case_names or () if n not in known]
    if unknown:
        raise ValueError(f"unknown serving case(s) {unknown}; the cases are {known}")
    bad = [p for p in precisions if p not in PRECISIONS]
    if bad:
        raise ValueError(f"unknown precision(s) {bad}; choose from {list(PRECISIONS)}")
    selected = [c for c in cases() if case_names is None or c.name in case_names]
    configs: list[Config] = []
    meta: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="rnninfer-serving-") as tmp:
        for case in selected:
            spec = make_spec(case.layers, name=case.name)
            tensors = complete_tensors(spec, None, 0)
            inputs = _inputs(spec, 64, case.batch if case.batch > 1 else 4)
            peer_cfgs, want = _peer_configs(case, spec, tensors, threads, engines, inputs, tmp)
            if "rnninfer" in engines:
                configs += _rnninfer_configs(case, spec, tensors, threads, precisions, inputs, want)
            configs += peer_cfgs
            meta[case.name] = {
                "description": case.description, "streams": case.batch,
                "bytes_per_token": {p: token_bytes(spec, p) for p in PRECISIONS},
                "flops_per_token": token_flops(spec),
            }
        sizes = sorted({b for m in meta.values() for b in m["bytes_per_token"].values()}
                       | {b // t for m in meta.values() for b in m["bytes_per_token"].values() for t in threads})
        mach = bench_machine.measure(threads=threads, sizes=sizes, trials=9)
        if progress:
            print(f"timing {len(configs)} configurations, {rounds} rounds", flush=True)
        _time(configs, rounds, round_ms, pause_ms, progress)
    rows = []
    for cfg in configs:
        m = meta[cfg.case]
        s = np.asarray(cfg.samples)
        p50, p99 = float(np.percentile(s, 50)), float(np.percentile(s, 99))
        nbytes = m["bytes_per_token"][cfg.precision]
        row = {
            "case": cfg.case, "engine": cfg.engine, "threads": cfg.threads, "precision": cfg.precision,
            "version": cfg.version, "calls": len(s), "p50_us": p50 * 1e6, "p99_us": p99 * 1e6,
            "tokens_per_s": cfg.tokens_per_call / p50,
            "floor_us": nbytes / bench_machine.bandwidth_at(mach, nbytes, cfg.threads) * 1e6,
            "sgemm_limit_tokens_per_s": bench_machine.peak_at(mach, cfg.threads) / m["flops_per_token"],
        }
        rows.append(row)
    res = {"mode": "serving", "time": _dt.datetime.now().isoformat(timespec="seconds"),
           "machine": mach, "cases": meta, "rows": rows,
           "protocol": {"rounds": rounds, "round_ms": round_ms, "pause_ms": pause_ms, "threads": list(threads)}}
    prefix = Path(out) if out is not None else _default_out()
    prefix.parent.mkdir(parents=True, exist_ok=True)
    Path(str(prefix) + ".json").write_text(json.dumps(res, indent=1, default=float) + "\n")
    Path(str(prefix) + ".md").write_text(markdown(res))
    paths = {"json": str(prefix) + ".json", "md": str(prefix) + ".md"}
    if _plot(res, Path(str(prefix) + ".png")):
        paths["png"] = str(prefix) + ".png"
    res["paths"] = paths
    return res


def _default_out() -> Path:
    from .runner import results_dir

    return results_dir() / f"serving-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"


# ---- report ---------------------------------------------------------------------------------
def markdown(res: Mapping[str, Any]) -> str:
    """The results as Markdown tables, one per case, with same-run ratios."""
    cpu = res["machine"]["cpu"]
    lines = [f"# Serving benchmark ({res['time']})", "",
             (f"CPU: {cpu.get('model_name', '?')}; {res['protocol']['rounds']} interleaved rounds of "
              f"{res['protocol']['round_ms']:.0f} ms per configuration, all engines in one process."), ""]
    for name, meta in res["cases"].items():
        rows = [r for r in res["rows"] if r["case"] == name]
        lines += [f"## {name}: {meta['description']}", ""]
        many = meta["streams"] > 1
        if many:
            lines += ["| engine | threads | weights | p50 ms/call | p99 ms/call | tokens/s | sgemm-bound tokens/s | % of limit |",
                      "| --- | --- | --- | --- | --- | --- | --- | --- |"]
            for r in rows:
                lines.append(f"| {r['engine']} | {r['threads']} | {r['precision']} | {r['p50_us'] / 1e3:.3f} | "
                             f"{r['p99_us'] / 1e3:.3f} | {r['tokens_per_s']:,.0f} | "
                             f"{r['sgemm_limit_tokens_per_s']:,.0f} | "
                             f"{100 * r['tokens_per_s'] / r['sgemm_limit_tokens_per_s']:.0f} % |")
        else:
            lines += ["| engine | threads | weights | p50 µs/token | p99 µs/token | bandwidth floor µs | p50 / floor |",
                      "| --- | --- | --- | --- | --- | --- | --- |"]
            for r in rows:
                lines.append(f"| {r['engine']} | {r['threads']} | {r['precision']} | {r['p50_us']:.1f} | "
                             f"{r['p99_us']:.1f} | {r['floor_us']:.1f} | {r['p50_us'] / r['floor_us']:.2f} |")
        lines += ["", *_ratios(rows), ""]
    lines += ["Engines: " + "; ".join(sorted({r["version"] for r in res["rows"]})), ""]
    return "\n".join(lines)


def _ratios(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    out = []
    by = {(r["engine"], r["threads"], r["precision"]): r for r in rows}
    for t in sorted({r["threads"] for r in rows}):
        ours = by.get(("rnninfer", t, "fp32"))
        if ours is None:
            continue
        for peer in ("pytorch", "onnxruntime"):
            if (peer, t, "fp32") in by:
                out.append(f"- {t} thread(s): rnninfer fp32 is {by[(peer, t, 'fp32')]['p50_us'] / ours['p50_us']:.2f}x "
                           f"faster than {peer} (p50)")
        for p in ("bf16", "int8"):
            if ("rnninfer", t, p) in by:
                out.append(f"- {t} thread(s): rnninfer {p} is {ours['p50_us'] / by[('rnninfer', t, p)]['p50_us']:.2f}x "
                           "faster than fp32 (p50)")
        if t > 1 and ("rnninfer", 1, "fp32") in by:
            out.append(f"- rnninfer fp32: {t} threads are {by[('rnninfer', 1, 'fp32')]['p50_us'] / ours['p50_us']:.2f}x "
                       "faster than 1 (p50)")
        out.append(f"- {t} thread(s): rnninfer fp32 p99 / p50 = {ours['p99_us'] / ours['p50_us']:.2f}")
    return out


def _plot(res: Mapping[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    names = list(res["cases"])
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 4.5), squeeze=False)
    for ax, name in zip(axes[0], names):
        rows = [r for r in res["rows"] if r["case"] == name]
        many = res["cases"][name]["streams"] > 1
        labels = [f"{r['engine']}\n{r['precision']} t{r['threads']}" for r in rows]
        vals = [r["tokens_per_s"] / 1e3 if many else r["p50_us"] for r in rows]
        ax.bar(range(len(rows)), vals, color=["C0" if r["engine"] == "rnninfer" else "C1" for r in rows])
        if many:
            for t in sorted({r["threads"] for r in rows}):
                lim = next(r["sgemm_limit_tokens_per_s"] for r in rows if r["threads"] == t) / 1e3
                ax.axhline(lim, ls="--", lw=0.8, color="k" if t == 1 else "grey", label=f"sgemm limit, {t} thread(s)")
            ax.set_ylabel("k tokens/s")
        else:
            floors = [r["floor_us"] for r in rows]
            ax.plot(range(len(rows)), floors, "k_", ms=18, label="bandwidth floor")
            ax.set_ylabel("p50 µs per token")
        ax.legend(fontsize=7)
        ax.set_xticks(range(len(rows)), labels, fontsize=6, rotation=90)
        ax.set_title(name)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of the serving suite (also reachable as ``rnninfer bench --serving``)."""
    p.add_argument("--threads", default="1,2")
    p.add_argument("--precisions", default=",".join(PRECISIONS))
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--round-ms", type=float, default=60.0)
    p.add_argument("--pause-ms", type=float, default=50.0)
    p.add_argument("--engines", default="rnninfer,pytorch,onnxruntime")
    p.add_argument("--cases", default=",".join(c.name for c in cases()))
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--out", default=None)


def main(args: argparse.Namespace) -> int:
    """Run the serving suite from parsed options."""
    res = run_serving(
        threads=[int(v) for v in args.threads.split(",") if v], rounds=args.rounds, round_ms=args.round_ms,
        pause_ms=args.pause_ms,
        # The predict suites' default engine list names peers the serving suite does not have.
        engines=[e for e in args.engines.split(",") if e in ("rnninfer", "pytorch", "onnxruntime")],
        precisions=[p for p in getattr(args, "precisions", ",".join(PRECISIONS)).split(",") if p],
        case_names=[c for c in getattr(args, "cases", "").split(",") if c] or None,
        out=args.out, progress=not args.no_progress,
    )
    print(markdown(res))
    print("wrote " + ", ".join(res["paths"].values()))
    return 0


if __name__ == "__main__":
    _p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    add_arguments(_p)
    raise SystemExit(main(_p.parse_args()))
