"""Shared benchmark shapes: the headline case, the grid and its quick subset.

Every benchmark script in ``bench/`` takes its cases from here, so that the
framework comparison (``bench_predict.py``) and any kernel micro-benchmark talk
about the same shapes. A :class:`Case` describes one model *and* one way of
calling it (batch size, threads); :meth:`Case.model_key` names the model alone
so that cases differing only in batch size can share one built model.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

CELLS = ("lstm", "gru")


@dataclass(frozen=True)
class Case:
    """One benchmark case: a stacked recurrent model and the call shape.

    Attributes:
        cell: ``"lstm"`` or ``"gru"``.
        hidden: hidden units ``H`` of every recurrent layer (one direction).
        layers: number of stacked recurrent layers.
        bidirectional: every layer runs both directions (outputs concatenated).
        T: sequence length (all sequences full length).
        batch: sequences per call.
        threads: threads every engine is allowed to use.
        vocab: embedding rows; 0 means a float-feature model (see ``features``).
        embedding: embedding width (token models).
        features: feature width (feature models, ``vocab == 0``).
        head: units of the Dense head.
        head_activation: activation of the Dense head.
    """

    cell: str = "lstm"
    hidden: int = 256
    layers: int = 2
    bidirectional: bool = False
    T: int = 64
    batch: int = 1
    threads: int = 1
    vocab: int = 20000
    embedding: int = 128
    features: int = 0
    head: int = 1
    head_activation: str = "sigmoid"

    def __post_init__(self) -> None:
        """Reject shapes no engine could run."""
        if self.cell not in CELLS:
            raise ValueError(f"cell must be one of {CELLS}, got {self.cell!r}")
        for name in ("hidden", "layers", "T", "batch", "threads", "head"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.vocab == 0 and self.features < 1:
            raise ValueError("a feature model (vocab=0) needs features >= 1")

    @property
    def name(self) -> str:
        """Short unique label, e.g. ``lstm256x2-T64-b1-t1``."""
        return f"{self.model_label}-T{self.T}-b{self.batch}-t{self.threads}"

    @property
    def model_label(self) -> str:
        """Label of the model alone, e.g. ``emb20000x128-lstm256x2``."""
        inp = f"emb{self.vocab}x{self.embedding}" if self.vocab else f"feat{self.features}"
        bi = "bi" if self.bidirectional else ""
        return f"{inp}-{bi}{self.cell}{self.hidden}x{self.layers}"

    def model_key(self) -> tuple[Any, ...]:
        """Identifies the model (weights and all); equal keys share one built model."""
        return (self.cell, self.hidden, self.layers, self.bidirectional, self.vocab,
                self.embedding, self.features, self.head, self.head_activation)

    def layer_list(self) -> list[Any]:
        """The model as a list of :mod:`rnninfer.layers` descriptions."""
        from rnninfer.layers import GRU, LSTM, Dense, Embedding, Features

        cls = LSTM if self.cell == "lstm" else GRU
        first = Embedding(self.vocab, self.embedding) if self.vocab else Features(self.features)
        rec = [cls(self.hidden, bidirectional=self.bidirectional) for _ in range(self.layers)]
        return [first, *rec, Dense(self.head, activation=self.head_activation)]

    def spec(self) -> Any:
        """The model's validated :class:`rnninfer.format.manifest.ModelSpec`."""
        from rnninfer.layers import make_spec

        return make_spec(self.layer_list(), name=self.model_label)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (for JSON)."""
        return dataclasses.asdict(self)


#: The headline model: Embedding(20000, 128) -> 2 x LSTM(256) -> Dense(1, sigmoid), T = 64.
HEADLINE_MODEL = Case()


def headline(threads: Sequence[int] = (1, 2)) -> list[Case]:
    """The headline cases: batch 1 and 64, for each thread count."""
    return [dataclasses.replace(HEADLINE_MODEL, batch=b, threads=t) for t in threads for b in (1, 64)]


def grid(threads: Sequence[int] = (1, 2)) -> list[Case]:
    """The full grid: LSTM & GRU; H 128/256/512/1024; layers 1/2/4; T 32/128; batch 1/16/64.

    288 cases at two thread counts: hours with all peers installed.
    """
    return [
        Case(cell=c, hidden=h, layers=n, T=t, batch=b, threads=th)
        for th, c, h, n, t, b in itertools.product(
            threads, CELLS, (128, 256, 512, 1024), (1, 2, 4), (32, 128), (1, 16, 64)
        )
    ]


def quick(threads: Sequence[int] = (1, 2)) -> list[Case]:
    """A small slice of the grid (LSTM & GRU; H 128/512; 2 layers; T 32; batch 1/16)."""
    return [
        Case(cell=c, hidden=h, layers=2, T=32, batch=b, threads=th)
        for th, c, h, b in itertools.product(threads, CELLS, (128, 512), (1, 16))
    ]


def scaling(threads: Sequence[int] = (1, 2)) -> list[Case]:
    """Thread scaling: LSTM(256); layers 1/2/4; one or both directions; batch 1/8/64; T 32/128/512."""
    return [
        Case(hidden=256, layers=n, bidirectional=bi, T=t, batch=b, threads=th)
        for n, bi, t, b, th in itertools.product((1, 2, 4), (False, True), (32, 128, 512), (1, 8, 64), threads)
    ]


def scheduler(threads: Sequence[int] = (1, 2)) -> list[Case]:
    """The multi-threaded scheduler's target shapes, each at every thread count.

    The headline model at batch 1 and 64, a 4-layer LSTM(256) at T=128 batch 1,
    and a bidirectional 2-layer LSTM(256) at batch 1 for T 32/128/512.
    """
    shapes = [dataclasses.replace(HEADLINE_MODEL, batch=b) for b in (1, 64)]
    shapes.append(Case(hidden=256, layers=4, T=128, batch=1))
    shapes += [Case(hidden=256, layers=2, bidirectional=True, T=t, batch=1) for t in (32, 128, 512)]
    return [dataclasses.replace(c, threads=t) for c in shapes for t in threads]


def kernels(threads: Sequence[int] = (1,)) -> list[Case]:
    """The single-engine targets: headline, GRU of the same shape at T=128, and the per-call floor."""
    out = headline(threads)
    out += [dataclasses.replace(HEADLINE_MODEL, cell="gru", T=128, batch=1, threads=t) for t in threads]
    # Per-call floor: one LSTM(16) layer, one step, batch 1.
    out += [Case(hidden=16, layers=1, T=1, batch=1, threads=t, vocab=100, embedding=16) for t in threads]
    return out


SUITES = {"headline": headline, "quick": quick, "grid": grid, "scaling": scaling, "kernels": kernels,
          "scheduler": scheduler}


def select(suite: str, threads: Iterable[int]) -> list[Case]:
    """The cases of a named suite (``headline``, ``quick``, ``grid``, ``scaling``) for these thread counts."""
    if suite not in SUITES:
        raise ValueError(f"unknown suite {suite!r}; expected one of {sorted(SUITES)}")
    return SUITES[suite](tuple(threads))
