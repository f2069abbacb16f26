"""PyTorch converter: ``nn.Module``, state dict, ``.pt``/``.pth`` or ``.safetensors``.

rnninfer's canonical layout *is* PyTorch's (see ``docs/format.md``), so this
converter never reorders gates: it recognises the modules of the standard
composition Embedding -> LSTM/GRU/RNN stack -> readout -> Linear head(s), and
renames ``weight_ih_l{k}{_reverse}`` and friends to ``layers.{i}.{fwd|bwd}.*``.

What a PyTorch checkpoint cannot tell (the readout, the activation after the
head, the order of modules in a file whose keys are sorted) comes from the
options of :func:`from_torch`, from the shapes (modules are chained by matching
widths) or from key names; anything inferred is written to
``producer["notes"]``, and anything still ambiguous raises rather than guesses.

Files are read without executing any code: ``.pt``/``.pth`` only through
``torch.load(..., weights_only=True)``, ``.safetensors`` through the
``safetensors`` package's numpy API (torch is not needed for that route).
"""

from __future__ import annotations

import itertools
import json
import os
import pickletools
import re
import struct
import sys
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, TypeVar

import numpy as np

from ..errors import ModelFormatError
from ..format.manifest import (
    ELEMENTWISE_ACTIVATIONS,
    HEAD_ACTIVATIONS,
    DenseSpec,
    InputSpec,
    ModelSpec,
    RecurrentSpec,
)
from .base import finish

if TYPE_CHECKING:
    from ..model import Model

__all__ = ["convert_torch", "from_torch"]

READOUTS = ("last", "sequence")
NONLINEARITIES = ("tanh", "relu")
#: Gate blocks per cell kind, the inverse used to recognise a state dict's layer.
_CELL_BY_GATES = {4: "lstm", 3: "gru", 1: "rnn"}
_RNN_KEY = re.compile(r"^(weight|bias)_(ih|hh|hr)_l(\d+)(_reverse)?$")
#: Half types are widened to float32 exactly; anything else would change numbers.
_ACCEPTED_DTYPES = ("float32", "float16", "bfloat16")
#: Safetensors dtype codes for the same three types.
_SAFETENSORS_DTYPES = {"F32": "<f4", "F16": "<f2", "BF16": "bfloat16"}
#: Nested state-dict keys of common training checkpoints ({"epoch": ..., "model_state_dict": ...}).
_NESTED_STATE_KEYS = ("state_dict", "model_state_dict", "model", "module")
#: Up to this many modules of one kind, every order is tried when widths must decide.
_MAX_PERMUTE = 8
#: Hints in key names saying "this weight-only tensor is an embedding" / "a Linear".
_EMBEDDING_HINT = re.compile(r"emb", re.IGNORECASE)
_LINEAR_HINT = re.compile(r"fc|linear|head|dense|out|classif|decoder|proj|logit", re.IGNORECASE)

T = TypeVar("T")


# ---- intermediate description ---------------------------------------------------------
@dataclass
class _Embedding:
    name: str
    weight: np.ndarray


@dataclass
class _Recurrent:
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
class _Linear:
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
class _Activation:
    """An activation module seen directly inside an ``nn.Sequential``."""

    name: str
    act: str
    container: int
    #: ``dim`` of a Softmax/LogSoftmax; which values mean "last axis" depends on the readout.
    dim: int | None = None


@dataclass
class _Parts:
    """What a source contains, in the order the source lists it."""

    order: list[_Embedding | _Recurrent | _Linear | _Activation] = field(default_factory=list)
    #: True when ``order`` is the registration order (module, in-memory or ``.pt``
    #: state dict); False for safetensors files, whose keys are sorted by name.
    trusted_order: bool = True
    #: Activation modules registered outside any nn.Sequential: where forward
    #: uses them is unknown, so they only feed error messages.
    loose_activations: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# ---- public API -----------------------------------------------------------------------
def from_torch(
    src: object,
    *,
    readout: str = "last",
    head_activation: str | None = None,
    hidden_activation: str | None = None,
    nonlinearity: str = "tanh",
) -> Model:
    """Convert a PyTorch model to an rnninfer :class:`~rnninfer.Model`.

    Args:
        src: an ``nn.Module``, a state dict (mapping of names to tensors or
            numpy arrays), or a path to a ``.pt``/``.pth`` file (loaded with
            ``weights_only=True``) or a ``.safetensors`` file.
        readout: ``"last"`` (the head reads the top layer's final hidden state,
            directions concatenated forward first, as ``h_n[-num_directions:]``)
            or ``"sequence"`` (the head is applied at every step).
        head_activation: applied after the last Linear layer: ``None``,
            ``"sigmoid"``, ``"softmax"``, ``"tanh"``, ``"relu"`` (any head
            activation of ``docs/format.md`` is accepted).
        hidden_activation: the activation between consecutive Linear layers
            where the source does not show it; ``"identity"`` for none.
        nonlinearity: ``"tanh"`` or ``"relu"``, for ``nn.RNN`` weights coming
            from a state dict (a module states its own).

    Returns:
        The converted model.

    Raises:
        ModelFormatError: the source file is corrupt, not a plain tensor
            checkpoint, or holds weights rnninfer cannot use.
        ValueError: an ambiguous or unsupported structure or option.
        TypeError: an unsupported module or source type.
    """
    spec, tensors, producer = convert_torch(
        src,
        readout=readout,
        head_activation=head_activation,
        hidden_activation=hidden_activation,
        nonlinearity=nonlinearity,
    )
    source = _path_name(src)
    return finish(spec, tensors, producer, source=source)


def convert_torch(
    src: object,
    *,
    readout: str = "last",
    head_activation: str | None = None,
    hidden_activation: str | None = None,
    nonlinearity: str = "tanh",
) -> tuple[ModelSpec, dict[str, np.ndarray], dict[str, Any]]:
    """Convert without opening the engine: ``(spec, canonical tensors, producer)``.

    Same arguments and errors as :func:`from_torch`; the result is not yet
    validated against the canonical spec (``finish`` does that).
    """
    if readout not in READOUTS:
        raise ValueError(f"readout must be one of {READOUTS}, got {readout!r}")
    if nonlinearity not in NONLINEARITIES:
        raise ValueError(f"nonlinearity must be one of {NONLINEARITIES}, got {nonlinearity!r}")
    head_act = _head_activation(head_activation)
    hidden_act = _hidden_activation(hidden_activation)

    source_name, parts = _read_source(src, nonlinearity)
    spec, tensors = _build(parts, readout, head_act, hidden_act)
    producer: dict[str, Any] = {
        "converter": "torch",
        "framework": "torch",
        "source": source_name,
        "notes": list(parts.notes),
    }
    version = _torch_version()
    if version is not None:
        producer["framework_version"] = version
    return spec, tensors, producer


# ---- options --------------------------------------------------------------------------
_ACT_ALIASES = {
    "identity": "linear",
    "none": "linear",
    "silu": "swish",
    "hardsigmoid": "hard_sigmoid",
    "hardswish": "hard_swish",
    "logsoftmax": "log_softmax",
}


def _activation_option(option: str, name: str, allowed: tuple[str, ...], hint: str) -> str:
    """A user's activation name (torch spellings accepted) checked against ``allowed``."""
    if not isinstance(name, str):
        raise TypeError(f"{option} must be a string or None, got {type(name).__name__}")
    act = _ACT_ALIASES.get(name.lower(), name.lower())
    if act not in allowed:
        raise ValueError(f"{option} {name!r} is not supported; use {hint}{allowed}")
    return act


def _head_activation(name: str | None) -> str:
    if name is None:
        return "linear"
    return _activation_option("head_activation", name, HEAD_ACTIVATIONS,
                              "None, 'sigmoid', 'softmax', 'tanh', 'relu' or one of ")


def _hidden_activation(name: str | None) -> str | None:
    if name is None:
        return None
    return _activation_option("hidden_activation", name, ELEMENTWISE_ACTIVATIONS, "'identity' or one of ")


def _torch_version() -> str | None:
    try:
        import torch
    except ImportError:
        return None
    return str(torch.__version__)


def _path_name(src: object) -> str | None:
    if isinstance(src, (str, os.PathLike)):
        return os.fspath(src) if isinstance(os.fspath(src), str) else None
    return None


# ---- reading sources ------------------------------------------------------------------
def _read_source(src: object, nonlinearity: str) -> tuple[str, _Parts]:
    torch = sys.modules.get("torch")  # a Module or a tensor implies torch is already imported
    if torch is not None and isinstance(src, torch.nn.Module):
        return "nn.Module", _parts_from_module(src)
    if isinstance(src, (str, os.PathLike)):
        path = os.fspath(src)
        if not isinstance(path, str):
            raise TypeError("src path must be a str or os.PathLike of str")
        name = os.path.basename(path)
        if path.lower().endswith(".safetensors"):
            state: Mapping[str, Any] = _load_safetensors(path)
            trusted = False
        else:
            state, trusted = _load_pt(path), True
        parts = _parts_from_state(state, nonlinearity, trusted_order=trusted, source=name)
        return name, parts
    if isinstance(src, Mapping):
        return "state_dict", _parts_from_state(src, nonlinearity, trusted_order=True, source=None)
    raise TypeError(
        "from_torch expects an nn.Module, a state dict, or a path to a .pt/.pth/.safetensors "
        f"file, got {type(src).__name__}"
    )


def _load_pt(path: str) -> Mapping[str, Any]:
    """``torch.load`` with ``weights_only=True``; every failure becomes ModelFormatError."""
    name = os.path.basename(path)
    try:
        import torch
    except ImportError as e:
        raise ModelFormatError("reading a .pt/.pth file needs PyTorch installed", source=name) from e
    if not os.path.isfile(path):
        raise ModelFormatError(f"no such file: {path}", source=name)
    try:
        obj = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as e:
        # weights_only refuses any pickled global that is not a tensor building
        # block, so a whole pickled module or a hostile __reduce__ lands here
        # without having run.
        raise ModelFormatError(_explain_pt_failure(path, e), source=name) from e
    return _unwrap_state(obj, name)


def _explain_pt_failure(path: str, err: Exception) -> str:
    globals_ = _pickle_globals(path)
    module_like = [g for g in globals_ if g.startswith("torch.nn.modules.")]
    if module_like or "torch._utils._rebuild_parameter" in globals_:
        return (
            "this file holds a whole pickled nn.Module, which cannot be read safely "
            "(it would need plain unpickling, which can run arbitrary code); save the "
            "weights with torch.save(model.state_dict(), path) and convert that, or pass "
            "the nn.Module itself"
        )
    foreign = [
        g for g in globals_
        if not g.startswith(("torch.", "collections.OrderedDict", "builtins.", "_codecs."))
    ]
    if foreign:
        return (
            "refusing to load: the checkpoint pickles objects other than tensors "
            f"({', '.join(sorted(set(foreign))[:5])}); rnninfer reads .pt files only with "
            "torch.load(weights_only=True). Save model.state_dict() instead"
        )
    return f"cannot read the PyTorch checkpoint (corrupt or not a torch.save file): {err}"


def _pickle_globals(path: str) -> list[str]:
    """Globals named by the checkpoint's pickle, found by parsing, never by unpickling."""
    try:
        with zipfile.ZipFile(path) as zf:
            member = next((n for n in zf.namelist() if n.endswith("data.pkl")), None)
            if member is None:
                return []
            data = zf.read(member)
    except (OSError, zipfile.BadZipFile, EOFError):
        return []
    found: list[str] = []
    strings: list[str] = []
    try:
        for op, arg, _ in pickletools.genops(data):
            if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8"):
                strings.append(str(arg))
            elif op.name == "GLOBAL":
                found.append(str(arg).replace(" ", "."))
            elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                found.append(f"{strings[-2]}.{strings[-1]}")
    except (ValueError, EOFError, struct.error, UnicodeDecodeError):
        return found  # a damaged pickle: whatever was parsed so far is all we can report
    return found


def _unwrap_state(obj: object, name: str) -> Mapping[str, Any]:
    """The state dict inside a loaded ``.pt`` (also ``{"model_state_dict": ...}`` checkpoints)."""
    if not isinstance(obj, Mapping):
        raise ModelFormatError(
            f"expected a state dict (a mapping of names to tensors), found {type(obj).__name__}; "
            "save model.state_dict()",
            source=name,
        )
    if obj and all(_is_tensor(v) for v in obj.values()):
        return obj
    nested = [k for k in _NESTED_STATE_KEYS if isinstance(obj.get(k), Mapping)]
    for key in nested:
        inner = obj[key]
        if inner and all(_is_tensor(v) for v in inner.values()):
            return dict(inner)
    bad = [str(k) for k, v in obj.items() if not _is_tensor(v)]
    raise ModelFormatError(
        "expected a state dict of tensors; entries that are not tensors: "
        f"{', '.join(bad[:8])}. Save model.state_dict() (or put it under 'state_dict')",
        source=name,
    )


def _is_tensor(v: object) -> bool:
    if isinstance(v, np.ndarray):
        return True
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(v, torch.Tensor)


def _load_safetensors(path: str) -> dict[str, np.ndarray]:
    """Read every tensor as float32 numpy; bfloat16 is widened by bit shifting.

    numpy has no bfloat16, so the safetensors numpy API cannot return those
    tensors; their raw bytes are read from the offsets in the file header.
    """
    name = os.path.basename(path)
    try:
        from safetensors import safe_open
    except ImportError as e:
        raise ModelFormatError("reading .safetensors needs the 'safetensors' package", source=name) from e
    if not os.path.isfile(path):
        raise ModelFormatError(f"no such file: {path}", source=name)
    out: dict[str, np.ndarray] = {}
    try:
        with safe_open(path, framework="numpy") as f:
            keys = list(f.keys())
            header: dict[str, Any] | None = None
            for key in keys:
                dtype = f.get_slice(key).get_dtype()
                if dtype not in _SAFETENSORS_DTYPES:
                    raise ModelFormatError(
                        f"tensor {key!r} has dtype {dtype}; only F32, F16 and BF16 weights are "
                        "supported (converting would change numbers)",
                        source=name,
                    )
                if dtype == "BF16":
                    if header is None:
                        header = _safetensors_header(path)
                    out[key] = _read_bf16(path, header, key)
                else:
                    out[key] = np.asarray(f.get_tensor(key)).astype(np.float32)
    except ModelFormatError:
        raise
    except Exception as e:
        raise ModelFormatError(f"cannot read the safetensors file (corrupt?): {e}", source=name) from e
    if not out:
        raise ModelFormatError("the safetensors file holds no tensors", source=name)
    return out


def _safetensors_header(path: str) -> dict[str, Any]:
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    if not isinstance(header, dict):
        raise TypeError("header is not a JSON object")
    header["__data_start__"] = 8 + n
    return header


def _read_bf16(path: str, header: Mapping[str, Any], key: str) -> np.ndarray:
    info = header[key]
    start, end = (int(v) for v in info["data_offsets"])
    shape = tuple(int(s) for s in info["shape"])
    with open(path, "rb") as f:
        f.seek(int(header["__data_start__"]) + start)
        raw = f.read(end - start)
    bits = np.frombuffer(raw, dtype="<u2")
    if bits.size != int(np.prod(shape)):
        raise ValueError(f"tensor {key!r}: {bits.size} values for shape {shape}")
    # bfloat16 is the top half of a float32: widening is exact.
    return (bits.astype(np.uint32) << 16).view(np.float32).reshape(shape)


def _to_float32(key: str, value: object, source: str | None) -> np.ndarray:
    """A state-dict entry as float32 numpy, refusing types whose conversion loses data."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(value, torch.Tensor):
        dtype = str(value.dtype).replace("torch.", "")
        if dtype not in _ACCEPTED_DTYPES:
            raise ModelFormatError(
                f"tensor {key!r} has dtype {dtype}; only float32, float16 and bfloat16 weights "
                "are supported",
                source=source,
            )
        arr = np.array(value.detach().to(device="cpu", dtype=torch.float32).numpy(), dtype=np.float32)
    elif isinstance(value, np.ndarray):
        if value.dtype not in (np.float32, np.float16):
            raise ModelFormatError(
                f"tensor {key!r} has dtype {value.dtype}; only float32, float16 and bfloat16 "
                "weights are supported",
                source=source,
            )
        arr = value.astype(np.float32)
    else:
        raise ModelFormatError(
            f"entry {key!r} is a {type(value).__name__}, not a tensor", source=source
        )
    if not np.all(np.isfinite(arr)):
        raise ModelFormatError(f"tensor {key!r} contains NaN or infinite values", source=source)
    return arr


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


def _parts_from_state(
    state: Mapping[Any, Any], nonlinearity: str, *, trusted_order: bool, source: str | None
) -> _Parts:
    if not state:
        raise ModelFormatError("the state dict is empty", source=source)
    groups: dict[str, dict[str, np.ndarray]] = {}
    for key, value in state.items():
        if not isinstance(key, str):
            raise ModelFormatError(f"state dict key {key!r} is not a string", source=source)
        prefix, leaf = _split_key(key)
        groups.setdefault(prefix, {})[leaf] = _to_float32(key, value, source)
    names = list(groups) if trusted_order else sorted(groups, key=_natural_key)
    parts = _Parts(trusted_order=trusted_order)
    weight_only: list[tuple[int, str, np.ndarray]] = []
    for name in names:
        g = groups[name]
        full = _key_namer(name)
        if any(_RNN_KEY.match(k) for k in g):
            parts.order.append(_recurrent_from_state(name, g, nonlinearity, full, parts.notes, source))
        elif set(g) == {"weight", "bias"} and g["weight"].ndim == 2 and g["bias"].ndim == 1:
            parts.order.append(_Linear(name, g["weight"], g["bias"]))
        elif set(g) == {"weight"} and g["weight"].ndim == 2:
            weight_only.append((len(parts.order), name, g["weight"]))
            parts.order.append(_Linear(name, g["weight"], None))  # provisional; may be the embedding
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


def _recurrent_from_state(
    name: str,
    g: Mapping[str, np.ndarray],
    nonlinearity: str,
    full: Callable[[str], str],
    notes: list[str],
    source: str | None,
) -> _Recurrent:
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
    if cell == "rnn":
        notes.append(
            f"{name or '<root>'}: nn.RNN weights from a state dict; nonlinearity "
            f"{nonlinearity!r} from the nonlinearity option"
        )
    return _Recurrent(
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


def _resolve_embedding(
    parts: _Parts, weight_only: list[tuple[int, str, np.ndarray]], source: str | None
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
    recurrents = [p for p in parts.order if isinstance(p, _Recurrent)]
    if not recurrents:
        return  # _build reports the missing recurrent layer
    first_in = {r.input_width for r in recurrents}
    linear_ins = {r.output_width for r in recurrents} | {
        p.out_width for p in parts.order if isinstance(p, _Linear)
    }
    first_rec = min(i for i, p in enumerate(parts.order) if isinstance(p, _Recurrent))
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
        parts.order[pos] = _Embedding(name, weight)
        parts.notes.append(f"{name}.weight taken as the embedding table (from {why})")


# ---- modules --------------------------------------------------------------------------
def _parts_from_module(module: Any) -> _Parts:
    from torch import nn

    parts = _Parts(trusted_order=True)
    own = [n for n, _ in module.named_parameters(recurse=False)]
    if own and not isinstance(module, (nn.Embedding, nn.LSTM, nn.GRU, nn.RNN, nn.Linear)):
        raise TypeError(
            f"module {type(module).__name__} has its own parameters {own}; rnninfer recognises only "
            "nn.Embedding, nn.LSTM/GRU/RNN and nn.Linear weights"
        )
    _walk(module, "", None, parts, [0])
    return parts


def _walk(module: Any, name: str, container: int | None, parts: _Parts, counter: list[int]) -> None:
    from torch import nn

    label = name or "<root>"
    pos = counter[0]
    counter[0] += 1
    where = f"module {label!r} ({type(module).__name__}, position {pos})"
    if isinstance(module, nn.Embedding):
        if module.max_norm is not None:
            raise ValueError(f"{where}: max_norm renormalises rows at lookup; not supported")
        parts.order.append(_Embedding(name, _to_float32(f"{label}.weight", module.weight, None)))
        if module.padding_idx is not None:
            parts.notes.append(
                f"{label}: padding_idx={module.padding_idx} has no effect at inference (no mask)"
            )
        return
    if isinstance(module, (nn.LSTM, nn.GRU, nn.RNN)):
        parts.order.append(_recurrent_from_module(module, label, where))
        return
    if isinstance(module, nn.Linear):
        w = _to_float32(f"{label}.weight", module.weight, None)
        b = _to_float32(f"{label}.bias", module.bias, None) if module.bias is not None else None
        parts.order.append(_Linear(name, w, b, container))
        return
    act = _module_activation(module, where)
    if act is not None:
        if container is not None:
            dim = getattr(module, "dim", None) if act in ("softmax", "log_softmax") else None
            parts.order.append(_Activation(label, act, container, dim))
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


def _recurrent_from_module(module: Any, label: str, where: str) -> _Recurrent:
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
        n: _to_float32(f"{label}.{n}", p, None) for n, p in module.named_parameters(recurse=False)
    }
    return _Recurrent(
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


def _module_activation(module: Any, where: str) -> str | None:
    """The manifest name of an activation module, None if ``module`` is not one.

    Only exact equivalents are mapped: a variant whose parameters differ from
    the manifest's fixed definition (e.g. LeakyReLU with another slope) raises.
    """
    from torch import nn

    simple: list[tuple[type, str]] = [
        (nn.ReLU, "relu"),
        (nn.Tanh, "tanh"),
        (nn.Sigmoid, "sigmoid"),
        (nn.SiLU, "swish"),
        (nn.SELU, "selu"),
        (nn.Softsign, "softsign"),
        (nn.ReLU6, "relu6"),
        (nn.Mish, "mish"),
        (nn.Hardswish, "hard_swish"),
        (nn.Hardsigmoid, "hard_sigmoid"),
    ]
    for cls, act in simple:
        if isinstance(module, cls):
            return act
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


# ---- building the spec ----------------------------------------------------------------
def _order_chain(
    items: Sequence[T],
    start: int | None,
    in_w: Callable[[T], int],
    out_w: Callable[[T], int],
    name: Callable[[T], str],
    what: str,
    trusted: bool,
    notes: list[str],
) -> list[T]:
    """Order modules so each one's input width is the previous one's output width.

    The source's order wins when it chains; otherwise the one order that does
    is taken (and noted); none or several raise.
    """

    def chains(seq: Sequence[T]) -> bool:
        width = start
        for it in seq:
            if width is not None and in_w(it) != width:
                return False
            width = out_w(it)
        return True

    if len(items) <= 1 or chains(items):
        if 1 < len(items) <= _MAX_PERMUTE and not trusted:
            alternatives = sum(1 for _ in itertools.islice(_chaining(items, chains), 2))
            if alternatives > 1:
                notes.append(
                    f"order of {what} {', '.join(name(i) for i in items)} taken from their key "
                    "names (safetensors stores keys sorted by name; widths allow other orders)"
                )
        if len(items) == 1 and not chains(items):
            raise ValueError(
                f"{what} {name(items[0])!r} reads width {in_w(items[0])} but receives {start}"
            )
        return list(items)
    if len(items) > _MAX_PERMUTE:
        raise ValueError(f"the {what} {', '.join(name(i) for i in items)} do not chain by width")
    found = list(itertools.islice(_chaining(items, chains), 2))
    listing = ", ".join(f"{name(i)} ({in_w(i)} -> {out_w(i)})" for i in items)
    if not found:
        raise ValueError(f"the {what} do not form a chain of matching widths: {listing}")
    if len(found) > 1:
        raise ValueError(
            f"cannot tell the order of the {what} from their widths: {listing}; convert the "
            "nn.Module itself or a state dict saved from it"
        )
    notes.append(f"order of {what} inferred from widths: {', '.join(name(i) for i in found[0])}")
    return list(found[0])


def _chaining(items: Sequence[T], chains: Callable[[Sequence[T]], bool]) -> Iterator[tuple[T, ...]]:
    return (p for p in itertools.permutations(items) if chains(p))


def _build(
    parts: _Parts, readout: str, head_act: str, hidden_act: str | None
) -> tuple[ModelSpec, dict[str, np.ndarray]]:
    embeddings = [p for p in parts.order if isinstance(p, _Embedding)]
    recurrents = [p for p in parts.order if isinstance(p, _Recurrent)]
    linears = [p for p in parts.order if isinstance(p, _Linear)]
    if not recurrents:
        raise ValueError("no nn.LSTM, nn.GRU or nn.RNN found; rnninfer runs recurrent models")
    if len(embeddings) > 1:
        raise ValueError(
            f"several embeddings ({', '.join(e.name for e in embeddings)}); rnninfer models read "
            "one token stream"
        )
    if parts.trusted_order:
        _check_no_linear_inside_stack(parts)

    recurrents = _order_chain(
        recurrents, None, lambda r: r.input_width, lambda r: r.output_width,
        lambda r: r.name or "<root>", "recurrent modules", parts.trusted_order, parts.notes,
    )
    tensors: dict[str, np.ndarray] = {}
    if embeddings:
        emb = embeddings[0]
        vocab, dim = (int(s) for s in emb.weight.shape)
        if dim != recurrents[0].input_width:
            raise ValueError(
                f"embedding {emb.name!r} has width {dim} but {recurrents[0].name!r} reads "
                f"{recurrents[0].input_width}"
            )
        inp = InputSpec(kind="tokens", vocab_size=vocab, embedding_dim=dim)
        tensors["embedding.weight"] = emb.weight
    else:
        inp = InputSpec(kind="features", features=recurrents[0].input_width)

    layers: list[RecurrentSpec] = []
    for rec in recurrents:
        for k in range(rec.num_layers):
            i = len(layers)
            layers.append(
                RecurrentSpec(
                    cell=rec.cell,
                    units=rec.hidden,
                    direction="bidirectional" if rec.bidirectional else "forward",
                    merge="concat",
                    activation=rec.nonlinearity if rec.cell == "rnn" else "tanh",
                    recurrent_activation="sigmoid",
                    reset_after=True,
                    proj_size=rec.proj,
                    bias=rec.bias,
                )
            )
            for d, sfx in (("fwd", ""), ("bwd", "_reverse"))[: 2 if rec.bidirectional else 1]:
                pre = f"layers.{i}.{d}."
                tensors[pre + "w_ih"] = rec.params[f"weight_ih_l{k}{sfx}"]
                tensors[pre + "w_hh"] = rec.params[f"weight_hh_l{k}{sfx}"]
                if rec.bias:
                    tensors[pre + "b_ih"] = rec.params[f"bias_ih_l{k}{sfx}"]
                    tensors[pre + "b_hh"] = rec.params[f"bias_hh_l{k}{sfx}"]
                if rec.proj:
                    tensors[pre + "w_hr"] = rec.params[f"weight_hr_l{k}{sfx}"]

    head = _build_head(parts, linears, recurrents[-1].output_width, head_act, hidden_act, readout)
    for j, (lin, _) in enumerate(head):
        tensors[f"head.{j}.weight"] = lin.weight
        if lin.bias is not None:
            tensors[f"head.{j}.bias"] = lin.bias
    spec = ModelSpec(
        input=inp,
        layers=tuple(layers),
        readout=readout,
        head=tuple(
            DenseSpec(units=lin.out_width, activation=act, bias=lin.bias is not None)
            for lin, act in head
        ),
        name="torch_model",
    )
    return spec, tensors


def _check_no_linear_inside_stack(parts: _Parts) -> None:
    rec_pos = [i for i, p in enumerate(parts.order) if isinstance(p, _Recurrent)]
    for i, p in enumerate(parts.order):
        if isinstance(p, _Linear) and rec_pos[0] < i < rec_pos[-1]:
            raise TypeError(
                f"nn.Linear {p.name!r} (position {i}) sits between recurrent modules; rnninfer "
                "runs Linear layers only after the recurrent stack"
            )


def _build_head(
    parts: _Parts,
    linears: list[_Linear],
    width: int,
    head_act: str,
    hidden_act: str | None,
    readout: str,
) -> list[tuple[_Linear, str]]:
    """Order the Linear layers and give each its activation."""
    if not linears:
        if head_act != "linear":
            raise ValueError(f"head_activation={head_act!r} given but the model has no nn.Linear head")
        return []
    linears = _order_chain(
        linears, width, lambda lin: lin.in_width, lambda lin: lin.out_width,
        lambda lin: lin.name, "Linear layers", parts.trusted_order, parts.notes,
    )
    acts = _visible_activations(parts, linears, readout)
    out: list[tuple[_Linear, str]] = []
    for j, lin in enumerate(linears):
        last = j == len(linears) - 1
        seen = acts.get(id(lin))
        if last:
            if seen is not None and seen != "linear" and head_act not in ("linear", seen):
                raise ValueError(
                    f"the model applies {seen} after {lin.name!r} but head_activation={head_act!r} "
                    "was given; drop the option or make them agree"
                )
            act = seen if (seen is not None and seen != "linear") else head_act
            if seen not in (None, "linear") and head_act == "linear":
                parts.notes.append(f"head activation {seen!r} taken from the module after {lin.name!r}")
        elif seen is not None:
            if hidden_act is not None and hidden_act != seen:
                raise ValueError(
                    f"the model shows activation {seen!r} after {lin.name!r} but "
                    f"hidden_activation={hidden_act!r} was given"
                )
            act = seen
        elif hidden_act is not None:
            act = hidden_act
        else:
            loose = (
                f" (activation modules registered outside nn.Sequential: "
                f"{', '.join(parts.loose_activations)})"
                if parts.loose_activations else ""
            )
            raise ValueError(
                f"cannot tell the activation between Linear layers {lin.name!r} and "
                f"{linears[j + 1].name!r}{loose}; pass hidden_activation=... "
                "('identity' if there is none)"
            )
        if act in ("softmax", "log_softmax") and not last:
            raise ValueError(f"{act} after {lin.name!r}: only the last head layer may use it")
        out.append((lin, act))
    return out


def _visible_activations(parts: _Parts, linears: list[_Linear], readout: str) -> dict[int, str]:
    """Activations a module shows after each Linear inside the same nn.Sequential.

    Inside one Sequential the data flow is the listing order, so what follows a
    Linear up to the next Linear is exactly what is applied ("linear" when
    nothing is). Across containers nothing can be told.
    """
    out: dict[int, str] = {}
    order = parts.order
    index = {id(p): i for i, p in enumerate(order)}
    for j, lin in enumerate(linears):
        if lin.container is None:
            continue
        nxt = linears[j + 1] if j + 1 < len(linears) else None
        start = index[id(lin)] + 1
        stop = index[id(nxt)] if nxt is not None else len(order)
        if nxt is not None and (nxt.container != lin.container or stop < start):
            continue
        between = [
            p for p in order[start:stop] if isinstance(p, _Activation) and p.container == lin.container
        ]
        if nxt is None and not between:
            continue  # the Sequential ends here; forward may still apply head_activation
        if len(between) > 1:
            raise ValueError(
                f"several activations after {lin.name!r} ({', '.join(a.name for a in between)}); "
                "rnninfer applies one activation per head layer"
            )
        if between and between[0].dim is not None:
            # The head sees (B, width) for "last" and (B, T, width) or (T, B, width) for
            # "sequence"; only the last axis is the output vector.
            last_axis = 1 if readout == "last" else 2
            if between[0].dim not in (-1, last_axis):
                raise ValueError(
                    f"{between[0].name!r}: {between[0].act} over dim={between[0].dim} is not over "
                    f"the output vector with readout={readout!r}; rnninfer normalises the last axis"
                )
        out[id(lin)] = between[0].act if between else "linear"
    for p in order:
        if isinstance(p, _Activation) and not any(
            index[id(lin)] < index[id(p)] and lin.container == p.container for lin in linears
        ):
            raise ValueError(
                f"activation module {p.name!r} comes before any Linear in its nn.Sequential; "
                "rnninfer has no activation between the recurrent stack and the head"
            )
    return out
