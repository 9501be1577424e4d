"""Host ports of published container ports (libnetwork's portallocator).

A binding on every address (host IP "") conflicts with any binding of the
same protocol and port; a binding on one address conflicts with the same
address or with "every address". Host port 0 takes the next free port of
the ephemeral range, going forward from the last one handed out (as
Docker does), so a port just released is not reused at once.
"""

from __future__ import annotations

import dataclasses

from netmgr import errors
from netmgr.model import PortMapping

EPHEMERAL = (32768, 60999)


def _shown_ip(host_ip: str, v6: bool = False) -> str:
    return host_ip or ("::" if v6 else "0.0.0.0")


class PortAllocator:
    """Which (protocol, host address, host port) are taken, and by which endpoint."""

    def __init__(self, ephemeral: tuple[int, int] = EPHEMERAL) -> None:
        self.ephemeral = ephemeral
        self._used: dict[tuple[str, str, int], str] = {}
        self._addrs: dict[tuple[str, int], set[str]] = {}  # (proto, port) -> host addresses using it
        self._next = ephemeral[0]

    def _conflict(self, proto: str, host_ip: str, port: int) -> bool:
        addrs = self._addrs.get((proto, port), set())
        return bool(addrs) if host_ip == "" else (host_ip in addrs or "" in addrs)

    def _take(self, owner: str, proto: str, host_ip: str, port: int) -> None:
        self._used[(proto, host_ip, port)] = owner
        self._addrs.setdefault((proto, port), set()).add(host_ip)

    def _free(self, proto: str, host_ip: str, port: int) -> None:
        self._used.pop((proto, host_ip, port), None)
        addrs = self._addrs.get((proto, port))
        if addrs is not None:
            addrs.discard(host_ip)
            if not addrs:
                del self._addrs[(proto, port)]

    def allocate(self, owner: str, wanted: tuple[PortMapping, ...]) -> tuple[PortMapping, ...]:
        """Reserve every binding (all or none); host port 0 becomes an ephemeral port."""
        taken: list[tuple[str, str, int]] = []
        out = []
        try:
            for m in wanted:
                port = m.host_port or self._ephemeral(m.protocol, m.host_ip)
                if self._conflict(m.protocol, m.host_ip, port):
                    raise errors.AlreadyExists(
                        f"Bind for {_shown_ip(m.host_ip)}:{port} failed: port is already allocated")
                self._take(owner, m.protocol, m.host_ip, port)
                taken.append((m.protocol, m.host_ip, port))
                out.append(dataclasses.replace(m, host_port=port))
        except BaseException:
            for key in taken:
                self._free(*key)
            raise
        return tuple(out)

    def _ephemeral(self, proto: str, host_ip: str) -> int:
        lo, hi = self.ephemeral
        span = hi - lo + 1
        for i in range(span):
            port = lo + (self._next - lo + i) % span
            if not self._conflict(proto, host_ip, port):
                self._next = port + 1 if port < hi else lo
                return port
        raise errors.Unavailable(f"no free host port in {lo}-{hi} for {proto}")

    def mark(self, owner: str, ports: tuple[PortMapping, ...]) -> None:
        """Record bindings already in use (restore from the store)."""
        for m in ports:
            self._take(owner, m.protocol, m.host_ip, m.host_port)

    def release(self, ports: tuple[PortMapping, ...]) -> None:
        """Free bindings (idempotent)."""
        for m in ports:
            self._free(m.protocol, m.host_ip, m.host_port)
