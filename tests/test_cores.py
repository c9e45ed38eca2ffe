"""The default number of `prepare` workers: the CPUs this process may use, not the machine's."""

import importlib
import os

import pytest

from data_tools import PrepareOptions, prepare
from data_tools.cores import cpu_quota, usable_cores

prepare_module = importlib.import_module("data_tools.prepare")  # (the package exports the function)


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_cgroup_v2_quota_is_the_tightest_of_the_group_and_its_parents(tmp_path):
    root = tmp_path / "cgroup"
    _write(root / "cgroup.controllers", "cpu memory\n")
    _write(root / "cpu.max", "max 100000\n")
    _write(root / "job" / "cpu.max", "250000 100000\n")  # 2.5 CPUs: rounded up to 3
    _write(root / "job" / "step" / "cpu.max", "max 100000\n")
    _write(tmp_path / "self", "0::/job/step\n")
    assert cpu_quota(root, tmp_path / "self") == 3
    _write(root / "job" / "step" / "cpu.max", "100000 100000\n")
    assert cpu_quota(root, tmp_path / "self") == 1
    _write(tmp_path / "self", "0::/\n")  # a container's own namespace: its root group
    assert cpu_quota(root, tmp_path / "self") is None


def test_cgroup_v1_quota_and_a_host_path_the_container_does_not_see(tmp_path):
    root = tmp_path / "cgroup"
    _write(root / "cpu,cpuacct" / "cpu.cfs_quota_us", "-1\n")
    _write(root / "cpu,cpuacct" / "cpu.cfs_period_us", "100000\n")
    _write(tmp_path / "self", "12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n0::/\n")
    assert cpu_quota(root, tmp_path / "self") is None
    _write(root / "cpu,cpuacct" / "cpu.cfs_quota_us", "150000\n")  # the container's group, mounted as root
    assert cpu_quota(root, tmp_path / "self") == 2
    assert cpu_quota(root, tmp_path / "missing") is None  # no cgroups at all


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="no CPU affinity on this platform")
def test_usable_cores_is_the_affinity_capped_by_the_quota(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5})
    root = tmp_path / "cgroup"
    _write(root / "cgroup.controllers", "cpu\n")
    _write(tmp_path / "self", "0::/\n")
    assert usable_cores(root, tmp_path / "self") == 6
    _write(root / "cpu.max", "400000 100000\n")
    assert usable_cores(root, tmp_path / "self") == 4
    _write(root / "cpu.max", "5000 100000\n")  # a twentieth of a CPU still runs one worker
    assert usable_cores(root, tmp_path / "self") == 1


def test_prepare_starts_a_worker_per_usable_cpu_by_default(demo_corpus, tmp_path, monkeypatch):
    options = PrepareOptions(frames=8, size=16)
    monkeypatch.setattr(prepare_module, "usable_cores", lambda: 1)
    one = prepare(demo_corpus, tmp_path / "one", options, progress=False)
    monkeypatch.setattr(prepare_module, "usable_cores", lambda: 2)
    two = prepare(demo_corpus, tmp_path / "two", options, progress=False)
    assert (one.workers, two.workers) == (1, 2)
    assert one.text().splitlines()[-2].endswith(", 1 worker") and two.text().splitlines()[-2].endswith(", 2 workers")
    explicit = prepare(demo_corpus, tmp_path / "explicit", PrepareOptions(frames=8, size=16, workers=1), progress=False)
    assert explicit.workers == 1
