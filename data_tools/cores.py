"""How many CPUs this process may use: the default number of `prepare` workers.

`os.cpu_count()` counts the machine's CPUs. A cluster job (Slurm's cpuset), `taskset` or a container's
CPU quota (`docker --cpus`, Kubernetes limits) leaves a process fewer, and a worker per machine CPU
would then crowd them.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Callable

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")


def usable_cores(cgroup_root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> int:
    """The CPUs this process may run on (its affinity mask), capped by its cgroups' CPU quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # no affinity masks (macOS, Windows)
        cores = os.cpu_count() or 1
    quota = cpu_quota(cgroup_root, proc_cgroup)
    return max(1, cores if quota is None else min(cores, quota))


def cpu_quota(cgroup_root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> int | None:
    """The tightest CPU quota of this process's cgroup and its ancestors, in whole CPUs (rounded
    up); None when there is none, or no cgroups. Reads cgroup v2 (`cpu.max`) and v1
    (`cpu.cfs_quota_us` / `cpu.cfs_period_us`)."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    limits: list[int] = []
    for line in lines:  # "0::/path" (v2) or "4:cpu,cpuacct:/path" (v1)
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":
            pure_v2 = (cgroup_root / "cgroup.controllers").exists()  # else v2 beside v1 ("hybrid")
            limits += _limits_up_to(cgroup_root if pure_v2 else cgroup_root / "unified", path, _v2_limit)
        elif "cpu" in controllers.split(","):
            mount = cgroup_root / controllers
            limits += _limits_up_to(mount if mount.is_dir() else cgroup_root / "cpu", path, _v1_limit)
    return min(limits) if limits else None


def _limits_up_to(mount: Path, path: str, read: Callable[[Path], int | None]) -> list[int]:
    """The limits of the group at `path` under `mount` and of each group above it. Inside a
    container the path may name a group of the host that the container does not see: the mount's
    root (then the container's own group) is read all the same."""
    group = mount / path.strip("/")
    limits = [read(g) for g in [group, *group.parents] if g.is_relative_to(mount)]
    return [limit for limit in limits if limit is not None]


def _fields(path: Path) -> list[int | str]:
    try:
        return [int(f) if f.lstrip("-").isdigit() else f for f in path.read_text().split()]
    except OSError:
        return []


def _v2_limit(group: Path) -> int | None:
    fields = _fields(group / "cpu.max")  # "max 100000", or "150000 100000": 1.5 CPUs
    if len(fields) != 2 or not all(isinstance(f, int) and f > 0 for f in fields):
        return None
    return math.ceil(fields[0] / fields[1])


def _v1_limit(group: Path) -> int | None:
    quota, period = _fields(group / "cpu.cfs_quota_us"), _fields(group / "cpu.cfs_period_us")
    if len(quota) != 1 or len(period) != 1 or not all(isinstance(f, int) and f > 0 for f in quota + period):
        return None  # -1: no quota
    return math.ceil(quota[0] / period[0])
