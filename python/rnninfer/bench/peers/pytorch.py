"""PyTorch as a benchmark engine: the same model as an ``nn.Module``, eager, ``inference_mode``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .base import Prepared, Tensors, check_supported


def _uniform(spec: Any) -> bool:
    """True when one ``nn.LSTM(num_layers=L)`` can hold the whole stack."""
    first = spec.layers[0]
    keys = ("cell", "units", "direction", "bias", "proj_size", "activation")
    return all(all(getattr(x, k) == getattr(first, k) for k in keys) for x in spec.layers)


def torch_module(spec: Any, tensors: Tensors) -> Any:
    """The PyTorch ``nn.Module`` for ``spec``, in eval mode, weights from ``tensors``."""
    check_supported(spec, "pytorch")
    import torch
    from torch import nn

    acts: dict[str, Callable[[], nn.Module]] = {
        "linear": nn.Identity, "relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid,
        "softmax": lambda: nn.Softmax(dim=-1),
    }

    def make_rnn(layer: Any, in_width: int, num_layers: int) -> nn.Module:
        kw: dict[str, Any] = {
            "num_layers": num_layers, "bias": layer.bias, "batch_first": True,
            "bidirectional": layer.num_directions == 2,
        }
        if layer.cell == "lstm":
            return nn.LSTM(in_width, layer.units, proj_size=layer.proj_size, **kw)
        if layer.cell == "gru":
            return nn.GRU(in_width, layer.units, **kw)
        return nn.RNN(in_width, layer.units, nonlinearity=layer.activation, **kw)

    class Net(nn.Module):
        """Embedding -> recurrent stack -> readout -> Linear head(s)."""

        def __init__(self) -> None:
            super().__init__()
            inp = spec.input
            self.embedding = nn.Embedding(inp.vocab_size, inp.embedding_dim) if inp.kind == "tokens" else None
            # (module, index of its first rnninfer layer, number of layers it holds)
            plan = [(0, len(spec.layers))] if _uniform(spec) else [(i, 1) for i in range(len(spec.layers))]
            self.plan = plan
            mods = []
            for first, count in plan:
                layer = spec.layers[first]
                mods.append(make_rnn(layer, spec.stream_width(first - 1), count))
            self.rnns = nn.ModuleList(mods)
            self.top_dirs = spec.layers[-1].num_directions
            self.sequence = spec.readout == "sequence"
            width = spec.top_width
            linears, activations = [], []
            for dense in spec.head:
                linears.append(nn.Linear(width, dense.units, bias=dense.bias))
                activations.append(acts[dense.activation]())
                width = dense.units
            self.linears = nn.ModuleList(linears)
            self.activations = nn.ModuleList(activations)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.embedding(x) if self.embedding is not None else x
            state: Any = None
            for rnn in self.rnns:
                h, state = rnn(h)
            if self.sequence:
                z = h
            else:
                hn = state[0] if isinstance(state, tuple) else state
                z = torch.cat([hn[-2], hn[-1]], dim=1) if self.top_dirs == 2 else hn[-1]
            for lin, act in zip(self.linears, self.activations):
                z = act(lin(z))
            return z

    net = Net()
    params = dict(net.named_parameters())
    new: dict[str, np.ndarray] = {}
    if net.embedding is not None:
        new["embedding.weight"] = tensors["embedding.weight"]
    for m, (first, count) in enumerate(net.plan):
        for k in range(count):
            for d, sfx in (("fwd", ""), ("bwd", "_reverse"))[: spec.layers[first + k].num_directions]:
                pre = f"layers.{first + k}.{d}."
                for ours, theirs in (("w_ih", "weight_ih"), ("w_hh", "weight_hh"), ("b_ih", "bias_ih"),
                                     ("b_hh", "bias_hh"), ("w_hr", "weight_hr")):
                    if pre + ours in tensors:
                        new[f"rnns.{m}.{theirs}_l{k}{sfx}"] = tensors[pre + ours]
    for j in range(len(spec.head)):
        new[f"linears.{j}.weight"] = tensors[f"head.{j}.weight"]
        if f"head.{j}.bias" in tensors:
            new[f"linears.{j}.bias"] = tensors[f"head.{j}.bias"]
    if set(new) != set(params):
        raise RuntimeError(f"torch parameter mapping mismatch: {sorted(set(new) ^ set(params))}")
    with torch.no_grad():
        for name, value in new.items():
            if tuple(params[name].shape) != value.shape:
                raise RuntimeError(f"{name}: torch shape {tuple(params[name].shape)} vs {value.shape}")
            params[name].copy_(torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32)))
    return net.eval()


def _torch_input(spec: Any, x: np.ndarray) -> Any:
    import torch

    if spec.input.kind == "tokens":
        return torch.from_numpy(np.asarray(x, dtype=np.int64))
    return torch.from_numpy(np.asarray(x, dtype=np.float32))


def prepare_pytorch(spec: Any, tensors: Tensors, threads: int) -> Prepared:
    """PyTorch eager under ``inference_mode`` with ``threads`` intra-op threads."""
    import torch

    torch.set_num_threads(threads)
    net = torch_module(spec, tensors)

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            out: np.ndarray = net(_torch_input(spec, x)).numpy()
        return out

    return Prepared(run, f"torch {torch.__version__} (eager, inference_mode)")


def torch_version() -> str:
    import torch

    return str(torch.__version__)
