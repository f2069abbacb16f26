"""Run-time ISA choice: the default, RNNINFER_ISA, and refusal of what the CPU cannot run."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from rnninfer import _core

ALL = ("scalar", "avx2", "avx512", "avx512_bf16")


def _isa_in_subprocess(value: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, RNNINFER_ISA=value)
    code = "import rnninfer; print(rnninfer.isa())"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=60, check=False)


def test_default_is_the_best_available() -> None:
    env = {k: v for k, v in os.environ.items() if k != "RNNINFER_ISA"}
    r = subprocess.run([sys.executable, "-c", "import rnninfer; print(rnninfer.isa())"], env=env,
                       capture_output=True, text=True, timeout=60, check=True)
    assert r.stdout.strip() == _core._testing.available_isas()[-1]


@pytest.mark.parametrize("isa", _core._testing.available_isas())
def test_env_var_forces_an_available_isa(isa: str) -> None:
    r = _isa_in_subprocess(isa)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == isa


def test_env_var_refuses_unknown_and_unsupported() -> None:
    r = _isa_in_subprocess("sse9")
    assert r.returncode != 0
    assert "unknown ISA 'sse9'" in r.stderr
    for isa in ALL:
        if isa not in _core._testing.available_isas():
            r = _isa_in_subprocess(isa)
            assert r.returncode != 0
            assert isa in r.stderr


def test_features_are_consistent() -> None:
    f = _core._testing.cpu_features()
    isas = _core._testing.available_isas()
    assert ("avx512" in isas) == f["avx512"]
    assert ("avx2" in isas) == f["avx2_fma"]
    assert not f["avx512"] or f["avx2_fma"]  # AVX-512 implies AVX2+FMA here
    # The dot-product table needs AVX-512 plus BF16 and VNNI (when compiled in).
    assert "avx512_bf16" not in isas or (f["avx512"] and f["avx512_bf16"] and f["avx512_vnni"])
