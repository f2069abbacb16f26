"""``rnninfer bench``: the command line of the benchmark (options, the headline round trip)."""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from . import cases as bench_cases
from . import peers
from .report import markdown
from .runner import run_cases, run_spec


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The benchmark's options (shared by ``rnninfer bench`` and ``python -m rnninfer.bench``)."""
    p.add_argument("model", nargs="?", default=None,
                   help="a model file to time (default: the headline model, Embedding(20000, 128) -> "
                        "2 x LSTM(256) -> Dense(1, sigmoid), T=64, random weights from seed 0)")
    suite = p.add_mutually_exclusive_group()
    suite.add_argument("--headline", dest="suite", action="store_const", const="headline",
                       help="the headline model at batch 1 and 64 (default)")
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
                            "(bench/streams.py; takes --threads, --cases, --precisions, --rounds, --round-ms, "
                            "--pause-ms, --engines, --out)")
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
    p.add_argument("--cases", default="",
                   help="--serving: comma-separated subset of one-stream,256-streams,stac (default: all)")
    p.add_argument("--precisions", default="fp32,bf16,int8",
                   help="--serving: comma-separated weight precisions for rnninfer (default fp32,bf16,int8)")
    p.add_argument("--max-call-s", type=float, default=10.0, help="skip an engine slower than this per call")
    p.add_argument("--keep-samples", action="store_true", help="store every latency sample in the JSON")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--out", default=None, help="output prefix, e.g. ./rnninfer-bench-results/run1 (default: "
                                                "$RNNINFER_BENCH_DIR or ~/.cache/rnninfer/bench, <suite>-<time>)")


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

        from rnninfer.cli import open_model

        model = open_model(args.model)
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
