"""``python -m rnninfer.bench``: see :mod:`rnninfer.bench.command`."""

from .command import cli_main

raise SystemExit(cli_main())
