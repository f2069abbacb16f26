"""Reading what an ``nn.Module``'s ``forward`` computes, by running it once on labelled data.

``forward`` is plain Python, so instead of guessing from the module tree the
converter runs it on a small example input under a ``TorchFunctionMode`` and
follows every value from the input to the output. Each value that derives
from the input carries *labels*: float64 tensors of the same shape whose
elements are integer ids naming where the element came from (token ``(b,
t)``, embedding ``(b, t, e)``, recurrent output ``(b, t, c)``, final state
``h_n[l * D + d, b, j]``, head output ``(row, k)``). Structural operations
(indexing, views, transposes, ``cat``, ``stack``, packing) are replayed on the
labels, so after ``torch.cat([h_n[-1], h_n[-2]], 1)`` the labels say exactly
which direction sits in which columns; sums and means of directions keep one
label tensor per term with its coefficient. Anything else applied to a
labelled value becomes *opaque* and is refused, naming the operation, if it
reaches a Linear layer, a recurrent layer or the output.

The result is a :class:`ForwardPlan` (the modules in call order, the readout
and its column map, the activation after each head layer) plus a probe: the
example input and the module's own output on it, which the caller compares
with the converted model (files carry no code; only modules are checked).

Length (about 630 lines): most of it is :class:`_Tracer`, one interpreter of
torch operations on labels whose handlers share its state; the rules of the
labels themselves are in ``torch_labels.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .base import Probe
from .torch_labels import (
    ARITH,
    DROPOUT,
    ELEMENTWISE,
    IDENTITY,
    STRUCTURAL,
    VECTOR,
    Alloc,
    Ids,
    LayoutRefused,
    Refused,
    Val,
    arg,
    decode_readout,
)

__all__ = ["ForwardPlan", "Refused", "trace_forward"]

#: Example input length and batch; two sequences so that batch-mixing views show.
_T = 6
_B = 2


@dataclass
class ForwardPlan:
    """What ``forward`` computes, in terms of the module's own submodules (by name)."""

    embedding: str | None
    recurrents: list[str]
    #: ``"last"`` or ``"sequence"``.
    readout: str
    #: ``(K, D * W)`` map from rnninfer's concatenated top output to what the
    #: first head layer (or the output) reads; ``None`` for the identity.
    columns: np.ndarray | None
    #: Head Linear layers in call order with the activation applied after each.
    head: list[tuple[str, str]]
    probe: Probe
    notes: list[str] = field(default_factory=list)


class _Tracer:
    def __init__(self, module: Any, parts_names: dict[int, str]) -> None:
        import torch

        self.torch = torch
        self.module = module
        self.names = parts_names  # id(submodule) -> its dotted name
        self.ids = Ids()
        self.vals: dict[int, Val] = {}
        self.keep: list[Any] = []
        self.suspended = 0
        self.embedding: str | None = None
        self.emb_alloc: Alloc | None = None
        self.input_alloc: Alloc | None = None
        self.recurrents: list[tuple[str, Any, Alloc, Alloc]] = []  # name, module, seq, hn
        self.stream: Alloc | None = None  # what the next recurrent module must read
        self.head: list[list[Any]] = []  # [name, out alloc, activation, act alloc]
        self.first_head_val: Val | None = None
        self.lengths: np.ndarray | None = None
        self.readout = "last"
        self.columns: np.ndarray | None = None
        self._rows: list[tuple[int, int]] = []

    # -- bookkeeping ---------------------------------------------------------------
    def track(self, t: Any, v: Val) -> None:
        self.vals[id(t)] = v
        self.keep.append(t)

    def val(self, t: Any) -> Val | None:
        return self.vals.get(id(t)) if isinstance(t, self.torch.Tensor) else None

    def labels(self, a: np.ndarray) -> Any:
        return self.torch.from_numpy(a.astype(np.float64))

    def single(self, v: Val, where: str) -> np.ndarray:
        if v.opaque is not None:
            raise Refused(f"forward applies {v.opaque} before {where}; rnninfer cannot run that operation")
        if len(v.terms) != 1 or v.terms[0][0] != 1.0:
            raise Refused(f"forward adds or scales values before {where}; rnninfer cannot run that")
        return np.asarray(v.terms[0][1].numpy()).astype(np.int64)

    # -- the mode ------------------------------------------------------------------
    def on_op(self, func: Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any], out: Any) -> None:
        torch = self.torch
        flat, _ = torch.utils._pytree.tree_flatten((list(args), kwargs))
        tracked = [(i, self.val(x)) for i, x in enumerate(flat) if self.val(x) is not None]
        if not tracked:
            return
        name = getattr(func, "__name__", str(func))
        outs, _ = torch.utils._pytree.tree_flatten(out)
        out_t = [o for o in outs if isinstance(o, torch.Tensor)]
        opaque = next((v.opaque for _, v in tracked if v is not None and v.opaque), None)
        if opaque is not None:
            for o in out_t:
                self.track(o, Val([], opaque))
            return
        if name in IDENTITY or (name in DROPOUT and not arg(args, kwargs, 2, "training", True)):
            if len(tracked) == 1 and len(out_t) == 1:
                self.track(out_t[0], tracked[0][1])  # type: ignore[arg-type]
            return
        if name in DROPOUT:
            raise Refused(
                f"forward calls {name} with training=True although the module is in eval mode "
                "(F.dropout defaults to training=True: pass training=self.training)"
            )
        if name in ELEMENTWISE or name in VECTOR:
            self.activation(name, args, kwargs, out_t)
            return
        if name in STRUCTURAL:
            self.replay(func, args, kwargs, flat, tracked, out_t)
            return
        if name in ARITH and self.arith(name, args, kwargs, out_t):
            return
        for o in out_t:
            self.track(o, Val([], f"{name}()"))

    def replay(
        self, func: Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any],
        flat: list[Any], tracked: list[tuple[int, Val | None]], out_t: list[Any],
    ) -> None:
        torch = self.torch
        untracked = [x for x in flat if isinstance(x, torch.Tensor) and self.val(x) is None]
        name = getattr(func, "__name__", "")
        if untracked and name in ("cat", "concat", "concatenate", "stack", "hstack"):
            raise Refused(f"forward {name}s a tensor that is not computed from the input")
        results: list[list[tuple[float, Any]]] = [[] for _ in out_t]
        for i, v in tracked:
            assert v is not None
            for coef, lab in v.terms:
                sub = [
                    lab if j == i else (torch.zeros_like(self.vals[id(x)].terms[0][1])
                                        if j != i and self.val(x) is not None and self.vals[id(x)].terms
                                        else x)
                    for j, x in enumerate(flat)
                ]
                a2, k2 = torch.utils._pytree.tree_unflatten(
                    sub, torch.utils._pytree.tree_flatten((list(args), kwargs))[1]
                )
                r = func(*a2, **k2)
                rs = [o for o in torch.utils._pytree.tree_flatten(r)[0] if isinstance(o, torch.Tensor)]
                if len(rs) != len(out_t):
                    raise Refused(f"cannot follow {name} in forward")
                for n, lr in enumerate(rs):
                    if lr.dtype != torch.float64:  # e.g. the lengths of _pad_packed_sequence
                        continue
                    results[n].append((coef, lr))
        for o, terms in zip(out_t, results):
            if terms:
                self.track(o, Val(terms))

    def arith(self, name: str, args: Sequence[Any], kwargs: dict[str, Any], out_t: list[Any]) -> bool:
        torch = self.torch
        if len(out_t) != 1:
            return False
        if name in ("mean", "sum"):
            x = args[0]
            v = self.val(x)
            dim = arg(args, kwargs, 1, "dim", None)
            keep = bool(arg(args, kwargs, 2, "keepdim", False))
            if v is None or not isinstance(dim, int):
                return False
            n = int(x.shape[dim])
            c = 1.0 / n if name == "mean" else 1.0
            terms = []
            for coef, lab in v.terms:
                for j in range(n):
                    part = lab.narrow(dim, j, 1)
                    terms.append((coef * c, part if keep else part.squeeze(dim)))
            self.track(out_t[0], Val(terms))
            return True
        a, b = args[0], args[1] if len(args) > 1 else kwargs.get("other")
        va, vb = self.val(a), self.val(b)
        if name in ("mul", "__mul__", "__rmul__", "div", "__truediv__"):
            v, s = (va, b) if va is not None else (vb, a)
            if v is None or not isinstance(s, (int, float)) or (vb is not None and va is not None):
                return False
            if name in ("div", "__truediv__"):
                if va is None:
                    return False
                s = 1.0 / s
            self.track(out_t[0], Val([(c * float(s), lab) for c, lab in v.terms]))
            return True
        if va is None or vb is None:
            return False
        if b is None or a.shape != b.shape:
            return False
        sign = -1.0 if name in ("sub", "__sub__") else 1.0
        alpha = float(kwargs.get("alpha", 1.0))
        self.track(out_t[0], Val(va.terms + [(sign * alpha * c, lab) for c, lab in vb.terms]))
        del torch
        return True

    def activation(self, name: str, args: Sequence[Any], kwargs: dict[str, Any], out_t: list[Any]) -> None:
        act = ELEMENTWISE.get(name) or VECTOR[name]
        x = args[0]
        v = self.vals[id(x)]
        if not self.head:
            raise Refused(
                f"forward applies {name} to the recurrent output before any Linear layer; rnninfer "
                "applies activations only after head layers"
            )
        j = len(self.head) - 1
        alloc = self.head[j][1]
        ids = self.single(v, f"the {name} after head layer {self.head[j][0]!r}")
        flat = ids.reshape(-1)
        if not np.all((flat >= alloc.base) & (flat < alloc.base + int(np.prod(alloc.shape)))):
            raise Refused(f"forward applies {name} to something other than the output of {self.head[j][0]!r}")
        if self.head[j][2] != "linear":
            raise Refused(
                f"forward applies {name} after {self.head[j][2]} on the output of {self.head[j][0]!r}; "
                "rnninfer applies one activation per head layer"
            )
        self.check_activation_args(name, args, kwargs, ids, alloc)
        new = self.ids.new("head", alloc.name, alloc.shape, **alloc.info)
        self.head[j][2], self.head[j][3] = act, new
        relabelled = self.labels(ids - alloc.base + new.base)
        self.track(out_t[0], Val([(1.0, relabelled)]))

    def check_activation_args(
        self, name: str, args: Sequence[Any], kwargs: dict[str, Any], ids: np.ndarray, alloc: Alloc
    ) -> None:
        def bad(what: str) -> Refused:
            return Refused(f"forward applies {name} with {what}; rnninfer's {name} has no such option")

        if name == "gelu" and kwargs.get("approximate", "none") != "none":
            raise bad(f"approximate={kwargs.get('approximate')!r}")
        if name == "elu" and float(arg(args, kwargs, 1, "alpha", 1.0)) != 1.0:
            raise bad(f"alpha={arg(args, kwargs, 1, 'alpha', 1.0)}")
        if name == "leaky_relu":
            slope = float(arg(args, kwargs, 1, "negative_slope", 0.01))
            if slope not in (0.2, float(np.float32(0.2))):
                raise bad(f"negative_slope={slope} (rnninfer's leaky_relu has slope 0.2)")
        if name == "softplus" and float(arg(args, kwargs, 1, "beta", 1.0)) != 1.0:
            raise bad(f"beta={arg(args, kwargs, 1, 'beta', 1.0)}")
        if name in VECTOR:
            dim = arg(args, kwargs, 1, "dim", None)
            if dim is None:
                raise Refused(f"forward calls {name} without dim; pass dim=-1")
            rows = np.moveaxis(ids, int(dim), -1).reshape(-1, ids.shape[int(dim)])
            width = alloc.shape[-1]
            ok = rows.shape[1] == width and np.all(np.diff(rows, axis=1) == 1) and np.all(
                (rows[:, 0] - alloc.base) % width == 0
            )
            if not ok:
                raise Refused(
                    f"forward applies {name} over dim={dim}, which is not the output vector of "
                    f"{alloc.name!r}; rnninfer normalises each output row"
                )

    # -- module hooks --------------------------------------------------------------
    def pre_hook(self, mod: Any, args: tuple[Any, ...]) -> None:
        self.suspended += 1
        try:
            self._pre(mod, args)
        except BaseException:
            self.suspended -= 1
            raise

    def post_hook(self, mod: Any, args: tuple[Any, ...], out: Any) -> None:
        try:
            self._post(mod, args, out)
        finally:
            self.suspended -= 1

    def _pre(self, mod: Any, args: tuple[Any, ...]) -> None:
        nn = self.torch.nn
        name = self.names.get(id(mod), type(mod).__name__)
        if isinstance(mod, (nn.LSTM, nn.GRU, nn.RNN)):
            self._check_rnn_input(mod, name, args)

    def _post(self, mod: Any, args: tuple[Any, ...], out: Any) -> None:
        nn = self.torch.nn
        name = self.names.get(id(mod), type(mod).__name__)
        if isinstance(mod, nn.Embedding):
            self._embedding(name, args[0], out)
        elif isinstance(mod, (nn.LSTM, nn.GRU, nn.RNN)):
            self._rnn_out(mod, name, out)
        elif isinstance(mod, nn.Linear):
            self._linear(name, args[0], out)

    def _embedding(self, name: str, x: Any, out: Any) -> None:
        v = self.val(x)
        if v is None:
            return  # e.g. a lookup of constants; harmless unless it reaches a layer
        if self.embedding is not None:
            raise Refused(f"forward calls embedding {name!r} after {self.embedding!r}; rnninfer reads one")
        ids = self.single(v, f"embedding {name!r}")
        assert self.input_alloc is not None
        which, pos = self.ids.decode(ids.reshape(-1))
        if np.any(which != self.ids.allocs.index(self.input_alloc)):
            raise LayoutRefused(f"embedding {name!r} does not read the token input as given")
        B, T = self.input_alloc.shape[:2]
        E = int(out.shape[-1])
        self.emb_alloc = self.ids.new("emb", name, (B, T, E))
        grid = self.ids.grid(self.emb_alloc)
        lab = np.stack([grid[b, t] for b, t in pos]).reshape(*ids.shape, E)
        self.embedding = name
        self.stream = self.emb_alloc
        self.track(out, Val([(1.0, self.labels(lab))]))

    def _check_rnn_input(self, mod: Any, name: str, args: tuple[Any, ...]) -> None:
        torch = self.torch
        x = args[0]
        hx = args[1] if len(args) > 1 else None
        if hx is not None:
            states = hx if isinstance(hx, (tuple, list)) else (hx,)
            for s in states:
                if self.val(s) is not None or bool(torch.any(s != 0)):
                    raise Refused(
                        f"forward passes an initial state to {name!r}; rnninfer starts every "
                        "sequence from zeros"
                    )
        packed = isinstance(x, torch.nn.utils.rnn.PackedSequence)
        data = x.data if packed else x
        v = self.val(data)
        if v is None or self.stream is None:
            raise Refused(f"{name!r} reads a tensor that does not come from the model input")
        where = f"{name!r}"
        ids = self.single(v, where)
        width = int(ids.shape[-1])
        rows = ids.reshape(-1, width)
        stream = self.stream
        which, pos = self.ids.decode(rows[:, 0])
        k = self.ids.allocs.index(stream)
        bt: list[tuple[int, int]] = []
        grid = self.ids.grid(stream)
        for r, (w, p) in enumerate(zip(which.tolist(), pos)):
            if w == -1:
                bt.append((-1, -1))
                continue
            if w != k or not np.array_equal(rows[r], grid[p[0], p[1]]):
                raise LayoutRefused(
                    f"{where} does not read the previous layer's output ({stream.name!r}) "
                    "unchanged, step by step"
                )
            bt.append((p[0], p[1]))
        if not packed:
            B, T = stream.shape[:2]
            shape = (B, T) if mod.batch_first else (T, B)
            expect = [(b, t) for b in range(B) for t in range(T)] if mod.batch_first else [
                (b, t) for t in range(T) for b in range(B)
            ]
            if tuple(ids.shape[:2]) != shape or bt != expect:
                raise LayoutRefused(
                    f"{where} reads its input in a layout other than batch_first={mod.batch_first} "
                    "(sequence steps and batch rows are mixed)"
                )
        self._rows = bt

    def _rnn_out(self, mod: Any, name: str, out: Any) -> None:
        torch = self.torch
        if any(r[0] == name for r in self.recurrents):
            raise Refused(f"forward calls {name!r} twice; rnninfer runs each recurrent layer once")
        y, state = out
        packed = isinstance(y, torch.nn.utils.rnn.PackedSequence)
        data = y.data if packed else y
        assert self.stream is not None
        B, T = self.stream.shape[:2]
        lengths = np.zeros(B, dtype=np.int64)
        for b, t in self._rows:
            if b >= 0:
                lengths[b] = max(lengths[b], t + 1)
        if self.lengths is None:
            self.lengths = lengths
        width = int(data.shape[-1])
        seq = self.ids.new("seq", name, (B, T, width), lengths=lengths,
                           directions=2 if mod.bidirectional else 1)
        grid = self.ids.grid(seq)
        lab = np.stack([grid[b, t] if b >= 0 else np.zeros(width, np.int64) for b, t in self._rows])
        self.track(data, Val([(1.0, self.labels(lab.reshape(data.shape)))]))
        if packed:
            self.track(y, Val([(1.0, self.labels(lab.reshape(data.shape)))]))
        h_n = state[0] if isinstance(state, tuple) else state
        hn = self.ids.new("hn", name, tuple(int(s) for s in h_n.shape), layers=int(mod.num_layers),
                          directions=2 if mod.bidirectional else 1)
        self.track(h_n, Val([(1.0, self.labels(self.ids.grid(hn)))]))
        if isinstance(state, tuple):
            cn = self.ids.new("cn", name, tuple(int(s) for s in state[1].shape))
            self.track(state[1], Val([(1.0, self.labels(self.ids.grid(cn)))]))
        self.recurrents.append((name, mod, seq, hn))
        self.stream = seq

    def _linear(self, name: str, x: Any, out: Any) -> None:
        v = self.val(x)
        if v is None:
            return
        if not self.recurrents:
            raise Refused(f"Linear {name!r} runs before any recurrent layer; rnninfer has no such layer")
        if v.opaque is not None:
            raise Refused(f"forward applies {v.opaque} before {name!r}; rnninfer cannot run that operation")
        if not self.head:
            self.first_head_val = v
            self.readout, self.columns, rows = decode_readout(
                self.ids, self.recurrents[-1], v, f"Linear {name!r}"
            )
        else:
            prev = self.head[-1]
            src = prev[3] or prev[1]
            ids = self.single(v, f"Linear {name!r}")
            flat = ids.reshape(-1, ids.shape[-1])
            full = self.ids.grid(src).reshape(-1, src.shape[-1])
            if flat.shape != full.shape or not np.array_equal(np.sort(flat[:, 0]), np.sort(full[:, 0])) or not (
                np.all(np.diff(flat, axis=1) == 1)
            ):
                raise Refused(f"Linear {name!r} does not read the previous head layer's output row by row")
            rows = [src.info["rows"][int((r - src.base) // src.shape[-1])] for r in flat[:, 0]]
        K = int(out.shape[-1])
        alloc = self.ids.new("head", name, (len(rows), K), rows=rows)
        lab = self.ids.grid(alloc).reshape(*out.shape[:-1], K) if int(np.prod(out.shape[:-1])) == len(rows) else None
        if lab is None:
            raise Refused(f"cannot follow the rows of {name!r}")
        self.head.append([name, alloc, "linear", None])
        self.track(out, Val([(1.0, self.labels(lab))]))

def _check_output_order(rows: list[tuple[int, int] | None], k: np.ndarray) -> None:
    """Refuse an output whose columns or steps come in another order than rnninfer returns them.

    Reshapes are fine (the values keep their order); a permutation of the
    output vector or of the time steps would give the same numbers in other
    places, which the comparison with the module could not see.
    """
    width = int(k.max()) + 1 if len(k) else 0
    if width == 0 or len(k) % width or not np.array_equal(
        k.reshape(-1, width), np.broadcast_to(np.arange(width), (len(k) // width, width))
    ):
        raise Refused("forward reorders or selects the elements of the output vector")
    last: dict[int, int] = {}
    for row in rows[::width]:
        if row is None:
            continue
        b, t = row
        if t <= last.get(b, -2) and t >= 0:
            raise Refused("forward reorders the steps of the output (e.g. flips the sequence)")
        last[b] = t


#: How the example input is laid out: (B, T[, F]), (T, B[, F]) or one unbatched sequence (T[, F]).
LAYOUTS = ("batch_first", "seq_first", "single")


def _example(vocab: int, features: int, layout: str) -> Any:
    import torch

    g = torch.Generator().manual_seed(0)
    if vocab:
        x = torch.randint(0, vocab, (_B, _T), generator=g)
    else:
        x = torch.randn(_B, _T, features, generator=g)
    if layout == "single":
        return x[0].contiguous()
    return x if layout == "batch_first" else x.transpose(0, 1).contiguous()


def trace_forward(
    module: Any,
    names: dict[int, str],
    *,
    vocab: int,
    features: int,
    layout: str,
    example_inputs: Sequence[Any] | None = None,
) -> ForwardPlan:
    """Run ``module`` once on an example input and read what ``forward`` computes.

    Args:
        module: the ``nn.Module`` (put in eval mode for the run, then restored).
        names: ``id(submodule) -> dotted name`` for every submodule.
        vocab: embedding rows (0 for a feature model).
        features: input width of a feature model.
        layout: one of :data:`LAYOUTS`: how the input tensor is laid out (a
            given example's own rank decides between one sequence and a batch).
        example_inputs: positional arguments for ``forward``; the first integer
            (token models) or floating (feature models) tensor is the input
            that is followed.

    Raises:
        Refused: ``forward`` computes something rnninfer cannot run.
        Exception: whatever the module raises on the example input.
    """
    import torch
    from torch.overrides import TorchFunctionMode

    tracer = _Tracer(module, names)
    if example_inputs is None:
        args: tuple[Any, ...] = (_example(vocab, features, layout),)
        x_i = 0
    else:
        args = tuple(example_inputs)
        want_int = bool(vocab)
        cands = [
            i for i, a in enumerate(args)
            if isinstance(a, torch.Tensor) and (a.dtype.is_floating_point != want_int) and a.dim() >= 1
        ]
        if not cands:
            raise ValueError(
                "example_inputs holds no " + ("integer token" if vocab else "floating feature")
                + " tensor for the model input"
            )
        x_i = cands[0]
        if args[x_i].dim() == (1 if vocab else 2):
            layout = "single"
    x = args[x_i]
    xb = x[None] if layout == "single" else x if layout == "batch_first" else x.transpose(0, 1)
    if xb.dim() != (2 if vocab else 3):
        raise ValueError(f"the model input has shape {tuple(x.shape)}; expected token ids or features")
    B, T = int(xb.shape[0]), int(xb.shape[1])
    shape = (B, T) if vocab else (B, T, int(xb.shape[2]))
    tracer.input_alloc = tracer.ids.new("input", "input", shape)
    grid = tracer.ids.grid(tracer.input_alloc)
    lab = grid[0] if layout == "single" else grid if layout == "batch_first" else np.swapaxes(grid, 0, 1)
    tracer.track(x, Val([(1.0, tracer.labels(lab))]))
    if not vocab:
        tracer.stream = tracer.input_alloc

    class _Mode(TorchFunctionMode):
        def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            if not tracer.suspended:
                tracer.on_op(func, args, kwargs, out)
            return out

    handles = []
    for sub in module.modules():
        if isinstance(sub, (torch.nn.Embedding, torch.nn.LSTM, torch.nn.GRU, torch.nn.RNN, torch.nn.Linear)):
            handles.append(sub.register_forward_pre_hook(tracer.pre_hook))
            handles.append(sub.register_forward_hook(tracer.post_hook))
    modes = {m: m.training for m in module.modules()}
    module.eval()
    try:
        with torch.no_grad(), _Mode():
            result = module(*args)
    finally:
        for h in handles:
            h.remove()
        for m, tr in modes.items():
            m.train(tr)
    notes: list[str] = []
    if isinstance(result, (tuple, list)):
        notes.append("forward returns a tuple; its first element is the model output")
        result = result[0]
    if not isinstance(result, torch.Tensor):
        raise Refused(f"forward returns a {type(result).__name__}, not a tensor")
    if not tracer.recurrents:
        raise Refused("forward calls no nn.LSTM, nn.GRU or nn.RNN on the input")
    v = tracer.val(result)
    if v is None:
        raise Refused("forward's output does not depend on the input")
    if v.opaque is not None:
        raise Refused(f"forward applies {v.opaque} to its output; rnninfer cannot run that operation")
    if tracer.head:
        last = tracer.head[-1]
        alloc = last[3] or last[1]
        ids = tracer.single(v, "the output")
        flat = ids.reshape(-1)
        size = int(np.prod(alloc.shape))
        inside = (flat >= alloc.base) & (flat < alloc.base + size)
        if not np.all(inside) or len(np.unique(flat)) != len(flat) or len(flat) != size:
            raise Refused(f"forward's output is not the output of its last head layer {last[0]!r} "
                          "(reshaped at most)")
        r, k = np.divmod(flat - alloc.base, alloc.shape[-1])
        rows = [alloc.info["rows"][int(i)] for i in r]
    else:
        tracer.readout, tracer.columns, rows_rk = decode_readout(
            tracer.ids, tracer.recurrents[-1], v, "the output"
        )
        K = int(v.terms[0][1].shape[-1])
        n = int(np.prod(v.terms[0][1].shape))
        r, k = np.divmod(np.arange(n), K)
        rows = [rows_rk[int(i)] for i in r]
    _check_output_order(rows, k)
    keep = [i for i, row in enumerate(rows) if row is not None]
    index = np.array(
        [(row[0], row[1], int(k[i])) for i in keep if (row := rows[i]) is not None], dtype=np.int64
    ).reshape(-1, 3)
    expected = result.detach().to(torch.float64).reshape(-1).numpy()[keep]
    tokens = np.asarray(xb.detach().cpu().numpy())
    lengths = tracer.lengths
    probe = Probe(
        inputs=tokens.astype(np.int64) if vocab else tokens.astype(np.float32),
        lengths=None if lengths is None or np.all(lengths == T) else lengths,
        expected=expected,
        index=index,
    )
    return ForwardPlan(
        embedding=tracer.embedding,
        recurrents=[r[0] for r in tracer.recurrents],
        readout=tracer.readout,
        columns=tracer.columns,
        head=[(h[0], h[2]) for h in tracer.head],
        probe=probe,
        notes=notes,
    )
