"""The same model, with the same weights, in rnninfer and in the frameworks it is compared with.

Every engine is a :class:`Peer` whose ``prepare(spec, tensors, threads)``
returns a :class:`Prepared` ``(run, version)``: ``run(tokens)`` takes a padded
``(B, T)`` integer array (or ``(B, T, F)`` float features) and returns the
``(B, out)`` float array, converting the input the way a user of that
framework would have to, so the conversion is part of the timed call.

Peers:

* ``rnninfer``: :class:`rnninfer.Model` built from the canonical tensors.
* ``rnninfer-percore``: one single-threaded rnninfer model per thread, each
  taking a slice of the batch side by side (no scheduler: the cores' ceiling).
* ``rnninfer-bf16`` / ``rnninfer-int8``: the same with reduced-precision
  weights (``precision="bf16"`` / ``"int8"``, docs/precision.md), on the
  process's default kernel table.
* ``rnninfer-bf16-widen`` / ``rnninfer-int8-widen``: the same weights on the
  best kernel table that widens them to fp32 in registers (fp32 activations),
  for comparison with the dot-product kernels of ``avx512_bf16``.
* ``pytorch``: ``nn.Embedding`` -> ``nn.LSTM``/``nn.GRU``/``nn.RNN`` (one
  module with ``num_layers`` when the stack is uniform, else one per layer) ->
  final hidden state of the top layer (``h_n[-num_directions:]``) ->
  ``nn.Linear`` head; eager, under ``torch.inference_mode()``, with
  ``torch.set_num_threads(threads)``.
* ``onnxruntime``: that module exported with ``torch.onnx.export`` (the legacy
  TorchScript exporter, ``dynamo=False``: it writes native ONNX ``LSTM``/``GRU``
  ops and needs no ``onnxscript``; the dynamo exporter is tried only if the
  legacy one is gone), run by ``onnxruntime`` on the CPU provider with
  ``intra_op_num_threads=threads``, ``inter_op_num_threads=1``, sequential
  execution, all graph optimisations.
* ``onnxruntime-int8``: that ONNX file through
  ``onnxruntime.quantization.quantize_dynamic`` (int8 weights, activations
  quantised per call by ORT), same session options.
* ``keras-xla`` / ``keras-eager``: a ``keras.Sequential`` (Keras 3, TensorFlow
  backend) with the weights set from the canonical tensors, called through
  ``tf.function(jit_compile=True)`` and as plain ``model(x, training=False)``.
  TensorFlow's thread pools can only be sized before it initialises, so
  :func:`setup_process` must run first in a fresh process.

Frameworks are imported lazily, inside ``prepare``; :meth:`Peer.missing` tells
whether one is installed without importing it. :func:`check` compares an
engine's output with the float64 oracle :func:`rnninfer.reference.run_sequence`
so that a wrong model is never timed.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import tempfile
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

RunFn = Callable[[np.ndarray], np.ndarray]
Tensors = Mapping[str, np.ndarray]
#: Largest absolute difference from the float64 reference accepted before timing.
CHECK_TOLERANCE = 1e-4
#: The same check for engines with reduced-precision weights: a sanity bound
#: that catches a wrong model, not a statement of their accuracy (that is
#: measured and documented in docs/precision.md).
REDUCED_CHECK_TOLERANCE = 5e-2
_HEAD_ACTIVATIONS = ("linear", "relu", "tanh", "sigmoid", "softmax")


class Prepared(NamedTuple):
    """A ready-to-time engine: ``run(x) -> (B, out)``, a version string and, for
    rnninfer, how its scheduler ran the calls (cumulative counts)."""

    run: RunFn
    version: str
    schedule: Callable[[], dict[str, int]] | None = None


class Unsupported(NotImplementedError):
    """The peer framework cannot express this model (the message says why)."""


class WrongOutput(AssertionError):
    """An engine's output differs from the float64 reference beyond tolerance."""


@dataclass(frozen=True)
class Peer:
    """One engine under comparison.

    Attributes:
        name: the row label in results (``pytorch``, ``keras-xla`` ...).
        group: engines of one group share a worker process (one framework).
        modules: importable modules the engine needs.
        prepare: ``prepare(spec, tensors, threads) -> Prepared``.
        tolerance: largest accepted difference from the float64 reference.
    """

    name: str
    group: str
    modules: tuple[str, ...]
    prepare: Callable[[Any, Tensors, int], Prepared]
    tolerance: float = CHECK_TOLERANCE

    def missing(self) -> list[str]:
        """Modules this peer needs that are not installed (nothing is imported)."""
        out = []
        for m in self.modules:
            try:
                if importlib.util.find_spec(m) is None:
                    out.append(m)
            except (ImportError, ValueError):
                out.append(m)
        return out


# ---- process setup -----------------------------------------------------------------------
def thread_env(threads: int) -> dict[str, str]:
    """Environment variables that pin every common thread pool to ``threads``."""
    n = str(threads)
    return {
        "OMP_NUM_THREADS": n,
        "MKL_NUM_THREADS": n,
        "OPENBLAS_NUM_THREADS": n,
        "TF_NUM_INTRAOP_THREADS": n,
        "TF_NUM_INTEROP_THREADS": "1",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "KERAS_BACKEND": "tensorflow",
    }


def setup_process(group: str, threads: int) -> None:
    """Size the thread pools of ``group``'s framework; call first in a fresh process."""
    os.environ.update(thread_env(threads))
    if group == "torch":
        import torch

        torch.set_num_threads(threads)
        # Raises once the inter-op pool has started: harmless for eager inference.
        with contextlib.suppress(RuntimeError):
            torch.set_num_interop_threads(1)
    elif group == "keras":
        _configure_tensorflow(threads)


def _configure_tensorflow(threads: int) -> None:
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError as e:
        if tf.config.threading.get_intra_op_parallelism_threads() != threads:
            raise RuntimeError(
                f"TensorFlow is already initialised with "
                f"{tf.config.threading.get_intra_op_parallelism_threads()} intra-op threads; "
                f"run each thread count in its own process ({e})"
            ) from e


# ---- what the peers can express ----------------------------------------------------------------
def _check_supported(spec: Any, who: str) -> None:
    """Raise :class:`Unsupported` listing what ``who`` cannot run in ``spec``."""
    problems = []
    inp = spec.input
    if inp.kind == "tokens" and inp.mask_zero:
        problems.append("mask_zero embedding")
    if inp.kind == "features" and inp.mask_value is not None:
        problems.append("feature masking")
    for i, layer in enumerate(spec.layers):
        where = f"layer {i} ({layer.cell})"
        if layer.residual_from is not None:
            problems.append(f"{where}: residual link")
        if layer.direction == "backward":
            problems.append(f"{where}: backward-only direction")
        if layer.num_directions == 2 and layer.merge != "concat":
            problems.append(f"{where}: merge {layer.merge!r}")
        if who in ("pytorch", "onnxruntime"):
            if layer.cell == "rnn":
                if layer.activation not in ("tanh", "relu"):
                    problems.append(f"{where}: activation {layer.activation!r}")
            elif (layer.activation, layer.recurrent_activation) != ("tanh", "sigmoid"):
                problems.append(f"{where}: activations {layer.activation}/{layer.recurrent_activation}")
            if layer.cell == "gru" and not layer.reset_after:
                problems.append(f"{where}: reset_after=False")
        if who == "keras":
            if layer.proj_size:
                problems.append(f"{where}: proj_size")
            if layer.cell == "gru" and not layer.reset_after:
                problems.append(f"{where}: reset_after=False (not wired in the bench)")
    if spec.readout not in ("last", "sequence"):
        problems.append(f"readout {spec.readout!r}")
    for j, dense in enumerate(spec.head):
        if dense.activation not in _HEAD_ACTIVATIONS:
            problems.append(f"head {j}: activation {dense.activation!r}")
    if problems:
        raise Unsupported(f"{who} peer cannot express: " + "; ".join(problems))


# ---- rnninfer -----------------------------------------------------------------------------
def prepare_rnninfer(spec: Any, tensors: Tensors, threads: int, precision: str = "fp32",
                     isa: str | None = None) -> Prepared:
    """rnninfer's own engine, built from the canonical tensors, weights in ``precision``."""
    import rnninfer
    from rnninfer import _core
    from rnninfer.model import Model

    model = Model(spec, dict(tensors), threads=threads, precision=precision, isa=isa)

    def run(x: np.ndarray) -> np.ndarray:
        return model.predict(x)

    return Prepared(run, f"rnninfer {rnninfer.__version__} ({model.isa}, {precision} weights, "
                         f"{model.recurrent_activations} activations)",
                    lambda: _core._testing.schedule_stats(model._engine))


def prepare_rnninfer_percore(spec: Any, tensors: Tensors, threads: int) -> Prepared:
    """One single-threaded rnninfer model per thread, each taking a contiguous
    slice of the batch, called side by side from Python threads: what the cores
    deliver with no scheduler at all. For batches its thread speedup is the
    machine's ceiling for batch shards in the same run (two busy cores slow
    each other); a batch of one runs on one core."""
    from concurrent.futures import ThreadPoolExecutor

    import rnninfer
    from rnninfer.model import Model

    models = [Model(spec, dict(tensors), threads=1) for _ in range(threads)]
    # Workers stay alive with the worker process, like an engine's own pool.
    pool = ThreadPoolExecutor(max_workers=threads - 1) if threads > 1 else None

    def run(x: np.ndarray) -> np.ndarray:
        parts = [p for p in np.array_split(x, threads, axis=0) if len(p)]
        if not parts:  # an empty batch: the model's own error
            return models[0].predict(x)
        futures = [pool.submit(m.predict, p) for m, p in zip(models[1:], parts[1:])] if pool else []
        first = models[0].predict(parts[0])
        return np.concatenate([first, *(f.result() for f in futures)], axis=0)

    return Prepared(run, f"rnninfer {rnninfer.__version__} ({models[0].isa}, one 1-thread model per core, "
                         "batch split evenly, no scheduler)")


#: Kernel tables whose recurrent steps use dot-product instructions on reduced activations.
DOT_PRODUCT_TABLES = ("avx512_bf16",)


def _widen_isa() -> str:
    """The best kernel table that widens reduced weights to fp32 in registers."""
    from rnninfer import _core

    return [i for i in _core._testing.available_isas() if i not in DOT_PRODUCT_TABLES][-1]


def prepare_rnninfer_bf16(spec: Any, tensors: Tensors, threads: int) -> Prepared:
    """rnninfer with bf16 weights."""
    return prepare_rnninfer(spec, tensors, threads, "bf16")


def prepare_rnninfer_int8(spec: Any, tensors: Tensors, threads: int) -> Prepared:
    """rnninfer with int8 weights."""
    return prepare_rnninfer(spec, tensors, threads, "int8")


def prepare_rnninfer_bf16_widen(spec: Any, tensors: Tensors, threads: int) -> Prepared:
    """rnninfer with bf16 weights widened in registers (fp32 activations)."""
    return prepare_rnninfer(spec, tensors, threads, "bf16", _widen_isa())


def prepare_rnninfer_int8_widen(spec: Any, tensors: Tensors, threads: int) -> Prepared:
    """rnninfer with int8 weights widened in registers (fp32 activations)."""
    return prepare_rnninfer(spec, tensors, threads, "int8", _widen_isa())


# ---- PyTorch ------------------------------------------------------------------------------
def _uniform(spec: Any) -> bool:
    """True when one ``nn.LSTM(num_layers=L)`` can hold the whole stack."""
    first = spec.layers[0]
    keys = ("cell", "units", "direction", "bias", "proj_size", "activation")
    return all(all(getattr(x, k) == getattr(first, k) for k in keys) for x in spec.layers)


def torch_module(spec: Any, tensors: Tensors) -> Any:
    """The PyTorch ``nn.Module`` for ``spec``, in eval mode, weights from ``tensors``."""
    _check_supported(spec, "pytorch")
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


# ---- ONNX Runtime ---------------------------------------------------------------------------
def export_onnx(spec: Any, tensors: Tensors, path: str) -> str:
    """Export the PyTorch module to ``path``; returns a note naming the exporter used.

    The batch and time axes are dynamic. torch 2.9+ defaults to the dynamo
    exporter, which needs ``onnxscript`` and decomposes recurrent layers; the
    legacy TorchScript exporter (``dynamo=False``) writes native ``LSTM``/``GRU``
    nodes that ONNX Runtime runs with its own kernels, so it is preferred.
    """
    import torch

    net = torch_module(spec, tensors)
    if spec.input.kind == "tokens":
        dummy = torch.zeros((2, 5), dtype=torch.int64)
    else:
        dummy = torch.zeros((2, 5, spec.input.features), dtype=torch.float32)
    kwargs: dict[str, Any] = {
        "input_names": ["x"], "output_names": ["y"],
        "dynamic_axes": {"x": {0: "batch", 1: "time"}, "y": {0: "batch"}},
    }
    if spec.readout == "sequence":
        kwargs["dynamic_axes"]["y"][1] = "time"
    errors = []
    for dynamo, opset in ((False, 17), (True, 18)):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(net, (dummy,), path, dynamo=dynamo, opset_version=opset, **kwargs)
            return f"{'dynamo' if dynamo else 'legacy TorchScript'} exporter, opset {opset}"
        except Exception as e:  # noqa: BLE001 (any framework failure is reported, not fatal)
            errors.append(f"dynamo={dynamo}: {type(e).__name__}: {e}")
    raise RuntimeError("torch.onnx.export failed: " + " | ".join(errors))


def prepare_onnxruntime(spec: Any, tensors: Tensors, threads: int, quantize: bool = False) -> Prepared:
    """ONNX Runtime (CPU provider) on the exported PyTorch module (optionally int8-quantised)."""
    _check_supported(spec, "onnxruntime")
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="rnninfer-bench-onnx-") as tmp:
        path = os.path.join(tmp, "model.onnx")
        note = export_onnx(spec, tensors, path)
        if quantize:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            qpath = os.path.join(tmp, "model.int8.onnx")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                quantize_dynamic(path, qpath, weight_type=QuantType.QInt8)
            path, note = qpath, note + ", quantize_dynamic int8"
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    in_name = session.get_inputs()[0].name
    dtype = np.int64 if spec.input.kind == "tokens" else np.float32

    def run(x: np.ndarray) -> np.ndarray:
        out: np.ndarray = session.run(None, {in_name: np.asarray(x, dtype=dtype)})[0]
        return out

    return Prepared(run, f"onnxruntime {ort.__version__} (CPU EP; torch {_torch_version()} {note})")


def prepare_onnxruntime_int8(spec: Any, tensors: Tensors, threads: int) -> Prepared:
    """ONNX Runtime on the exported module after ``quantize_dynamic`` (int8 weights)."""
    return prepare_onnxruntime(spec, tensors, threads, quantize=True)


def prepare_openvino(spec: Any, tensors: Tensors, threads: int, precision: str = "f32") -> Prepared:
    """OpenVINO (CPU plugin) on the same exported ONNX model; ``precision`` is its inference hint."""
    _check_supported(spec, "openvino")
    import openvino as ov

    core = ov.Core()
    with tempfile.TemporaryDirectory(prefix="rnninfer-bench-ov-") as tmp:
        path = os.path.join(tmp, "model.onnx")
        note = export_onnx(spec, tensors, path)
        compiled = core.compile_model(core.read_model(path), "CPU", {
            "INFERENCE_PRECISION_HINT": precision,
            "INFERENCE_NUM_THREADS": threads,
            "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": 1,
        })
    request = compiled.create_infer_request()
    dtype = np.int64 if spec.input.kind == "tokens" else np.float32

    def run(x: np.ndarray) -> np.ndarray:
        request.infer({0: np.asarray(x, dtype=dtype)})
        return np.array(request.get_output_tensor(0).data, copy=True)

    return Prepared(run, f"openvino {ov.__version__} ({precision}; CPU plugin; torch {_torch_version()} {note})")


def prepare_openvino_bf16(spec: Any, tensors: Tensors, threads: int) -> Prepared:
    """OpenVINO with bf16 inference precision (its fast path on CPUs with AVX512_BF16/AMX)."""
    return prepare_openvino(spec, tensors, threads, precision="bf16")


def _torch_version() -> str:
    import torch

    return str(torch.__version__)


# ---- Keras / TensorFlow ----------------------------------------------------------------------
def _gate_blocks(w: np.ndarray, order: Sequence[int], gates: int) -> np.ndarray:
    """Reorder the gate blocks along axis 0 of a canonical ``(G*H, ...)`` tensor."""
    blocks = np.split(np.asarray(w), gates, axis=0)
    return np.concatenate([blocks[i] for i in order], axis=0)


def _keras_cell_weights(layer: Any, tensors: Tensors, pre: str) -> list[np.ndarray]:
    """Keras weights of one direction from canonical tensors (transpose, gate reorder)."""
    gates = {"lstm": 4, "gru": 3, "rnn": 1}[layer.cell]
    # Keras LSTM gates i,f,c,o = canonical i,f,g,o; Keras GRU z,r,h vs canonical r,z,n.
    order = (1, 0, 2) if layer.cell == "gru" else tuple(range(gates))
    w_ih = _gate_blocks(tensors[pre + "w_ih"], order, gates)
    w_hh = _gate_blocks(tensors[pre + "w_hh"], order, gates)
    out = [w_ih.T.copy(), w_hh.T.copy()]
    if layer.bias:
        b_ih = _gate_blocks(tensors[pre + "b_ih"], order, gates)
        b_hh = _gate_blocks(tensors[pre + "b_hh"], order, gates)
        # GRU reset_after keeps both biases (2, 3H); LSTM/SimpleRNN have one (summed).
        out.append(np.stack([b_ih, b_hh]) if layer.cell == "gru" else b_ih + b_hh)
    return [np.asarray(w, dtype=np.float32) for w in out]


def keras_model(spec: Any, tensors: Tensors) -> Any:
    """A ``keras.Sequential`` computing ``spec`` with weights set from ``tensors``."""
    _check_supported(spec, "keras")
    import keras

    inp = spec.input
    layers: list[Any] = []
    if inp.kind == "tokens":
        layers.append(keras.Input(shape=(None,), dtype="int32"))
        emb = keras.layers.Embedding(inp.vocab_size, inp.embedding_dim)
        layers.append(emb)
    else:
        layers.append(keras.Input(shape=(None, inp.features), dtype="float32"))
    weights: list[tuple[Any, list[np.ndarray]]] = []
    if inp.kind == "tokens":
        weights.append((layers[-1], [np.asarray(tensors["embedding.weight"])]))
    n = len(spec.layers)
    for i, layer in enumerate(spec.layers):
        kw: dict[str, Any] = {
            "return_sequences": i < n - 1 or spec.readout == "sequence",
            "activation": layer.activation, "use_bias": layer.bias,
        }
        if layer.cell == "lstm":
            cell = keras.layers.LSTM(layer.units, recurrent_activation=layer.recurrent_activation, **kw)
        elif layer.cell == "gru":
            cell = keras.layers.GRU(layer.units, recurrent_activation=layer.recurrent_activation,
                                    reset_after=True, **kw)
        else:
            cell = keras.layers.SimpleRNN(layer.units, **kw)
        w = _keras_cell_weights(layer, tensors, f"layers.{i}.fwd.")
        if layer.num_directions == 2:
            cell = keras.layers.Bidirectional(cell, merge_mode="concat")
            w += _keras_cell_weights(layer, tensors, f"layers.{i}.bwd.")
        layers.append(cell)
        weights.append((cell, w))
    for j, dense in enumerate(spec.head):
        d = keras.layers.Dense(dense.units, activation=dense.activation, use_bias=dense.bias)
        w = [np.asarray(tensors[f"head.{j}.weight"]).T.copy()]
        if dense.bias:
            w.append(np.asarray(tensors[f"head.{j}.bias"]))
        layers.append(d)
        weights.append((d, w))
    model = keras.Sequential(layers)
    for lay, w in weights:
        lay.set_weights(w)
    return model


def _keras_input(spec: Any, x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.int32 if spec.input.kind == "tokens" else np.float32)


def _keras_version() -> str:
    import keras
    import tensorflow as tf

    return f"keras {keras.__version__} / tensorflow {tf.__version__}"


def prepare_keras_xla(spec: Any, tensors: Tensors, threads: int) -> Prepared:
    """Keras model called through ``tf.function(jit_compile=True)`` (XLA)."""
    _configure_tensorflow(threads)
    import tensorflow as tf

    model = keras_model(spec, tensors)
    fn = tf.function(lambda x: model(x, training=False), jit_compile=True, reduce_retracing=False)

    def run(x: np.ndarray) -> np.ndarray:
        out: np.ndarray = fn(tf.constant(_keras_input(spec, x))).numpy()
        return out

    return Prepared(run, f"{_keras_version()} (tf.function jit_compile=True)")


def prepare_keras_eager(spec: Any, tensors: Tensors, threads: int) -> Prepared:
    """Keras model called eagerly, ``model(x, training=False)``."""
    _configure_tensorflow(threads)
    model = keras_model(spec, tensors)

    def run(x: np.ndarray) -> np.ndarray:
        out: np.ndarray = np.asarray(model(_keras_input(spec, x), training=False))
        return out

    return Prepared(run, f"{_keras_version()} (eager model(x, training=False))")


# ---- registry ------------------------------------------------------------------------------
PEERS: tuple[Peer, ...] = (
    Peer("rnninfer", "rnninfer", ("rnninfer",), prepare_rnninfer),
    Peer("rnninfer-percore", "rnninfer", ("rnninfer",), prepare_rnninfer_percore),
    Peer("rnninfer-bf16", "rnninfer", ("rnninfer",), prepare_rnninfer_bf16, REDUCED_CHECK_TOLERANCE),
    Peer("rnninfer-int8", "rnninfer", ("rnninfer",), prepare_rnninfer_int8, REDUCED_CHECK_TOLERANCE),
    Peer("rnninfer-bf16-widen", "rnninfer", ("rnninfer",), prepare_rnninfer_bf16_widen,
         REDUCED_CHECK_TOLERANCE),
    Peer("rnninfer-int8-widen", "rnninfer", ("rnninfer",), prepare_rnninfer_int8_widen,
         REDUCED_CHECK_TOLERANCE),
    Peer("pytorch", "torch", ("torch",), prepare_pytorch),
    Peer("onnxruntime", "onnxruntime", ("onnxruntime", "onnx", "torch"), prepare_onnxruntime),
    Peer("onnxruntime-int8", "onnxruntime", ("onnxruntime", "onnx", "torch"), prepare_onnxruntime_int8,
         REDUCED_CHECK_TOLERANCE),
    Peer("openvino", "openvino", ("openvino", "onnx", "torch"), prepare_openvino),
    Peer("openvino-bf16", "openvino", ("openvino", "onnx", "torch"), prepare_openvino_bf16,
         REDUCED_CHECK_TOLERANCE),
    Peer("keras-xla", "keras", ("keras", "tensorflow"), prepare_keras_xla),
    Peer("keras-eager", "keras", ("keras", "tensorflow"), prepare_keras_eager),
)
PEER_NAMES = tuple(p.name for p in PEERS)


def get(name: str) -> Peer:
    """The peer called ``name``."""
    for p in PEERS:
        if p.name == name:
            return p
    raise KeyError(f"unknown peer {name!r}; known: {', '.join(PEER_NAMES)}")


# ---- correctness ------------------------------------------------------------------------------
def reference_outputs(spec: Any, tensors: Tensors, x: np.ndarray, rows: Sequence[int] | None = None) -> np.ndarray:
    """Float64 oracle outputs for the rows ``rows`` (default all) of the padded batch ``x``."""
    from rnninfer.reference import run_sequence

    t = dict(tensors)
    idx = range(len(x)) if rows is None else rows
    return np.stack([run_sequence(spec, t, x[i]) for i in idx])


def max_abs_error(out: np.ndarray, ref: np.ndarray) -> float:
    """Largest absolute difference; ``inf`` on a shape mismatch or non-finite output."""
    out = np.asarray(out, dtype=np.float64)
    if out.shape != ref.shape or not np.all(np.isfinite(out)):
        return float("inf")
    return float(np.max(np.abs(out - ref))) if out.size else 0.0


def check(
    run: RunFn, spec: Any, tensors: Tensors, x: np.ndarray, *,
    rows: Sequence[int] | None = None, tol: float = CHECK_TOLERANCE, ref: np.ndarray | None = None,
) -> float:
    """Run ``x`` and compare rows ``rows`` with the reference; returns the max error.

    Raises:
        WrongOutput: when the error exceeds ``tol`` (or shapes differ).
    """
    out = np.asarray(run(x))
    if ref is None:
        ref = reference_outputs(spec, tensors, x, rows)
    got = out if rows is None else out[list(rows)]
    err = max_abs_error(got, ref)
    if not err <= tol:
        raise WrongOutput(f"max |output - reference| = {err:.3g} > {tol:g} (shape {out.shape})")
    return err


def verify(peer: Peer, spec: Any, tensors: Tensors, threads: int = 1, seed: int = 0) -> float:
    """Prepare ``peer`` in this process and check it on a small random batch."""
    prepared = peer.prepare(spec, tensors, threads)
    return check(prepared.run, spec, tensors, sample_input(spec, 2, 9, seed), tol=peer.tolerance)


def sample_input(spec: Any, batch: int, T: int, seed: int) -> np.ndarray:
    """A random padded input for ``spec``: ``(batch, T)`` int64 ids or ``(batch, T, F)`` float32."""
    rng = np.random.default_rng(seed)
    if spec.input.kind == "tokens":
        return rng.integers(0, spec.input.vocab_size, size=(batch, T), dtype=np.int64)
    return rng.standard_normal((batch, T, spec.input.features)).astype(np.float32)
