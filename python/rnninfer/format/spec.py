"""Canonical tensors of a model: names, shapes, dtypes, and their validation.

The canonical layout is PyTorch's (see ``docs/format.md``): a recurrent weight
is row-major ``(G * H, in)`` with gate blocks in the order LSTM ``i, f, g, o``,
GRU ``r, z, n``; biases are kept as the two PyTorch vectors ``b_ih`` and
``b_hh``. Converters only reorder and transpose into this layout.
"""

from __future__ import annotations

import numpy as np

from .kinds import GATES
from .manifest import ModelSpec

DTYPE = np.dtype("<f4")
DIR_NAMES = ("fwd", "bwd")


def expected_tensors(spec: ModelSpec) -> dict[str, tuple[int, ...]]:
    """Map every tensor a spec needs to its shape, in a stable order."""
    out: dict[str, tuple[int, ...]] = {}
    if spec.input.kind == "tokens":
        out["embedding.weight"] = (spec.input.vocab_size, spec.input.embedding_dim)
    width = spec.input.width
    for i, layer in enumerate(spec.layers):
        g = GATES[layer.cell] * layer.units
        for d in DIR_NAMES[: layer.num_directions]:
            pre = f"layers.{i}.{d}."
            out[pre + "w_ih"] = (g, width)
            out[pre + "w_hh"] = (g, layer.direction_width)
            if layer.bias:
                out[pre + "b_ih"] = (g,)
                out[pre + "b_hh"] = (g,)
            if layer.proj_size:
                out[pre + "w_hr"] = (layer.proj_size, layer.units)
        width = layer.output_width
    for j, dense in enumerate(spec.head):
        out[f"head.{j}.weight"] = (dense.units, width)
        if dense.bias:
            out[f"head.{j}.bias"] = (dense.units,)
        width = dense.units
    return out


def validate(spec: ModelSpec, tensors: dict[str, np.ndarray]) -> list[str]:
    """Every problem with a spec and its float32 tensors (empty list when all is well).

    The rules are :mod:`rnninfer.format.checked`'s; this is their list form.
    """
    from .checked import spec_problems, tensor_problems

    return spec_problems(spec) or tensor_problems(spec, tensors)


def count_params(spec: ModelSpec) -> int:
    """Number of scalar weights in the model."""
    return int(sum(int(np.prod(s)) for s in expected_tensors(spec).values()))
