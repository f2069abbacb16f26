"""Reduced-precision weights: bf16 rounding, int8 quantisation, and their file form.

Only the two big recurrent-layer matrices, ``w_ih`` and ``w_hh`` of every
direction, are stored and packed in reduced precision; embeddings, biases,
LSTM projections ``w_hr`` and head layers stay float32 (they are small, or,
for the embedding, read one row per step). See ``docs/precision.md``.

- ``bf16``: round-to-nearest-even of the float32 value to bfloat16, stored as
  the ``uint16`` bit pattern (the high half of the float32 bits). Widening
  back to float32 is exact.
- ``int8``: symmetric per-output-row quantisation: ``scale[r] = max|w[r]| /
  127`` (``0`` for an all-zero row), ``q = round_half_even(w / scale)`` in
  ``[-127, 127]``; the weight used is ``q * scale`` (in float32). Stored as the
  ``int8`` tensor plus a float32 ``<name>_scale`` tensor of shape ``(rows,)``.

Every precision has one "effective" float32 form (:func:`decode`): the exact
values the engine multiplies with. ``Model.tensors`` exposes it, so the float64
reference run on ``Model.tensors`` is an oracle for reduced-precision engines
too. This module never imports the compiled engine.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .manifest import ModelSpec

PRECISIONS = ("fp32", "bf16", "int8")
SCALE_SUFFIX = "_scale"
#: Manifest dtype names of the stored forms (``uint16`` arrays hold bf16 bits).
STORED_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "int8": "int8"}
NUMPY_DTYPES = {"float32": np.dtype("<f4"), "bfloat16": np.dtype("<u2"), "int8": np.dtype("i1")}
INT8_MAX = 127


def check_precision(precision: str | None) -> str | None:
    """Validate a ``precision`` argument (``None`` passes through).

    Raises:
        ValueError: not one of :data:`PRECISIONS` or ``None``.
    """
    if precision is not None and precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS} or None, got {precision!r}")
    return precision


def reducible_names(spec: ModelSpec) -> list[str]:
    """Names of the tensors stored in reduced precision (every ``w_ih``, ``w_hh``)."""
    out = []
    for i, layer in enumerate(spec.layers):
        for d in ("fwd", "bwd")[: layer.num_directions]:
            out += [f"layers.{i}.{d}.w_ih", f"layers.{i}.{d}.w_hh"]
    return out


def to_bf16(w: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns (uint16), round to nearest, ties to even."""
    bits = np.ascontiguousarray(w, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    return rounded.astype(np.uint16)


def from_bf16(b: np.ndarray) -> np.ndarray:
    """bfloat16 bit patterns (uint16) -> float32, exactly."""
    return (np.asarray(b, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


def quantize_int8(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-row int8 quantisation of a 2-D float32 matrix.

    Returns:
        ``(q, scale)``: ``q`` int8 of ``w``'s shape, ``scale`` float32 ``(rows,)``.
    """
    w = np.asarray(w, dtype=np.float32)
    amax = np.abs(w).max(axis=1) if w.shape[1] else np.zeros(w.shape[0], np.float32)
    scale = (amax / np.float32(INT8_MAX)).astype(np.float32)
    safe = np.where(scale > 0, scale, np.float32(1))
    q = np.clip(np.rint(w / safe[:, None]), -INT8_MAX, INT8_MAX).astype(np.int8)
    return q, scale


def dequantize_int8(q: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """``q * scale`` per row, in float32 (the values the int8 kernels use)."""
    return (np.asarray(q, dtype=np.float32) * np.asarray(scale, dtype=np.float32)[:, None]).astype(
        np.float32
    )


def stored_precision(spec: ModelSpec, tensors: Mapping[str, np.ndarray]) -> str:
    """The precision the reducible tensors are stored in.

    Raises:
        ValueError: reducible tensors in different precisions.
    """
    seen: set[str] = set()
    for name in reducible_names(spec):
        t = tensors.get(name)
        if t is None:
            continue
        if t.dtype == np.uint16:
            seen.add("bf16")
        elif t.dtype == np.int8:
            seen.add("int8")
        else:
            # float32, or a wrong dtype that the tensor rules (checked.py) report by name.
            seen.add("fp32")
    if len(seen) > 1:
        raise ValueError(f"reducible tensors mix precisions {sorted(seen)}; a model has one precision")
    return seen.pop() if seen else "fp32"


def validate_stored(spec: ModelSpec, tensors: Mapping[str, np.ndarray]) -> list[str]:
    """Problems with the reduced-precision part of stored tensors (shapes of scales, etc.)."""
    problems: list[str] = []
    try:
        prec = stored_precision(spec, tensors)
    except ValueError as e:
        return [str(e)]
    for name in reducible_names(spec):
        sname = name + SCALE_SUFFIX
        t = tensors.get(name)
        if prec != "int8":
            if sname in tensors:
                problems.append(f"unexpected tensor {sname!r} (scales belong to int8 weights only)")
            continue
        if t is None or t.ndim != 2:
            continue  # the tensor rules (checked.py) report missing or misshapen weights
        s = tensors.get(sname)
        if s is None:
            problems.append(f"missing tensor {sname!r} (float32 scales of int8 {name!r}, shape ({t.shape[0]},))")
            continue
        if s.dtype != np.float32 or s.shape != (t.shape[0],):
            problems.append(f"tensor {sname!r} must be float32 of shape ({t.shape[0]},), got {s.dtype} {s.shape}")
        elif not (np.all(np.isfinite(s)) and np.all(s >= 0)):
            problems.append(f"tensor {sname!r} must hold finite non-negative scales")
        if t.size and int(np.abs(t.astype(np.int16)).max()) > INT8_MAX:
            problems.append(f"tensor {name!r} holds -128; int8 weights are symmetric in [-127, 127]")
    return problems


def decode(spec: ModelSpec, tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The effective float32 tensors of stored ones (exact widening / dequantisation)."""
    out = {k: v for k, v in tensors.items() if not k.endswith(SCALE_SUFFIX)}
    for name in reducible_names(spec):
        t = tensors.get(name)
        if t is None:
            continue
        if t.dtype == np.uint16:
            out[name] = from_bf16(t)
        elif t.dtype == np.int8:
            out[name] = dequantize_int8(t, tensors[name + SCALE_SUFFIX])
    return out


def encode(spec: ModelSpec, tensors: Mapping[str, np.ndarray], precision: str) -> dict[str, np.ndarray]:
    """float32 tensors -> their stored form at ``precision`` (the engine takes the same form)."""
    check_precision(precision)
    out = dict(tensors)
    if precision == "fp32":
        return out
    for name in reducible_names(spec):
        w = out[name]
        if precision == "bf16":
            out[name] = to_bf16(w)
        else:
            out[name], out[name + SCALE_SUFFIX] = quantize_int8(w)
    return out


def convert(spec: ModelSpec, stored: Mapping[str, np.ndarray], precision: str) -> dict[str, np.ndarray]:
    """Stored tensors (any precision) -> stored form at ``precision``.

    Unchanged when ``stored`` already is in ``precision`` (int8 files keep their
    exact codes and scales); otherwise the effective float32 values are
    re-encoded (bf16 -> fp32 widens exactly).
    """
    if stored_precision(spec, stored) == precision:
        return dict(stored)
    return encode(spec, decode(spec, stored), precision)
