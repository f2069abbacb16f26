"""Accuracy of reduced-precision weights (bf16, int8) against fp32, for docs/precision.md.

    python bench/precision_accuracy.py

Part 1: every model kind of ``tests/test_engine.py`` ARCHS (random weights,
seed 7, 64 random sequences of length 1..30): max and mean absolute output
difference of the bf16 and int8 engines to the fp32 engine.
Part 2: the trained marker model (``tests/data/trained``): the fraction of
held-out classification decisions that change.
Both parts run once per kernel table: ``avx512`` (reduced weights widened to
fp32 in registers, fp32 activations) and, where the CPU has it,
``avx512_bf16`` (dot-product instructions on activations rounded to bf16 or
quantised to int8 every step); ``--isa`` picks others.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from helpers import random_inputs
from test_engine import ARCHS, _zero_frac

import rnninfer
from rnninfer import _core
from rnninfer.layers import complete_tensors, make_spec
from rnninfer.model import Model


def arch_table(isa: str) -> list[tuple[str, float, float, float, float]]:
    """(arch, bf16 max, bf16 mean, int8 max, int8 mean) per model kind."""
    rows = []
    for arch in sorted(ARCHS):
        layers = ARCHS[arch]
        spec = make_spec(layers)
        tensors = complete_tensors(spec, None, 7)
        base = Model(spec, tensors, threads=1, isa=isa)
        xs = random_inputs(base, np.random.default_rng(0), 64, max_len=30, zero_frac=_zero_frac(layers))
        ref = base.predict(list(xs))
        row: list[float] = []
        for p in ("bf16", "int8"):
            d = np.abs(base.with_precision(p).predict(list(xs)).astype(np.float64) - ref)
            row += [float(d.max()), float(d.mean())]
        rows.append((arch, *row))
    return rows


def trained_flips(isa: str) -> dict[str, float]:
    """Fraction of changed decisions of the trained marker model, per precision."""
    data = ROOT / "tests" / "data" / "trained"
    with np.load(data / "marker_eval.npz") as z:
        x, labels = z["inputs"].astype(np.int64), z["labels"]
    out: dict[str, float] = {}
    model = rnninfer.load(data / "marker_lstm.npz", threads=1)
    base = Model(model.spec, dict(model.stored_tensors), threads=1, isa=isa).predict(x)[:, 0]
    out["fp32 accuracy"] = float(((base > 0) == (labels > 0)).mean())
    for p in ("bf16", "int8"):
        m = Model(model.spec, dict(model.stored_tensors), threads=1, precision=p, isa=isa)
        out[f"{p} activations"] = m.recurrent_activations  # type: ignore[assignment]
        logits = m.predict(x)[:, 0]
        out[f"{p} changed"] = float(((logits > 0) != (base > 0)).mean())
        out[f"{p} accuracy"] = float(((logits > 0) == (labels > 0)).mean())
        out[f"{p} max |dlogit|"] = float(np.abs(logits - base).max())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--isa", action="append", help="kernel table(s) to measure (repeatable)")
    args = ap.parse_args()
    isas = args.isa or [i for i in ("avx512", "avx512_bf16") if i in _core._testing.available_isas()]
    for isa in isas:
        print(f"\nisa: {isa}")
        print("| model | bf16 max | bf16 mean | int8 max | int8 mean |")
        print("| --- | --- | --- | --- | --- |")
        for arch, a, b, c, d in arch_table(isa):
            print(f"| {arch} | {a:.2e} | {b:.2e} | {c:.2e} | {d:.2e} |")
        if (ROOT / "tests" / "data" / "trained" / "marker_lstm.npz").exists():
            for k, v in trained_flips(isa).items():
                print(f"{k}: {v:.5g}" if isinstance(v, float) else f"{k}: {v}")


if __name__ == "__main__":
    main()
