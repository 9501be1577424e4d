"""Embedded DNS (Docker's 127.0.0.11): one asyncio server in the daemon for every sandbox.

* :mod:`netmgr.dns.wire`: the DNS message format (parse queries, build answers).
* :mod:`netmgr.dns.server`: :class:`DNSServer`, which serves each sandbox from
  sockets opened inside its namespace and asks a resolver callback for names.
"""

from netmgr.dns.server import Answer, DNSServer, Resolver, upstreams_from_resolv_conf
from netmgr.dns.wire import ip_to_ptr, ptr_to_ip

__all__ = [
    "Answer",
    "DNSServer",
    "Resolver",
    "ip_to_ptr",
    "ptr_to_ip",
    "upstreams_from_resolv_conf",
]
