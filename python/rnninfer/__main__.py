"""``python -m rnninfer``: see :mod:`rnninfer.cli`."""

from .cli import main

raise SystemExit(main())
