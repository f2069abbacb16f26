"""Read and write the ``.npz`` model file (format described in ``docs/format.md``)."""

from __future__ import annotations

import io
import json
import os
import zipfile
from typing import IO, Any, Union

import numpy as np

from ..errors import ModelFormatError
from . import precision as prec
from .checked import CheckedModel, model_problems
from .manifest import FORMAT_NAME, FORMAT_VERSION, ModelSpec
from .spec import DTYPE

#: Manifest dtype name of each stored numpy dtype (format version 2).
_DTYPE_NAMES = {np.dtype("<f4"): "float32", np.dtype("<u2"): "bfloat16", np.dtype("i1"): "int8"}
#: The first format version that may store reduced-precision weights.
REDUCED_SINCE = 2

MANIFEST_KEY = "__manifest__"


def manifest_dict(spec: ModelSpec, tensors: dict[str, np.ndarray], producer: dict[str, Any]) -> dict[str, Any]:
    """The JSON manifest for a spec, its tensors and where it came from."""
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "producer": producer,
        "precision": prec.stored_precision(spec, tensors),
        "model": spec.to_json_dict(),
        "tensors": {
            name: {"shape": list(t.shape), "dtype": _DTYPE_NAMES.get(t.dtype, "float32")}
            for name, t in tensors.items()
        },
    }


def write(
    dest: str | os.PathLike[str] | IO[bytes],
    spec: ModelSpec,
    tensors: dict[str, np.ndarray],
    producer: dict[str, Any],
    *,
    compress: bool = False,
) -> None:
    """Write a model file to a path or a binary file object.

    The caller has validated ``spec`` and ``tensors``.
    """
    manifest = json.dumps(manifest_dict(spec, tensors, producer), indent=1, sort_keys=True)
    arrays: dict[str, np.ndarray] = {
        MANIFEST_KEY: np.frombuffer(manifest.encode("utf-8"), dtype=np.uint8)
    }
    for name, t in tensors.items():
        # Reduced weights keep their stored dtype (uint16 bf16 bits, int8);
        # everything else is float32.
        dtype = t.dtype if t.dtype in _DTYPE_NAMES else DTYPE
        arrays[name] = np.ascontiguousarray(t, dtype=dtype)
    save = np.savez_compressed if compress else np.savez
    if not isinstance(dest, (str, os.PathLike)):
        if not callable(getattr(dest, "write", None)):
            raise TypeError(f"path must be a path or a binary file object, got {type(dest).__name__}")
        save(dest, **arrays)  # type: ignore[arg-type]
        return
    path = os.fspath(dest)
    # Write to a temporary name first so that a crash never leaves a half file
    # under the final name.
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        save(f, **arrays)  # type: ignore[arg-type]
    os.replace(tmp, path)


#: Where a model file comes from: a path, its bytes, or a binary file object.
Source = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, IO[bytes]]


def source_bytes(src: Source) -> tuple[bytes, str]:
    """The bytes of a model file and a name for messages.

    Args:
        src: a path, the file's bytes (``bytes``, ``bytearray``,
            ``memoryview``), or a binary file object (read to its end, not
            closed).

    Raises:
        TypeError: ``src`` of another type, or a file object in text mode.
        ModelFormatError: the file cannot be read.
    """
    if isinstance(src, (bytes, bytearray, memoryview)):
        return memoryview(src).tobytes(), "<bytes>"
    if isinstance(src, (str, os.PathLike)):
        name = os.fspath(src)
        reader: Any = None
    elif callable(getattr(src, "read", None)):
        name, reader = str(getattr(src, "name", "<file object>")), src
    else:
        raise TypeError(
            "src must be a path, the file's bytes (bytes, bytearray, memoryview) or a binary "
            f"file object, got {type(src).__name__}"
        )
    try:
        if reader is None:
            with open(name, "rb") as f:
                data = f.read()
        else:
            data = reader.read()
    except OSError as e:
        raise ModelFormatError(f"cannot read model file: {e}", source=name) from e
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(
            f"src: a file object must be opened in binary mode ('rb'); its read() gave {type(data).__name__}"
        )
    return memoryview(data).tobytes(), name


def read(path: str | os.PathLike[str]) -> tuple[ModelSpec, dict[str, np.ndarray], dict[str, Any]]:
    """Read and fully validate a model file.

    Returns:
        ``(spec, tensors, manifest)``: the tensors as stored (read-only).

    Raises:
        ModelFormatError: for anything wrong with the file, listing every
            problem found.
    """
    data, name = source_bytes(path)
    return read_bytes(data, source=name)


def read_bytes(
    data: bytes, *, source: str = "<bytes>"
) -> tuple[ModelSpec, dict[str, np.ndarray], dict[str, Any]]:
    """Like :func:`read`, from the bytes of a file."""
    checked, manifest = read_checked(data, source=source)
    return checked.spec, dict(checked.stored), manifest


def read_checked(data: bytes, *, source: str = "<bytes>") -> tuple[CheckedModel, dict[str, Any]]:
    """Read and fully validate a model file's bytes, once.

    Returns:
        ``(checked, manifest)``: the checked model (spec and read-only
        tensors, see :mod:`rnninfer.format.checked`), which
        :class:`rnninfer.Model` opens without checking again, and the manifest.

    Raises:
        ModelFormatError: for anything wrong with the file, listing every
            problem found.
    """
    if not zipfile.is_zipfile(io.BytesIO(data)):
        raise ModelFormatError("not an .npz archive (no zip structure; truncated or not a model file)", source=source)
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            bad = zf.testzip()
            if bad is not None:
                raise ModelFormatError(f"archive member {bad!r} is corrupt (CRC mismatch)", source=source)
        npz = np.load(io.BytesIO(data), allow_pickle=False)
        arrays = {k: npz[k] for k in npz.files}
    except ModelFormatError:
        raise
    except Exception as e:  # zipfile/numpy raise many types for damaged archives
        raise ModelFormatError(f"corrupt archive: {type(e).__name__}: {e}", source=source) from e

    if MANIFEST_KEY not in arrays:
        raise ModelFormatError(f"no {MANIFEST_KEY!r} entry: not an rnninfer model file", source=source)
    raw = arrays.pop(MANIFEST_KEY)
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise ModelFormatError(f"{MANIFEST_KEY!r} must be a 1-D uint8 array", source=source)
    try:
        manifest = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelFormatError(f"manifest is not valid UTF-8 JSON: {e}", source=source) from e
    if not isinstance(manifest, dict):
        raise ModelFormatError("manifest must be a JSON object", source=source)
    if manifest.get("format") != FORMAT_NAME:
        raise ModelFormatError(
            f"manifest format is {manifest.get('format')!r}, expected {FORMAT_NAME!r}", source=source
        )
    version = manifest.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ModelFormatError(f"format_version must be a positive integer, got {version!r}", source=source)
    if version > FORMAT_VERSION:
        raise ModelFormatError(
            f"format_version {version} is newer than this rnninfer reads ({FORMAT_VERSION}); "
            "upgrade rnninfer",
            source=source,
        )
    try:
        spec = ModelSpec.from_json_dict(manifest.get("model"))
    except (KeyError, TypeError, ValueError) as e:
        raise ModelFormatError(f"bad model description in manifest: {type(e).__name__}: {e}", source=source) from e

    problems: list[str] = []
    listed = manifest.get("tensors")
    if not isinstance(listed, dict):
        problems.append("manifest 'tensors' must be an object")
    else:
        for name, info in listed.items():
            if name not in arrays:
                problems.append(f"tensor {name!r} is listed in the manifest but missing from the archive")
                continue
            a = arrays[name]
            allowed = ("float32",) if version < REDUCED_SINCE else tuple(prec.NUMPY_DTYPES)
            dname = info.get("dtype") if isinstance(info, dict) else None
            if dname not in allowed:
                problems.append(
                    f"tensor {name!r}: manifest dtype {dname!r} is not one of {allowed} "
                    f"(format version {version})"
                )
            elif a.dtype != prec.NUMPY_DTYPES[dname]:
                problems.append(f"tensor {name!r}: archive dtype {a.dtype} does not match manifest {dname!r}")
            if not isinstance(info, dict) or list(a.shape) != info.get("shape"):
                problems.append(
                    f"tensor {name!r}: archive shape {list(a.shape)} differs from manifest "
                    f"{info.get('shape') if isinstance(info, dict) else info!r}"
                )
        for name in arrays:
            if name not in listed:
                problems.append(f"archive entry {name!r} is not listed in the manifest")
    found, checked = model_problems(spec, arrays, owned=True)
    problems += found
    declared = manifest.get("precision")
    if checked is not None and declared is not None and declared != checked.precision:
        problems.append(f"manifest precision {declared!r} differs from the stored weights' {checked.precision!r}")
    if problems or checked is None:
        raise ModelFormatError(sorted(set(problems), key=problems.index), source=source)
    producer = manifest.get("producer", {})
    if not isinstance(producer, dict):
        producer = {}
    manifest["producer"] = producer
    return checked, manifest
