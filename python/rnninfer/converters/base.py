"""What every converter shares: the result type and its one validation.

A converter is a reader (file or object -> named arrays + config, no rnninfer
types) followed by a mapper (-> spec + canonical tensors + provenance). The
mapper's result passes :func:`finish` once; :func:`rnninfer.from_keras` and
:func:`rnninfer.from_torch` wrap it into a ``Model`` (this package never
imports the engine).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from ..errors import ModelFormatError
from ..format.manifest import ModelSpec
from ..format.spec import DTYPE, validate

__all__ = ["Converted", "Probe", "finish"]


class Converted(NamedTuple):
    """A converted model: its spec, canonical float32 tensors and provenance."""

    spec: ModelSpec
    tensors: dict[str, np.ndarray]
    producer: dict[str, Any]


def finish(
    spec: ModelSpec,
    tensors: Mapping[str, np.ndarray],
    producer: Mapping[str, Any],
    *,
    source: str | None = None,
) -> Converted:
    """Validate a converted model against the canonical spec.

    Converters only reorder and transpose; this is where the result is checked,
    so a converter bug surfaces as a ``ModelFormatError`` naming the tensor
    rather than as wrong predictions.
    """
    canon = {k: np.ascontiguousarray(v, dtype=DTYPE) for k, v in tensors.items()}
    problems = validate(spec, canon)
    if problems:
        raise ModelFormatError(problems, source=source)
    return Converted(spec, canon, dict(producer))


@dataclass
class Probe:
    """An input, the source's output on it, and where each output value sits in rnninfer's.

    The caller (which may run the engine; converters never do) compares
    ``Model.predict(inputs, lengths=lengths)`` with ``expected``:
    ``index[i] = (b, t, k)`` (``t = -1`` for one row per sequence) locates
    ``expected[i]`` in ``Model.predict(inputs, lengths=lengths)``.
    """

    inputs: np.ndarray
    lengths: np.ndarray | None
    expected: np.ndarray
    index: np.ndarray

    def max_difference(self, got: np.ndarray) -> float:
        """Largest absolute difference between ``got`` (a predict result) and the source."""
        b, t, k = self.index[:, 0], self.index[:, 1], self.index[:, 2]
        vals = got[b, k] if got.ndim == 2 else got[b, t, k]
        return float(np.max(np.abs(vals.astype(np.float64) - self.expected))) if len(vals) else 0.0

    @staticmethod
    def whole(inputs: np.ndarray, expected: np.ndarray) -> Probe:
        """A probe whose source output has rnninfer's own shape ``(B, out)`` or ``(B, T, out)``."""
        grid = np.indices(expected.shape).reshape(expected.ndim, -1).T
        if expected.ndim == 2:
            grid = np.stack([grid[:, 0], np.full(len(grid), -1), grid[:, 1]], axis=1)
        return Probe(inputs, None, expected.astype(np.float64).reshape(-1), grid.astype(np.int64))
