"""``threads=None``: RNNINFER_NUM_THREADS, then OMP_NUM_THREADS, then affinity and cgroup quota."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import rnninfer
from rnninfer.layers import LSTM, Dense, Embedding
from rnninfer.threads import MAX_THREADS, cgroup_cpu_limit, check_threads, default_threads

try:
    AFFINITY = len(os.sched_getaffinity(0))
except AttributeError:  # not Linux
    AFFINITY = os.cpu_count() or 1


@pytest.fixture
def no_cgroup(tmp_path: Path) -> Path:
    return tmp_path / "empty"


def _cgroup_v2(tmp_path: Path, text: str) -> Path:
    root = tmp_path / "v2"
    root.mkdir()
    (root / "cpu.max").write_text(text)
    return root


def _cgroup_v1(tmp_path: Path, quota: int, period: int, sub: str = "cpu") -> Path:
    root = tmp_path / "v1"
    (root / sub).mkdir(parents=True)
    (root / sub / "cpu.cfs_quota_us").write_text(f"{quota}\n")
    (root / sub / "cpu.cfs_period_us").write_text(f"{period}\n")
    return root


def test_own_variable_wins(no_cgroup: Path) -> None:
    env = {"RNNINFER_NUM_THREADS": "3", "OMP_NUM_THREADS": "1"}
    assert default_threads(env, no_cgroup) == 3
    assert default_threads({"RNNINFER_NUM_THREADS": " 7 "}, no_cgroup) == 7


@pytest.mark.parametrize("bad", ["0", "-2", "two", "1.5", "2,2", "1025"])
def test_bad_own_variable_raises_naming_it(bad: str, no_cgroup: Path) -> None:
    with pytest.raises(ValueError, match=f"RNNINFER_NUM_THREADS must be an integer in \\[1, {MAX_THREADS}\\]"):
        default_threads({"RNNINFER_NUM_THREADS": bad, "OMP_NUM_THREADS": "2"}, no_cgroup)


def test_empty_own_variable_counts_as_unset(no_cgroup: Path) -> None:
    assert default_threads({"RNNINFER_NUM_THREADS": "", "OMP_NUM_THREADS": "2"}, no_cgroup) == 2


def test_omp_variable_is_next(tmp_path: Path) -> None:
    quota = _cgroup_v2(tmp_path, "100000 100000\n")  # the quota does not override an explicit setting
    assert default_threads({"OMP_NUM_THREADS": "4"}, quota) == 4
    assert default_threads({"OMP_NUM_THREADS": "6,2"}, quota) == 6  # first nesting level
    assert default_threads({"OMP_NUM_THREADS": "5000"}, quota) == MAX_THREADS


@pytest.mark.parametrize("bad", ["0", "abc", "", " ", "-1", "2.5"])
def test_bad_omp_variable_is_ignored(bad: str, tmp_path: Path) -> None:
    quota = _cgroup_v2(tmp_path, "100000 100000\n")
    assert default_threads({"OMP_NUM_THREADS": bad}, quota) == 1


def test_affinity_mask_without_quota(no_cgroup: Path, tmp_path: Path) -> None:
    assert default_threads({}, no_cgroup) == min(AFFINITY, MAX_THREADS)
    assert default_threads({}, _cgroup_v2(tmp_path, "max 100000\n")) == AFFINITY


@pytest.mark.parametrize(("text", "cpus"), [("50000 100000", 1), ("150000 100000", 1),
                                           ("200000 100000", 2), ("1000000 100000", 10)])
def test_cgroup_v2_quota(text: str, cpus: int, tmp_path: Path) -> None:
    root = _cgroup_v2(tmp_path, text + "\n")
    assert cgroup_cpu_limit(root) == cpus
    assert default_threads({}, root) == min(AFFINITY, cpus)


def test_cgroup_v1_quota(tmp_path: Path) -> None:
    root = _cgroup_v1(tmp_path, 100000, 100000, sub="cpu,cpuacct")
    assert cgroup_cpu_limit(root) == 1
    assert default_threads({}, root) == 1
    assert cgroup_cpu_limit(_cgroup_v1(tmp_path / "b", -1, 100000)) is None


def test_unreadable_cgroup_files_mean_no_quota(tmp_path: Path) -> None:
    assert cgroup_cpu_limit(_cgroup_v2(tmp_path, "garbage\n")) is None
    assert cgroup_cpu_limit(tmp_path / "missing") is None


def test_load_and_build_follow_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    layers = [Embedding(20, 4), LSTM(4), Dense(1)]
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    monkeypatch.delenv("RNNINFER_NUM_THREADS", raising=False)
    model = rnninfer.build(layers, seed=0)
    assert model.threads == 2
    model.save(tmp_path / "m.npz")
    monkeypatch.setenv("RNNINFER_NUM_THREADS", "1")
    assert rnninfer.load(tmp_path / "m.npz").threads == 1
    assert rnninfer.load(tmp_path / "m.npz", threads=3).threads == 3  # an argument beats both
    monkeypatch.setenv("RNNINFER_NUM_THREADS", "lots")
    with pytest.raises(ValueError, match="RNNINFER_NUM_THREADS"):
        rnninfer.load(tmp_path / "m.npz")


@pytest.mark.parametrize(("value", "err"), [(0, ValueError), (1025, ValueError), (True, TypeError),
                                            (2.0, TypeError), ("2", TypeError)])
def test_bad_threads_argument(value: object, err: type[Exception]) -> None:
    with pytest.raises(err, match="threads"):
        check_threads(value)  # type: ignore[arg-type]
