"""rnninfer itself as a benchmark engine, in its variants (threads, precision, kernel table)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import Prepared, Tensors


def prepare_rnninfer(spec: Any, tensors: Tensors, threads: int, precision: str = "fp32",
                     isa: str | None = None) -> Prepared:
    """rnninfer's own engine, built from the canonical tensors, weights in ``precision``."""
    import rnninfer
    from rnninfer import _core
    from rnninfer.model import Model

    model = Model(spec, dict(tensors), threads=threads, precision=precision, isa=isa)

    def run(x: np.ndarray) -> np.ndarray:
        return model.predict(x)

    return Prepared(run, f"rnninfer {rnninfer.__version__} ({model.isa}, {precision} weights, "
                         f"{model.recurrent_activations} activations)",
                    lambda: _core._testing.schedule_stats(model._engine))


def prepare_rnninfer_percore(spec: Any, tensors: Tensors, threads: int) -> Prepared:
    """One single-threaded rnninfer model per thread, each taking a contiguous
    slice of the batch, called side by side from Python threads: what the cores
    deliver with no scheduler at all. For batches its thread speedup is the
    machine's ceiling for batch shards in the same run (two busy cores slow
    each other); a batch of one runs on one core."""
    from concurrent.futures import ThreadPoolExecutor

    import rnninfer
    from rnninfer.model import Model

    models = [Model(spec, dict(tensors), threads=1) for _ in range(threads)]
    # Workers stay alive with the worker process, like an engine's own pool.
    pool = ThreadPoolExecutor(max_workers=threads - 1) if threads > 1 else None

    def run(x: np.ndarray) -> np.ndarray:
        parts = [p for p in np.array_split(x, threads, axis=0) if len(p)]
        if not parts:  # an empty batch: the model's own error
            return models[0].predict(x)
        futures = [pool.submit(m.predict, p) for m, p in zip(models[1:], parts[1:])] if pool else []
        first = models[0].predict(parts[0])
        return np.concatenate([first, *(f.result() for f in futures)], axis=0)

    return Prepared(run, f"rnninfer {rnninfer.__version__} ({models[0].isa}, one 1-thread model per core, "
                         "batch split evenly, no scheduler)")


#: Kernel tables whose recurrent steps use dot-product instructions on reduced activations.
DOT_PRODUCT_TABLES = ("avx512_bf16",)


def _widen_isa() -> str:
    """The best kernel table that widens reduced weights to fp32 in registers."""
    from rnninfer import _core

    return [i for i in _core._testing.available_isas() if i not in DOT_PRODUCT_TABLES][-1]


def prepare_rnninfer_bf16(spec: Any, tensors: Tensors, threads: int) -> Prepared:
    """rnninfer with bf16 weights."""
    return prepare_rnninfer(spec, tensors, threads, "bf16")


def prepare_rnninfer_int8(spec: Any, tensors: Tensors, threads: int) -> Prepared:
    """rnninfer with int8 weights."""
    return prepare_rnninfer(spec, tensors, threads, "int8")


def prepare_rnninfer_bf16_widen(spec: Any, tensors: Tensors, threads: int) -> Prepared:
    """rnninfer with bf16 weights widened in registers (fp32 activations)."""
    return prepare_rnninfer(spec, tensors, threads, "bf16", _widen_isa())


def prepare_rnninfer_int8_widen(spec: Any, tensors: Tensors, threads: int) -> Prepared:
    """rnninfer with int8 weights widened in registers (fp32 activations)."""
    return prepare_rnninfer(spec, tensors, threads, "int8", _widen_isa())
