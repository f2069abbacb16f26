"""What every converter shares: the result type and its one validation.

A converter is a reader (file or object -> named arrays + config, no rnninfer
types) followed by a mapper (-> spec + canonical tensors + provenance). The
mapper's result passes :func:`finish`, which checks it once
(:func:`rnninfer.format.checked.check_model`); :func:`rnninfer.from_keras` and
:func:`rnninfer.from_torch` open that checked model without checking it again
(this package never imports the engine).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..format.checked import CheckedModel, check_model
from ..format.manifest import ModelSpec
from ..format.spec import DTYPE

__all__ = ["Converted", "Probe", "finish"]


@dataclass(frozen=True)
class Converted:
    """A converted model: the checked spec and canonical float32 tensors, and provenance.

    Unpacks as ``spec, tensors, producer``. The tensors are read-only copies
    (the source's arrays stay its own).
    """

    checked: CheckedModel
    producer: dict[str, Any]

    @property
    def spec(self) -> ModelSpec:
        """The model description."""
        return self.checked.spec

    @property
    def tensors(self) -> Mapping[str, np.ndarray]:
        """The canonical float32 tensors by name (read-only)."""
        return self.checked.stored

    def __iter__(self) -> Iterator[Any]:
        return iter((self.spec, self.tensors, self.producer))


def finish(
    spec: ModelSpec,
    tensors: Mapping[str, np.ndarray],
    producer: Mapping[str, Any],
    *,
    source: str | None = None,
) -> Converted:
    """Check a converted model once against the canonical spec.

    Converters only reorder and transpose; this is where the result is checked,
    so a converter bug surfaces as a ``ModelFormatError`` naming the tensor
    rather than as wrong predictions. The tensors are copied (an in-memory
    source's weights may be views of its live parameters).

    Raises:
        ModelFormatError: listing every problem found.
    """
    canon = {k: np.asarray(v, dtype=DTYPE) for k, v in tensors.items()}
    return Converted(check_model(spec, canon, source=source), dict(producer))


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
