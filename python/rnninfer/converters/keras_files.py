"""Reading Keras sources: ``.keras`` zips, legacy ``.h5`` files, in-memory models.

A reader turns a source into a :class:`KerasSource`: the model config (plain
JSON data) and a way to fetch each layer's weights as numpy arrays. Nothing
here knows rnninfer's spec; :mod:`.keras` maps what is read. Files are read
with :mod:`zipfile`, :mod:`json` and :mod:`h5py` only, so no training
framework is needed on a deployment box.
"""

from __future__ import annotations

import io
import json
import os
import re
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ModelFormatError
from .keras_graph import entry_name, is_op, layer_entries

if TYPE_CHECKING:
    import h5py

__all__ = ["KerasSource", "read_keras"]

_ZIP_MAGIC = b"PK\x03\x04"
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


@dataclass
class KerasSource:
    """A parsed model config plus a way to fetch each layer's weights.

    ``weights(layer_name, class_name, order)`` returns the layer's arrays in
    Keras' own ``layer.get_weights()`` order (for a recurrent layer: kernel,
    recurrent kernel, bias; a Bidirectional layer gives the forward layer's
    then the backward layer's).
    """

    config: dict[str, Any]
    keras_version: str
    weights: Callable[[str, str, int], list[np.ndarray]]
    close: Callable[[], None] = lambda: None



def read_keras(src: Any) -> tuple[KerasSource, str]:
    """Open a path or an in-memory Keras model: ``(source, source name)``.

    The caller must call ``source.close()`` when done.
    """
    if isinstance(src, (str, os.PathLike)):
        return _read_file(os.fspath(src))
    return _read_in_memory(src)


def _read_file(path: str) -> tuple[KerasSource, str]:
    name = os.path.basename(path)
    with open(path, "rb") as f:
        head = f.read(8)
    if head.startswith(_ZIP_MAGIC):
        reader: Callable[[str], KerasSource] = _read_keras_zip
    elif head == _HDF5_MAGIC:
        reader = _read_legacy_h5
    else:
        raise ModelFormatError(
            "not a Keras model file: expected a .keras zip archive or an HDF5 .h5 file", source=name
        )
    try:
        source = reader(path)
    except ModelFormatError as e:
        raise ModelFormatError(e.problems, source=name) from e
    except (OSError, EOFError, KeyError, ValueError, TypeError, zipfile.BadZipFile, RuntimeError) as e:
        raise ModelFormatError(f"cannot read the Keras file: {type(e).__name__}: {e}", source=name) from e
    return source, name



def _keras_zip_names(config: dict[str, Any]) -> dict[str, str]:
    """Map layer names to their groups in a ``.keras`` weights file.

    Keras 3 stores a layer's variables under ``layers/<snake_case(class)>``,
    made unique with ``_1``, ``_2``... in the order of ``model.layers``
    (``saving_lib._save_container_state``), never under the layer's own name.
    """
    used: dict[str, int] = {}
    out: dict[str, str] = {}
    for entry in layer_entries(config):
        if is_op(entry):
            continue  # ops are not in model.layers
        base = _snake_case(str(entry.get("class_name", "")))
        if base in used:
            used[base] += 1
            out[str(entry_name(entry))] = f"{base}_{used[base]}"
        else:
            used[base] = 0
            out[str(entry_name(entry))] = base
    return out


def _snake_case(name: str) -> str:
    # Same rules as keras.src.utils.naming.to_snake_case.
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def _datasets(group: h5py.Group) -> list[np.ndarray]:
    """All datasets under ``group`` in Keras' variable order (``vars/0``, ``vars/1``...)."""
    import h5py

    found: list[tuple[tuple[Any, ...], np.ndarray]] = []

    def visit(name: str, obj: Any) -> None:
        if isinstance(obj, h5py.Dataset):
            key = tuple((0, int(p)) if p.isdigit() else (1, p) for p in name.split("/"))
            found.append((key, np.asarray(obj[()])))

    group.visititems(visit)
    return [a for _, a in sorted(found, key=lambda t: t[0])]


def _read_keras_zip(path: str) -> KerasSource:
    import h5py

    with zipfile.ZipFile(path) as zf:
        names = set(zf.namelist())
        if "config.json" not in names:
            raise ModelFormatError("the .keras archive has no config.json")
        config = json.loads(zf.read("config.json").decode("utf-8"))
        version = ""
        if "metadata.json" in names:
            meta = json.loads(zf.read("metadata.json").decode("utf-8"))
            version = str(meta.get("keras_version", "")) if isinstance(meta, dict) else ""
        if "model.weights.h5" not in names:
            other = sorted(n for n in names if n.startswith("model.weights"))
            raise ModelFormatError(
                "the .keras archive has no model.weights.h5"
                + (f" (found {other}; sharded or npz weights are not supported)" if other else "")
            )
        blob = zf.read("model.weights.h5")
    if not isinstance(config, dict):
        raise ModelFormatError("config.json does not hold a JSON object")
    h5 = h5py.File(io.BytesIO(blob), "r")
    groups = _keras_zip_names(config)

    def weights(layer: str, cls: str, order: int) -> list[np.ndarray]:
        path_ = "layers/" + groups.get(layer, _snake_case(cls))
        if path_ not in h5:
            raise ModelFormatError(f"weights of layer {layer!r} ({cls}) not found at {path_!r}")
        g = h5[path_]
        if cls == "Bidirectional":
            if "forward_layer" not in g or "backward_layer" not in g:
                raise ModelFormatError(f"weights of Bidirectional layer {layer!r} are incomplete")
            # Sorted by name "backward_layer" would come first; Keras' own
            # order is forward, then backward.
            return _datasets(g["forward_layer"]) + _datasets(g["backward_layer"])
        return _datasets(g)

    return KerasSource(config=config, keras_version=version, weights=weights, close=h5.close)


def _attr_str(v: Any) -> str:
    return v.decode("utf-8") if isinstance(v, bytes) else str(v)


def _read_legacy_h5(path: str) -> KerasSource:
    import h5py

    h5 = h5py.File(path, "r")
    try:
        if "model_config" not in h5.attrs:
            raise ModelFormatError(
                "the .h5 file has no model_config (a weights-only file?); save the whole "
                "model with model.save('model.h5') or use the .keras format"
            )
        config = json.loads(_attr_str(h5.attrs["model_config"]))
        version = _attr_str(h5.attrs.get("keras_version", ""))
        root = h5.get("model_weights", h5)
    except BaseException:
        h5.close()
        raise
    if not isinstance(config, dict):
        h5.close()
        raise ModelFormatError("model_config does not hold a JSON object")

    def weights(layer: str, cls: str, order: int) -> list[np.ndarray]:
        if layer not in root:
            raise ModelFormatError(f"weights of layer {layer!r} ({cls}) not found in the .h5 file")
        g = root[layer]
        names = [_attr_str(n) for n in g.attrs.get("weight_names", [])]
        # weight_names lists the arrays in layer.weights order, which is the
        # order the legacy loader itself relies on.
        return [np.asarray(g[n][()]) for n in names]

    return KerasSource(config=config, keras_version=version, weights=weights, close=h5.close)



# ---- sources: in-memory models -------------------------------------------------------
def _read_in_memory(model: Any) -> tuple[KerasSource, str]:
    # The first Keras class in the MRO tells the framework, also for subclasses.
    keras_cls = next(
        (c for c in type(model).__mro__ if c.__module__.split(".")[0] in ("keras", "tf_keras", "tensorflow")),
        None,
    )
    if keras_cls is None or not hasattr(model, "get_config") or not hasattr(model, "get_layer"):
        raise TypeError(
            "from_keras expects a path to a .keras/.h5 file or a keras.Model, got "
            f"{type(model).__module__}.{type(model).__name__}"
        )
    module = keras_cls.__module__.split(".")[0]
    cls = type(model).__name__
    if cls == "Model":
        cls = "Functional"  # tf.keras functional models are instances of Model
    if cls not in ("Sequential", "Functional"):
        raise TypeError(
            f"only Sequential and Functional Keras models can be converted, got a subclassed "
            f"model {cls!r}; rebuild it with the functional API"
        )
    pkg = sys.modules.get(module)
    version = str(getattr(pkg, "__version__", ""))
    if module == "tensorflow":  # tf.keras of TF < 2.16 is Keras 2 and lives inside TF
        version = str(getattr(getattr(pkg, "keras", None), "__version__", "2"))
    config = {"class_name": cls, "config": model.get_config()}

    def weights(layer: str, cls_: str, order: int) -> list[np.ndarray]:
        return [np.asarray(w) for w in model.get_layer(layer).get_weights()]

    name = f"<in-memory {cls} {getattr(model, 'name', '')!r}>"
    return KerasSource(config=config, keras_version=version, weights=weights), name

