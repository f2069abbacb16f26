"""Writes the golden format-v1 files. Run once per format version; never rewrite
an existing version's files (they prove old files keep loading).

    python tests/data/format_v1/make_golden.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

import rnninfer
from rnninfer import reference
from rnninfer.layers import GRU, LSTM, Dense, Embedding, Features, GlobalAveragePooling

HERE = Path(__file__).parent


def main() -> None:
    models = {
        "tokens_lstm_gru": [
            Embedding(30, 6, mask_zero=True),
            LSTM(8, bidirectional=True, return_sequences=True),
            GRU(8, reset_after=False),
            Dense(3, "softmax"),
        ],
        "features_residual": [
            Features(4),
            LSTM(6, proj_size=4, return_sequences=True),
            GRU(4, residual=True, return_sequences=True),
            GlobalAveragePooling(),
            Dense(1, "sigmoid"),
        ],
    }
    rng = np.random.default_rng(2026)
    for name, layers in models.items():
        model = rnninfer.build(layers, seed=11, name=name)
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
                 expected=expected)


if __name__ == "__main__":
    main()
