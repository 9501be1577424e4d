"""The embedded DNS server as the controller's worker thread sees it.

The :class:`~netmgr.dns.DNSServer` lives on the event loop; container
operations run on the worker thread and must not return before a new
sandbox's DNS sockets are open (a container's name resolves before ``run``
returns, and its own first lookup gets an answer). :class:`LoopDNS` hands
each call to the loop and waits for it.
"""

from __future__ import annotations

import asyncio

from netmgr import errors
from netmgr.dns import DNSServer, upstreams_from_resolv_conf

TIMEOUT = 10.0


def parse_upstreams(values: list[str]) -> list[tuple[str, int]] | None:
    """``--dns-upstream IP[:PORT]`` values; None (read resolv.conf) when not given, [] for 'none'."""
    if not values:
        return None
    out = []
    for value in values:
        if value == "none":
            continue
        host, port = value, 53
        if value.count(":") == 1:
            host, _, p = value.partition(":")
            port = int(p)
        elif value.startswith("[") and "]:" in value:
            host, _, p = value[1:].partition("]:")
            port = int(p)
        out.append((host, port))
    return out


def make_server(ctl, upstreams: list[tuple[str, int]] | None, loop: asyncio.AbstractEventLoop) -> DNSServer:
    """A DNS server answering from the controller's service records."""
    source = upstreams if upstreams is not None else (lambda: upstreams_from_resolv_conf())
    return DNSServer(ctl.records.resolve, source, loop=loop)


class LoopDNS:
    """Synchronous attach/detach for the worker thread, run on the loop."""

    def __init__(self, server: DNSServer, loop: asyncio.AbstractEventLoop) -> None:
        self.server = server
        self.loop = loop

    def _wait(self, coro) -> None:
        try:
            asyncio.run_coroutine_threadsafe(coro, self.loop).result(TIMEOUT)
        except TimeoutError:
            raise errors.Unavailable("embedded DNS did not answer in time") from None

    def attach(self, sandbox_id: str, netns_path: str) -> None:
        """Open the sandbox's 127.0.0.11 sockets."""
        self._wait(self.server.add_sandbox(sandbox_id, netns_path))

    def detach(self, sandbox_id: str) -> None:
        """Close them (idempotent)."""
        self._wait(self.server.remove_sandbox(sandbox_id))
