"""The user-facing :class:`Model`: input checks, ``predict``, ``save``, ``summary``.

This is the only module that joins the pure-Python side (spec, file format,
converters) with the compiled engine in ``rnninfer._core``. Every user input is
checked here, before the engine is entered, so that a bad call raises a clear
``TypeError``/``ValueError`` and can never reach C++ with out-of-range data.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import IO, TYPE_CHECKING, Any, Union

import numpy as np

from .errors import ModelFormatError
from .format import npz
from .format import precision as prec
from .format.manifest import GATES, ModelSpec, RecurrentSpec, validate_spec
from .format.spec import DTYPE, count_params, expected_tensors, validate
from .threads import check_threads as _check_threads
from .threads import default_threads

if TYPE_CHECKING:
    from .serving.stream import Stream

ArrayLike = Union[np.ndarray, Sequence[Any]]

PRECISIONS = prec.PRECISIONS
_MAX_INT32 = np.iinfo(np.int32).max


def _version() -> str:
    from . import __version__

    return __version__


def _folded_bias(layer: RecurrentSpec, producer: Mapping[str, Any]) -> int:
    """Params the canonical layout has but the source framework does not count.

    Keras keeps one bias vector per LSTM, SimpleRNN and GRU(reset_after=False)
    direction; the canonical layout (PyTorch's) stores a second, zero one. So
    that ``summary()`` shows the count the user knows, it is left out for
    Keras models.
    """
    if producer.get("framework") != "keras" or not layer.bias:
        return 0
    if layer.cell == "gru" and layer.reset_after:
        return 0
    return GATES[layer.cell] * layer.units * layer.num_directions


def _check_precision(precision: str | None) -> str | None:
    return prec.check_precision(precision)


class Model:
    """A loaded, immutable model ready to run.

    Create one with :func:`rnninfer.load`, :func:`rnninfer.build`,
    :func:`rnninfer.from_keras` or :func:`rnninfer.from_torch`. A ``Model`` may
    be shared by many threads; each ``predict`` call uses its own scratch
    memory.
    """

    def __init__(
        self,
        spec: ModelSpec,
        tensors: Mapping[str, np.ndarray],
        *,
        producer: Mapping[str, Any] | None = None,
        threads: int | None = None,
        precision: str | None = None,
        isa: str | None = None,
    ) -> None:
        """Validate ``spec`` and ``tensors`` and pack them for the engine.

        Args:
            spec: the model description.
            tensors: canonical float32 tensors by name.
            producer: provenance stored in saved files.
            threads: threads per call (``None`` = the cores this process may use).
            precision: weight precision of the packed engine weights:
                ``"fp32"``, ``"bf16"`` or ``"int8"`` (``None`` = the precision
                ``tensors`` are stored in; see ``docs/precision.md``).
                ``tensors`` may hold reduced weights as a file stores them
                (bf16 as ``uint16``, int8 plus ``<name>_scale``).
            isa: force a kernel ISA (``"scalar"``, ``"avx2"``, ``"avx512"``,
                ``"avx512_bf16"``) for this model, for tests and benchmarks;
                ``None`` = the process default (``RNNINFER_ISA`` or the best
                the CPU runs).

        Raises:
            ModelFormatError: listing every problem with the spec or tensors.
        """
        _check_precision(precision)
        tensors = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
        problems = validate_spec(spec)
        if not problems:
            problems = prec.validate_stored(spec, tensors)
        if not problems:
            problems = validate(spec, prec.decode(spec, tensors))
        if problems:
            raise ModelFormatError(problems)
        target = precision or prec.stored_precision(spec, tensors)
        stored = prec.convert(spec, tensors, target)
        effective = prec.decode(spec, stored)
        problems = validate(spec, effective)  # e.g. a float32 beyond bf16's range became inf
        if problems:
            raise ModelFormatError(problems)
        for t in (*stored.values(), *effective.values()):
            t.setflags(write=False)
        self._spec = spec
        # Effective float32 weights (what the engine computes with) and their
        # stored form at the model's precision (what save() writes).
        self._tensors = MappingProxyType(effective)
        self._stored = MappingProxyType(stored)
        self._producer = dict(producer or {"converter": "rnninfer.build"})
        self._threads = _check_threads(threads)
        self._threads_option = threads  # what a pickle carries: None re-resolves in the worker
        self._precision = target
        self._isa_arg = isa
        from . import _core  # imported here so converters and the file format work without it

        self._engine = _core.Engine(_engine_desc(spec), dict(stored), self._threads, isa or "")
        inp = spec.input
        self._tokens = inp.kind == "tokens"
        self._width = inp.width
        self._vocab = inp.vocab_size

    # ---- properties ------------------------------------------------------------
    @property
    def spec(self) -> ModelSpec:
        """The model's description (hyper-parameters, no weights)."""
        return self._spec

    @property
    def tensors(self) -> Mapping[str, np.ndarray]:
        """The canonical float32 tensors (read-only).

        For a reduced precision these are the effective weights the engine
        uses: bf16 values widened, int8 codes times their row scales.
        """
        return self._tensors

    @property
    def stored_tensors(self) -> Mapping[str, np.ndarray]:
        """The tensors as :meth:`save` writes them (reduced weights for bf16/int8)."""
        return self._stored

    def with_precision(self, precision: str) -> Model:
        """The same model with its weights packed in another precision.

        Converting from int8 or bf16 starts from the effective weights (bf16 ->
        fp32 widens exactly); converting to the model's own precision keeps
        the stored weights unchanged.
        """
        if precision is None or _check_precision(precision) is None:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        return Model(self._spec, dict(self._stored), producer=self._producer, threads=self._threads,
                     precision=precision, isa=self._isa_arg)

    @property
    def producer(self) -> dict[str, Any]:
        """Where the model came from (converter, framework, version, source file)."""
        return dict(self._producer)

    @property
    def threads(self) -> int:
        """Threads the engine uses per call."""
        return self._threads

    @property
    def precision(self) -> str:
        """Weight precision of the packed engine weights."""
        return self._precision

    @property
    def isa(self) -> str:
        """The instruction set this model's kernels use."""
        return str(self._engine.isa)

    @property
    def recurrent_activations(self) -> str:
        """What the recurrent weights multiply: ``"fp32"`` activations (reduced
        weights widened in registers), or ``"bf16"`` / ``"int8"`` when the kernel
        table runs dot-product instructions on activations rounded or quantised
        every step (``docs/precision.md``)."""
        return str(self._engine.recurrent_activations)

    @property
    def output_width(self) -> int:
        """Width of one output row."""
        return self._spec.output_width

    @property
    def returns_sequences(self) -> bool:
        """True when ``predict`` gives one row per step."""
        return self._spec.readout == "sequence"

    # ---- predict ---------------------------------------------------------------
    def predict(self, x: ArrayLike, *, lengths: ArrayLike | None = None) -> np.ndarray:
        """Run the model.

        Args:
            x: for token models, one sequence of ids (1-D list or array), a
                ragged batch (list of sequences) or a padded ``(B, T)`` integer
                array; for feature models, ``(T, F)``, a list of ``(T_i, F)``
                arrays or a padded ``(B, T, F)`` float32/float64 array.
            lengths: true lengths of the rows of a padded array (default: all
                full length). Steps past a row's length are never read.

        Returns:
            float32 array: ``(out,)`` for one sequence, ``(B, out)`` for a
            batch; models returning sequences give ``(T, out)`` /
            ``(B, T, out)`` with zero rows at skipped steps.

        Raises:
            TypeError: wrong input type or dtype.
            ValueError: bad shapes, lengths, token ids, NaN features, empty
                input.
        """
        if self._tokens:
            if lengths is None and type(x) is list and x and type(x[0]) is int:
                # The most common call, one list of ids: checked and converted in C++.
                return self._engine.predict_token_list(x)
            if (lengths is None and type(x) is np.ndarray and x.ndim == 1 and x.size
                    and x.dtype.kind in "iu" and x.dtype != np.uint64):
                return self._engine.predict_token_seq(x)
            if (lengths is None and type(x) is np.ndarray and x.ndim == 2 and x.size
                    and x.dtype.kind in "iu" and x.dtype != np.uint64):
                # A padded batch at full length: ids are range-checked as the engine reads them.
                return self._engine.predict_tokens(x)
            data, lens, single = _prepare_tokens(x, lengths, self._vocab)
            out = self._engine.predict_tokens(data, lens)
        else:
            data, lens, single = _prepare_features(x, lengths, self._width)
            out = self._engine.predict_features(data, lens)
        return out[0] if single else out

    __call__ = predict

    # ---- streams (rnninfer.serving.stream, imported lazily) ------------------------
    def stream(self, state: Mapping[str, np.ndarray] | None = None) -> Stream:
        """A stream of one sequence, fed a few steps at a time (``docs/serving.md``).

        Args:
            state: a state taken earlier from ``Stream.state`` (this or another
                process, this or another copy of the model); ``None`` = the
                initial (zero) state.

        Raises:
            ValueError: a layer reads backwards (bidirectional or
                ``go_backwards``) or the readout is a mean; ``state`` has wrong
                names, shapes, dtype or non-finite values (the entry is named).
        """
        from .serving.stream import Stream

        return Stream(self, state)

    def feed_many(self, streams: Sequence[Stream], xs: Sequence[ArrayLike]) -> list[np.ndarray]:
        """Advance several streams of this model, each by its own input, in one engine call.

        Args:
            streams: streams of this model, each at most once.
            xs: one input per stream, as ``Stream.feed`` takes it.

        Returns:
            Each stream's outputs, as its ``feed`` would return them.

        Raises:
            TypeError, ValueError: a bad input (named by its index), a stream
                of another model or given twice; no stream advances then.
        """
        from .serving.stream import feed_many

        return feed_many(self, streams, xs)

    # ---- save / summary ------------------------------------------------------------
    def save(self, dest: str | os.PathLike[str] | IO[bytes], *, compress: bool = False) -> None:
        """Write the model file (``.npz``, see ``docs/format.md``).

        Args:
            dest: a path, or a binary file object open for writing (its
                ``write`` receives the whole file; it is not closed).
            compress: deflate the archive members.
        """
        producer = dict(self._producer)
        producer["rnninfer"] = _version()
        npz.write(dest, self._spec, dict(self._stored), producer, compress=compress)

    def to_bytes(self) -> bytes:
        """The model file's bytes (what :meth:`save` writes; :func:`load` reads them back)."""
        buf = io.BytesIO()
        self.save(buf)
        return buf.getvalue()

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # A pickle is the model file plus the load options, never packed
        # buffers or code: unpickling re-validates exactly as load() does,
        # and threads=None is resolved again in the receiving process.
        return (_unpickle, (self.to_bytes(), self._threads_option, self._precision, self._isa_arg))

    def summary(self) -> str:
        """A table of the layers: type, units, direction, params, output shape."""
        spec = self._spec
        shapes = expected_tensors(spec)
        rows: list[tuple[str, str, str, str, str]] = []
        seq = "(T, {})"
        inp = spec.input
        if inp.kind == "tokens":
            extra = ", mask_zero" if inp.mask_zero else ""
            rows.append(
                (f"Embedding({inp.vocab_size}{extra})", str(inp.embedding_dim), "-",
                 str(inp.vocab_size * inp.embedding_dim), seq.format(inp.embedding_dim))
            )
        else:
            extra = f", mask_value={inp.mask_value}" if inp.mask_value is not None else ""
            rows.append((f"Features{extra}", str(inp.features), "-", "0", seq.format(inp.features)))
        for i, layer in enumerate(spec.layers):
            n = sum(int(np.prod(s)) for k, s in shapes.items() if k.startswith(f"layers.{i}."))
            n -= _folded_bias(layer, self._producer)
            kind = layer.cell.upper()
            opts = []
            if layer.cell == "gru":
                opts.append(f"reset_after={layer.reset_after}")
            if layer.proj_size:
                opts.append(f"proj={layer.proj_size}")
            if layer.activation != "tanh":
                opts.append(layer.activation)
            if layer.cell != "rnn" and layer.recurrent_activation != "sigmoid":
                opts.append(f"gates={layer.recurrent_activation}")
            if not layer.bias:
                opts.append("no bias")
            if layer.residual_from is not None:
                opts.append(f"+ residual from {'input' if layer.residual_from < 0 else 'layer ' + str(layer.residual_from)}")
            if opts:
                kind += "(" + ", ".join(opts) + ")"
            direction = layer.direction + (f" ({layer.merge})" if layer.num_directions == 2 else "")
            rows.append((kind, str(layer.units), direction, str(n), seq.format(layer.output_width)))
        top = spec.top_width
        if spec.readout in ("mean", "max"):
            rows.append((f"Readout({spec.readout})", "-", "-", "0", f"({top},)"))
        elif spec.readout == "last":
            rows.append(("Readout(last)", "-", "-", "0", f"({top},)"))
        for j, dense in enumerate(spec.head):
            n = sum(int(np.prod(s)) for k, s in shapes.items() if k.startswith(f"head.{j}."))
            shape = f"(T, {dense.units})" if spec.readout == "sequence" else f"({dense.units},)"
            rows.append((f"Dense({dense.activation})", str(dense.units), "-", str(n), shape))
        header = ("layer", "units", "direction", "params", "output shape")
        widths = [max(len(r[c]) for r in [header, *rows]) for c in range(5)]
        line = "  ".join(f"{{:<{w}}}" for w in widths)
        out = [f"Model {spec.name!r}", line.format(*header), line.format(*("-" * w for w in widths))]
        out += [line.format(*r) for r in rows]
        total = count_params(spec) - sum(_folded_bias(x, self._producer) for x in spec.layers)
        counted = self._producer.get("framework")
        out.append(f"total params: {total}" + (f" (counted as {counted} counts them)" if counted else ""))
        prod = self._producer
        src = ", ".join(f"{k}={v}" for k, v in prod.items() if k != "notes")
        out.append(f"from: {src}")
        for note in prod.get("notes", []) or []:
            out.append(f"note: {note}")
        return "\n".join(out)

    def __repr__(self) -> str:
        layers = ", ".join(f"{x.cell}{x.units}" for x in self._spec.layers)
        return f"<rnninfer.Model {self._spec.name!r}: {self._spec.input.kind} -> [{layers}] -> {self.output_width}>"


# ---- engine description ------------------------------------------------------------
def _engine_desc(spec: ModelSpec) -> dict[str, Any]:
    """The flat description the C++ engine parses (see bind_engine.cc)."""
    inp = spec.input
    return {
        "input_kind": inp.kind,
        "vocab_size": inp.vocab_size,
        "input_width": inp.width,
        "mask_zero": inp.mask_zero,
        "has_mask_value": inp.mask_value is not None,
        "mask_value": float(inp.mask_value) if inp.mask_value is not None else 0.0,
        "layers": [
            {
                "cell": layer.cell,
                "units": layer.units,
                "direction": layer.direction,
                "merge": layer.merge,
                "activation": layer.activation,
                "recurrent_activation": layer.recurrent_activation,
                "reset_after": layer.reset_after,
                "proj_size": layer.proj_size,
                "bias": layer.bias,
                "residual_from": -2 if layer.residual_from is None else layer.residual_from,
            }
            for layer in spec.layers
        ],
        "readout": spec.readout,
        "head": [{"units": d.units, "activation": d.activation, "bias": d.bias} for d in spec.head],
    }


# ---- input preparation ---------------------------------------------------------------
def _check_lengths(lengths: ArrayLike | None, batch: int, width: int) -> np.ndarray:
    if lengths is None:
        return np.full(batch, width, dtype=np.int32)
    lens = np.asarray(lengths)
    if lens.dtype.kind not in "iu" or lens.dtype == np.bool_:
        if lens.dtype.kind == "f" and lens.size and np.all(np.floor(lens) == lens):
            raise TypeError("lengths must be integers, got floats")
        raise TypeError(f"lengths must be integers, got dtype {lens.dtype}")
    if lens.shape != (batch,):
        raise ValueError(f"lengths must have shape ({batch},) for a batch of {batch}, got {lens.shape}")
    if lens.size:
        if lens.min() < 0:
            i = int(np.argmin(lens))
            raise ValueError(f"lengths[{i}] = {int(lens[i])} is negative")
        if lens.min() == 0:
            i = int(np.argmin(lens))
            raise ValueError(f"sequence {i} has length 0 (zero-length sequences cannot be run)")
        if lens.max() > width:
            i = int(np.argmax(lens))
            raise ValueError(f"lengths[{i}] = {int(lens[i])} is beyond the array's width {width}")
    return lens.astype(np.int32)


def _is_int_scalar(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _prepare_tokens(
    x: ArrayLike, lengths: ArrayLike | None, vocab: int
) -> tuple[np.ndarray, np.ndarray, bool]:
    single = False
    if isinstance(x, np.ndarray):
        if x.dtype.kind not in "iu":
            raise TypeError(f"token ids must be integers, got an array of dtype {x.dtype}")
        if x.ndim == 1:
            if lengths is not None:
                raise ValueError("lengths applies to a padded 2-D array, not to one sequence")
            single, arr = True, x[None, :]
        elif x.ndim == 2:
            arr = x
        else:
            raise ValueError(f"token input must be 1-D (one sequence) or 2-D (padded batch), got {x.ndim}-D")
        if arr.shape[0] == 0:
            raise ValueError("empty batch: no sequences to run")
        if arr.shape[1] == 0:
            raise ValueError("zero-length sequence: token array has no steps")
        lens = _check_lengths(lengths, arr.shape[0], arr.shape[1])
    elif isinstance(x, (list, tuple)):
        if lengths is not None:
            raise ValueError("lengths applies to a padded 2-D array; a ragged list carries its own lengths")
        if len(x) == 0:
            raise ValueError("empty input: no tokens and no sequences")
        if all(_is_int_scalar(v) for v in x):
            single, seqs = True, [x]
        else:
            seqs = []
            for i, s in enumerate(x):
                if isinstance(s, np.ndarray):
                    if s.ndim != 1 or s.dtype.kind not in "iu":
                        raise TypeError(
                            f"sequence {i}: expected a 1-D integer array, got {s.ndim}-D {s.dtype}"
                        )
                elif isinstance(s, (list, tuple)):
                    if not all(_is_int_scalar(v) for v in s):
                        bad = next(v for v in s if not _is_int_scalar(v))
                        raise TypeError(f"sequence {i}: token ids must be integers, got {type(bad).__name__} {bad!r}")
                else:
                    raise TypeError(
                        f"element {i} of the input is a {type(s).__name__}; expected a token id "
                        "(one sequence) or a sequence of token ids (a batch)"
                    )
                if len(s) == 0:
                    raise ValueError(f"sequence {i} has length 0 (zero-length sequences cannot be run)")
                seqs.append(s)
        lens = np.fromiter((len(s) for s in seqs), dtype=np.int32, count=len(seqs))
        arr = np.zeros((len(seqs), int(lens.max())), dtype=np.int64)
        for i, s in enumerate(seqs):
            try:
                arr[i, : lens[i]] = s
            except OverflowError as e:
                raise ValueError(f"sequence {i}: token id out of range: {e}") from e
    else:
        raise TypeError(
            f"token input must be a list or a numpy integer array, got {type(x).__name__}"
        )
    # Token ids are range-checked by the engine as it reads them (only the
    # steps inside each length are read). int64 holds every id exactly, except
    # uint64 values past 2**63, which are out of any vocabulary anyway.
    if arr.dtype == np.uint64 and arr.size and int(arr.max()) >= vocab:
        T = arr.shape[1]
        inside = arr[np.arange(T)[None, :] < lens[:, None]]
        if inside.size and int(inside.max()) >= vocab:
            bad = int(inside.max())
            b, t = np.argwhere((arr == bad) & (np.arange(T)[None, :] < lens[:, None]))[0]
            raise ValueError(
                f"token id {bad} at sequence {int(b)}, step {int(t)} is out of range "
                f"for the vocabulary [0, {vocab})"
            )
    if arr.dtype != np.int64:
        arr = arr.astype(np.int64)
    elif not arr.flags.c_contiguous:
        arr = np.ascontiguousarray(arr)
    return arr, lens, single


def _prepare_features(
    x: ArrayLike, lengths: ArrayLike | None, width: int
) -> tuple[np.ndarray, np.ndarray, bool]:
    single = False
    if isinstance(x, (list, tuple)) and len(x) > 0 and all(
        isinstance(s, np.ndarray) and s.ndim == 2 for s in x
    ):
        if lengths is not None:
            raise ValueError("lengths applies to a padded 3-D array; a ragged list carries its own lengths")
        for i, s in enumerate(x):
            if s.dtype not in (np.float32, np.float64):
                raise TypeError(f"sequence {i}: features must be float32 or float64, got {s.dtype}")
            if s.shape[1] != width:
                raise ValueError(f"sequence {i}: expected {width} features per step, got {s.shape[1]}")
            if s.shape[0] == 0:
                raise ValueError(f"sequence {i} has length 0 (zero-length sequences cannot be run)")
        lens = np.array([s.shape[0] for s in x], dtype=np.int32)
        arr = np.zeros((len(x), int(lens.max()), width), dtype=np.float32)
        with np.errstate(over="ignore"):
            for i, s in enumerate(x):
                arr[i, : lens[i]] = s
    else:
        if isinstance(x, np.ndarray):
            a = x
        elif isinstance(x, (list, tuple)):
            if len(x) == 0:
                raise ValueError("empty input: no steps and no sequences")
            try:
                a = np.asarray(x)
            except ValueError as e:
                raise ValueError(
                    f"ragged feature input must be a list of (T_i, {width}) numpy arrays: {e}"
                ) from e
            if a.dtype.kind in "iu":
                a = a.astype(np.float64)
        else:
            raise TypeError(f"feature input must be a numpy float array or a list, got {type(x).__name__}")
        if a.dtype not in (np.float32, np.float64):
            raise TypeError(f"features must be float32 or float64, got dtype {a.dtype}")
        if a.ndim == 2:
            if lengths is not None:
                raise ValueError("lengths applies to a padded 3-D array, not to one sequence")
            single, a = True, a[None]
        elif a.ndim != 3:
            raise ValueError(
                f"feature input must be (T, F) for one sequence or (B, T, F) for a batch, got {a.ndim}-D"
            )
        if a.shape[0] == 0:
            raise ValueError("empty batch: no sequences to run")
        if a.shape[1] == 0:
            raise ValueError("zero-length sequence: feature array has no steps")
        if a.shape[2] != width:
            raise ValueError(f"expected {width} features per step, got {a.shape[2]}")
        lens = _check_lengths(lengths, a.shape[0], a.shape[1])
        if a.dtype == np.float32 and a.flags.c_contiguous:
            arr = a
        else:
            # Values beyond float32 become inf here and are reported just below.
            with np.errstate(over="ignore"):
                arr = np.ascontiguousarray(a, dtype=np.float32)
    T = arr.shape[1]
    inside = arr if int(lens.min()) == T else arr[np.arange(T)[None, :] < lens[:, None]]
    if not np.isfinite(inside).all():
        bad = np.argwhere(~np.isfinite(arr) & (np.arange(T)[None, :, None] < lens[:, None, None]))[0]
        raise ValueError(
            f"features contain NaN or infinity (or values beyond float32 range) at sequence {int(bad[0])}, step {int(bad[1])}, feature {int(bad[2])}"
        )
    return arr, lens, single


ModelSource = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, IO[bytes]]


def load(
    src: ModelSource, *, threads: int | None = None, precision: str | None = None
) -> Model:
    """Open a model file.

    Args:
        src: the ``.npz`` model file: a path, its bytes (``bytes``,
            ``bytearray``, ``memoryview``), or a binary file object (read to
            its end, not closed), e.g. a response body or a blob-storage
            stream.
        threads: threads per call. ``None`` (default): ``RNNINFER_NUM_THREADS``
            if set, else ``OMP_NUM_THREADS`` if set (as Ray, Dask and most
            schedulers set it per worker), else the CPUs of the process's
            affinity mask capped by its cgroup CPU quota (see
            :mod:`rnninfer.threads` and ``docs/engine.md``).
        precision: weight precision, ``"fp32"``, ``"bf16"`` or ``"int8"``
            (``None`` = what the file stores). A bf16 file loaded as fp32 is
            widened exactly.

    Raises:
        TypeError: ``src`` of another type, or a file object in text mode.
        ValueError: an unknown ``precision``, a bad ``threads``, or a bad
            ``RNNINFER_NUM_THREADS``.
        ModelFormatError: the file is missing, corrupt, of a newer format
            version, or inconsistent; the message lists every problem. No
            other exception comes from the file's content.
    """
    return _load(src, threads=threads, precision=precision, isa=None)


def _load(src: ModelSource, *, threads: int | None, precision: str | None, isa: str | None) -> Model:
    _check_threads(threads)
    _check_precision(precision)
    if isinstance(src, (bytes, bytearray, memoryview)):
        data, source = memoryview(src).tobytes(), "<bytes>"
    elif isinstance(src, (str, os.PathLike)):
        source = os.fspath(src)
        try:
            with open(source, "rb") as f:
                data = f.read()
        except OSError as e:
            raise ModelFormatError(f"cannot read model file: {e}", source=source) from e
    elif callable(getattr(src, "read", None)):
        source = str(getattr(src, "name", "<file object>"))
        try:
            data = src.read()
        except OSError as e:
            raise ModelFormatError(f"cannot read model file: {e}", source=source) from e
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(
                f"src: a file object must be opened in binary mode ('rb'); its read() gave "
                f"{type(data).__name__}"
            )
        data = memoryview(data).tobytes()
    else:
        raise TypeError(
            "src must be a path, the file's bytes (bytes, bytearray, memoryview) or a binary "
            f"file object, got {type(src).__name__}"
        )
    try:
        spec, tensors, manifest = npz.read_bytes(data, source=source)
        return Model(spec, tensors, producer=manifest.get("producer"), threads=threads,
                     precision=precision, isa=isa)
    except ModelFormatError:
        raise
    except Exception as e:
        # The arguments were checked above, so whatever else fails comes from
        # the file's content (the engine's own checks raise ValueError); the
        # contract is one exception type for a bad file, whatever the damage.
        raise ModelFormatError(f"unreadable model: {type(e).__name__}: {e}", source=source) from e


def _unpickle(data: bytes, threads: int | None, precision: str, isa: str | None) -> Model:
    return _load(data, threads=threads, precision=precision, isa=isa)


def build(
    layers: Sequence[Any],
    *,
    weights: Mapping[str, np.ndarray] | None = None,
    seed: int | None = None,
    name: str = "model",
    threads: int | None = None,
    precision: str | None = None,
) -> Model:
    """Build a model from a list of :mod:`rnninfer.layers` descriptions.

    Args:
        layers: ``[Embedding(...) | Features(...), LSTM/GRU/RNN(...)..., [pooling], Dense(...)...]``.
        weights: canonical tensors by name (see ``docs/format.md``); any not
            given are drawn at random from ``seed``.
        seed: seed for random weights.
        name: model name stored in the file.
        threads: threads per call (``None`` = the cores this process may use).
        precision: weight precision, ``"fp32"`` (default), ``"bf16"`` or ``"int8"``.

    Raises:
        ValueError: an inconsistent layer list, or neither weights nor seed.
        ModelFormatError: given weights of the wrong name, shape or dtype.
    """
    from .layers import complete_tensors, make_spec

    spec = make_spec(layers, name=name)
    tensors = complete_tensors(spec, weights, seed)
    return Model(spec, tensors, producer={"converter": "rnninfer.build", "seed": seed},
                 threads=threads, precision=precision)


__all__ = ["DTYPE", "Model", "ModelSource", "build", "default_threads", "load"]
