"""PyTorch converter: ``nn.Module``, state dict, ``.pt``/``.pth`` or ``.safetensors``.

rnninfer's canonical layout *is* PyTorch's (see ``docs/format.md``), so this
converter never reorders gates: it recognises the modules of the standard
composition Embedding -> LSTM/GRU/RNN stack -> readout -> Linear head(s), and
renames ``weight_ih_l{k}{_reverse}`` and friends to ``layers.{i}.{fwd|bwd}.*``.

Reader: :mod:`.torch_files` (checkpoint files, no code run) and
:mod:`.torch_parts` (modules and state dicts -> parts). For an ``nn.Module``
what ``forward`` computes is read by :mod:`.torch_forward`; otherwise what a
checkpoint cannot tell (the readout, the activation after the head, the order
of modules in a file whose keys are sorted) comes from the options, from the
shapes (:mod:`.torch_head`) or from key names. This module maps either onto
the spec; anything inferred is written to ``producer["notes"]``, and anything
still ambiguous raises rather than guesses.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..format.manifest import DenseSpec, InputSpec, ModelSpec, RecurrentSpec
from ._gates import head_activation_option, hidden_activation_option
from .base import Converted, Probe, finish
from .torch_files import read_state_file
from .torch_forward import LAYOUTS, ForwardPlan, Refused, trace_forward
from .torch_head import build_head, check_no_linear_inside_stack, order_chain
from .torch_labels import LayoutRefused
from .torch_parts import (
    NONLINEARITIES,
    ActivationPart,
    EmbeddingPart,
    LinearPart,
    Parts,
    RecurrentPart,
    parts_from_module,
    parts_from_state,
)

__all__ = ["READOUTS", "convert_torch", "convert_torch_probed"]

#: ``readout`` values: what the head reads (``last``: final states; ``sequence``:
#: every step), and for bidirectional tops how the two directions are combined:
#: concatenated forward first (no suffix, what ``h_n[-2:]`` gives), backward
#: first (``torch.cat([h_n[-1], h_n[-2]], 1)``), summed or averaged.
READOUTS = tuple(
    base + order for base in ("last", "sequence") for order in ("", "_backward_first", "_sum", "_mean")
)


# ---- public API -----------------------------------------------------------------------
def convert_torch(
    src: object,
    *,
    readout: str | None = None,
    head_activation: str | None = None,
    hidden_activation: str | None = None,
    nonlinearity: str = "tanh",
    example_inputs: Sequence[Any] | None = None,
) -> Converted:
    """Convert a PyTorch model to a validated canonical spec and tensors.

    :func:`rnninfer.from_torch` opens the result as a ``Model`` (and checks a
    module's conversion against the module itself); see ``docs/torch.md``.

    Args:
        src: an ``nn.Module``, a state dict (mapping of names to tensors or
            numpy arrays), or a path to a ``.pt``/``.pth`` file (loaded with
            ``weights_only=True``) or a ``.safetensors`` file.
        readout: what the head reads, one of :data:`READOUTS`; ``None`` = what
            a module's ``forward`` computes, else ``"last"`` (the top layer's
            final states, directions concatenated forward first).
        head_activation: applied after the last Linear layer: ``None``,
            ``"sigmoid"``, ``"softmax"``, ``"log_softmax"``, ``"tanh"``,
            ``"relu"`` (any head activation of ``docs/format.md``).
        hidden_activation: the activation between consecutive Linear layers
            where the source does not show it; ``"identity"`` for none.
        nonlinearity: ``"tanh"`` or ``"relu"``, for ``nn.RNN`` weights coming
            from a state dict (a module states its own).
        example_inputs: positional arguments for a module's ``forward`` when
            it takes more than a token (or feature) tensor, e.g. ``(x, lengths)``.

    Returns:
        a :class:`~rnninfer.converters.base.Converted` (unpacks as
        ``spec, tensors, producer``), checked once.

    Raises:
        ModelFormatError: the source file is corrupt, not a plain tensor
            checkpoint, or holds weights rnninfer cannot use.
        ValueError: an ambiguous or unsupported structure, operation or option.
        TypeError: an unsupported module or source type.
    """
    return convert_torch_probed(
        src, readout=readout, head_activation=head_activation,
        hidden_activation=hidden_activation, nonlinearity=nonlinearity,
        example_inputs=example_inputs,
    )[0]


def convert_torch_probed(
    src: object,
    *,
    readout: str | None = None,
    head_activation: str | None = None,
    hidden_activation: str | None = None,
    nonlinearity: str = "tanh",
    example_inputs: Sequence[Any] | None = None,
) -> tuple[Converted, Probe | None]:
    """:func:`convert_torch` plus the probe of a traced module (``None`` for files).

    The probe holds the example input and the module's own output on it, for
    the caller to compare with the converted model.
    """
    if readout is not None and readout not in READOUTS:
        raise ValueError(f"readout must be one of {READOUTS}, got {readout!r}")
    if nonlinearity not in NONLINEARITIES:
        raise ValueError(f"nonlinearity must be one of {NONLINEARITIES}, got {nonlinearity!r}")
    head_act = head_activation_option(head_activation)
    hidden_act = hidden_activation_option(hidden_activation)

    source_name, parts = _read_source(src, nonlinearity)
    plan = None
    if source_name == "nn.Module":
        plan = _trace(src, parts, example_inputs)
    elif example_inputs is not None:
        raise ValueError("example_inputs applies to an nn.Module only (a file or state dict has no forward)")
    if plan is not None:
        parts.notes.extend(plan.notes)
        spec, tensors = build_traced(parts, plan, readout, head_act, hidden_act)
    else:
        spec, tensors = _build(parts, readout or "last", head_act, hidden_act)
        if (
            source_name != "nn.Module" and spec.head and spec.head[-1].activation == "linear"
            and head_activation is None
        ):
            warnings.warn(
                f"{source_name}: a state dict cannot show what forward applies after the last "
                f"Linear layer, so the converted model returns its raw output (logits). If the "
                "model ends in an activation, pass head_activation='sigmoid' (or 'softmax', "
                "'log_softmax', ...; CLI: --head-activation); pass head_activation='identity' "
                "to say there is none and silence this warning",
                UserWarning,
                stacklevel=3,
            )
    producer: dict[str, Any] = {
        "converter": "torch",
        "framework": "torch",
        "source": source_name,
        "notes": list(parts.notes),
    }
    version = _torch_version()
    if version is not None:
        producer["framework_version"] = version
    return finish(spec, tensors, producer, source=_path_name(src)), plan.probe if plan else None


def _trace(module: Any, parts: Parts, example_inputs: Sequence[Any] | None) -> ForwardPlan | None:
    """Read ``forward`` (see :mod:`.torch_forward`); warn and return None if it cannot run."""
    import torch

    recs = [p for p in parts.order if isinstance(p, RecurrentPart)]
    embs = [p for p in parts.order if isinstance(p, EmbeddingPart)]
    if not recs:
        return None  # _build names the problem
    names = {id(m): (n or "<root>") for n, m in module.named_modules()}
    first = next(
        (m for m in module.modules() if isinstance(m, (torch.nn.LSTM, torch.nn.GRU, torch.nn.RNN))), None
    )
    vocab = int(embs[0].weight.shape[0]) if len(embs) == 1 else 0
    features = recs[0].input_width
    natural = "batch_first" if getattr(first, "batch_first", True) else "seq_first"
    # forward may reshape its input itself (transpose it, or take one unbatched
    # sequence as the PyTorch tagger tutorial does); the other layouts are tried in turn.
    layouts = [natural, *(x for x in LAYOUTS if x != natural)]

    def run(layout: str) -> ForwardPlan:
        return trace_forward(
            module, names, vocab=vocab, features=features, layout=layout,
            example_inputs=example_inputs,
        )

    if example_inputs is not None:
        try:
            return run(natural)
        except Refused:
            raise
        except Exception as e:
            raise ValueError(f"forward failed on example_inputs: {type(e).__name__}: {e}") from e
    first_error: Exception | None = None
    for layout in layouts:
        try:
            return run(layout)
        except LayoutRefused as e:
            first_error = first_error or e
        except Refused:
            raise
        except Exception as e:  # noqa: BLE001 - the module's own failure; another layout may work
            first_error = first_error or e
    if isinstance(first_error, LayoutRefused):
        raise first_error
    warnings.warn(
        f"could not run forward of {type(module).__name__} on an example input "
        f"({type(first_error).__name__}: {first_error}); converting from the module structure "
        "alone, without reading forward or checking the result against the module. If forward "
        "takes more than the input tensor, pass example_inputs=(...)",
        UserWarning,
        stacklevel=4,
    )
    return None


# ---- options --------------------------------------------------------------------------
def _torch_version() -> str | None:
    try:
        import torch
    except ImportError:
        return None
    return str(torch.__version__)


def _path_name(src: object) -> str | None:
    if isinstance(src, (str, os.PathLike)):
        return os.fspath(src) if isinstance(os.fspath(src), str) else None
    return None


# ---- reading sources ------------------------------------------------------------------
def _read_source(src: object, nonlinearity: str) -> tuple[str, Parts]:
    torch = sys.modules.get("torch")  # a Module or a tensor implies torch is already imported
    if torch is not None and isinstance(src, torch.nn.Module):
        return "nn.Module", parts_from_module(src)
    if isinstance(src, (str, os.PathLike)):
        path = os.fspath(src)
        if not isinstance(path, str):
            raise TypeError("src path must be a str or os.PathLike of str")
        name = os.path.basename(path)
        state, trusted = read_state_file(path)
        parts = parts_from_state(state, nonlinearity, trusted_order=trusted, source=name)
        return name, parts
    if isinstance(src, Mapping):
        return "state_dict", parts_from_state(src, nonlinearity, trusted_order=True, source=None)
    raise TypeError(
        "from_torch expects an nn.Module, a state dict, or a path to a .pt/.pth/.safetensors "
        f"file, got {type(src).__name__}"
    )


# ---- building the spec ----------------------------------------------------------------
def _build(
    parts: Parts, readout: str, head_act: str, hidden_act: str | None
) -> tuple[ModelSpec, dict[str, np.ndarray]]:
    """The spec from the module structure and the options (state dicts, untraceable modules)."""
    embeddings = [p for p in parts.order if isinstance(p, EmbeddingPart)]
    recurrents = [p for p in parts.order if isinstance(p, RecurrentPart)]
    linears = [p for p in parts.order if isinstance(p, LinearPart)]
    if not recurrents:
        raise ValueError("no nn.LSTM, nn.GRU or nn.RNN found; rnninfer runs recurrent models")
    if len(embeddings) > 1:
        raise ValueError(
            f"several embeddings ({', '.join(e.name for e in embeddings)}); rnninfer models read "
            "one token stream"
        )
    if parts.trusted_order:
        check_no_linear_inside_stack(parts)

    recurrents = order_chain(
        recurrents, None, lambda r: r.input_width, lambda r: r.output_width,
        lambda r: r.name or "<root>", "recurrent modules", parts.trusted_order, parts.notes,
    )
    inp, layers, tensors = _stack(embeddings[0] if embeddings else None, recurrents)
    base, _, order = readout.partition("_")
    top = recurrents[-1]
    width = top.output_width // 2 if order in ("sum", "mean") and top.bidirectional else top.output_width
    head = build_head(parts, linears, width, head_act, hidden_act, base)
    columns = _order_columns(order, layers[-1], readout)
    return _assemble(inp, layers, tensors, head, base, columns, f"readout={readout!r}")


def build_traced(
    parts: Parts, plan: ForwardPlan, readout: str | None, head_act: str, hidden_act: str | None
) -> tuple[ModelSpec, dict[str, np.ndarray]]:
    """The spec from what ``forward`` computes; options may only agree with it."""
    by_name: dict[str, Any] = {}
    for p in parts.order:
        if isinstance(p, (RecurrentPart, EmbeddingPart, LinearPart)):
            by_name[p.name or "<root>"] = p
    emb = by_name[plan.embedding] if plan.embedding is not None else None
    recurrents = [by_name[n] for n in plan.recurrents]
    head_parts = [(by_name[n], act) for n, act in plan.head]
    used = {id(x) for x in [emb, *recurrents, *(h for h, _ in head_parts)]}
    unused = [p.name or "<root>" for p in parts.order if not isinstance(p, ActivationPart) and id(p) not in used]
    if unused:
        parts.notes.append(f"not used by forward: {', '.join(unused)}")
    inp, layers, tensors = _stack(emb, recurrents)
    columns = plan.columns
    variant = _name_columns(columns, layers[-1])
    traced = plan.readout + variant
    if readout is not None and readout != traced:
        raise ValueError(
            f"forward reads readout {traced!r} but readout={readout!r} was given; drop the option "
            "or make them agree"
        )
    if head_parts:
        last_name, last_act = plan.head[-1]
        if head_act != "linear" and head_act != last_act:
            raise ValueError(
                f"forward applies {last_act!r} after {last_name!r} but head_activation={head_act!r} "
                "was given; drop the option or make them agree (the converted model computes what "
                "forward computes)"
            )
        for name, act in plan.head[:-1]:
            if hidden_act is not None and hidden_act != act:
                raise ValueError(
                    f"forward applies {act!r} after {name!r} but hidden_activation={hidden_act!r} was given"
                )
            if act in ("softmax", "log_softmax"):
                raise ValueError(f"forward applies {act} after {name!r}: only the last head layer may use it")
    elif head_act != "linear":
        raise ValueError(f"head_activation={head_act!r} given but forward applies no nn.Linear head")
    parts.notes.append(
        "read from forward: readout " + repr(traced)
        + "".join(f", {n} -> {a}" for n, a in plan.head)
    )
    return _assemble(inp, layers, tensors, head_parts, plan.readout, columns, "forward")


def _stack(
    emb: EmbeddingPart | None, recurrents: list[RecurrentPart]
) -> tuple[InputSpec, list[RecurrentSpec], dict[str, np.ndarray]]:
    """Input spec, recurrent layers and their canonical tensors (renamed, never changed)."""
    tensors: dict[str, np.ndarray] = {}
    if emb is not None:
        vocab, dim = (int(s) for s in emb.weight.shape)
        if dim != recurrents[0].input_width:
            raise ValueError(
                f"embedding {emb.name!r} has width {dim} but {recurrents[0].name!r} reads "
                f"{recurrents[0].input_width}"
            )
        inp = InputSpec(kind="tokens", vocab_size=vocab, embedding_dim=dim)
        tensors["embedding.weight"] = emb.weight
    else:
        inp = InputSpec(kind="features", features=recurrents[0].input_width)
    layers: list[RecurrentSpec] = []
    for rec in recurrents:
        for k in range(rec.num_layers):
            i = len(layers)
            layers.append(
                RecurrentSpec(
                    cell=rec.cell,
                    units=rec.hidden,
                    direction="bidirectional" if rec.bidirectional else "forward",
                    merge="concat",
                    activation=rec.nonlinearity if rec.cell == "rnn" else "tanh",
                    recurrent_activation="sigmoid",
                    reset_after=True,
                    proj_size=rec.proj,
                    bias=rec.bias,
                )
            )
            for d, sfx in (("fwd", ""), ("bwd", "_reverse"))[: 2 if rec.bidirectional else 1]:
                pre = f"layers.{i}.{d}."
                tensors[pre + "w_ih"] = rec.params[f"weight_ih_l{k}{sfx}"]
                tensors[pre + "w_hh"] = rec.params[f"weight_hh_l{k}{sfx}"]
                if rec.bias:
                    tensors[pre + "b_ih"] = rec.params[f"bias_ih_l{k}{sfx}"]
                    tensors[pre + "b_hh"] = rec.params[f"bias_hh_l{k}{sfx}"]
                if rec.proj:
                    tensors[pre + "w_hr"] = rec.params[f"weight_hr_l{k}{sfx}"]
    return inp, layers, tensors


def _order_columns(order: str, top: RecurrentSpec, readout: str) -> np.ndarray | None:
    """The column map of a readout suffix (``backward_first``, ``sum``, ``mean``)."""
    if not order:
        return None
    if top.num_directions != 2:
        raise ValueError(f"readout={readout!r} needs a bidirectional top layer")
    w = top.direction_width
    eye, zero = np.eye(w), np.zeros((w, w))
    if order == "backward_first":
        return np.block([[zero, eye], [eye, zero]])
    return np.hstack([eye, eye]) * (0.5 if order == "mean" else 1.0)


def _name_columns(columns: np.ndarray | None, top: RecurrentSpec) -> str:
    """The readout suffix a traced column map equals ("" for the identity); raises if none."""
    if columns is None:
        return ""
    if top.num_directions == 2:
        for order in ("_backward_first", "_sum", "_mean"):
            m = _order_columns(order[1:], top, order)
            if m is not None and m.shape == columns.shape and np.array_equal(m, columns):
                return order
    return "_columns"


def _assemble(
    inp: InputSpec,
    layers: list[RecurrentSpec],
    tensors: dict[str, np.ndarray],
    head: list[tuple[LinearPart, str]],
    readout: str,
    columns: np.ndarray | None,
    where: str,
) -> tuple[ModelSpec, dict[str, np.ndarray]]:
    """Spec + tensors; a direction order or selection is folded into the first head layer.

    A sum or mean of directions is the top layer's merge mode; any other map
    ``M`` from the concatenated directions to what the head reads becomes the
    first head weight ``W @ M``, which for an order or a selection only moves
    (or zeroes) columns.
    """
    top = layers[-1]
    first_weight = head[0][0].weight if head else None
    if columns is not None:
        w = top.direction_width
        eye = np.eye(w)
        merge = None
        if top.num_directions == 2 and columns.shape == (w, 2 * w):
            if np.array_equal(columns, np.hstack([eye, eye])):
                merge = "sum"
            elif np.array_equal(columns, np.hstack([eye, eye]) * 0.5):
                merge = "ave"
        if merge is not None:
            layers[-1] = RecurrentSpec(**{**top.__dict__, "merge": merge})
        elif first_weight is not None:
            if first_weight.shape[1] != columns.shape[0]:
                raise ValueError(f"{where}: the head reads width {first_weight.shape[1]}, not {columns.shape[0]}")
            first_weight = (first_weight.astype(np.float64) @ columns).astype(np.float32)
        else:
            raise ValueError(
                f"{where}: the output reorders or selects the directions of the top recurrent layer "
                "and there is no Linear head to fold that into; rnninfer outputs both directions "
                "concatenated forward first (or summed / averaged)"
            )
    for j, (lin, _) in enumerate(head):
        tensors[f"head.{j}.weight"] = first_weight if j == 0 and first_weight is not None else lin.weight
        if lin.bias is not None:
            tensors[f"head.{j}.bias"] = lin.bias
    spec = ModelSpec(
        input=inp,
        layers=tuple(layers),
        readout=readout,
        head=tuple(
            DenseSpec(units=lin.out_width, activation=act, bias=lin.bias is not None)
            for lin, act in head
        ),
        name="torch_model",
    )
    return spec, tensors
