"""The same model, with the same weights, in rnninfer and in the frameworks it is compared with.

Every engine is a :class:`Peer` whose ``prepare(spec, tensors, threads)``
returns a :class:`Prepared` ``(run, version)``: ``run(tokens)`` takes a padded
``(B, T)`` integer array (or ``(B, T, F)`` float features) and returns the
``(B, out)`` float array, converting the input the way a user of that
framework would have to, so the conversion is part of the timed call.

Peers:

* ``rnninfer``: :class:`rnninfer.Model` built from the canonical tensors.
* ``rnninfer-percore``: one single-threaded rnninfer model per thread, each
  taking a slice of the batch side by side (no scheduler: the cores' ceiling).
* ``rnninfer-bf16`` / ``rnninfer-int8``: the same with reduced-precision
  weights (``precision="bf16"`` / ``"int8"``, docs/precision.md), on the
  process's default kernel table.
* ``rnninfer-bf16-widen`` / ``rnninfer-int8-widen``: the same weights on the
  best kernel table that widens them to fp32 in registers (fp32 activations),
  for comparison with the dot-product kernels of ``avx512_bf16``.
* ``pytorch``: ``nn.Embedding`` -> ``nn.LSTM``/``nn.GRU``/``nn.RNN`` (one
  module with ``num_layers`` when the stack is uniform, else one per layer) ->
  final hidden state of the top layer (``h_n[-num_directions:]``) ->
  ``nn.Linear`` head; eager, under ``torch.inference_mode()``, with
  ``torch.set_num_threads(threads)``.
* ``onnxruntime``: that module exported with ``torch.onnx.export`` (the legacy
  TorchScript exporter, ``dynamo=False``: it writes native ONNX ``LSTM``/``GRU``
  ops and needs no ``onnxscript``; the dynamo exporter is tried only if the
  legacy one is gone), run by ``onnxruntime`` on the CPU provider with
  ``intra_op_num_threads=threads``, ``inter_op_num_threads=1``, sequential
  execution, all graph optimisations.
* ``onnxruntime-int8``: that ONNX file through
  ``onnxruntime.quantization.quantize_dynamic`` (int8 weights, activations
  quantised per call by ORT), same session options.
* ``keras-xla`` / ``keras-eager``: a ``keras.Sequential`` (Keras 3, TensorFlow
  backend) with the weights set from the canonical tensors, called through
  ``tf.function(jit_compile=True)`` and as plain ``model(x, training=False)``.
  TensorFlow's thread pools can only be sized before it initialises, so
  :func:`setup_process` must run first in a fresh process.

Frameworks are imported lazily, inside ``prepare``; :meth:`Peer.missing` tells
whether one is installed without importing it. :func:`check` compares an
engine's output with the float64 oracle :func:`rnninfer.reference.run_sequence`
so that a wrong model is never timed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .base import (
    CHECK_TOLERANCE,
    REDUCED_CHECK_TOLERANCE,
    Peer,
    Prepared,
    RunFn,
    Tensors,
    Unsupported,
    WrongOutput,
    check_supported,
    setup_process,
    thread_env,
)
from .keras_tf import keras_model, prepare_keras_eager, prepare_keras_xla
from .native import (
    prepare_rnninfer,
    prepare_rnninfer_bf16,
    prepare_rnninfer_bf16_widen,
    prepare_rnninfer_int8,
    prepare_rnninfer_int8_widen,
    prepare_rnninfer_percore,
)
from .onnxrt import (
    cpu_session,
    export_onnx,
    prepare_onnxruntime,
    prepare_onnxruntime_int8,
    prepare_openvino,
    prepare_openvino_bf16,
)
from .pytorch import prepare_pytorch, torch_module

# ---- registry ------------------------------------------------------------------------------
PEERS: tuple[Peer, ...] = (
    Peer("rnninfer", "rnninfer", ("rnninfer",), prepare_rnninfer),
    Peer("rnninfer-percore", "rnninfer", ("rnninfer",), prepare_rnninfer_percore),
    Peer("rnninfer-bf16", "rnninfer", ("rnninfer",), prepare_rnninfer_bf16, REDUCED_CHECK_TOLERANCE),
    Peer("rnninfer-int8", "rnninfer", ("rnninfer",), prepare_rnninfer_int8, REDUCED_CHECK_TOLERANCE),
    Peer("rnninfer-bf16-widen", "rnninfer", ("rnninfer",), prepare_rnninfer_bf16_widen,
         REDUCED_CHECK_TOLERANCE),
    Peer("rnninfer-int8-widen", "rnninfer", ("rnninfer",), prepare_rnninfer_int8_widen,
         REDUCED_CHECK_TOLERANCE),
    Peer("pytorch", "torch", ("torch",), prepare_pytorch),
    Peer("onnxruntime", "onnxruntime", ("onnxruntime", "onnx", "torch"), prepare_onnxruntime),
    Peer("onnxruntime-int8", "onnxruntime", ("onnxruntime", "onnx", "torch"), prepare_onnxruntime_int8,
         REDUCED_CHECK_TOLERANCE),
    Peer("openvino", "openvino", ("openvino", "onnx", "torch"), prepare_openvino),
    Peer("openvino-bf16", "openvino", ("openvino", "onnx", "torch"), prepare_openvino_bf16,
         REDUCED_CHECK_TOLERANCE),
    Peer("keras-xla", "keras", ("keras", "tensorflow"), prepare_keras_xla),
    Peer("keras-eager", "keras", ("keras", "tensorflow"), prepare_keras_eager),
)
PEER_NAMES = tuple(p.name for p in PEERS)


def get(name: str) -> Peer:
    """The peer called ``name``."""
    for p in PEERS:
        if p.name == name:
            return p
    raise KeyError(f"unknown peer {name!r}; known: {', '.join(PEER_NAMES)}")


# ---- correctness ------------------------------------------------------------------------------
def reference_outputs(spec: Any, tensors: Tensors, x: np.ndarray, rows: Sequence[int] | None = None) -> np.ndarray:
    """Float64 oracle outputs for the rows ``rows`` (default all) of the padded batch ``x``."""
    from rnninfer.reference import run_sequence

    t = dict(tensors)
    idx = range(len(x)) if rows is None else rows
    return np.stack([run_sequence(spec, t, x[i]) for i in idx])


def max_abs_error(out: np.ndarray, ref: np.ndarray) -> float:
    """Largest absolute difference; ``inf`` on a shape mismatch or non-finite output."""
    out = np.asarray(out, dtype=np.float64)
    if out.shape != ref.shape or not np.all(np.isfinite(out)):
        return float("inf")
    return float(np.max(np.abs(out - ref))) if out.size else 0.0


def check(
    run: RunFn, spec: Any, tensors: Tensors, x: np.ndarray, *,
    rows: Sequence[int] | None = None, tol: float = CHECK_TOLERANCE, ref: np.ndarray | None = None,
) -> float:
    """Run ``x`` and compare rows ``rows`` with the reference; returns the max error.

    Raises:
        WrongOutput: when the error exceeds ``tol`` (or shapes differ).
    """
    out = np.asarray(run(x))
    if ref is None:
        ref = reference_outputs(spec, tensors, x, rows)
    got = out if rows is None else out[list(rows)]
    err = max_abs_error(got, ref)
    if not err <= tol:
        raise WrongOutput(f"max |output - reference| = {err:.3g} > {tol:g} (shape {out.shape})")
    return err


def verify(peer: Peer, spec: Any, tensors: Tensors, threads: int = 1, seed: int = 0) -> float:
    """Prepare ``peer`` in this process and check it on a small random batch."""
    prepared = peer.prepare(spec, tensors, threads)
    return check(prepared.run, spec, tensors, sample_input(spec, 2, 9, seed), tol=peer.tolerance)


def sample_input(spec: Any, batch: int, T: int, seed: int) -> np.ndarray:
    """A random padded input for ``spec``: ``(batch, T)`` int64 ids or ``(batch, T, F)`` float32."""
    rng = np.random.default_rng(seed)
    if spec.input.kind == "tokens":
        return rng.integers(0, spec.input.vocab_size, size=(batch, T), dtype=np.int64)
    return rng.standard_normal((batch, T, spec.input.features)).astype(np.float32)


__all__ = [
    "CHECK_TOLERANCE", "PEERS", "PEER_NAMES", "REDUCED_CHECK_TOLERANCE", "Peer", "Prepared", "RunFn", "Tensors",
    "Unsupported", "WrongOutput", "check", "check_supported", "cpu_session", "export_onnx", "get", "keras_model",
    "max_abs_error", "reference_outputs", "sample_input", "setup_process", "thread_env", "torch_module", "verify",
]
