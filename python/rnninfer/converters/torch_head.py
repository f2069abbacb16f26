"""The head of a PyTorch model from its structure: ordering modules by width, reading activations.

Used where ``forward`` cannot be read (state dicts, files, modules whose
``forward`` cannot run): the order of modules comes from registration or, for
sorted safetensors keys, from how their widths chain; the activation after
each Linear from an enclosing ``nn.Sequential`` or the options.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

from .torch_parts import ActivationPart, LinearPart, Parts, RecurrentPart

__all__ = ["build_head", "check_no_linear_inside_stack", "order_chain"]

#: Up to this many modules of one kind, every order is tried when widths must decide.
_MAX_PERMUTE = 8
T = TypeVar("T")


def order_chain(
    items: Sequence[T],
    start: int | None,
    in_w: Callable[[T], int],
    out_w: Callable[[T], int],
    name: Callable[[T], str],
    what: str,
    trusted: bool,
    notes: list[str],
) -> list[T]:
    """Order modules so each one's input width is the previous one's output width.

    The source's order wins when it chains; otherwise the one order that does
    is taken (and noted); none or several raise.
    """

    def chains(seq: Sequence[T]) -> bool:
        width = start
        for it in seq:
            if width is not None and in_w(it) != width:
                return False
            width = out_w(it)
        return True

    if len(items) <= 1 or chains(items):
        if 1 < len(items) <= _MAX_PERMUTE and not trusted:
            alternatives = sum(1 for _ in itertools.islice(_chaining(items, chains), 2))
            if alternatives > 1:
                notes.append(
                    f"order of {what} {', '.join(name(i) for i in items)} taken from their key "
                    "names (safetensors stores keys sorted by name; widths allow other orders)"
                )
        if len(items) == 1 and not chains(items):
            raise ValueError(
                f"{what} {name(items[0])!r} reads width {in_w(items[0])} but receives {start}"
            )
        return list(items)
    if len(items) > _MAX_PERMUTE:
        raise ValueError(f"the {what} {', '.join(name(i) for i in items)} do not chain by width")
    found = list(itertools.islice(_chaining(items, chains), 2))
    listing = ", ".join(f"{name(i)} ({in_w(i)} -> {out_w(i)})" for i in items)
    if not found:
        raise ValueError(f"the {what} do not form a chain of matching widths: {listing}")
    if len(found) > 1:
        raise ValueError(
            f"cannot tell the order of the {what} from their widths: {listing}; convert the "
            "nn.Module itself or a state dict saved from it"
        )
    notes.append(f"order of {what} inferred from widths: {', '.join(name(i) for i in found[0])}")
    return list(found[0])


def _chaining(items: Sequence[T], chains: Callable[[Sequence[T]], bool]) -> Iterator[tuple[T, ...]]:
    return (p for p in itertools.permutations(items) if chains(p))


def check_no_linear_inside_stack(parts: Parts) -> None:
    rec_pos = [i for i, p in enumerate(parts.order) if isinstance(p, RecurrentPart)]
    for i, p in enumerate(parts.order):
        if isinstance(p, LinearPart) and rec_pos[0] < i < rec_pos[-1]:
            raise TypeError(
                f"nn.Linear {p.name!r} (position {i}) sits between recurrent modules; rnninfer "
                "runs Linear layers only after the recurrent stack"
            )


def build_head(
    parts: Parts,
    linears: list[LinearPart],
    width: int,
    head_act: str,
    hidden_act: str | None,
    readout: str,
) -> list[tuple[LinearPart, str]]:
    """Order the Linear layers and give each its activation."""
    if not linears:
        if head_act != "linear":
            raise ValueError(f"head_activation={head_act!r} given but the model has no nn.Linear head")
        return []
    linears = order_chain(
        linears, width, lambda lin: lin.in_width, lambda lin: lin.out_width,
        lambda lin: lin.name, "Linear layers", parts.trusted_order, parts.notes,
    )
    acts = _visible_activations(parts, linears, readout)
    out: list[tuple[LinearPart, str]] = []
    for j, lin in enumerate(linears):
        last = j == len(linears) - 1
        seen = acts.get(id(lin))
        if last:
            if seen is not None and seen != "linear" and head_act not in ("linear", seen):
                raise ValueError(
                    f"the model applies {seen} after {lin.name!r} but head_activation={head_act!r} "
                    "was given; drop the option or make them agree"
                )
            act = seen if (seen is not None and seen != "linear") else head_act
            if seen not in (None, "linear") and head_act == "linear":
                parts.notes.append(f"head activation {seen!r} taken from the module after {lin.name!r}")
        elif seen is not None:
            if hidden_act is not None and hidden_act != seen:
                raise ValueError(
                    f"the model shows activation {seen!r} after {lin.name!r} but "
                    f"hidden_activation={hidden_act!r} was given"
                )
            act = seen
        elif hidden_act is not None:
            act = hidden_act
        else:
            loose = (
                f" (activation modules registered outside nn.Sequential: "
                f"{', '.join(parts.loose_activations)})"
                if parts.loose_activations else ""
            )
            raise ValueError(
                f"cannot tell the activation between Linear layers {lin.name!r} and "
                f"{linears[j + 1].name!r}{loose}; pass hidden_activation=... "
                "('identity' if there is none)"
            )
        if act in ("softmax", "log_softmax") and not last:
            raise ValueError(f"{act} after {lin.name!r}: only the last head layer may use it")
        out.append((lin, act))
    return out


def _visible_activations(parts: Parts, linears: list[LinearPart], readout: str) -> dict[int, str]:
    """Activations a module shows after each Linear inside the same nn.Sequential.

    Inside one Sequential the data flow is the listing order, so what follows a
    Linear up to the next Linear is exactly what is applied ("linear" when
    nothing is). Across containers nothing can be told.
    """
    out: dict[int, str] = {}
    order = parts.order
    index = {id(p): i for i, p in enumerate(order)}
    for j, lin in enumerate(linears):
        if lin.container is None:
            continue
        nxt = linears[j + 1] if j + 1 < len(linears) else None
        start = index[id(lin)] + 1
        stop = index[id(nxt)] if nxt is not None else len(order)
        if nxt is not None and (nxt.container != lin.container or stop < start):
            continue
        between = [
            p for p in order[start:stop] if isinstance(p, ActivationPart) and p.container == lin.container
        ]
        if nxt is None and not between:
            continue  # the Sequential ends here; forward may still apply head_activation
        if len(between) > 1:
            raise ValueError(
                f"several activations after {lin.name!r} ({', '.join(a.name for a in between)}); "
                "rnninfer applies one activation per head layer"
            )
        if between and between[0].dim is not None:
            # The head sees (B, width) for "last" and (B, T, width) or (T, B, width) for
            # "sequence"; only the last axis is the output vector.
            last_axis = 1 if readout == "last" else 2
            if between[0].dim not in (-1, last_axis):
                raise ValueError(
                    f"{between[0].name!r}: {between[0].act} over dim={between[0].dim} is not over "
                    f"the output vector with readout={readout!r}; rnninfer normalises the last axis"
                )
        out[id(lin)] = between[0].act if between else "linear"
    for p in order:
        if isinstance(p, ActivationPart) and not any(
            index[id(lin)] < index[id(p)] and lin.container == p.container for lin in linears
        ):
            raise ValueError(
                f"activation module {p.name!r} comes before any Linear in its nn.Sequential; "
                "rnninfer has no activation between the recurrent stack and the head"
            )
    return out


