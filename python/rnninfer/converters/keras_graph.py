"""The layer graph of a Keras model config (Sequential or Functional), in order."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import ModelFormatError

#: Keras 3 records the ops that compute masks (``Embedding(mask_zero=True)``,
#: ``Masking``) as graph nodes feeding the layers' ``mask`` arguments; they
#: carry no weights and rnninfer derives the same mask from the input spec
#: (merging two copies of one input mask, as Add does, gives that mask back).
MASK_OPS = ("NotEqual", "Any", "LogicalOr", "LogicalAnd", "All")

# ---- config helpers ------------------------------------------------------------------
def layer_entries(config: Mapping[str, Any]) -> list[dict[str, Any]]:
    inner = config.get("config")
    if isinstance(inner, list):  # very old Sequential configs: a bare layer list
        layers: Any = inner
    elif isinstance(inner, dict):
        layers = inner.get("layers")
    else:
        layers = None
    if not isinstance(layers, list) or not all(isinstance(x, dict) for x in layers):
        raise ModelFormatError("the model config has no layer list")
    return layers


def entry_name(entry: Mapping[str, Any]) -> str:
    cfg = entry.get("config")
    name = entry.get("name") or (cfg.get("name") if isinstance(cfg, dict) else None)
    if not isinstance(name, str):
        raise ModelFormatError(f"a {entry.get('class_name')} layer in the config has no name")
    return name


def is_op(entry: Mapping[str, Any]) -> bool:
    module = str(entry.get("module") or "")
    return module.startswith("keras.src.ops") or (not module and entry.get("class_name") in MASK_OPS)


def keras_major(version: str) -> int:
    m = re.match(r"\s*(\d+)", version)
    return int(m.group(1)) if m else 3


# ---- the graph ---------------------------------------------------------------------
TensorKey = tuple[str, int, int]


@dataclass
class Node:
    """One call of one layer in the graph, in topological order."""

    name: str
    cls: str
    config: dict[str, Any]
    position: int
    inputs: list[TensorKey]
    mask: TensorKey | None = None
    is_op: bool = False
    constants: list[Any] = field(default_factory=list)

    @property
    def where(self) -> str:
        return f"layer {self.name!r} ({self.cls}) at position {self.position}"


def graph(config: Mapping[str, Any]) -> tuple[list[Node], list[TensorKey], list[TensorKey]]:
    """Nodes in order, model inputs and model outputs, from a model config."""
    cls = config.get("class_name")
    entries = layer_entries(config)
    if cls == "Sequential":
        return _sequential_graph(entries)
    if cls in ("Functional", "Model"):
        inner = config.get("config")
        assert isinstance(inner, dict)
        return _functional_graph(entries, inner)
    raise ValueError(
        f"the top-level model is a {cls!r}; only Sequential and Functional models can be converted"
    )


def _sequential_graph(entries: list[dict[str, Any]]) -> tuple[list[Node], list[TensorKey], list[TensorKey]]:
    nodes: list[Node] = []
    prev: TensorKey = ("__input__", 0, 0)
    for pos, entry in enumerate(entries):
        cfg = entry.get("config")
        if not isinstance(cfg, dict):
            raise ModelFormatError(f"layer {pos} of the Sequential config has no config object")
        name = entry_name(entry)
        cls = str(entry.get("class_name"))
        if cls == "InputLayer":
            continue
        nodes.append(Node(name, cls, cfg, pos, [prev], is_op=is_op(entry)))
        prev = (name, 0, 0)
    return nodes, [("__input__", 0, 0)], [prev]


def _tensor_refs(obj: Any, out: list[TensorKey], consts: list[Any]) -> None:
    """Collect Keras 3 ``__keras_tensor__`` references (and constants) from call args."""
    if isinstance(obj, dict) and obj.get("class_name") == "__keras_tensor__":
        hist = obj.get("config", {}).get("keras_history")
        if not (isinstance(hist, list) and len(hist) == 3):
            raise ModelFormatError(f"malformed tensor reference {obj!r}")
        out.append((str(hist[0]), int(hist[1]), int(hist[2])))
    elif isinstance(obj, (list, tuple)):
        for x in obj:
            _tensor_refs(x, out, consts)
    else:
        consts.append(obj)


def _show(v: Any) -> str:
    """A call argument for a message: tensors by the layer that makes them, not as config dicts."""
    if isinstance(v, dict) and v.get("class_name") == "__keras_tensor__":
        hist = (v.get("config") or {}).get("keras_history")
        return f"<output of layer {hist[0]!r}>" if isinstance(hist, list) and hist else "<a tensor>"
    if isinstance(v, list) and len(v) >= 3 and isinstance(v[0], str) and isinstance(v[1], int):
        return f"<output of layer {v[0]!r}>"  # Keras 2 node reference
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_show(x) for x in v) + "]"
    return repr(v)


def _key_list(v: Any) -> list[TensorKey]:
    """``["name", 0, 0]`` or a list of them -> tensor keys."""
    if isinstance(v, list) and len(v) == 3 and isinstance(v[0], str):
        return [(v[0], int(v[1]), int(v[2]))]
    if isinstance(v, list):
        return [k for x in v for k in _key_list(x)]
    raise ModelFormatError(f"malformed model input/output reference {v!r}")


def _functional_graph(
    entries: list[dict[str, Any]], inner: Mapping[str, Any]
) -> tuple[list[Node], list[TensorKey], list[TensorKey]]:
    nodes: list[Node] = []
    for pos, entry in enumerate(entries):
        cfg = entry.get("config")
        cfg = cfg if isinstance(cfg, dict) else {}
        name = entry_name(entry)
        cls = str(entry.get("class_name"))
        inbound = entry.get("inbound_nodes") or []
        if cls == "InputLayer":
            continue
        if not isinstance(inbound, list) or len(inbound) == 0:
            raise ModelFormatError(f"layer {name!r} ({cls}) at position {pos} has no inbound node")
        if len(inbound) > 1:
            raise ValueError(
                f"layer {name!r} ({cls}) at position {pos} is called {len(inbound)} times "
                "(a shared layer); rnninfer runs one linear stack"
            )
        call = inbound[0]
        refs: list[TensorKey] = []
        consts: list[Any] = []
        mask: TensorKey | None = None
        if isinstance(call, dict):  # Keras 3: {"args": [...], "kwargs": {...}}
            _tensor_refs(call.get("args", []), refs, consts)
            for k, v in (call.get("kwargs") or {}).items():
                if k == "mask":
                    m: list[TensorKey] = []
                    _tensor_refs(v, m, [])
                    mask = m[0] if m else None
                elif k == "training" or v is None:
                    continue
                else:
                    raise ValueError(
                        f"layer {name!r} ({cls}) at position {pos} is called with argument "
                        f"{k}={_show(v)}, which rnninfer does not support"
                    )
        elif isinstance(call, list):  # Keras 2: [["name", node, tensor, {kwargs}], ...]
            for ref in call:
                if not (isinstance(ref, list) and len(ref) >= 3):
                    raise ModelFormatError(f"malformed inbound node of layer {name!r}: {ref!r}")
                refs.append((str(ref[0]), int(ref[1]), int(ref[2])))
                kwargs = ref[3] if len(ref) > 3 and isinstance(ref[3], dict) else {}
                for k, v in kwargs.items():
                    if k not in ("training",) and v is not None:
                        raise ValueError(
                            f"layer {name!r} ({cls}) at position {pos} is called with argument "
                            f"{k}={_show(v)}, which rnninfer does not support"
                        )
        else:
            raise ModelFormatError(f"malformed inbound node of layer {name!r}: {call!r}")
        nodes.append(Node(name, cls, cfg, pos, refs, mask, is_op(entry), consts))
    ins = _key_list(inner.get("input_layers"))
    outs = _key_list(inner.get("output_layers"))
    return nodes, ins, outs

