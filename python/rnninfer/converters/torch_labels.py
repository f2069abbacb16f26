"""Labels: integer ids naming where each element of a traced value comes from.

:mod:`.torch_forward` runs ``forward`` and keeps, for every tensor derived
from the input, a :class:`Val` (label tensors with coefficients); this module
holds the id space and decodes what the head (or the output) reads from the
top recurrent layer: final states or every step, in which column order, summed
or averaged.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Alloc", "Ids", "LayoutRefused", "Refused", "Val", "arg", "decode_readout"]


class Refused(ValueError):
    """``forward`` computes something rnninfer cannot run (the message names it)."""


class LayoutRefused(Refused):
    """A layer reads its input rearranged; with another example layout it may not."""


# ---- ids ------------------------------------------------------------------------------
@dataclass
class Alloc:
    kind: str  # input | emb | seq | hn | cn | head
    name: str
    shape: tuple[int, ...]
    base: int
    info: dict[str, Any] = field(default_factory=dict)


class Ids:
    """Disjoint ranges of integer ids (0 means "no input element", e.g. padding)."""

    def __init__(self) -> None:
        self.allocs: list[Alloc] = []
        self.next = 1

    def new(self, kind: str, name: str, shape: tuple[int, ...], **info: Any) -> Alloc:
        a = Alloc(kind, name, shape, self.next, info)
        self.next += int(np.prod(shape))
        self.allocs.append(a)
        return a

    def grid(self, a: Alloc) -> np.ndarray:
        return np.arange(a.base, a.base + int(np.prod(a.shape)), dtype=np.int64).reshape(a.shape)

    def decode(self, ids: np.ndarray) -> tuple[np.ndarray, list[tuple[int, ...]]]:
        """Alloc index (-1 for 0) and multi-index of each id of a 1-D array."""
        bases = [a.base for a in self.allocs]
        which = np.full(len(ids), -1, dtype=np.int64)
        pos: list[tuple[int, ...]] = []
        for i, v in enumerate(ids.tolist()):
            if v == 0:
                pos.append(())
                continue
            j = bisect.bisect_right(bases, v) - 1
            which[i] = j
            a = self.allocs[j]
            pos.append(tuple(int(x) for x in np.unravel_index(v - a.base, a.shape)))
        return which, pos


@dataclass
class Val:
    """Labels of a tracked tensor: a sum of ``coef * labels`` terms, or an opaque op."""

    terms: list[tuple[float, Any]]
    opaque: str | None = None


STRUCTURAL = frozenset({
    "__getitem__", "view", "reshape", "squeeze", "unsqueeze", "transpose", "permute", "flatten",
    "contiguous", "select", "narrow", "cat", "concat", "concatenate", "stack", "chunk", "split",
    "unbind", "t", "clone", "detach", "index_select", "_pack_padded_sequence",
    "_pad_packed_sequence", "view_as", "reshape_as", "movedim", "swapaxes", "swapdims", "hstack",
    "flip", "__get__",
})  # fmt: skip
IDENTITY = frozenset({"to", "float", "double", "type", "long", "int", "cpu", "requires_grad_"})
DROPOUT = frozenset({"dropout", "dropout1d", "alpha_dropout", "feature_alpha_dropout", "dropout2d"})
ELEMENTWISE = {
    "sigmoid": "sigmoid", "sigmoid_": "sigmoid", "expit": "sigmoid", "tanh": "tanh", "tanh_": "tanh",
    "relu": "relu", "relu_": "relu", "silu": "swish", "selu": "selu", "softsign": "softsign",
    "relu6": "relu6", "mish": "mish", "hardswish": "hard_swish", "hardsigmoid": "hard_sigmoid",
    "gelu": "gelu", "elu": "elu", "leaky_relu": "leaky_relu", "softplus": "softplus",
}  # fmt: skip
VECTOR = {"softmax": "softmax", "log_softmax": "log_softmax"}
ARITH = frozenset({
    "add", "__add__", "__radd__", "sub", "__sub__", "mul", "__mul__", "__rmul__", "div",
    "__truediv__", "mean", "sum",
})  # fmt: skip


def arg(args: Sequence[Any], kwargs: dict[str, Any], i: int, name: str, default: Any) -> Any:
    if len(args) > i:
        return args[i]
    return kwargs.get(name, default)


def decode_readout(
    ids_: Ids, top: tuple[str, Any, Alloc, Alloc], v: Val, where: str
) -> tuple[str, np.ndarray | None, list[tuple[int, int] | None]]:
    """Decode what a value computed from the top recurrent layer holds, per row.

    Returns the readout (``"last"`` or ``"sequence"``), the column map from
    rnninfer's concatenated directions to the value's last axis (``None`` for
    the identity) and each row's ``(b, t)`` (``t = -1`` for final states,
    ``None`` for a padding row).
    """
    name, _mod, seq, hn = top
    D = int(seq.info["directions"])
    W = seq.shape[2] // D
    lengths = seq.info["lengths"]
    shape = tuple(v.terms[0][1].shape) if v.terms else ()
    K = shape[-1] if shape else 0
    n_rows = int(np.prod(shape[:-1])) if shape else 0
    # per row: {(b, t)} seen and an M row accumulator
    kinds: set[str] = set()
    row_bt: list[set[tuple[int, int]]] = [set() for _ in range(n_rows)]
    mats = np.zeros((n_rows, K, D * W))
    seq_i, hn_i = ids_.allocs.index(seq), ids_.allocs.index(hn)
    for coef, lab in v.terms:
        ids = np.asarray(lab.numpy()).astype(np.int64).reshape(n_rows, K)
        which, pos = ids_.decode(ids.reshape(-1))
        for e, (w, p) in enumerate(zip(which.tolist(), pos)):
            r, k = divmod(e, K)
            if w == -1:
                continue
            if w == seq_i:
                b, t, c = p
                d, j = divmod(c, W)
                if (d == 0 and t == lengths[b] - 1) or (d == 1 and t == 0):
                    kinds.add("final-from-seq")
                else:
                    kinds.add("step")
                row_bt[r].add((b, t))
            elif w == hn_i:
                ld, b, j = p
                layer, d = divmod(ld, D)
                if layer != int(hn.info["layers"]) - 1:
                    raise Refused(
                        f"{where} reads h_n of layer {layer} of {name!r}; rnninfer reads the "
                        f"top layer ({int(hn.info['layers']) - 1}) only"
                    )
                t = int(lengths[b]) - 1 if d == 0 else 0
                kinds.add("final")
                row_bt[r].add((b, -1))
                c = d * W + j
            else:
                a = ids_.allocs[w]
                what = {"cn": "the cell state c_n", "emb": "the embedding output",
                        "input": "the model input"}.get(a.kind, f"the output of {a.name!r}")
                raise Refused(f"{where} reads {what} of {a.name!r}; rnninfer's head reads the top "
                              f"recurrent layer ({name!r}) only")
            mats[r, k, c] += coef
    if kinds <= {"final", "final-from-seq"}:
        readout = "last"
        rows: list[tuple[int, int] | None] = []
        for r in range(n_rows):
            bs = {b for b, _ in row_bt[r]}
            if len(bs) != 1:
                raise Refused(f"{where} mixes the batch rows of {name!r}'s final states")
            rows.append((bs.pop(), -1))
    else:
        readout = "sequence"
        rows = []
        for r in range(n_rows):
            if not row_bt[r]:
                rows.append(None)  # padding
                continue
            if len(row_bt[r]) != 1:
                if D == 2 and "final-from-seq" in kinds:
                    raise Refused(
                        f"{where} reads a bidirectional output at one step for both directions "
                        f"(output[:, -1] of {name!r}): the backward direction has seen only the "
                        "last step there. rnninfer reads the backward direction's final state "
                        "(h_n, or output[:, 0, H:]); use that"
                    )
                raise Refused(f"{where} combines outputs of {name!r} at different steps")
            rows.append(next(iter(row_bt[r])))
        covered = {bt for bt in rows if bt is not None}
        want = {(b, t) for b in range(len(lengths)) for t in range(int(lengths[b]))}
        if covered != want and D == 2 and all(t == lengths[b] - 1 for b, t in covered):
            raise Refused(
                f"{where} reads a bidirectional output at the last step for both directions "
                f"(output[:, -1] of {name!r}): the backward direction has seen only the last "
                "step there. rnninfer reads the backward direction's final state (h_n, or "
                "output[:, 0, H:]); use that"
            )
        if covered != want:
            raise Refused(
                f"{where} reads {name!r}'s output at some steps only (e.g. output[:, -1] or "
                "output[:, 0]); rnninfer reads the final states (h_n) or every step"
            )
    used = [r for r in range(n_rows) if rows[r] is not None]
    if not used:
        raise Refused(f"{where} reads no recurrent output")
    m = mats[used[0]]
    if any(not np.array_equal(mats[r], m) for r in used):
        raise Refused(f"{where} reads the recurrent outputs differently for different rows")
    columns = None if (m.shape[0] == m.shape[1] and np.array_equal(m, np.eye(m.shape[0]))) else m
    return readout, columns, rows
