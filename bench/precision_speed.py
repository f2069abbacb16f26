"""Speed of the recurrent kernels per weight precision and kernel variant, for docs/precision.md.

    python bench/precision_speed.py [--rounds 10] [--calls 20]

The SPEC §6 headline model (Embedding(20000, 128) -> 2 x LSTM(256) ->
Dense(1, sigmoid), T = 64, one thread) at batch 1 and 64, once per
(kernel table, precision): "avx512" widens bf16/int8 weights to fp32 in
registers; "avx512_bf16" runs vdpbf16ps on bf16 activations and, for int8
weights, whatever its table packs them for (docs/precision.md). Engines are
interleaved round by round; each round times ``--calls`` calls per engine;
the table gives the median and p90 over all timed calls, in milliseconds,
and the max |output - fp32 output| over the batch-64 input.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from rnninfer import _core
from rnninfer.bench import cases, peers
from rnninfer.layers import random_tensors
from rnninfer.model import Model

VARIANTS = [("avx512", "fp32"), ("avx512", "bf16"), ("avx512_bf16", "bf16"), ("avx512", "int8"),
            ("avx512_bf16", "int8")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--calls", type=int, default=20)
    args = ap.parse_args()
    isas = set(_core._testing.available_isas())
    variants = [v for v in VARIANTS if v[0] in isas]
    spec = cases.HEADLINE_MODEL.spec()
    tensors = random_tensors(spec, 0)
    print("| kernel table | weights | activations | batch 1 median ms | p90 | batch 64 median ms | p90 |"
          " max diff to fp32 |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |")
    results: dict[tuple[str, str, int], list[float]] = {}
    models = {v: Model(spec, dict(tensors), threads=1, isa=v[0], precision=v[1]) for v in variants}
    diffs: dict[tuple[str, str], float] = {}
    for batch in (1, 64):
        x = peers.sample_input(spec, batch, cases.HEADLINE_MODEL.T, 1)
        ref = models[("avx512", "fp32")].predict(x)
        for v, m in models.items():
            diffs[v] = float(np.abs(m.predict(x) - ref).max())  # also the warm-up
        for _ in range(args.rounds):
            for v, m in models.items():
                ts = results.setdefault((*v, batch), [])
                for _ in range(args.calls):
                    t0 = time.perf_counter()
                    m.predict(x)
                    ts.append(time.perf_counter() - t0)
    for v in variants:
        cells = []
        for batch in (1, 64):
            ts = np.array(results[(*v, batch)]) * 1e3
            cells += [f"{np.median(ts):.3f}", f"{np.percentile(ts, 90):.3f}"]
        acts = models[v].recurrent_activations
        print(f"| {v[0]} | {v[1]} | {acts} | " + " | ".join(cells) + f" | {diffs[v]:.1e} |")


if __name__ == "__main__":
    main()
