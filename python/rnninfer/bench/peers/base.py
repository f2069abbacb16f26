"""What every benchmark engine is: :class:`Peer`, :class:`Prepared`, the process
setup that sizes a framework's thread pools, and what the peers can express."""

from __future__ import annotations

import contextlib
import importlib.util
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

RunFn = Callable[[np.ndarray], np.ndarray]
Tensors = Mapping[str, np.ndarray]
#: Largest absolute difference from the float64 reference accepted before timing.
CHECK_TOLERANCE = 1e-4
#: The same check for engines with reduced-precision weights: a sanity bound
#: that catches a wrong model, not a statement of their accuracy (that is
#: measured and documented in docs/precision.md).
REDUCED_CHECK_TOLERANCE = 5e-2
_HEAD_ACTIVATIONS = ("linear", "relu", "tanh", "sigmoid", "softmax")


class Prepared(NamedTuple):
    """A ready-to-time engine: ``run(x) -> (B, out)``, a version string and, for
    rnninfer, how its scheduler ran the calls (cumulative counts)."""

    run: RunFn
    version: str
    schedule: Callable[[], dict[str, int]] | None = None


class Unsupported(NotImplementedError):
    """The peer framework cannot express this model (the message says why)."""


class WrongOutput(AssertionError):
    """An engine's output differs from the float64 reference beyond tolerance."""


@dataclass(frozen=True)
class Peer:
    """One engine under comparison.

    Attributes:
        name: the row label in results (``pytorch``, ``keras-xla`` ...).
        group: engines of one group share a worker process (one framework).
        modules: importable modules the engine needs.
        prepare: ``prepare(spec, tensors, threads) -> Prepared``.
        tolerance: largest accepted difference from the float64 reference.
    """

    name: str
    group: str
    modules: tuple[str, ...]
    prepare: Callable[[Any, Tensors, int], Prepared]
    tolerance: float = CHECK_TOLERANCE

    def missing(self) -> list[str]:
        """Modules this peer needs that are not installed (nothing is imported)."""
        out = []
        for m in self.modules:
            try:
                if importlib.util.find_spec(m) is None:
                    out.append(m)
            except (ImportError, ValueError):
                out.append(m)
        return out


# ---- process setup -----------------------------------------------------------------------
def thread_env(threads: int) -> dict[str, str]:
    """Environment variables that pin every common thread pool to ``threads``."""
    n = str(threads)
    return {
        "OMP_NUM_THREADS": n,
        "MKL_NUM_THREADS": n,
        "OPENBLAS_NUM_THREADS": n,
        "TF_NUM_INTRAOP_THREADS": n,
        "TF_NUM_INTEROP_THREADS": "1",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "KERAS_BACKEND": "tensorflow",
    }


def setup_process(group: str, threads: int) -> None:
    """Size the thread pools of ``group``'s framework; call first in a fresh process."""
    os.environ.update(thread_env(threads))
    if group == "torch":
        import torch

        torch.set_num_threads(threads)
        # Raises once the inter-op pool has started: harmless for eager inference.
        with contextlib.suppress(RuntimeError):
            torch.set_num_interop_threads(1)
    elif group == "keras":
        from .keras_tf import configure_tensorflow

        configure_tensorflow(threads)


# ---- what the peers can express ----------------------------------------------------------------
def check_supported(spec: Any, who: str) -> None:
    """Raise :class:`Unsupported` listing what ``who`` cannot run in ``spec``."""
    problems = []
    inp = spec.input
    if inp.kind == "tokens" and inp.mask_zero:
        problems.append("mask_zero embedding")
    if inp.kind == "features" and inp.mask_value is not None:
        problems.append("feature masking")
    for i, layer in enumerate(spec.layers):
        where = f"layer {i} ({layer.cell})"
        if layer.residual_from is not None:
            problems.append(f"{where}: residual link")
        if layer.direction == "backward":
            problems.append(f"{where}: backward-only direction")
        if layer.num_directions == 2 and layer.merge != "concat":
            problems.append(f"{where}: merge {layer.merge!r}")
        if who in ("pytorch", "onnxruntime"):
            if layer.cell == "rnn":
                if layer.activation not in ("tanh", "relu"):
                    problems.append(f"{where}: activation {layer.activation!r}")
            elif (layer.activation, layer.recurrent_activation) != ("tanh", "sigmoid"):
                problems.append(f"{where}: activations {layer.activation}/{layer.recurrent_activation}")
            if layer.cell == "gru" and not layer.reset_after:
                problems.append(f"{where}: reset_after=False")
        if who == "keras":
            if layer.proj_size:
                problems.append(f"{where}: proj_size")
            if layer.cell == "gru" and not layer.reset_after:
                problems.append(f"{where}: reset_after=False (not wired in the bench)")
    if spec.readout not in ("last", "sequence"):
        problems.append(f"readout {spec.readout!r}")
    for j, dense in enumerate(spec.head):
        if dense.activation not in _HEAD_ACTIVATIONS:
            problems.append(f"head {j}: activation {dense.activation!r}")
    if problems:
        raise Unsupported(f"{who} peer cannot express: " + "; ".join(problems))
