"""Per-call cost of ``Model.predict`` by input form: ``python bench/bench_call_overhead.py``.

Two models: the headline one (Embedding(20000, 128) -> 2 x LSTM(256) ->
Dense(1, sigmoid), seed 0, 1 thread), where the engine's work dominates, and
a tiny one (Embedding(100, 4) -> LSTM(4) -> Dense(1)), where the call's
Python and binding overhead does. Every case runs a fixed number of rounds
and prints the minimum and median microseconds per call; the run is bounded
(about 15 s on a quiet 2-core machine). For an A/B against another tree,
run it once with ``PYTHONPATH=<that tree>/python`` and once with this one's,
alternating a few times.
"""

from __future__ import annotations

import argparse
import inspect
import timeit
from collections.abc import Callable

import numpy as np

import rnninfer
from rnninfer.layers import LSTM, Dense, Embedding


def _time(f: Callable[[], object], number: int, repeat: int) -> tuple[float, float]:
    f()
    ts = sorted(t / number * 1e6 for t in timeit.repeat(f, number=number, repeat=repeat))
    return ts[0], ts[len(ts) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    head = rnninfer.build([Embedding(20000, 128), LSTM(256), LSTM(256), Dense(1, activation="sigmoid")],
                          seed=0, threads=args.threads)
    tiny = rnninfer.build([Embedding(100, 4), LSTM(4), Dense(1)], seed=0, threads=1)
    ids = np.random.default_rng(0).integers(1, 20000, 64)
    cases: list[tuple[str, Callable[[], object], int]] = [
        ("headline list T=64", lambda: head.predict(ids.tolist()), 20),
        ("headline list T=4", lambda: head.predict(ids[:4].tolist()), 200),
        ("headline ndarray T=64", lambda: head.predict(ids), 20),
    ]
    small = np.array([1, 2, 3, 4])
    padded, lengths = np.ones((2, 4), np.int64), np.array([2, 4])
    cases += [
        ("tiny list T=4", lambda: tiny.predict([1, 2, 3, 4]), 2000),
        ("tiny ndarray T=4", lambda: tiny.predict(small), 2000),
        ("tiny ragged 2", lambda: tiny.predict([[1, 2], [3, 4, 5]]), 2000),
        ("tiny padded 2x4 + lengths", lambda: tiny.predict(padded, lengths=lengths), 2000),
    ]
    # Also runs against older trees (PYTHONPATH=<old tree>/python) for an A/B
    # in one session; those have no padding option.
    if "padding" in inspect.signature(tiny.predict).parameters:
        cases.append(("tiny padded 2x4 + lengths, pre",
                      lambda: tiny.predict(padded, lengths=lengths, padding="pre"), 2000))
    print(f"isa {rnninfer.isa()}, headline threads {args.threads}")
    for name, f, number in cases:
        lo, med = _time(f, number, 9)
        print(f"{name:34s} min {lo:9.2f} us   median {med:9.2f} us")


if __name__ == "__main__":
    main()
