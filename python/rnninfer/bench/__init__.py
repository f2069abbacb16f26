"""Benchmarks of rnninfer against peer frameworks (``rnninfer bench``).

Organised by role; the package's core (``rnninfer.model`` and below) never imports it:

* :mod:`.cases` -- the shapes: the headline case, the grid and the named suites of ``predict`` cases;
* :mod:`.peers` -- the engines compared (rnninfer's variants, PyTorch, ONNX Runtime, OpenVINO,
  Keras), each behind ``prepare(spec, tensors, threads)``, and the correctness check;
* :mod:`.worker` -- the process that hosts one framework at one thread count;
* :mod:`.runner` -- interleaved timing rounds over the workers; :mod:`.machine` -- the machine
  bound and the load on the machine during a run; :mod:`.report` -- verdict, tables, plot, files;
* :mod:`.command` -- the ``rnninfer bench`` options.

The peers are optional and imported only inside worker processes; with none installed
only rnninfer is timed. See ``bench/README.md`` in the source tree for the protocol.
"""

from __future__ import annotations

#: Benchmark suites with a runner of their own, by name -> module in this package.
#: ``rnninfer bench NAME [options]`` calls the module's ``main(argv) -> int`` with the
#: options (``python -m rnninfer.bench.MODULE`` runs it too). A new suite is one module
#: here and one line below.
SUITES: dict[str, str] = {
    "scaling-projection": "scaling",
}
