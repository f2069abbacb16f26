"""Streams: one sequence fed a few steps at a time, its state carried by the engine.

A :class:`Stream` holds the recurrent state of one sequence (``h``, and ``c``
for LSTM, of every layer) in the compiled engine, so that a feed of ``n`` new
steps costs ``n`` steps, not a re-run of everything fed so far, and is one
engine call. ``Model.feed_many`` advances many streams at once as one ragged
batch. Results are exactly the bits ``Model.predict`` gives on the whole
sequence (``docs/serving.md``).

The state is a dict of float32 arrays, one per layer and kind::

    layers.<i>.fwd.h   (dir_width,)  hidden state of layer i (its projection for a projected LSTM)
    layers.<i>.fwd.c   (units,)      cell state of layer i (LSTM only)
    readout.max        (width,)      max readout: the running max of the top layer's outputs
    readout.steps      (1,)          max readout: steps pooled so far (masked steps are not)

``model.stream(state=...)`` resumes from such a dict, in this process or
another, on this or another copy of the same model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import _core

if TYPE_CHECKING:
    from ..inputs import ArrayLike
    from ..model import Model

__all__ = ["Stream", "feed_many", "state_layout"]


def state_layout(model: Model) -> dict[str, tuple[int, ...]]:
    """The names and shapes of a stream's state for ``model`` (in order)."""
    return {name: (size,) for name, _, size in model._engine.state_entries}


def _normalise(model: Model, x: Any, where: str) -> np.ndarray:
    """One sequence's new steps in the canonical form the engine reads
    (int64 ids, or float32 ``(n, F)``), by the same rules and messages as
    ``Model.predict``'s input."""
    from ..inputs import prepare

    try:
        arr, _, single, _ = prepare(x, None, "post", tokens=model._tokens, width=model._width,
                                    vocab=model._vocab)
    except (TypeError, ValueError) as e:
        raise type(e)(f"{where}: {e}") from None
    if not single:
        kind = "token ids" if model._tokens else f"(n, {model._width}) features"
        raise ValueError(
            f"{where}: a feed takes one sequence's new steps ({kind}), got a batch; "
            "Model.feed_many advances several streams in one call"
        )
    row: np.ndarray = arr[0]
    return row


class Stream(_core.StreamCore):
    """One sequence of a forward-only model, fed a few steps at a time.

    Create it with :meth:`rnninfer.Model.stream`. Feeding a sequence in any
    chunking gives exactly the bits :meth:`~rnninfer.Model.predict` gives on
    the whole sequence. A stream is not thread-safe (a feed from a second
    thread while one runs raises ``RuntimeError``); the model is.

    Attributes:
        steps: steps fed since the stream was opened (or resumed, or reset).
    """

    def __init__(self, model: Model, state: Mapping[str, np.ndarray] | None = None) -> None:
        """Open a stream of ``model`` at the zero state, or at ``state``.

        Raises:
            ValueError: the model has a layer that reads backwards or a
                mean readout (named), or ``state`` does not fit the model
                (the entry is named).
        """
        super().__init__(model._engine)
        self._model = model
        if state is not None:
            self._set_state(_flat_state(model, state), 0)

    @property
    def model(self) -> Model:
        """The model this stream runs."""
        return self._model

    # feed(x) is StreamCore's (C++, documented there): the outputs of the new
    # steps, with inputs in forms it does not read directly passed here.
    def _feed_slow(self, x: ArrayLike) -> np.ndarray:
        """``feed`` of an input that needs normalising first (as ``predict`` does)."""
        out = self._feed(_normalise(self._model, x, "feed"))
        if out is None:  # pragma: no cover - the canonical form is always read
            raise TypeError(f"cannot feed a {type(x).__name__}")
        return out

    @property
    def state(self) -> dict[str, np.ndarray]:
        """A copy of the recurrent state: float32 arrays by name (module docstring)."""
        flat = self._state()
        return {name: flat[off:off + size].copy() for name, off, size in self._model._engine.state_entries}

    def __repr__(self) -> str:
        return f"<rnninfer.Stream of {self._model.spec.name!r}: {self.steps} steps>"


def _flat_state(model: Model, state: Mapping[str, np.ndarray]) -> np.ndarray:
    """Checks a state dict against the model's layout; the flat float32 vector."""
    if not isinstance(state, Mapping):
        raise TypeError(f"state must be a dict of float32 arrays, got {type(state).__name__}")
    entries = model._engine.state_entries
    names = [name for name, _, _ in entries]
    for key in state:
        if key not in names:
            raise ValueError(f"unknown state entry {key!r}; this model's entries are {names}")
    flat = np.empty(sum(size for _, _, size in entries), dtype=np.float32)
    for name, off, size in entries:
        if name not in state:
            raise ValueError(f"state lacks the entry {name!r}")
        v = state[name]
        if not isinstance(v, np.ndarray):
            raise TypeError(f"state entry {name!r} must be a float32 numpy array, got {type(v).__name__}")
        if v.dtype != np.float32:
            raise ValueError(f"state entry {name!r} has dtype {v.dtype}, expected float32")
        if v.shape != (size,):
            raise ValueError(f"state entry {name!r} has shape {v.shape}, expected ({size},)")
        # A max readout's pool holds -inf where every value it saw was -inf.
        bad = ~np.isfinite(v) & ~((v == -np.inf) if name == "readout.max" else False)
        if bad.any():
            raise ValueError(f"state entry {name!r} contains NaN or infinity")
        if name == "readout.steps" and not (v[0] >= 0 and float(v[0]).is_integer()):
            raise ValueError(f"state entry 'readout.steps' must be a whole number >= 0, got {v[0]}")
        flat[off:off + size] = v
    return flat


def feed_many(model: Model, streams: Sequence[Stream], xs: Sequence[ArrayLike]) -> list[np.ndarray]:
    """Advance several streams of ``model``, each by its own input, in one engine call.

    See :meth:`rnninfer.Model.feed_many`.
    """
    s = streams if type(streams) is list else list(streams)
    x = xs if type(xs) is list else list(xs)
    out = _core.feed_many(model._engine, s, x)
    if out is None:
        # Some input is in a form the engine does not read directly: all are
        # normalised as predict would (only then is there a loop in Python).
        norm = [_normalise(model, v, f"xs[{i}]") for i, v in enumerate(x)]
        out = _core.feed_many(model._engine, s, norm)
        if out is None:  # pragma: no cover - the canonical form is always read
            raise TypeError("feed_many could not read its inputs")
    return out
