"""Streaming batch scoring: sequences from a file (or stdin) through a model, in chunks.

``rnninfer predict MODEL --input FILE`` runs on this module. A reader yields
chunks of at most ``batch_size`` sequences; the model runs one chunk at a time
and a writer appends its outputs, so memory stays bounded by one chunk however
long the input is: JSON lines are read line by line, a ``.npy`` array is
memory-mapped, and the arrays of an ``.npz`` are read from the archive member
as a stream (even when compressed). Every sequence gives the bits it gives
alone (docs/engine.md), so how the input is cut into chunks never changes an
output.

Inputs:

* ``.jsonl`` / ``-`` (stdin): one sequence per line, a JSON list of token ids
  (token models) or of feature rows (feature models); blank lines are skipped.
* ``.npy``: a padded ``(N, T)`` id array or ``(N, T, F)`` feature array (or
  one sequence, ``(T,)`` / ``(T, F)``); true lengths from ``lengths``.
* ``.npz``: the padded array (key ``x``, ``inputs``, or the only other array)
  and optionally ``lengths``.

Outputs: ``.jsonl`` (one JSON list per sequence: the output row, or for a model
returning sequences one row per step of the sequence's own length) or ``.npy``
(the stacked outputs). Floats are written as the shortest decimal that reads
back as the same float32, so JSON outputs are exact too.
"""

from __future__ import annotations

import json
import os
import sys
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

import numpy as np

from .model import Model

INPUT_SUFFIXES = (".jsonl", ".npy", ".npz")
OUTPUT_SUFFIXES = (".jsonl", ".npy")


class InputError(ValueError):
    """The input file (or one of its lines) cannot be scored; the message says where."""


@dataclass
class Chunk:
    """Up to ``batch_size`` sequences, ready for ``model.predict``.

    Attributes:
        x: a list of sequences (JSON lines) or a padded array slice.
        lengths: true lengths of the padded rows (``None`` for lists or full rows).
        first: index of the first sequence of the chunk in the input (0-based).
        lines: the input line of each sequence (JSON lines), to name it in an error.
        label: what a sequence is called in an error when there are no lines (``row``).
    """

    x: Any
    lengths: np.ndarray | None
    first: int
    lines: list[int] | None = None
    label: str = "row"

    def __len__(self) -> int:
        return len(self.x)

    def where(self, i: int) -> str:
        """``line 17`` for JSON lines, ``row 16`` for arrays (``label`` and the 0-based index)."""
        return f"line {self.lines[i]}" if self.lines is not None else f"{self.label} {self.first + i}"


# ---- readers --------------------------------------------------------------------------------------
def _parse_line(line: str, lineno: int, tokens: bool) -> Any:
    try:
        value = json.loads(line)
    except json.JSONDecodeError as e:
        raise InputError(f"line {lineno}: not valid JSON ({e.msg} at column {e.colno})") from None
    if isinstance(value, dict) and "inputs" in value:
        value = value["inputs"]
    if not isinstance(value, list):
        raise InputError(f"line {lineno}: expected a JSON list (one sequence), got {type(value).__name__}")
    if tokens:
        return value
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (ValueError, TypeError) as e:
        raise InputError(f"line {lineno}: a feature sequence must be a list of equal-length rows of "
                         f"numbers ({e})") from None
    if arr.ndim != 2:
        raise InputError(f"line {lineno}: a feature sequence must be a list of rows (2-D), got {arr.ndim}-D")
    return arr


def read_jsonl(stream: IO[str], batch_size: int, tokens: bool) -> Iterator[Chunk]:
    """Chunks of JSON lines from a text stream (one sequence per non-blank line)."""
    seqs: list[Any] = []
    lines: list[int] = []
    first = 0
    for lineno, line in enumerate(stream, start=1):
        if not line.strip():
            continue
        seqs.append(_parse_line(line, lineno, tokens))
        lines.append(lineno)
        if len(seqs) == batch_size:
            yield Chunk(seqs, None, first, lines)
            first += len(seqs)
            seqs, lines = [], []
    if seqs:
        yield Chunk(seqs, None, first, lines)


def _npy_header(f: IO[bytes], name: str) -> tuple[tuple[int, ...], np.dtype[Any], bool]:
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
    except ValueError as e:
        raise InputError(f"{name}: not a .npy array ({e})") from None
    if dtype.hasobject:
        raise InputError(f"{name}: object arrays are not read (allow_pickle is off)")
    return shape, dtype, fortran


class _Padded(Protocol):
    shape: tuple[int, ...]

    def rows(self, start: int, stop: int) -> np.ndarray: ...


class _MemmapRows:
    def __init__(self, arr: np.ndarray) -> None:
        self.arr, self.shape = arr, arr.shape

    def rows(self, start: int, stop: int) -> np.ndarray:
        return np.array(self.arr[start:stop])


class _StreamRows:
    """Rows of a C-order ``.npy`` read in order from a (possibly compressed) zip member."""

    def __init__(self, f: IO[bytes], shape: tuple[int, ...], dtype: np.dtype[Any]) -> None:
        self.f, self.shape, self.dtype = f, shape, dtype
        self.row_items = int(np.prod(shape[1:], dtype=np.int64)) if len(shape) > 1 else 1
        self.pos = 0

    def rows(self, start: int, stop: int) -> np.ndarray:
        assert start == self.pos, "rows are read in order"
        n = stop - start
        nbytes = n * self.row_items * self.dtype.itemsize
        data = self.f.read(nbytes)
        if len(data) != nbytes:
            raise InputError(f"the array ends after {start + len(data) // max(1, self.row_items * self.dtype.itemsize)}"
                             f" of {self.shape[0]} rows (truncated file)")
        self.pos = stop
        return np.frombuffer(data, dtype=self.dtype).reshape((n, *self.shape[1:])).copy()


def _lengths_array(lengths: Any, n: int, T: int) -> np.ndarray:
    arr = np.asarray(lengths)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise InputError(f"lengths: expected {n} lengths (one per row of the padded input), got shape {arr.shape}")
    if arr.dtype.kind not in "iu":
        raise InputError(f"lengths must be integers, got dtype {arr.dtype}")
    if n and (int(arr.min()) < 1 or int(arr.max()) > T):
        raise InputError(f"lengths must lie in [1, {T}] (the padded length); got values in "
                         f"[{int(arr.min())}, {int(arr.max())}]")
    return arr.astype(np.int64)


def _padded_chunks(src: _Padded, lengths: Any, batch_size: int, tokens: bool, name: str) -> Iterator[Chunk]:
    shape = src.shape
    single_ndim = 1 if tokens else 2
    if len(shape) == single_ndim:
        if lengths is not None:
            raise InputError(f"{name}: lengths apply to a padded batch; this array is one sequence")
        yield Chunk([_whole(src)], None, 0)
        return
    if len(shape) != single_ndim + 1:
        want = "(N, T) token ids" if tokens else "(N, T, F) features"
        raise InputError(f"{name}: expected a padded {want} array (or one sequence), got shape {shape}")
    n, T = shape[0], shape[1]
    lens = _lengths_array(lengths, n, T) if lengths is not None else None
    for start in range(0, n, batch_size):
        stop = min(n, start + batch_size)
        yield Chunk(src.rows(start, stop), None if lens is None else lens[start:stop], start)


def _whole(src: _Padded) -> np.ndarray:
    return src.rows(0, src.shape[0])


def read_npy(path: str, lengths: Any, batch_size: int, tokens: bool) -> Iterator[Chunk]:
    """Chunks of a ``.npy`` padded array, memory-mapped."""
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as e:
        raise InputError(f"{path}: not a readable .npy array ({e})") from None
    if not isinstance(arr, np.ndarray):
        raise InputError(f"{path}: not a .npy array")
    yield from _padded_chunks(_MemmapRows(arr), lengths, batch_size, tokens, path)


def read_npz(path: str, lengths: Any, batch_size: int, tokens: bool) -> Iterator[Chunk]:
    """Chunks of the padded array in an ``.npz`` (key ``x``/``inputs``/the only one), with its ``lengths``."""
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile as e:
        raise InputError(f"{path}: not an .npz archive ({e})") from None
    with zf:
        keys = [n[:-4] for n in zf.namelist() if n.endswith(".npy")]
        data_keys = [k for k in keys if k != "lengths"]
        key = next((k for k in ("x", "inputs") if k in keys), data_keys[0] if len(data_keys) == 1 else None)
        if key is None:
            raise InputError(f"{path}: cannot tell which array is the input among {sorted(keys)}; "
                             "name it 'x' (and the true lengths 'lengths')")
        if "lengths" in keys:
            if lengths is not None:
                raise InputError(f"{path} holds 'lengths' already; --lengths is for .npy inputs")
            with zf.open("lengths.npy") as f:
                lengths = np.lib.format.read_array(f, allow_pickle=False)
        with zf.open(f"{key}.npy") as f:
            shape, dtype, fortran = _npy_header(f, f"{path}[{key}]")
            if fortran:
                raise InputError(f"{path}[{key}]: Fortran-order arrays cannot be streamed; save it in C order")
            yield from _padded_chunks(_StreamRows(f, shape, dtype), lengths, batch_size, tokens, f"{path}[{key}]")


def open_input(src: str, lengths: Any, batch_size: int, tokens: bool) -> Iterator[Chunk]:
    """Chunks of ``src``: a ``.jsonl``/``.npy``/``.npz`` path, or ``-`` for JSON lines on stdin."""
    if src == "-":
        return read_jsonl(sys.stdin, batch_size, tokens)
    suffix = Path(src).suffix.lower()
    if suffix not in INPUT_SUFFIXES:
        raise InputError(f"cannot read {src!r}: the input must be .jsonl, .npy, .npz or - (JSON lines on stdin)")
    if not Path(src).is_file():
        raise InputError(f"cannot read {src!r}: no such file")
    if suffix == ".jsonl":
        if lengths is not None:
            raise InputError("--lengths applies to a padded .npy input; every JSON line carries its own length")
        return _jsonl_file(src, batch_size, tokens)
    if suffix == ".npy":
        return read_npy(src, lengths, batch_size, tokens)
    return read_npz(src, lengths, batch_size, tokens)


def _jsonl_file(path: str, batch_size: int, tokens: bool) -> Iterator[Chunk]:
    with open(path, encoding="utf-8") as f:
        yield from read_jsonl(f, batch_size, tokens)


def count_sequences(src: str) -> int | None:
    """How many sequences ``src`` holds when that is cheap to know (arrays), else ``None``."""
    suffix = Path(src).suffix.lower()
    try:
        if suffix == ".npy":
            with open(src, "rb") as f:
                shape = _npy_header(f, src)[0]
        elif suffix == ".npz":
            with zipfile.ZipFile(src) as zf:
                names = [n for n in zf.namelist() if n.endswith(".npy") and n != "lengths.npy"]
                if len(names) != 1 and "x.npy" not in names:
                    return None
                with zf.open("x.npy" if "x.npy" in names else names[0]) as f:
                    shape = _npy_header(f, src)[0]
        else:
            return None
    except (OSError, InputError, zipfile.BadZipFile):
        return None
    return int(shape[0]) if len(shape) >= 2 else 1


# ---- writers --------------------------------------------------------------------------------------
def _fmt(v: float) -> str:
    """Shortest decimal that reads back as the same float32."""
    if not np.isfinite(v):
        return "NaN" if np.isnan(v) else ("Infinity" if v > 0 else "-Infinity")
    return np.format_float_positional(np.float32(v), unique=True, trim="-") if v == 0 or 1e-5 <= abs(v) < 1e16 \
        else np.format_float_scientific(np.float32(v), unique=True, trim="-")


def _json_row(a: np.ndarray) -> str:
    if a.ndim == 1:
        return "[" + ", ".join(_fmt(float(v)) for v in a) + "]"
    return "[" + ", ".join(_json_row(r) for r in a) + "]"


class JsonlWriter:
    """One JSON list per sequence."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream

    def write(self, out: np.ndarray, lengths: Sequence[int] | None) -> None:
        """Append a chunk's outputs; ``lengths`` trims the padded steps of sequence outputs."""
        for i, row in enumerate(out):
            self.stream.write(_json_row(row if lengths is None else row[: lengths[i]]) + "\n")

    def close(self) -> None:
        """Flush (the caller owns the stream)."""
        self.stream.flush()


class NpyWriter:
    """Stacked outputs in a ``.npy`` whose length is fixed up when the last chunk is in.

    The header is written first with room for any row count, then rewritten in
    place at :meth:`close` with the real shape, padded to the same size.
    """

    _HEADER_BYTES = 128  # magic + length + dict; numpy pads headers to 64-byte multiples

    def __init__(self, f: IO[bytes], single: bool = False) -> None:
        self.f, self.single = f, single
        self.rows = 0
        self.row_shape: tuple[int, ...] | None = None
        self.f.write(b"\0" * self._HEADER_BYTES)

    def write(self, out: np.ndarray, lengths: Sequence[int] | None) -> None:
        """Append a chunk's outputs (``lengths`` is ignored: padded steps stay zero rows)."""
        del lengths
        out = np.ascontiguousarray(out, dtype=np.float32)
        if self.row_shape is None:
            self.row_shape = out.shape[1:]
        elif out.shape[1:] != self.row_shape:
            raise InputError(
                f"output rows of shape {out.shape[1:]} after {self.row_shape}: a model returning sequences "
                "gives rows as long as each chunk's longest sequence; write .jsonl, or give a padded "
                ".npy/.npz input"
            )
        self.f.write(out.tobytes())
        self.rows += out.shape[0]

    def close(self) -> None:
        """Write the final header."""
        shape = self.row_shape or (0,)
        full = shape if self.single and self.rows == 1 else (self.rows, *shape)
        text = f"{{'descr': '<f4', 'fortran_order': False, 'shape': {full!r}, }}"
        pad = self._HEADER_BYTES - 10 - len(text) - 1
        if pad < 0:
            raise InputError(f"output shape {full} does not fit the .npy header")
        header = b"\x93NUMPY\x01\x00" + (self._HEADER_BYTES - 10).to_bytes(2, "little") + \
            (text + " " * pad + "\n").encode("latin1")
        self.f.seek(0)
        self.f.write(header)
        self.f.flush()


# ---- the loop -------------------------------------------------------------------------------------
def _predict(model: Model, chunk: Chunk) -> np.ndarray:
    try:
        if isinstance(chunk.x, np.ndarray):
            return model.predict(chunk.x, lengths=chunk.lengths)
        return model.predict(list(chunk.x))
    except (ValueError, TypeError) as e:
        # Find the first sequence of the chunk that fails alone, to name its line or row.
        for i in range(len(chunk)):
            try:
                if isinstance(chunk.x, np.ndarray):
                    lens = None if chunk.lengths is None else chunk.lengths[i: i + 1]
                    model.predict(chunk.x[i: i + 1], lengths=lens)
                else:
                    model.predict([chunk.x[i]])
            except (ValueError, TypeError) as inner:
                raise InputError(f"{chunk.where(i)}: {inner}") from None
        raise InputError(f"sequences {chunk.first}..{chunk.first + len(chunk) - 1}: {e}") from None


def _seq_lengths(chunk: Chunk) -> list[int] | None:
    if chunk.lengths is not None:
        return [int(v) for v in chunk.lengths]
    if isinstance(chunk.x, np.ndarray):
        return None
    return [len(s) for s in chunk.x]


def score(
    model: Model, chunks: Iterator[Chunk], writer: JsonlWriter | NpyWriter, progress: Any = None
) -> int:
    """Run every chunk through ``model`` and write the outputs; returns the number of sequences."""
    n = 0
    for chunk in chunks:
        out = _predict(model, chunk)
        if out.ndim == (1 if not model.returns_sequences else 2):
            out = out[None]  # one sequence given alone
        writer.write(out, _seq_lengths(chunk) if model.returns_sequences else None)
        n += len(chunk)
        if progress is not None:
            progress.update(len(chunk))
    return n


def single_sequence_input(src: str, tokens: bool) -> bool:
    """True when an array input holds one sequence (its output has no batch axis)."""
    suffix = Path(src).suffix.lower()
    if suffix != ".npy":
        return False
    try:
        with open(src, "rb") as f:
            shape = _npy_header(f, src)[0]
    except (OSError, InputError):
        return False
    return len(shape) == (1 if tokens else 2)


def open_output(path: str) -> tuple[IO[Any], str]:
    """A temporary file beside ``path`` (renamed into place when scoring succeeds) and its name."""
    suffix = Path(path).suffix.lower()
    if suffix not in OUTPUT_SUFFIXES:
        raise InputError(f"cannot write {path!r}: the output must be .jsonl or .npy")
    tmp = f"{path}.part-{os.getpid()}"
    if suffix == ".npy":
        return open(tmp, "wb"), tmp
    return open(tmp, "w", encoding="utf-8"), tmp
