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


# -- shared by scale.py, ports.py and dns.py ------------------------------------------------------


def write_json(path: str | None, results: dict) -> None:
    """``--json FILE``: every sample and summary to FILE (nothing without one)."""
    if not path:
        return
    import json

    with open(path, "w") as f:
        json.dump(results, f, indent=1)
    log(f"bench: wrote {path}")


def log(msg: str) -> None:
    """Progress and diagnostics go to stderr (the report goes to stdout)."""
    print(msg, file=sys.stderr, flush=True)


def percentile(samples: Iterable[float], q: float) -> float:
    """Nearest-rank percentile: the ceil(q·n)-th smallest sample (q in (0, 1])."""
    ordered = sorted(samples)
    if not ordered:
        raise ValueError("percentile of no samples")
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


def summary99(samples: list[float]) -> dict:
    """:func:`summary` plus the nearest-rank p99."""
    return summary(samples) | {"p99_ms": percentile(samples, 0.99)}


def window(samples: list[float], point: int, width: int) -> tuple[int, int]:
    """The 1-based inclusive range of ``width`` consecutive samples centred on sample ``point``.

    Clamped to the list: the window of the 1st sample is samples 1..width.
    """
    n = len(samples)
    width = max(1, min(width, n))
    lo = max(1, point - width // 2 + (1 if width % 2 == 0 else 0))
    lo = min(lo, n - width + 1)
    return lo, lo + width - 1


def daemon_facts(pid: int | None) -> dict:
    """Open file descriptors, threads and resident memory of a process (the daemon), best effort."""
    out: dict = {}
    if not pid:
        return out
    try:
        out["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    out["rss_mib"] = round(int(line.split()[1]) / 1024, 1)
                elif line.startswith("Threads:"):
                    out["threads"] = int(line.split()[1])
        with open(f"/proc/{pid}/limits") as f:
            for line in f:
                if line.startswith("Max open files"):
                    out["nofile_soft"] = line.split()[3]
    except OSError:
        pass
    return out


def mem_available_mib() -> int | None:
    """MemAvailable of the machine, in MiB."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) // 1024
    except OSError:
        pass
    return None


def remove_containers(client, refs: list[str], chunk: int = 50) -> tuple[float, list[str]]:
    """``ContainerRemove(force)`` of ``refs`` in chunks; (seconds taken, failure messages)."""
    from netmgr.proto.gen import netmgr_v1_netmgr_pb2 as pb

    failures: list[str] = []
    start = time.perf_counter()
    for i in range(0, len(refs), chunk):
        resp = client.call("ContainerRemove", pb.Refs(refs=refs[i:i + chunk], force=True), timeout=600)
        failures += [f"{f.ref}: {f.message}" for f in resp.failures]
    return time.perf_counter() - start, failures


def run_on_simhost(prefix: str, body: Callable, results: dict, fast_down: bool = False) -> int:
    """Run ``body(host, base_dir)`` on a fresh simulated host and always remove the host.

    The host is ``netmgr.labhost.SimHost`` named ``<prefix>-<6 hex>`` (namespace
    ``/run/netns/<name>``, state under ``/tmp/nmb-<8 hex>/``). ``SimHost.down()`` runs
    in ``finally``, also on Ctrl-C and SIGTERM; a second Ctrl-C during the cleanup is
    ignored. With ``fast_down`` the daemon is stopped first, so ``down()`` removes the
    containers without it: it kills the shims, removes the cgroups, unmounts the
    sandboxes and deletes the host namespace (every veth and bridge with it), in
    seconds, where removing 1000 containers one by one through the daemon takes a
    minute (and ``down()``'s own ``rm -f`` gives up after 60 s). Returns 0 when
    ``body`` returned, 1 when it raised (the error goes to ``results["problems"]`` and
    the daemon log's tail to stderr), 130 when interrupted.
    Only this process cleans up: a forked child that receives SIGTERM exits at once.
    """
    import shutil
    import signal
    import traceback

    from netmgr.labhost import SimHost

    main_pid = os.getpid()

    def on_sigterm(_sig, _frame):
        if os.getpid() != main_pid:  # never unwind into the cleanup in a forked child
            os._exit(1)
        raise KeyboardInterrupt

    prev_int = signal.getsignal(signal.SIGINT)
    prev_term = signal.signal(signal.SIGTERM, on_sigterm)
    base = f"/tmp/nmb-{rand_tag(8)}"
    host = SimHost(f"{prefix}-{rand_tag()}", base)
    results.setdefault("problems", [])
    rc = 0
    try:
        log(f"bench: simulated host {host.name} (dir {host.dir})")
        host.up()
        body(host, base)
    except Exception as exc:  # noqa: BLE001 - report whatever broke (netmgr errors included), then clean up
        rc = 1
        results["problems"].append(f"{type(exc).__name__}: {exc}")
        log(f"bench: FAILED:\n{traceback.format_exc()}")
        tail = host.daemon_log()[-3000:]
        if tail:
            log(f"--- {host.dir}/netmgrd.log (tail) ---\n{tail}")
    except KeyboardInterrupt:
        rc = 130
        log("bench: interrupted, cleaning up")
    finally:
        if os.getpid() != main_pid:
            os._exit(1)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not abort the cleanup
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            start = time.perf_counter()
            if fast_down:
                host.stop_daemon()
            host.down()
            log(f"bench: simulated host removed ({time.perf_counter() - start:.1f} s)")
        finally:
            from netmgr.runtime import netns

            floor_dir = os.path.join(base, "floor-ns")  # namespace files a killed floor.py may have left
            for name in os.listdir(floor_dir) if os.path.isdir(floor_dir) else []:
                netns.remove(os.path.join(floor_dir, name))
            shutil.rmtree(base, ignore_errors=True)
            signal.signal(signal.SIGINT, prev_int)
            signal.signal(signal.SIGTERM, prev_term)
    return rc


def cpu_times() -> list[int]:
    """The machine's CPU time counters from /proc/stat (user nice system idle iowait irq softirq steal)."""
    with open("/proc/stat") as f:
        return [int(x) for x in f.readline().split()[1:9]]


def cpu_shares(before: list[int], after: list[int]) -> dict:
    """Share of all CPU time between two :func:`cpu_times` readings: busy, system, softirq, idle (0..1)."""
    d = [b - a for a, b in zip(before, after)]
    total = sum(d) or 1
    return {"busy": 1 - (d[3] + d[4]) / total, "user": (d[0] + d[1]) / total, "system": d[2] / total,
            "softirq": (d[5] + d[6]) / total, "idle": (d[3] + d[4]) / total}


def settle(max_seconds: float, softirq_below: float = 0.05, busy_below: float = 0.25) -> dict:
    """Wait (1 s samples, at most ``max_seconds``) until the machine is quiet; what was seen.

    Quiet: one second with less than ``softirq_below`` of the CPU time in (soft)irq and less
    than ``busy_below`` busy. After many interfaces are created the kernel keeps flooding
    their IPv6 multicast (router solicitations, MLD reports) for several seconds.
    """
    samples = []
    start = time.monotonic()
    while True:
        a = cpu_times()
        time.sleep(1.0)
        s = cpu_shares(a, cpu_times())
        samples.append(s)
        if s["softirq"] < softirq_below and s["busy"] < busy_below:
            return {"seconds": time.monotonic() - start, "quiet": True, "samples": samples}
        if time.monotonic() - start >= max_seconds:
            return {"seconds": time.monotonic() - start, "quiet": False, "samples": samples}


def teardown(client, refs: list[str], sample: int) -> dict:
    """Remove the last ``sample`` of ``refs`` through the API (timed); the rest is left to
    ``run_on_simhost(fast_down=True)``."""
    some = refs[-sample:] if sample > 0 else []
    seconds, failures = remove_containers(client, some) if some else (0.0, [])
    return {"removed": len(some), "seconds": seconds, "failures": failures, "left_to_down": len(refs) - len(some)}


# -- shared by overlay.py ---------------------------------------------------------------------------


def sigterm_as_interrupt() -> Callable[[], None]:
    """From now on SIGTERM raises KeyboardInterrupt in this process (so ``finally`` cleans up); returns a restore.

    A forked child that receives SIGTERM exits at once instead of unwinding into the
    parent's cleanup (see "A pyroute2 pitfall" in README.md).
    """
    import signal

    main_pid = os.getpid()

    def on_sigterm(_sig, _frame):
        if os.getpid() != main_pid:
            os._exit(1)
        raise KeyboardInterrupt

    prev = signal.signal(signal.SIGTERM, on_sigterm)
    return lambda: signal.signal(signal.SIGTERM, prev)


class signals_ignored:
    """A ``with`` block during which SIGINT and SIGTERM are ignored: a cleanup a second Ctrl-C must not cut short."""

    def __enter__(self) -> None:
        import signal

        self._prev = (signal.signal(signal.SIGINT, signal.SIG_IGN), signal.signal(signal.SIGTERM, signal.SIG_IGN))

    def __exit__(self, *exc) -> None:
        import signal

        signal.signal(signal.SIGINT, self._prev[0])
        signal.signal(signal.SIGTERM, self._prev[1])


def leftovers(marker: str) -> dict:
    """What still carries ``marker`` in its name: /run/netns entries, processes (command line), /tmp entries."""
    netns_dir = "/run/netns"
    out = {"netns": sorted(n for n in (os.listdir(netns_dir) if os.path.isdir(netns_dir) else []) if marker in n),
           "tmp": sorted(n for n in os.listdir("/tmp") if marker in n), "processes": []}
    for pid in (p for p in os.listdir("/proc") if p.isdigit() and int(p) != os.getpid()):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        if marker in cmdline:
            out["processes"].append(f"{pid} {cmdline[:200]}")
    return out
