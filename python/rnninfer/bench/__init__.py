"""Benchmarks of ``predict`` against peer frameworks (``rnninfer bench``).

The peers (PyTorch, ONNX Runtime, Keras/TensorFlow) are optional and imported
only inside worker processes; with none installed only rnninfer is timed.
See ``bench/README.md`` in the source tree for the protocol.
"""
