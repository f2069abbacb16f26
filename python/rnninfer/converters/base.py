"""What every converter shares: the result type and its one validation.

A converter is a reader (file or object -> named arrays + config, no rnninfer
types) followed by a mapper (-> spec + canonical tensors + provenance). The
mapper's result passes :func:`finish` once; :func:`rnninfer.from_keras` and
:func:`rnninfer.from_torch` wrap it into a ``Model`` (this package never
imports the engine).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

from ..errors import ModelFormatError
from ..format.manifest import ModelSpec
from ..format.spec import DTYPE, validate

__all__ = ["Converted", "finish"]


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
