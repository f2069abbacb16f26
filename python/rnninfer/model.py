"""The user-facing :class:`Model`: ``predict``, ``save``, ``summary``, ``load``, pickling.

This is the only module that joins the pure-Python side (spec, file format,
converters) with the compiled engine in ``rnninfer._core``. A model's spec
and tensors are checked once, by :mod:`rnninfer.format.checked`, before the
engine packs them; a call's input is normalised and checked once, by
:mod:`rnninfer.inputs` (token ids are range-checked by the engine as it
reads them, so padding is never read or checked).
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from .errors import ModelFormatError
from .format import npz
from .format import precision as prec
from .format.checked import CheckedModel, check_model
from .format.manifest import GATES, ModelSpec, RecurrentSpec
from .format.spec import DTYPE, count_params, expected_tensors
from .inputs import ArrayLike, prepare
from .threads import check_threads as _check_threads
from .threads import default_threads

if TYPE_CHECKING:
    from .serving.stream import Stream

PRECISIONS = prec.PRECISIONS


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
        """Check ``spec`` and ``tensors`` once and pack them for the engine.

        The rules are :func:`rnninfer.format.checked.check_model`'s. The
        tensors are copied, so the caller's arrays stay its own and no later
        change to them reaches the model.

        Args:
            spec: the model description.
            tensors: canonical float32 tensors by name.
            producer: provenance stored in saved files.
            threads: threads per call (``None``: the rule of :func:`load`).
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
        _check_threads(threads)
        self._open(check_model(spec, tensors), producer, threads, precision, isa)

    @classmethod
    def _from_checked(
        cls,
        checked: CheckedModel,
        *,
        producer: Mapping[str, Any] | None = None,
        threads: int | None = None,
        precision: str | None = None,
        isa: str | None = None,
    ) -> Model:
        """A model of an already checked spec and tensors (files, converters): no second check."""
        _check_precision(precision)
        model = cls.__new__(cls)
        model._open(checked, producer, threads, precision, isa)
        return model

    def _open(self, checked: CheckedModel, producer: Mapping[str, Any] | None, threads: int | None,
              precision: str | None, isa: str | None) -> None:
        checked = checked.with_precision(precision or checked.precision)
        spec = checked.spec
        self._checked = checked
        self._spec = spec
        # Effective float32 weights (what the engine computes with) and their
        # stored form at the model's precision (what save() writes).
        self._tensors = checked.effective
        self._stored = checked.stored
        self._producer = dict(producer or {"converter": "rnninfer.build"})
        self._threads = _check_threads(threads)
        self._threads_option = threads  # what a pickle carries: None re-resolves in the worker
        self._precision = checked.precision
        self._isa_arg = isa
        from . import _core  # imported here so converters and the file format work without it

        self._engine = _core.Engine(spec.to_json_dict(), dict(checked.stored), self._threads, isa or "")
        inp = spec.input
        self._tokens = inp.kind == "tokens"
        self._width = inp.width
        self._vocab = inp.vocab_size
        self._sequences = spec.readout == "sequence"

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
        return Model._from_checked(self._checked, producer=self._producer, threads=self._threads_option,
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
    def predict(self, x: ArrayLike, *, lengths: ArrayLike | None = None, padding: str = "post") -> np.ndarray:
        """Run the model.

        Args:
            x: for token models, one sequence of ids (a 1-D list or array), a
                ragged batch (a list of sequences) or a padded ``(B, T)``
                integer array (any integer dtype); for feature models,
                ``(T, F)``, a list of ``(T_i, F)`` arrays or a padded
                ``(B, T, F)`` array of float32, float64, float16 (widened
                exactly) or bool (0/1). Array-likes (torch, TensorFlow, JAX
                tensors) are taken as the arrays they convert to.
            lengths: true lengths of the rows of a padded array (default: all
                full length). Steps outside a row's length are never read.
            padding: where a padded row's padding sits: ``"post"`` (after its
                steps, the default) or ``"pre"`` (before them, Keras
                ``pad_sequences``' default). Only matters with ``lengths``.

        Returns:
            float32 array: ``(out,)`` for one sequence, ``(B, out)`` for a
            batch; models returning sequences give ``(T, out)`` /
            ``(B, T, out)`` with zero rows at skipped steps (under the
            padding, wherever it sits).

        Raises:
            TypeError: wrong input type or dtype.
            ValueError: bad shapes, lengths, ``padding``, token ids, NaN
                features, empty input. Every check is made before the engine
                runs, in :mod:`rnninfer.inputs`, except token ids within
                int64, which the engine checks as it reads them.
        """
        if self._tokens and lengths is None and padding == "post":
            if type(x) is list:
                # The commonest call, one list of ints, read by the engine itself;
                # None means another form, normalised below.
                out = self._engine.predict_list(x)
                if out is not None:
                    return out
            elif type(x) is np.ndarray and x.dtype == np.int64 and x.flags.c_contiguous and x.size:
                # Already the engine's form, ids range-checked as the engine reads
                # them: prepare() would only re-derive what the shape says
                # (about 1.5 us, 2 % of a small model's batch-1 call).
                if x.ndim == 2:
                    return self._engine.predict(x, None)
                if x.ndim == 1:
                    out1: np.ndarray = self._engine.predict(x[None], None)[0]
                    return out1
        p = prepare(x, lengths, padding, tokens=self._tokens, width=self._width, vocab=self._vocab)
        return p.finish(self._engine.predict(p.data, p.lengths), self._sequences)

    __call__ = predict

    def _predict_prepared(self, data: np.ndarray, lengths: np.ndarray | None) -> np.ndarray:
        """The engine's output for input already in its form, not checked again.

        For the Batcher, which checks every request with :func:`rnninfer.inputs.prepare`
        in its caller and merges them: ``data`` is ``int64 (B, T)`` or C-contiguous
        ``float32 (B, T, F)`` built from checked rows, ``lengths`` ``int32 (B,)`` or
        ``None``. Returns ``(B, out)`` or ``(B, T, out)``.
        """
        out: np.ndarray = self._engine.predict(data, lengths)
        return out

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
    def save(self, path: str | os.PathLike[str] | IO[bytes], *, compress: bool = False) -> None:
        """Write the model file (``.npz``, see ``docs/format.md``).

        Args:
            path: a path, or a binary file object open for writing (its
                ``write`` receives the whole file; it is not closed).
            compress: deflate the archive members.
        """
        producer = dict(self._producer)
        producer["rnninfer"] = _version()
        npz.write(path, self._spec, dict(self._stored), producer, compress=compress)

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


ModelSource = npz.Source


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
    data, source = npz.source_bytes(src)
    try:
        checked, manifest = npz.read_checked(data, source=source)
        return Model._from_checked(checked, producer=manifest.get("producer"), threads=threads,
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
