"""A float64 NumPy executor of a model spec: the oracle for tests and debugging.

It follows the equations of ``docs/format.md`` literally, one sequence at a
time, with no attention to speed. The C++ engine must agree with it within
the documented tolerance; parity with the real frameworks is checked separately.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from .format.manifest import ModelSpec, RecurrentSpec

Array = np.ndarray


def _erf(x: Array) -> Array:
    return np.vectorize(math.erf, otypes=[np.float64])(x) if x.size else x


#: Every element-wise activation of :data:`rnninfer.format.kinds.ELEMENTWISE_ACTIVATIONS`
#: (``tests/format/test_kinds.py`` checks the two name the same set).
ELEMENTWISE: dict[str, Callable[[Array], Array]] = {
    "linear": lambda x: x,
    "relu": lambda x: np.maximum(x, 0.0),
    "tanh": np.tanh,
    "sigmoid": lambda x: 0.5 * (1.0 + np.tanh(0.5 * x)),
    "hard_sigmoid": lambda x: np.clip(x / 6.0 + 0.5, 0.0, 1.0),
    "hard_sigmoid_keras2": lambda x: np.clip(0.2 * x + 0.5, 0.0, 1.0),
    "elu": lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0.0))),
    "selu": lambda x: 1.0507009873554805
    * np.where(x > 0, x, 1.6732632423543772 * np.expm1(np.minimum(x, 0.0))),
    "softplus": lambda x: np.logaddexp(0.0, x),
    "softsign": lambda x: x / (1.0 + np.abs(x)),
    "swish": lambda x: x * 0.5 * (1.0 + np.tanh(0.5 * x)),
    "gelu": lambda x: 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0))),
    "exponential": np.exp,
    "relu6": lambda x: np.clip(x, 0.0, 6.0),
    "leaky_relu": lambda x: np.where(x >= 0, x, 0.2 * x),
    "mish": lambda x: x * np.tanh(np.logaddexp(0.0, x)),
    "hard_swish": lambda x: x * np.clip(x / 6.0 + 0.5, 0.0, 1.0),
}


def activation(name: str, x: Array) -> Array:
    """Apply a named activation (element-wise, or softmax over the last axis)."""
    if name == "softmax":
        e = np.exp(x - x.max(axis=-1, keepdims=True))
        return np.asarray(e / e.sum(axis=-1, keepdims=True))
    if name == "log_softmax":
        m = x.max(axis=-1, keepdims=True)
        return np.asarray(x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True)))
    with np.errstate(over="ignore"):
        return np.asarray(ELEMENTWISE[name](x))


def _run_direction(
    layer: RecurrentSpec, w: dict[str, Array], xs: Array, valid: Array, reverse: bool
) -> tuple[Array, Array]:
    """Run one direction over one sequence; returns (outputs (T, P), final h)."""
    H = layer.units

    def act(v: Array) -> Array:
        return activation(layer.activation, v)

    def ract(v: Array) -> Array:
        return activation(layer.recurrent_activation, v)

    w_ih, w_hh = w["w_ih"], w["w_hh"]
    zeros = np.zeros(w_ih.shape[0])
    b_ih, b_hh = w.get("b_ih", zeros), w.get("b_hh", zeros)
    P = layer.direction_width
    h = np.zeros(P)
    c = np.zeros(H)
    T = xs.shape[0]
    out = np.zeros((T, P))
    steps = range(T - 1, -1, -1) if reverse else range(T)
    for t in steps:
        if not valid[t]:
            continue  # skipped step: state carried over, output row stays zero
        x = xs[t]
        gi = w_ih @ x + b_ih
        gh = w_hh @ h + b_hh
        if layer.cell == "lstm":
            i = ract(gi[:H] + gh[:H])
            f = ract(gi[H : 2 * H] + gh[H : 2 * H])
            g = act(gi[2 * H : 3 * H] + gh[2 * H : 3 * H])
            o = ract(gi[3 * H :] + gh[3 * H :])
            c = f * c + i * g
            h = o * act(c)
            if layer.proj_size:
                h = w["w_hr"] @ h
        elif layer.cell == "gru":
            r = ract(gi[:H] + gh[:H])
            z = ract(gi[H : 2 * H] + gh[H : 2 * H])
            if layer.reset_after:
                n = act(gi[2 * H :] + r * gh[2 * H :])
            else:
                n = act(gi[2 * H :] + w_hh[2 * H :] @ (r * h) + b_hh[2 * H :])
            h = (1.0 - z) * n + z * h
        else:
            h = act(gi + gh)
        out[t] = h
    return out, h


#: How the two directions of a bidirectional layer combine, per merge mode of
#: :data:`rnninfer.format.kinds.MERGE_MODES`.
MERGES: dict[str, Callable[[Array, Array], Array]] = {
    "concat": lambda a, b: np.concatenate([a, b], axis=-1),
    "sum": lambda a, b: np.asarray(a + b),
    "mul": lambda a, b: np.asarray(a * b),
    "ave": lambda a, b: np.asarray(0.5 * (a + b)),
}


def _merge(mode: str, a: Array, b: Array) -> Array:
    return MERGES[mode](a, b)


def run_sequence(spec: ModelSpec, tensors: dict[str, Array], x: Array) -> Array:
    """Run one sequence through the model in float64.

    Args:
        spec: the model.
        tensors: its canonical tensors.
        x: token ids ``(T,)`` or features ``(T, F)``.

    Returns:
        ``(out,)`` or, for readout ``"sequence"``, ``(T, out)``.
    """
    t64 = {k: np.asarray(v, dtype=np.float64) for k, v in tensors.items()}
    inp = spec.input
    if inp.kind == "tokens":
        ids = np.asarray(x, dtype=np.int64)
        stream = t64["embedding.weight"][ids]
        valid = ids != 0 if inp.mask_zero else np.ones(len(ids), bool)
    else:
        stream = np.asarray(x, dtype=np.float64)
        if inp.mask_value is not None:
            valid = ~np.all(stream == inp.mask_value, axis=-1)
        else:
            valid = np.ones(len(stream), bool)
    streams = [stream]  # streams[0] is the model input, streams[i + 1] layer i's output
    final: Array = np.zeros(0)
    for i, layer in enumerate(spec.layers):
        outs, finals = [], []
        for d, reverse in (("fwd", layer.direction == "backward"), ("bwd", True))[
            : layer.num_directions
        ]:
            w = {k.split(".")[-1]: v for k, v in t64.items() if k.startswith(f"layers.{i}.{d}.")}
            o, h = _run_direction(layer, w, streams[-1], valid, reverse)
            outs.append(o)
            finals.append(h)
        if layer.num_directions == 2:
            y = _merge(layer.merge, outs[0], outs[1])
            final = _merge(layer.merge, finals[0], finals[1])
        else:
            y, final = outs[0], finals[0]
        if layer.residual_from is not None:
            y = y + streams[layer.residual_from + 1]
        y = y * valid[:, None]
        streams.append(y)
    top = streams[-1]
    if spec.readout == "last":
        z = final
    elif spec.readout == "sequence":
        z = top
    elif spec.readout == "mean":
        n = valid.sum()
        z = top[valid].sum(axis=0) / n if n else np.zeros(top.shape[1])
    else:
        z = top[valid].max(axis=0) if valid.any() else np.zeros(top.shape[1])
    for j, dense in enumerate(spec.head):
        z = z @ t64[f"head.{j}.weight"].T
        if dense.bias:
            z = z + t64[f"head.{j}.bias"]
        z = activation(dense.activation, z)
    if spec.readout == "sequence":
        z = z * valid[:, None]
    return z


def run(spec: ModelSpec, tensors: dict[str, Array], xs: Sequence[Array]) -> list[Array]:
    """Run :func:`run_sequence` over several sequences."""
    return [run_sequence(spec, tensors, x) for x in xs]
