"""Benchmark script: ``python bench/bench_predict.py [--headline|--quick|--grid] ...``.

The benchmark itself lives in the package (``rnninfer.bench``) so that the
``rnninfer bench`` command works from an installed wheel too; this script is
the source-tree entry point and writes into ``bench/results/``.
"""

from rnninfer.bench.command import cli_main

if __name__ == "__main__":
    raise SystemExit(cli_main())
