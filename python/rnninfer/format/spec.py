"""Canonical tensors of a model: names, shapes, dtypes, and their validation.

The canonical layout is PyTorch's (see ``docs/format.md``): a recurrent weight
is row-major ``(G * H, in)`` with gate blocks in the order LSTM ``i, f, g, o``,
GRU ``r, z, n``; biases are kept as the two PyTorch vectors ``b_ih`` and
``b_hh``. Converters only reorder and transpose into this layout.
"""

from __future__ import annotations

import numpy as np

from .manifest import GATES, ModelSpec, validate_spec

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
    """Every problem with a spec and its tensors (empty list when all is well)."""
    problems = validate_spec(spec)
    if problems:
        return problems
    want = expected_tensors(spec)
    for name, shape in want.items():
        if name not in tensors:
            problems.append(f"missing tensor {name!r} (expected shape {shape}, float32)")
            continue
        t = tensors[name]
        if not isinstance(t, np.ndarray):
            problems.append(f"tensor {name!r} is not an array")
            continue
        if t.dtype != DTYPE:
            problems.append(f"tensor {name!r} has dtype {t.dtype}, expected float32")
        if tuple(t.shape) != shape:
            problems.append(f"tensor {name!r} has shape {tuple(t.shape)}, expected {shape}")
        elif t.dtype.kind == "f" and not np.all(np.isfinite(t)):
            problems.append(f"tensor {name!r} contains NaN or infinite values")
    for name in tensors:
        if name not in want:
            problems.append(f"unexpected tensor {name!r} (not used by this model)")
    return problems


def count_params(spec: ModelSpec) -> int:
    """Number of scalar weights in the model."""
    return int(sum(int(np.prod(s)) for s in expected_tensors(spec).values()))
