"""Reading PyTorch checkpoints without running code: ``.pt``/``.pth`` and ``.safetensors``.

A reader returns named float32 numpy arrays (a state dict) and nothing of
rnninfer's: ``.pt``/``.pth`` only through ``torch.load(..., weights_only=True)``,
``.safetensors`` through the ``safetensors`` package's numpy API (torch is not
needed for that route). Half types are widened to float32 exactly.
"""

from __future__ import annotations

import json
import os
import pickletools
import re
import struct
import sys
import zipfile
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import ModelFormatError

__all__ = ["is_tensor", "read_state_file", "to_float32"]

#: Half types are widened to float32 exactly; anything else would change numbers.
_ACCEPTED_DTYPES = ("float32", "float16", "bfloat16")
#: Safetensors dtype codes for the same three types.
_SAFETENSORS_DTYPES = {"F32": "<f4", "F16": "<f2", "BF16": "bfloat16"}
#: Nested state-dict keys of common training checkpoints ({"epoch": ..., "model_state_dict": ...}).
_NESTED_STATE_KEYS = ("state_dict", "model_state_dict", "model", "module")


_TIED_KEY = re.compile(r"^[\w.]*(weight|bias)$")


def read_state_file(path: str) -> tuple[Mapping[str, Any], bool]:
    """The state dict stored at ``path`` and whether its key order is the registration order.

    ``.safetensors`` files store keys sorted by name, so their order says
    nothing about the model; ``.pt`` files keep the state dict's own order.
    """
    if path.lower().endswith(".safetensors"):
        return _load_safetensors(path), False
    return _load_pt(path), True


def _existing(path: str) -> str:
    """The file's name for messages; a missing file is a ModelFormatError before any import."""
    name = os.path.basename(path)
    if not os.path.isfile(path):
        raise ModelFormatError(f"no such file: {path}", source=name)
    return name


def _load_pt(path: str) -> Mapping[str, Any]:
    """``torch.load`` with ``weights_only=True``; every failure becomes ModelFormatError."""
    name = _existing(path)
    try:
        import torch
    except ImportError as e:
        raise ModelFormatError("reading a .pt/.pth file needs PyTorch installed", source=name) from e
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
    if obj and all(is_tensor(v) for v in obj.values()):
        return obj
    nested = [k for k in _NESTED_STATE_KEYS if isinstance(obj.get(k), Mapping)]
    for key in nested:
        inner = obj[key]
        if inner and all(is_tensor(v) for v in inner.values()):
            return dict(inner)
    bad = [str(k) for k, v in obj.items() if not is_tensor(v)]
    raise ModelFormatError(
        "expected a state dict of tensors; entries that are not tensors: "
        f"{', '.join(bad[:8])}. Save model.state_dict() (or put it under 'state_dict')",
        source=name,
    )


def is_tensor(v: object) -> bool:
    if isinstance(v, np.ndarray):
        return True
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(v, torch.Tensor)


def _load_safetensors(path: str) -> dict[str, np.ndarray]:
    """Read every tensor as float32 numpy; bfloat16 is widened by bit shifting.

    numpy has no bfloat16, so the safetensors numpy API cannot return those
    tensors; their raw bytes are read from the offsets in the file header.
    """
    name = _existing(path)
    try:
        from safetensors import safe_open
    except ImportError as e:
        raise ModelFormatError("reading .safetensors needs the 'safetensors' package", source=name) from e
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
            metadata = f.metadata() or {}
    except ModelFormatError:
        raise
    except Exception as e:
        raise ModelFormatError(f"cannot read the safetensors file (corrupt?): {e}", source=name) from e
    if not out:
        raise ModelFormatError("the safetensors file holds no tensors", source=name)
    # safetensors.torch.save_model stores one name of tied (shared) tensors and
    # records each dropped name in the metadata as {dropped: kept}.
    for dropped, kept in metadata.items():
        if isinstance(kept, str) and kept in out and dropped not in out and _TIED_KEY.match(dropped):
            out[dropped] = out[kept]
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


def to_float32(key: str, value: object, source: str | None) -> np.ndarray:
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

