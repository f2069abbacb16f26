"""What every converter shares: turning a spec + canonical tensors into a Model."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ModelFormatError
from ..format.manifest import ModelSpec
from ..format.spec import DTYPE, validate

if TYPE_CHECKING:
    from ..model import Model


def finish(
    spec: ModelSpec,
    tensors: Mapping[str, np.ndarray],
    producer: Mapping[str, Any],
    *,
    source: str | None = None,
) -> Model:
    """Validate a converted model and open it.

    Converters only reorder and transpose; this is where the result is checked
    against the canonical spec, so a converter bug surfaces as a
    ``ModelFormatError`` naming the tensor rather than as wrong predictions.
    """
    from ..model import Model

    canon = {k: np.ascontiguousarray(v, dtype=DTYPE) for k, v in tensors.items()}
    problems = validate(spec, canon)
    if problems:
        raise ModelFormatError(problems, source=source)
    return Model(spec, canon, producer=dict(producer))
