"""ONNX Runtime and OpenVINO as benchmark engines, both on the PyTorch module exported to ONNX."""

from __future__ import annotations

import os
import tempfile
import warnings
from typing import Any

import numpy as np

from .base import Prepared, Tensors, check_supported
from .pytorch import torch_module, torch_version


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


def cpu_session(path: str, threads: int) -> Any:
    """An ONNX Runtime CPU session on ``threads`` intra-op threads, run sequentially.

    Every ONNX Runtime engine of the benchmarks is built this way, so that
    they are timed under the same settings.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def prepare_onnxruntime(spec: Any, tensors: Tensors, threads: int, quantize: bool = False) -> Prepared:
    """ONNX Runtime (CPU provider) on the exported PyTorch module (optionally int8-quantised)."""
    check_supported(spec, "onnxruntime")
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
        session = cpu_session(path, threads)
    in_name = session.get_inputs()[0].name
    dtype = np.int64 if spec.input.kind == "tokens" else np.float32

    def run(x: np.ndarray) -> np.ndarray:
        out: np.ndarray = session.run(None, {in_name: np.asarray(x, dtype=dtype)})[0]
        return out

    return Prepared(run, f"onnxruntime {ort.__version__} (CPU EP; torch {torch_version()} {note})")


def prepare_onnxruntime_int8(spec: Any, tensors: Tensors, threads: int) -> Prepared:
    """ONNX Runtime on the exported module after ``quantize_dynamic`` (int8 weights)."""
    return prepare_onnxruntime(spec, tensors, threads, quantize=True)


def prepare_openvino(spec: Any, tensors: Tensors, threads: int, precision: str = "f32") -> Prepared:
    """OpenVINO (CPU plugin) on the same exported ONNX model; ``precision`` is its inference hint."""
    check_supported(spec, "openvino")
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

    return Prepared(run, f"openvino {ov.__version__} ({precision}; CPU plugin; torch {torch_version()} {note})")


def prepare_openvino_bf16(spec: Any, tensors: Tensors, threads: int) -> Prepared:
    """OpenVINO with bf16 inference precision (its fast path on CPUs with AVX512_BF16/AMX)."""
    return prepare_openvino(spec, tensors, threads, precision="bf16")
