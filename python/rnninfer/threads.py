"""How many threads a model uses when ``threads=None``.

Several worker processes often share one machine (a process pool, Ray or
Dask workers, containers with a CPU quota). Each must use its share of the
cores, not all of them, or the workers oversubscribe the machine and every
call slows down. The rule, first match wins:

1. ``RNNINFER_NUM_THREADS``: a positive integer; anything else raises
   ``ValueError`` (it is rnninfer's own setting, so a typo must not pass).
2. ``OMP_NUM_THREADS``: what Ray, Dask and most schedulers set per worker.
   Its first entry is used (OpenMP allows a per-nesting-level list such as
   ``"4,2"``); a value that is not a positive integer is ignored, as OpenMP
   runtimes ignore it, and the rule goes on.
3. The CPUs of the process's affinity mask, capped by the cgroup CPU quota
   (cgroup v2 ``cpu.max``, or v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``)
   rounded down, at least 1.

Explicit values are capped at :data:`MAX_THREADS`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

MAX_THREADS = 1024
CGROUP_ROOT = Path("/sys/fs/cgroup")

__all__ = ["CGROUP_ROOT", "MAX_THREADS", "check_threads", "default_threads"]


def _positive_int(text: str) -> int | None:
    text = text.strip()
    if not text.isdigit():  # also refuses signs, blanks and fractions
        return None
    n = int(text)
    return n if n >= 1 else None


def cgroup_cpu_limit(root: Path = CGROUP_ROOT) -> int | None:
    """CPUs allowed by the cgroup CPU quota under ``root`` (``None``: no quota found)."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        if quota == "max":
            return None
        return max(1, int(quota) // int(period))
    except (OSError, ValueError):
        pass
    for sub in ("cpu", "cpu,cpuacct"):
        try:
            q = int((root / sub / "cpu.cfs_quota_us").read_text())
            p = int((root / sub / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            continue
        if q > 0 and p > 0:
            return max(1, q // p)
        return None
    return None


def _affinity_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def default_threads(
    environ: Mapping[str, str] | None = None, cgroup_root: Path = CGROUP_ROOT
) -> int:
    """The thread count ``threads=None`` stands for (see the module docstring).

    Args:
        environ: the environment to read (default ``os.environ``).
        cgroup_root: where the cgroup files are (a parameter for tests).

    Raises:
        ValueError: ``RNNINFER_NUM_THREADS`` is set but not an integer in
            ``[1, 1024]``.
    """
    env = os.environ if environ is None else environ
    own = env.get("RNNINFER_NUM_THREADS", "")
    if own.strip():
        n = _positive_int(own)
        if n is None or n > MAX_THREADS:
            raise ValueError(
                f"RNNINFER_NUM_THREADS must be an integer in [1, {MAX_THREADS}], got {own!r}"
            )
        return n
    omp = _positive_int(env.get("OMP_NUM_THREADS", "").split(",")[0])
    if omp is not None:
        return min(omp, MAX_THREADS)
    n = _affinity_cpus()
    limit = cgroup_cpu_limit(cgroup_root)
    if limit is not None:
        n = min(n, limit)
    return max(1, min(n, MAX_THREADS))


def check_threads(threads: int | None) -> int:
    """A ``threads`` argument as the count to use (``None`` = :func:`default_threads`).

    Raises:
        TypeError: not an integer or ``None``.
        ValueError: outside ``[1, 1024]``.
    """
    if threads is None:
        return default_threads()
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)):
        raise TypeError(f"threads must be an integer or None, got {type(threads).__name__}")
    if not 1 <= int(threads) <= MAX_THREADS:
        raise ValueError(f"threads must be between 1 and {MAX_THREADS}, got {threads}")
    return int(threads)
