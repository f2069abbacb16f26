"""The rules a model must satisfy before it runs, in one place.

:func:`check_model` is the single owner of the rules: the hyper-parameters
(:func:`spec_problems`), the stored reduced-precision form
(:func:`rnninfer.format.precision.validate_stored`) and the tensors (names,
shapes, dtypes, finite values). It runs once per model, whether the model
comes from a file, a converter or ``rnninfer.build``, decodes reduced weights
once, scans every tensor once, and returns a :class:`CheckedModel`: the spec
and read-only tensors that :class:`rnninfer.Model` and the engine trust
without checking again (the C++ engine keeps cheap checks of its own
memory-safety invariants only). Problems are collected, not stopped at: a
``ModelFormatError`` lists all of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np

from ..errors import ModelFormatError
from . import precision as prec
from .kinds import (
    CELLS,
    DIRECTIONS,
    ELEMENTWISE_ACTIVATIONS,
    HEAD_ACTIVATIONS,
    INPUT_KINDS,
    MERGE_MODES,
    READOUTS,
)
from .manifest import ModelSpec
from .spec import DTYPE, expected_tensors

__all__ = ["CheckedModel", "check_model", "model_problems", "spec_problems", "tensor_problems"]


@dataclass(frozen=True)
class CheckedModel:
    """A spec and tensors that passed :func:`check_model`; immutable.

    Attributes:
        spec: the model description.
        stored: the tensors as a file stores them at ``precision`` (bf16 as
            ``uint16`` bits, int8 codes plus ``<name>_scale``), read-only.
        effective: the float32 values the engine computes with, read-only.
        precision: ``"fp32"``, ``"bf16"`` or ``"int8"``.
    """

    spec: ModelSpec
    stored: Mapping[str, np.ndarray]
    effective: Mapping[str, np.ndarray]
    precision: str

    def with_precision(self, precision: str) -> CheckedModel:
        """The same model stored at another precision (``self`` when it already is).

        Re-encoding starts from the effective weights (bf16 -> fp32 widens
        exactly). Only the re-encoded tensors are checked again: a float32
        weight beyond bf16's range rounds to infinity.

        Raises:
            ModelFormatError: a re-encoded weight is not finite.
        """
        if precision == self.precision:
            return self
        stored = prec.encode(self.spec, self.effective, precision)
        effective = prec.decode(self.spec, stored)
        bad = [n for n in prec.reducible_names(self.spec) if not np.isfinite(effective[n]).all()]
        if bad:
            raise ModelFormatError(
                [f"tensor {n!r} is not finite at precision {precision!r} (beyond its range)" for n in bad]
            )
        return CheckedModel(self.spec, _frozen(stored), _frozen(effective), precision)


def _frozen(tensors: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
    for t in tensors.values():
        t.setflags(write=False)
    return MappingProxyType(dict(tensors))


def check_model(spec: ModelSpec, tensors: Mapping[str, Any], *, owned: bool = False,
                source: str | None = None) -> CheckedModel:
    """Check a model once; the result is trusted everywhere after.

    Args:
        spec: the model description.
        tensors: its tensors by name, stored form (float32, or bf16 / int8
            reducible weights as :mod:`rnninfer.format.precision` describes).
        owned: the caller hands the arrays over (a file reader that just
            made them): they are frozen in place instead of copied, so no
            one else can change a model's weights after the check.
        source: named in the error (a file name).

    Raises:
        ModelFormatError: listing every problem found.
    """
    problems, checked = model_problems(spec, tensors, owned=owned)
    if checked is None:
        raise ModelFormatError(problems, source=source)
    return checked


def model_problems(
    spec: ModelSpec, tensors: Mapping[str, Any], *, owned: bool = False
) -> tuple[list[str], CheckedModel | None]:
    """Every problem with ``spec`` and ``tensors``, and the checked model when there are none."""
    problems = spec_problems(spec)
    if problems:
        return problems, None
    arrays: dict[str, np.ndarray] = {}
    for name, t in tensors.items():
        if not isinstance(t, np.ndarray):
            problems.append(f"tensor {name!r} is not a numpy array (got {type(t).__name__})")
        elif owned and t.flags.c_contiguous:
            arrays[name] = t
        else:
            arrays[name] = np.array(t, order="C", copy=True)
    if problems:
        return problems, None
    problems = prec.validate_stored(spec, arrays)
    if problems:
        return problems, None
    effective = prec.decode(spec, arrays)
    problems = tensor_problems(spec, effective)
    if problems:
        return problems, None
    return [], CheckedModel(spec, _frozen(arrays), _frozen(effective), prec.stored_precision(spec, arrays))


def tensor_problems(spec: ModelSpec, tensors: Mapping[str, np.ndarray]) -> list[str]:
    """Problems with the float32 tensors of a spec that passed :func:`spec_problems`."""
    problems: list[str] = []
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
        elif t.dtype.kind == "f" and not np.isfinite(t).all():
            problems.append(f"tensor {name!r} contains NaN or infinite values")
    for name in tensors:
        if name not in want:
            problems.append(f"unexpected tensor {name!r} (not used by this model)")
    return problems


def spec_problems(spec: ModelSpec) -> list[str]:
    """Every problem with a spec's hyper-parameters, as readable sentences."""
    p: list[str] = []
    inp = spec.input

    def pos_int(v: Any, what: str) -> bool:
        ok = isinstance(v, int) and not isinstance(v, bool) and v > 0
        if not ok:
            p.append(f"{what} must be a positive integer, got {v!r}")
        return ok

    if inp.kind not in INPUT_KINDS:
        p.append(f"input.kind must be one of {INPUT_KINDS}, got {inp.kind!r}")
    elif inp.kind == "tokens":
        pos_int(inp.vocab_size, "input.vocab_size")
        pos_int(inp.embedding_dim, "input.embedding_dim")
        if inp.mask_value is not None:
            p.append("input.mask_value applies to feature input only")
    else:
        pos_int(inp.features, "input.features")
        if inp.mask_zero:
            p.append("input.mask_zero applies to token input only")
        if inp.mask_value is not None and not isinstance(inp.mask_value, (int, float)):
            p.append(f"input.mask_value must be a number or null, got {inp.mask_value!r}")
    if not isinstance(inp.mask_zero, bool):
        p.append("input.mask_zero must be a boolean")
    if not isinstance(spec.layers, tuple) or len(spec.layers) == 0:
        p.append("a model needs at least one recurrent layer")
    for i, layer in enumerate(spec.layers):
        w = f"layers[{i}]"
        if layer.cell not in CELLS:
            p.append(f"{w}: unknown layer kind (cell) {layer.cell!r}; known: {CELLS}")
            continue
        pos_int(layer.units, f"{w}.units")
        if layer.direction not in DIRECTIONS:
            p.append(f"{w}.direction must be one of {DIRECTIONS}, got {layer.direction!r}")
        if layer.merge not in MERGE_MODES:
            p.append(f"{w}.merge must be one of {MERGE_MODES}, got {layer.merge!r}")
        for attr in ("activation", "recurrent_activation"):
            if getattr(layer, attr) not in ELEMENTWISE_ACTIVATIONS:
                p.append(
                    f"{w}.{attr} {getattr(layer, attr)!r} is not supported; "
                    f"supported: {ELEMENTWISE_ACTIVATIONS}"
                )
        for attr in ("reset_after", "bias"):
            if not isinstance(getattr(layer, attr), bool):
                p.append(f"{w}.{attr} must be a boolean")
        if not isinstance(layer.proj_size, int) or isinstance(layer.proj_size, bool):
            p.append(f"{w}.proj_size must be an integer")
        elif layer.proj_size < 0:
            p.append(f"{w}.proj_size must be >= 0")
        elif layer.proj_size and layer.cell != "lstm":
            p.append(f"{w}.proj_size is only valid for lstm cells")
        elif layer.proj_size and isinstance(layer.units, int) and layer.proj_size >= layer.units:
            p.append(f"{w}.proj_size ({layer.proj_size}) must be smaller than units ({layer.units})")
        r = layer.residual_from
        if r is not None:
            if not isinstance(r, int) or isinstance(r, bool) or r < -1 or r >= i:
                p.append(f"{w}.residual_from must be -1 or an earlier layer index, got {r!r}")
            elif not p and spec.stream_width(r) != layer.output_width:
                p.append(
                    f"{w}.residual_from={r}: width {spec.stream_width(r)} does not match "
                    f"the layer's output width {layer.output_width}"
                )
    if spec.readout not in READOUTS:
        p.append(f"readout must be one of {READOUTS}, got {spec.readout!r}")
    elif spec.readout == "last" and spec.layers and spec.layers[-1].residual_from is not None:
        p.append("a residual link on the top layer needs readout 'sequence', 'mean' or 'max'")
    for j, d in enumerate(spec.head):
        pos_int(d.units, f"head[{j}].units")
        if d.activation not in HEAD_ACTIVATIONS:
            p.append(
                f"head[{j}].activation {d.activation!r} is not supported; "
                f"supported: {HEAD_ACTIVATIONS}"
            )
        if not isinstance(d.bias, bool):
            p.append(f"head[{j}].bias must be a boolean")
    return p
