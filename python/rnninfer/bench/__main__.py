"""``python -m rnninfer.bench``: see :mod:`rnninfer.bench.runner`."""

from .runner import cli_main

raise SystemExit(cli_main())
