"""Shared helpers of the benchmarks in ``labs/bench``: statistics, machine facts, names.

Statistics: the median is :func:`statistics.median`; the 95th percentile is
the *nearest-rank* p95: sort the n samples and take the ``ceil(0.95 * n)``-th
smallest (1-based). With 50 samples that is the 48th smallest, so p95 is
always a value that was actually observed (no interpolation).
"""

from __future__ import annotations

import math
import os
import platform
import secrets
import statistics
import sys
import time
from collections.abc import Callable, Iterable

NS_PER_MS = 1_000_000


def now_ns() -> int:
    """A monotonic high-resolution clock, in nanoseconds."""
    return time.perf_counter_ns()


def ms_since(start_ns: int) -> float:
    """Milliseconds elapsed since ``start_ns`` (from :func:`now_ns`)."""
    return (time.perf_counter_ns() - start_ns) / NS_PER_MS


def timed(fn: Callable[[], object]) -> float:
    """Run ``fn`` once; its wall-clock duration in milliseconds."""
    start = time.perf_counter_ns()
    fn()
    return (time.perf_counter_ns() - start) / NS_PER_MS


def p95(samples: Iterable[float]) -> float:
    """Nearest-rank 95th percentile: the ceil(0.95·n)-th smallest sample."""
    ordered = sorted(samples)
    if not ordered:
        raise ValueError("p95 of no samples")
    rank = math.ceil(0.95 * len(ordered))  # 1-based
    return ordered[rank - 1]


def summary(samples: list[float]) -> dict:
    """n, median, p95, min, max and mean of a list of milliseconds."""
    return {
        "n": len(samples),
        "median_ms": statistics.median(samples),
        "p95_ms": p95(samples),
        "min_ms": min(samples),
        "max_ms": max(samples),
        "mean_ms": statistics.fmean(samples),
    }


def rand_tag(n: int = 6) -> str:
    """``n`` random lowercase hex characters (unique names for everything a run creates)."""
    return secrets.token_hex((n + 1) // 2)[:n]


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (or the machine type)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def machine_facts() -> dict:
    """Kernel, CPUs, Python and pyroute2 versions: what the numbers depend on."""
    try:
        import pyroute2

        pyroute2_version = pyroute2.__version__
    except (ImportError, AttributeError):  # pragma: no cover - reporting only
        pyroute2_version = "unknown"
    return {
        "kernel": platform.release(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)),
        "cpu_model": cpu_model(),
        "python": sys.version.split()[0],
        "python_executable": sys.executable,
        "pyroute2": pyroute2_version,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


PROC_NET_INIT_INO = 0xEFFFFFF9  # the inode of the kernel's init_net (include/linux/proc_ns.h)


def in_initial_netns() -> bool:
    """True if this process is in the machine's own network namespace.

    That is the kernel's initial namespace, or (in a container) PID 1's; reading
    /proc/1/ns/net may be refused even to root (no CAP_SYS_PTRACE), so the
    initial namespace is recognised by its fixed inode number.
    """
    own = os.stat("/proc/self/ns/net").st_ino
    if own == PROC_NET_INIT_INO:
        return True
    try:
        return own == os.stat("/proc/1/ns/net").st_ino
    except OSError:
        return False
