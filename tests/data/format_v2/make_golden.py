"""Writes the golden format-v2 files: reduced-precision weights (bf16, int8) and an
fp32 file in the v2 layout. Run once per format version; never rewrite an existing
version's files (they prove old files keep loading).

    python tests/data/format_v2/make_golden.py

``<name>.expected.npz`` holds padded inputs, lengths and the float64 reference
outputs computed from the file's *effective* weights (bf16 widened, int8 codes
times their scales), so the engine must match them to 1e-5 like fp32 files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

import rnninfer
from rnninfer import reference
from rnninfer.layers import GRU, LSTM, RNN, Dense, Embedding, Features

HERE = Path(__file__).parent


def main() -> None:
    models = {
        "tokens_lstm_bf16": (
            [Embedding(30, 6, mask_zero=True), LSTM(8, bidirectional=True, return_sequences=True),
             GRU(8, reset_after=False), Dense(3, "softmax")],
            "bf16",
        ),
        "features_int8": (
            [Features(4), LSTM(6, proj_size=4, return_sequences=True), GRU(5), RNN(3), Dense(1, "sigmoid")],
            "int8",
        ),
        "tokens_fp32": ([Embedding(30, 6), GRU(7), Dense(2)], "fp32"),
    }
    rng = np.random.default_rng(2027)
    for name, (layers, precision) in models.items():
        model = rnninfer.build(layers, seed=13, name=name, precision=precision)
        model.save(HERE / f"{name}.npz")
        if model.spec.input.kind == "tokens":
            xs = [rng.integers(0, 30, size=n) for n in (5, 9, 1)]
            padded = np.zeros((3, 9), dtype=np.int64)
        else:
            xs = [rng.standard_normal((n, 4)).astype(np.float32) for n in (5, 9, 1)]
            padded = np.zeros((3, 9, 4), dtype=np.float32)
        for i, x in enumerate(xs):
            padded[i, : len(x)] = x
        expected = np.stack([reference.run_sequence(model.spec, dict(model.tensors), x) for x in xs])
        np.savez(HERE / f"{name}.expected.npz", inputs=padded, lengths=np.array([5, 9, 1]),
                 expected=expected, precision=np.array(precision))


if __name__ == "__main__":
    main()
