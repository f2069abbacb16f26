"""Every input form of ``Model.predict``, normalised in one place.

:func:`prepare` turns what a user passes (one sequence, a ragged batch, a
padded array with ``lengths`` padded after or before each row, numpy arrays,
Python lists, and array-likes such as torch / TensorFlow / JAX tensors) into
the one form the engine runs: a C-contiguous ``int64 (B, T)`` token array or
``float32 (B, T, F)`` feature array whose valid steps come first, plus
``int32`` lengths. Every check of a user's input, with its message, lives
here, one message per kind of error, each naming the argument. One check is
left where the data is read: token ids are range-checked by the engine as it
gathers embedding rows (only steps inside each length are read, so padding
may hold anything), with the message :func:`token_range_message` also gives
here for ids that do not fit in int64 (and :func:`check_token_range` for
callers that must check a request before merging it with others).

The only other entries are two fast paths of ``Model.predict``, taken only
without ``lengths``: one plain list of Python ints goes to
``_core.Engine.predict_list``, which handles that form alone and hands
anything else back to :func:`prepare`; and a non-empty C-contiguous native
``int64`` array of 1 or 2 dimensions, already the engine's form, goes to the
engine as it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple, Union

import numpy as np

ArrayLike = Union[np.ndarray, Sequence[Any], Any]

PADDINGS = ("post", "pre")
_INT64_MAX = np.iinfo(np.int64).max

__all__ = ["PADDINGS", "ArrayLike", "Prepared", "check_token_range", "prepare", "token_range_message"]


class Prepared(NamedTuple):
    """An input in the engine's form (a named tuple: this is on every call's path).

    Attributes:
        data: ``int64 (B, T)`` token ids or ``float32 (B, T, F)`` features,
            C-contiguous, the valid steps of each row first.
        lengths: ``int32 (B,)``, or ``None`` when every row is full length.
        single: the input was one sequence (the output drops the batch axis).
        shift: for rows that were padded before their steps (``padding="pre"``):
            how many padding steps led each row, to move per-step outputs back
            under the steps they belong to; ``None`` otherwise.
    """

    data: np.ndarray
    lengths: np.ndarray | None
    single: bool
    shift: np.ndarray | None

    def finish(self, out: np.ndarray, sequences: bool) -> np.ndarray:
        """The engine's output for this input as ``predict`` returns it."""
        if sequences and self.shift is not None:
            T = out.shape[1]
            idx = (np.arange(T)[None, :] - self.shift[:, None]) % T
            out = np.take_along_axis(out, idx[:, :, None], axis=1)
        return out[0] if self.single else out


def token_range_message(token: int, seq: int, step: int, vocab: int) -> str:
    """The message for a token id outside the vocabulary (the engine's words too)."""
    return f"token id {token} at sequence {seq}, step {step} is out of range for the vocabulary [0, {vocab})"


def prepare(
    x: ArrayLike, lengths: ArrayLike | None, padding: str, *, tokens: bool, width: int, vocab: int
) -> Prepared:
    """Normalise and check one ``predict`` input.

    Args:
        x: the input, in any form ``Model.predict`` documents.
        lengths: true lengths of a padded array's rows, or ``None``.
        padding: ``"post"`` (padding after each row's steps) or ``"pre"``.
        tokens: the model reads token ids (else float features).
        width: features per step (feature models).
        vocab: vocabulary size (token models).

    Raises:
        TypeError: a wrong type or dtype, naming the argument and the form expected.
        ValueError: bad shapes, lengths, empty input, NaN features, ids beyond int64.
    """
    if padding not in PADDINGS:
        raise ValueError(f"padding must be 'post' or 'pre', got {padding!r}")
    x = _array_like(x, "x")
    if tokens:
        data, lens, single = _tokens(x, lengths, vocab)
    else:
        data, lens, single = _features(x, lengths, width)
    shift = None
    if padding == "pre" and lens is not None:
        T = data.shape[1]
        shift = (T - lens).astype(np.int64)
        if shift.any():
            # Move each row's steps to its front, the engine's layout.
            idx = np.arange(T)[None, :] + shift[:, None]
            idx[idx >= T] -= T
            data = data[np.arange(data.shape[0])[:, None], idx]
            if tokens:
                check_token_range(data, lens, shift, vocab)
        else:
            shift = None
    if not tokens:
        _check_finite(data, lens, shift)
    return Prepared(data, lens, single, shift)


# ---- shared ---------------------------------------------------------------------------
def _array_like(obj: Any, what: str) -> Any:
    """``obj`` itself if numpy or a Python sequence, else the array it converts to."""
    if isinstance(obj, (np.ndarray, list, tuple, int, float, str, bytes)) or obj is None:
        return obj
    if hasattr(obj, "__dlpack__"):
        try:
            return np.from_dlpack(obj)
        except (TypeError, ValueError, RuntimeError, BufferError):
            pass  # e.g. a dtype DLPack cannot carry; __array__ may still work
    if hasattr(obj, "__array__"):
        try:
            return np.asarray(obj)
        except Exception as e:  # each framework raises its own type (grad, device, ...)
            raise TypeError(f"{what}: cannot convert {type(obj).__name__} to a numpy array: {e}") from e
    return obj


def _empty_batch() -> ValueError:
    return ValueError("x is an empty batch: no sequences to run")


def _zero_length(seq: int) -> ValueError:
    return ValueError(f"x: sequence {seq} has length 0 (zero-length sequences cannot be run)")


def _lengths(lengths: ArrayLike | None, batch: int, width: int) -> np.ndarray | None:
    if lengths is None:
        return None
    lens = np.asarray(_array_like(lengths, "lengths"))
    if lens.dtype.kind not in "iu":
        raise TypeError(f"lengths must be integers (one per row of x), got dtype {lens.dtype}")
    if lens.shape != (batch,):
        raise ValueError(f"lengths must have shape ({batch},), one per row of x, got {lens.shape}")
    lo, hi = int(lens.min()), int(lens.max())
    if lo < 1 or hi > width:
        i = int(np.argmin(lens)) if lo < 1 else int(np.argmax(lens))
        v = int(lens[i])
        if v == 0:
            raise _zero_length(i)
        why = "is negative" if v < 0 else f"is beyond the width of x ({width} steps)"
        raise ValueError(f"lengths[{i}] = {v} {why}")
    if lo == width:
        return None  # every row full length: the engine's cheapest call
    return lens.astype(np.int32)


def _batch_shape(a: np.ndarray, lengths: ArrayLike | None, rank: int, form: str) -> bool:
    """Checks a padded array's rank and size; returns whether it is one sequence."""
    if a.ndim == rank - 1:
        if lengths is not None:
            raise ValueError("lengths applies to a padded batch (one length per row), not to one sequence")
        single = True
    elif a.ndim == rank:
        single = False
    else:
        raise ValueError(f"x: {form}, got {a.ndim}-D")
    if not single and a.shape[0] == 0:
        raise _empty_batch()
    if a.shape[1 - single] == 0:
        raise _zero_length(0)
    return single


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


# ---- tokens ---------------------------------------------------------------------------
_TOKEN_FORMS = "token input must be 1-D (one sequence) or 2-D (a padded batch)"


def _tokens(x: Any, lengths: ArrayLike | None, vocab: int) -> tuple[np.ndarray, np.ndarray | None, bool]:
    if isinstance(x, np.ndarray):
        if x.dtype.kind not in "iu":
            raise TypeError(f"x: token ids must be integers, got an array of dtype {x.dtype}")
        single = _batch_shape(x, lengths, 2, _TOKEN_FORMS)
        arr = x[None, :] if single else x
        lens = _lengths(lengths, arr.shape[0], arr.shape[1])
        if arr.dtype == np.uint64:
            _check_uint64(arr, lens, vocab)
        return np.ascontiguousarray(arr, dtype=np.int64), lens, single
    if not isinstance(x, (list, tuple)):
        raise TypeError(
            "x: token input must be a list of ids, a list of sequences, an integer array or an "
            f"array-like (torch, TensorFlow, JAX tensor), got {type(x).__name__}"
        )
    if lengths is not None:
        raise ValueError("lengths applies to a padded array; a ragged list carries its own lengths")
    if len(x) == 0:
        raise _empty_batch()
    if _is_int(x[0]):
        seqs: list[Any] = [x]
        single = True
    else:
        seqs = [_array_like(s, "x") for s in x]
        single = False
    lens = np.empty(len(seqs), np.int32)
    for i, s in enumerate(seqs):
        if isinstance(s, np.ndarray):
            if s.ndim != 1 or s.dtype.kind not in "iu":
                raise TypeError(f"x: sequence {i} must be a 1-D integer array, got {s.ndim}-D {s.dtype}")
        elif not isinstance(s, (list, tuple)):
            raise TypeError(
                f"x: element {i} is a {type(s).__name__}; expected a token id (one sequence) or a "
                "sequence of token ids (a batch)"
            )
        else:
            for t, v in enumerate(s):
                if not _is_int(v):
                    raise TypeError(
                        f"x: token ids must be integers; sequence {i}, step {t} holds "
                        f"{type(v).__name__} {v!r}"
                    )
                if not -_INT64_MAX <= v <= _INT64_MAX:
                    raise ValueError(token_range_message(int(v), i, t, vocab))
        if len(s) == 0:
            raise _zero_length(i)
        lens[i] = len(s)
    arr = np.zeros((len(seqs), int(lens.max())), dtype=np.int64)
    for i, s in enumerate(seqs):
        if isinstance(s, np.ndarray) and s.dtype == np.uint64:
            _check_uint64(s[None, :], None, vocab, seq=i)
        arr[i, : lens[i]] = s
    return arr, (None if int(lens.min()) == arr.shape[1] else lens), single


def _check_uint64(arr: np.ndarray, lens: np.ndarray | None, vocab: int, seq: int = 0) -> None:
    """uint64 ids past int64's range cannot reach the engine's check intact: report them here."""
    if not arr.size or int(arr.max()) <= _INT64_MAX:
        return
    T = arr.shape[1]
    inside = np.ones(arr.shape, bool) if lens is None else np.arange(T)[None, :] < lens[:, None]
    bad = np.argwhere((arr > _INT64_MAX) & inside)
    if bad.size:
        b, t = (int(v) for v in bad[0])
        raise ValueError(token_range_message(int(arr[b, t]), b + seq, t, vocab))


def check_token_range(data: np.ndarray, lengths: np.ndarray | None, shift: np.ndarray | None,
                      vocab: int) -> None:
    """Range-check the ids of a prepared token batch before the engine reads them.

    :func:`prepare` leaves this to the engine, except for pre-padded rows;
    a caller that merges several requests into one engine call (a batcher)
    checks each request with this first, so that one bad id fails only its
    own request. The message gives the caller's sequence and step.

    Raises:
        ValueError: the first id outside ``[0, vocab)`` inside a row's length.
    """
    if data.size == 0:
        return
    if data.dtype == np.int64:
        # One pass instead of min and max: as uint64 a negative id is >= 2**63, never < vocab.
        if data.view(np.uint64).max() < vocab:
            return
    elif data.min() >= 0 and data.max() < vocab:
        return
    T = data.shape[1]
    inside = np.ones(data.shape, bool) if lengths is None else np.arange(T)[None, :] < lengths[:, None]
    bad = np.argwhere(((data < 0) | (data >= vocab)) & inside)
    if bad.size:
        b, t = (int(v) for v in bad[0])
        step = t + (int(shift[b]) if shift is not None else 0)
        raise ValueError(token_range_message(int(data[b, t]), b, step, vocab))


# ---- features -------------------------------------------------------------------------
_FEATURE_FORMS = "feature input must be (T, F) for one sequence or (B, T, F) for a padded batch"
_FEATURE_DTYPES = "float32, float64, float16 or bool"


def _feature_array(a: np.ndarray, where: str) -> np.ndarray:
    if a.dtype in (np.float32, np.float64, np.float16) or a.dtype == np.bool_:
        return a
    raise TypeError(f"{where}: features must be {_FEATURE_DTYPES}, got dtype {a.dtype}")


def _features(x: Any, lengths: ArrayLike | None, width: int) -> tuple[np.ndarray, np.ndarray | None, bool]:
    if isinstance(x, (list, tuple)) and x:
        items = [_array_like(s, "x") for s in x]
        if all(isinstance(s, np.ndarray) and s.ndim == 2 for s in items):
            return _ragged_features(items, lengths, width)
        try:
            x = np.asarray(x)
        except ValueError as e:
            raise ValueError(
                f"x: ragged feature input must be a list of (T_i, {width}) arrays: {e}"
            ) from e
        if x.dtype.kind in "iu":
            x = x.astype(np.float64)
    elif isinstance(x, (list, tuple)):
        raise _empty_batch()
    if not isinstance(x, np.ndarray):
        raise TypeError(
            "x: feature input must be a float array, a list of (T_i, F) arrays or an array-like "
            f"(torch, TensorFlow, JAX tensor), got {type(x).__name__}"
        )
    a = _feature_array(x, "x")
    single = _batch_shape(a, lengths, 3, _FEATURE_FORMS)
    if a.shape[-1] != width:
        raise ValueError(f"x: expected {width} features per step, got {a.shape[-1]}")
    if single:
        a = a[None]
    lens = _lengths(lengths, a.shape[0], a.shape[1])
    # float16 and bool widen exactly; float64 beyond float32's range becomes
    # inf and is reported by the finiteness check.
    with np.errstate(over="ignore"):
        return np.ascontiguousarray(a, dtype=np.float32), lens, single


def _ragged_features(
    items: list[np.ndarray], lengths: ArrayLike | None, width: int
) -> tuple[np.ndarray, np.ndarray | None, bool]:
    if lengths is not None:
        raise ValueError("lengths applies to a padded array; a ragged list carries its own lengths")
    for i, s in enumerate(items):
        _feature_array(s, f"x: sequence {i}")
        if s.shape[1] != width:
            raise ValueError(f"x: sequence {i}: expected {width} features per step, got {s.shape[1]}")
        if s.shape[0] == 0:
            raise _zero_length(i)
    lens = np.array([s.shape[0] for s in items], dtype=np.int32)
    arr = np.zeros((len(items), int(lens.max()), width), dtype=np.float32)
    with np.errstate(over="ignore"):
        for i, s in enumerate(items):
            arr[i, : lens[i]] = s
    return arr, (None if int(lens.min()) == arr.shape[1] else lens), False


def _check_finite(arr: np.ndarray, lens: np.ndarray | None, shift: np.ndarray | None) -> None:
    T = arr.shape[1]
    inside = None if lens is None else np.arange(T)[None, :] < lens[:, None]
    if np.isfinite(arr if inside is None else arr[inside]).all():
        return
    bad_mask = ~np.isfinite(arr)
    if inside is not None:
        bad_mask &= inside[:, :, None]
    b, t, f = (int(v) for v in np.argwhere(bad_mask)[0])
    if shift is not None:
        t += int(shift[b])  # the caller's step of a pre-padded row
    raise ValueError(
        f"x: features contain NaN or infinity (or values beyond float32 range) at sequence {b}, "
        f"step {t}, feature {f}"
    )
