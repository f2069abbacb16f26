"""What a PyTorch source contains: recognising modules in an ``nn.Module`` or a state dict.

Both routes produce :class:`Parts`: embeddings, recurrent modules, Linear
layers and activation modules with their float32 weights, in the order the
source lists them, plus notes on anything inferred. :mod:`.torch` maps parts
onto rnninfer's spec.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ModelFormatError
from ._gates import TORCH_ACTIVATION_MODULES
from .torch_files import to_float32

NONLINEARITIES = ("tanh", "relu")
#: Gate blocks per cell kind, the inverse used to recognise a state dict's layer.
_CELL_BY_GATES = {4: "lstm", 3: "gru", 1: "rnn"}
_RNN_KEY = re.compile(r"^(weight|bias)_(ih|hh|hr)_l(\d+)(_reverse)?$")
#: Hints in key names saying "this weight-only tensor is an embedding" / "a Linear".
_EMBEDDING_HINT = re.compile(r"emb", re.IGNORECASE)
_LINEAR_HINT = re.compile(r"fc|linear|head|dense|out|classif|decoder|proj|logit", re.IGNORECASE)


# ---- intermediate description ---------------------------------------------------------
@dataclass
class EmbeddingPart:
    name: str
    weight: np.ndarray


@dataclass
class RecurrentPart:
    """One ``nn.LSTM``/``nn.GRU``/``nn.RNN`` (all its layers and directions)."""

    name: str
    cell: str
    hidden: int
    proj: int
    num_layers: int
    bidirectional: bool
    bias: bool
    nonlinearity: str
    params: dict[str, np.ndarray]

    @property
    def input_width(self) -> int:
        return int(self.params["weight_ih_l0"].shape[1])

    @property
    def output_width(self) -> int:
        return (self.proj or self.hidden) * (2 if self.bidirectional else 1)


@dataclass
class LinearPart:
    name: str
    weight: np.ndarray
    bias: np.ndarray | None
    #: id of the ``nn.Sequential`` this Linear is a direct child of (module route only).
    container: int | None = None

    @property
    def in_width(self) -> int:
        return int(self.weight.shape[1])

    @property
    def out_width(self) -> int:
        return int(self.weight.shape[0])


@dataclass
class ActivationPart:
    """An activation module seen directly inside an ``nn.Sequential``."""

    name: str
    act: str
    container: int
    #: ``dim`` of a Softmax/LogSoftmax; which values mean "last axis" depends on the readout.
    dim: int | None = None


@dataclass
class Parts:
    """What a source contains, in the order the source lists it."""

    order: list[EmbeddingPart | RecurrentPart | LinearPart | ActivationPart] = field(default_factory=list)
    #: True when ``order`` is the registration order (module, in-memory or ``.pt``
    #: state dict); False for safetensors files, whose keys are sorted by name.
    trusted_order: bool = True
    #: Activation modules registered outside any nn.Sequential: where forward
    #: uses them is unknown, so they only feed error messages.
    loose_activations: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# ---- state dicts ----------------------------------------------------------------------
def _split_key(key: str) -> tuple[str, str]:
    prefix, _, leaf = key.rpartition(".")
    return prefix, leaf


def _key_namer(prefix: str) -> Callable[[str], str]:
    """Rebuild a full state-dict key from a parameter name, for error messages."""
    return lambda leaf: f"{prefix}.{leaf}" if prefix else leaf


def _natural_key(name: str) -> list[Any]:
    """Sort key comparing digit runs as numbers, so ``lstm2`` < ``lstm10``."""
    return [int(s) if s.isdigit() else s for s in re.split(r"(\d+)", name)]


def parts_from_state(
    state: Mapping[Any, Any], nonlinearity: str, *, trusted_order: bool, source: str | None
) -> Parts:
    if not state:
        raise ModelFormatError("the state dict is empty", source=source)
    groups: dict[str, dict[str, np.ndarray]] = {}
    for key, value in state.items():
        if not isinstance(key, str):
            raise ModelFormatError(f"state dict key {key!r} is not a string", source=source)
        prefix, leaf = _split_key(key)
        groups.setdefault(prefix, {})[leaf] = to_float32(key, value, source)
    names = list(groups) if trusted_order else sorted(groups, key=_natural_key)
    parts = Parts(trusted_order=trusted_order)
    weight_only: list[tuple[int, str, np.ndarray]] = []
    for name in names:
        g = groups[name]
        full = _key_namer(name)
        if any(_RNN_KEY.match(k) for k in g):
            parts.order.append(_recurrent_from_state(name, g, nonlinearity, full, parts.notes, source))
        elif set(g) == {"weight", "bias"} and g["weight"].ndim == 2 and g["bias"].ndim == 1:
            parts.order.append(LinearPart(name, g["weight"], g["bias"]))
        elif set(g) == {"weight"} and g["weight"].ndim == 2:
            weight_only.append((len(parts.order), name, g["weight"]))
            parts.order.append(LinearPart(name, g["weight"], None))  # provisional; may be the embedding
        elif set(g) == {"bias"} and g["bias"].ndim == 1:
            raise ModelFormatError(_lone_bias(full("bias"), g["bias"], state), source=source)
        else:
            unknown = sorted(full(k) for k in g if k not in ("weight", "bias"))
            odd = unknown or sorted(full(k) for k in g)
            raise ModelFormatError(
                f"unknown key(s) {', '.join(odd)}: not an nn.Embedding, nn.LSTM/GRU/RNN or "
                "nn.Linear parameter rnninfer can run",
                source=source,
            )
    _resolve_embedding(parts, weight_only, source)
    return parts


def _check_rnn_shapes(
    g: Mapping[str, np.ndarray], cell: str, hidden: int, proj: int, bidirectional: bool,
    full: Callable[[str], str], source: str | None,
) -> None:
    """Every recurrent tensor's shape, named with the shape it should have (e.g. a transposed weight)."""
    rows = {"lstm": 4, "gru": 3, "rnn": 1}[cell] * hidden
    out = proj or hidden
    problems = []
    for key, t in g.items():
        kind, mat, layer, _ = _RNN_KEY.match(key).groups()  # type: ignore[union-attr]
        if kind == "bias":
            want: tuple[int | None, ...] = (rows,)
        elif mat == "hr":
            want = (proj, hidden)
        elif mat == "hh":
            want = (rows, out)
        else:
            want = (rows, None if layer == "0" else out * (2 if bidirectional else 1))
        shape = tuple(int(s) for s in t.shape)
        if len(shape) != len(want) or any(w is not None and w != s for w, s in zip(want, shape)):
            text = ", ".join("in" if w is None else str(w) for w in want)
            hint = " (transposed?)" if len(shape) == 2 and shape[::-1][0] == want[0] else ""
            problems.append(
                f"{full(key)} has shape {shape}{hint}, expected ({text}) for an {cell.upper()} "
                f"with hidden size {hidden}"
            )
    if problems:
        raise ModelFormatError(problems, source=source)


def _lone_bias(key: str, bias: np.ndarray, state: Mapping[Any, Any]) -> str:
    """Explain a bias without its weight: usually a tied weight dropped at saving."""
    width = int(bias.shape[0])
    ties = [
        str(k) for k, v in state.items()
        if str(k).endswith("weight") and len(getattr(v, "shape", ())) == 2 and int(v.shape[0]) == width
    ]
    weight = key[: -len("bias")] + "weight"
    hint = (
        f"; its weight is probably tied to {ties[0]!r} (same {width} rows), and saving dropped "
        "the shared copy (safetensors' save_model records the tie in the file's metadata, "
        "save_file does not)" if ties else ""
    )
    return (
        f"missing key {weight!r}: {key!r} ({width},) has no weight, so the Linear layer reading it "
        f"cannot be built{hint}. Add the tensor under {weight!r} or save with the tie"
    )


def _recurrent_from_state(
    name: str,
    g: Mapping[str, np.ndarray],
    nonlinearity: str,
    full: Callable[[str], str],
    notes: list[str],
    source: str | None,
) -> RecurrentPart:
    unknown = [full(k) for k in g if not _RNN_KEY.match(k)]
    if unknown:
        raise ModelFormatError(
            f"unknown key(s) {', '.join(sorted(unknown))} next to recurrent weights", source=source
        )
    parsed = {k: _RNN_KEY.match(k).groups() for k in g}  # type: ignore[union-attr]
    num_layers = max(int(p[2]) for p in parsed.values()) + 1
    bidirectional = any(p[3] for p in parsed.values())
    has_bias = "bias_ih_l0" in g
    has_proj = "weight_hr_l0" in g
    if "weight_hh_l0" not in g or "weight_ih_l0" not in g:
        raise ModelFormatError(
            f"recurrent module {name or '<root>'!r}: missing {full('weight_ih_l0')} or "
            f"{full('weight_hh_l0')}",
            source=source,
        )
    w_hh = g["weight_hh_l0"]
    if has_proj:
        hidden = int(g["weight_hr_l0"].shape[1]) if g["weight_hr_l0"].ndim == 2 else 0
        proj = int(g["weight_hr_l0"].shape[0])
    else:
        hidden, proj = int(w_hh.shape[1]) if w_hh.ndim == 2 else 0, 0
    rows = int(w_hh.shape[0]) if w_hh.ndim == 2 else 0
    gates = rows // hidden if hidden and rows % hidden == 0 else 0
    cell = _CELL_BY_GATES.get(gates)
    if cell is None:
        raise ModelFormatError(
            f"{full('weight_hh_l0')} has shape {tuple(w_hh.shape)}: not the (4H|3H|H, H) of an "
            "LSTM, GRU or RNN",
            source=source,
        )
    if has_proj and cell != "lstm":
        raise ModelFormatError(
            f"{full('weight_hr_l0')}: a projection (weight_hr) on a {cell.upper()}-shaped layer "
            f"({gates} gate block(s) of {hidden}); only nn.LSTM has proj_size",
            source=source,
        )
    expected: set[str] = set()
    for k in range(num_layers):
        for sfx in ("", "_reverse") if bidirectional else ("",):
            expected |= {f"weight_ih_l{k}{sfx}", f"weight_hh_l{k}{sfx}"}
            if has_bias:
                expected |= {f"bias_ih_l{k}{sfx}", f"bias_hh_l{k}{sfx}"}
            if has_proj:
                expected.add(f"weight_hr_l{k}{sfx}")
    missing = sorted(full(k) for k in expected - set(g))
    extra = sorted(full(k) for k in set(g) - expected)
    if missing or extra:
        problems = [f"missing {k}" for k in missing] + [f"unexpected {k}" for k in extra]
        raise ModelFormatError(
            [f"recurrent module {name or '<root>'!r} ({cell}, {num_layers} layer(s)): {p}" for p in problems],
            source=source,
        )
    _check_rnn_shapes(g, cell, hidden, proj, bidirectional, full, source)
    if cell == "rnn":
        notes.append(
            f"{name or '<root>'}: nn.RNN weights from a state dict; nonlinearity "
            f"{nonlinearity!r} from the nonlinearity option"
        )
    return RecurrentPart(
        name=name,
        cell=cell,
        hidden=hidden,
        proj=proj,
        num_layers=num_layers,
        bidirectional=bidirectional,
        bias=has_bias,
        nonlinearity=nonlinearity if cell == "rnn" else "tanh",
        params=dict(g),
    )


def _head_chains(parts: Parts, extra: np.ndarray, starts: set[int]) -> bool:
    """Whether the Linear layers plus a bias-free ``extra`` weight chain from one of ``starts``."""
    dims = [(p.in_width, p.out_width) for p in parts.order if isinstance(p, LinearPart) and p.weight is not extra]
    dims.append((int(extra.shape[1]), int(extra.shape[0])))
    if len(dims) > 8:
        return True  # too many to try: stay ambiguous
    for order in itertools.permutations(dims):
        for start in starts:
            width = start
            for i, o in order:
                if i != width:
                    break
                width = o
            else:
                return True
    return False


def _resolve_embedding(
    parts: Parts, weight_only: list[tuple[int, str, np.ndarray]], source: str | None
) -> None:
    """Decide which weight-only 2-D tensor (if any) is the embedding table.

    An ``nn.Embedding`` and a bias-free ``nn.Linear`` store the same single
    2-D ``weight``; names decide first, then shapes (an embedding's width is
    the first recurrent layer's input size, a Linear must chain onto the
    head), then the registration order (an embedding comes before the
    recurrent modules).
    """
    if not weight_only:
        return
    recurrents = [p for p in parts.order if isinstance(p, RecurrentPart)]
    if not recurrents:
        return  # _build reports the missing recurrent layer
    first_in = {r.input_width for r in recurrents}
    linear_ins = {r.output_width for r in recurrents} | {
        p.out_width for p in parts.order if isinstance(p, LinearPart)
    }
    first_rec = min(i for i, p in enumerate(parts.order) if isinstance(p, RecurrentPart))
    chosen: list[tuple[int, str, str]] = []
    for pos, name, w in weight_only:
        could_embed = int(w.shape[1]) in first_in
        could_link = int(w.shape[1]) in linear_ins
        if not could_embed:
            continue  # stays a Linear; _build reports it if it does not chain either
        if _EMBEDDING_HINT.search(name):
            chosen.append((pos, name, "its name"))
        elif not could_link:
            chosen.append((pos, name, "its shape"))
        elif _LINEAR_HINT.search(name):
            continue
        elif parts.trusted_order and pos < first_rec:
            chosen.append((pos, name, "its position before the recurrent layers"))
        elif not _head_chains(parts, w, {r.output_width for r in recurrents}):
            chosen.append((pos, name, "the widths: as a Linear it would not chain onto the head"))
        else:
            raise ValueError(
                f"cannot tell whether {name + '.weight'!r} {tuple(w.shape)} is an nn.Embedding "
                "or a bias-free nn.Linear; rename the key to contain 'embedding' or 'fc', "
                "or convert the nn.Module itself"
            )
    if len(chosen) > 1:
        raise ValueError(
            "several tensors could be the embedding table: "
            + ", ".join(f"{n}.weight" for _, n, _ in chosen)
            + "; convert the nn.Module itself or remove the extra ones"
        )
    if chosen:
        pos, name, why = chosen[0]
        weight = parts.order[pos].weight  # type: ignore[union-attr]
        parts.order[pos] = EmbeddingPart(name, weight)
        parts.notes.append(f"{name}.weight taken as the embedding table (from {why})")


# ---- modules --------------------------------------------------------------------------
def parts_from_module(module: Any) -> Parts:
    from torch import nn

    parts = Parts(trusted_order=True)
    own = [n for n, _ in module.named_parameters(recurse=False)]
    if own and not isinstance(module, (nn.Embedding, nn.LSTM, nn.GRU, nn.RNN, nn.Linear)):
        raise TypeError(
            f"module {type(module).__name__} has its own parameters {own}; rnninfer recognises only "
            "nn.Embedding, nn.LSTM/GRU/RNN and nn.Linear weights"
        )
    _walk(module, "", None, parts, [0])
    return parts


def _walk(module: Any, name: str, container: int | None, parts: Parts, counter: list[int]) -> None:
    from torch import nn

    label = name or "<root>"
    pos = counter[0]
    counter[0] += 1
    where = f"module {label!r} ({type(module).__name__}, position {pos})"
    if isinstance(module, nn.Embedding):
        if module.max_norm is not None:
            raise ValueError(f"{where}: max_norm renormalises rows at lookup; not supported")
        parts.order.append(EmbeddingPart(name, to_float32(f"{label}.weight", module.weight, None)))
        if module.padding_idx is not None:
            parts.notes.append(
                f"{label}: padding_idx={module.padding_idx} has no effect at inference (no mask)"
            )
        return
    if isinstance(module, (nn.LSTM, nn.GRU, nn.RNN)):
        parts.order.append(_recurrent_from_module(module, label, where))
        return
    if isinstance(module, nn.Linear):
        w = to_float32(f"{label}.weight", module.weight, None)
        b = to_float32(f"{label}.bias", module.bias, None) if module.bias is not None else None
        parts.order.append(LinearPart(name, w, b, container))
        return
    act = module_activation(module, where)
    if act is not None:
        if container is not None:
            dim = getattr(module, "dim", None) if act in ("softmax", "log_softmax") else None
            parts.order.append(ActivationPart(label, act, container, dim))
        else:
            parts.loose_activations.append(f"{label} ({type(module).__name__})")
        return
    if isinstance(module, (nn.Dropout, nn.AlphaDropout, nn.Dropout1d, nn.Identity)):
        return  # no-ops at inference
    children = list(module.named_children())
    direct = [n for n, _ in module.named_parameters(recurse=False)]
    if direct and name:
        raise TypeError(
            f"{where} has parameters {direct} rnninfer does not recognise; supported layers: "
            "nn.Embedding, nn.LSTM, nn.GRU, nn.RNN, nn.Linear and activation modules"
        )
    containers = (nn.Sequential, nn.ModuleList, nn.ModuleDict)
    if not children and name and not isinstance(module, containers):
        # A parameter-free custom module may compute anything in forward.
        raise TypeError(
            f"{where} is not supported; rnninfer recognises nn.Embedding, nn.LSTM, nn.GRU, nn.RNN, "
            "nn.Linear, activation modules, nn.Dropout and nn.Identity"
        )
    inner = id(module) if isinstance(module, nn.Sequential) else None
    for child_name, child in children:
        _walk(child, f"{name}.{child_name}" if name else child_name, inner, parts, counter)


def _recurrent_from_module(module: Any, label: str, where: str) -> RecurrentPart:
    from torch import nn

    if isinstance(module, nn.LSTM):
        cell, nonlin = "lstm", "tanh"
    elif isinstance(module, nn.GRU):
        cell, nonlin = "gru", "tanh"
    else:
        cell, nonlin = "rnn", str(module.nonlinearity)
        if nonlin not in NONLINEARITIES:
            raise ValueError(f"{where}: nonlinearity {nonlin!r} is not supported")
    params = {
        n: to_float32(f"{label}.{n}", p, None) for n, p in module.named_parameters(recurse=False)
    }
    return RecurrentPart(
        name=label,
        cell=cell,
        hidden=int(module.hidden_size),
        proj=int(getattr(module, "proj_size", 0) or 0),
        num_layers=int(module.num_layers),
        bidirectional=bool(module.bidirectional),
        bias=bool(module.bias),
        nonlinearity=nonlin,
        params=params,
    )


def module_activation(module: Any, where: str) -> str | None:
    """The manifest name of an activation module, None if ``module`` is not one.

    Only exact equivalents are mapped: a variant whose parameters differ from
    the manifest's fixed definition (e.g. LeakyReLU with another slope) raises.
    """
    from torch import nn

    # Exact subclass match by name: a user subclass may override forward.
    for cls in type(module).__mro__:
        if cls.__module__.startswith("torch.nn") and cls.__name__ in TORCH_ACTIVATION_MODULES:
            return TORCH_ACTIVATION_MODULES[cls.__name__]
    if isinstance(module, nn.GELU):
        if module.approximate != "none":
            raise ValueError(
                f"{where}: GELU(approximate={module.approximate!r}) is not supported; only the exact form"
            )
        return "gelu"
    if isinstance(module, nn.ELU):
        if float(module.alpha) != 1.0:
            raise ValueError(f"{where}: ELU(alpha={module.alpha}) is not supported; only alpha=1.0")
        return "elu"
    if isinstance(module, nn.LeakyReLU):
        # The manifest's leaky_relu is Keras' slope 0.2; PyTorch's default 0.01 is not it.
        if float(module.negative_slope) != np.float32(0.2) and float(module.negative_slope) != 0.2:
            raise ValueError(
                f"{where}: LeakyReLU(negative_slope={module.negative_slope}) is not supported; "
                "rnninfer's leaky_relu has slope 0.2"
            )
        return "leaky_relu"
    if isinstance(module, nn.Softplus):
        if float(module.beta) != 1.0:
            raise ValueError(f"{where}: Softplus(beta={module.beta}) is not supported; only beta=1")
        return "softplus"
    if isinstance(module, (nn.Softmax, nn.LogSoftmax)):
        if module.dim not in (-1, 1, 2):
            raise ValueError(
                f"{where}: {type(module).__name__}(dim={module.dim}) must act on the last axis"
            )
        return "softmax" if isinstance(module, nn.Softmax) else "log_softmax"
    return None


