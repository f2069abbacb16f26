"""Batch scoring on Ray Data: one model per actor, each batch one engine call.

Import this module only where Ray is installed (``pip install "rnninfer[ray]"``)::

    import ray, rnninfer
    from rnninfer.serving.ray import Scorer

    model = rnninfer.load("model.npz")
    ds = ray.data.read_parquet("sequences/")            # a column of token-id lists
    scores = ds.map_batches(
        Scorer, fn_constructor_kwargs={"model": ray.put(model)},
        concurrency=2, num_cpus=1, batch_size=256,
    )
    scores.write_parquet("scores/")

The model travels once, by reference: ``ray.put`` stores its pickle (the model
file's bytes and load options, never packed buffers) in the object store, and
every actor unpickles it once in ``__init__``, which validates and packs it for
that actor's CPU. A batch is one ``predict`` call; every sequence gets the bits
``model.predict`` gives it alone, however Ray cuts the dataset into batches.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..model import Model, load


def actor_cpus() -> int:
    """CPUs Ray assigned to the calling task or actor (1 outside Ray or when fractional)."""
    try:
        import ray
    except ImportError:
        return 1
    if not ray.is_initialized():
        return 1
    try:
        assigned: dict[str, float] = ray.get_runtime_context().get_assigned_resources()  # type: ignore[no-untyped-call]
    except AssertionError:  # Ray asserts this is called in a worker; the driver has no assignment
        return 1
    return max(1, int(assigned.get("CPU", 0.0)))


def resolve_model(model: Any, threads: int | None = None) -> Model:
    """A :class:`Model` running on ``threads`` (default: this actor's CPUs) from what was shipped:
    a ``Model``, a Ray ``ObjectRef`` to one (or to a model file's bytes), bytes, or a path."""
    if type(model).__name__ == "ObjectRef":
        import ray

        model = ray.get(model)
    want = threads if threads is not None else actor_cpus()
    if isinstance(model, Model):
        if model.threads == want:
            return model
        return load(model.to_bytes(), threads=want, precision=model.precision)
    if isinstance(model, (bytes, bytearray, memoryview, str, os.PathLike)):
        return load(model, threads=want)
    raise TypeError(f"model must be an rnninfer Model, an ObjectRef to one, bytes or a path; "
                    f"got {type(model).__name__}")


class Scorer:
    """A Ray Data callable class for ``Dataset.map_batches``: loads the model once per actor.

    Args:
        model: the model, shipped as ``ray.put(model)`` (an ``ObjectRef``), or the model
            itself, its file's bytes or a path readable by every node.
        column: the input column: token-id lists (token models) or lists of feature rows.
        output: the name of the score column.
        threads: threads per ``predict`` call; ``None`` = the CPUs Ray gave this actor
            (``num_cpus`` of ``map_batches``).
        keep: input columns copied to the output (default: every column but ``column``).
    """

    def __init__(self, model: Any, *, column: str = "tokens", output: str = "score",
                 threads: int | None = None, keep: list[str] | None = None) -> None:
        self.model = resolve_model(model, threads)
        self.column, self.output, self.keep = column, output, keep
        self._tokens = self.model.spec.input.kind == "tokens"

    def _sequences(self, values: Any) -> list[np.ndarray]:
        dtype = np.int64 if self._tokens else np.float32
        if isinstance(values, np.ndarray) and values.dtype != object:
            return [np.asarray(v, dtype=dtype) for v in values]  # equal lengths: a 2-D (or 3-D) column
        if self._tokens:
            return [np.asarray(v, dtype=dtype) for v in values]
        return [np.asarray([np.asarray(r, dtype=dtype) for r in v], dtype=dtype) for v in values]

    def __call__(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        """Score one batch (``batch_format="numpy"``: a dict of column arrays)."""
        if self.column not in batch:
            raise KeyError(f"no column {self.column!r} in the batch; columns: {sorted(batch)}")
        out = self.model.predict(self._sequences(batch[self.column]))
        keep = self.keep if self.keep is not None else [c for c in batch if c != self.column]
        result: dict[str, Any] = {c: batch[c] for c in keep}
        if self.model.returns_sequences:
            result[self.output] = list(out)  # (T_max, out) per row, padded steps are zero rows
        else:
            result[self.output] = out[:, 0] if out.shape[1] == 1 else out
        return result


__all__ = ["Scorer", "actor_cpus", "resolve_model"]
