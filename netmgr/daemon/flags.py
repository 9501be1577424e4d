"""The daemon's command-line flags, importable without the daemon (the CLI's ``daemon`` subcommand)."""

from __future__ import annotations

import argparse


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """The daemon's flags (shared by ``netmgrd`` and ``netmgr daemon``)."""
    p = parser or argparse.ArgumentParser(prog="netmgrd", description="netmgr daemon")
    p.add_argument("--state-dir", default="/var/lib/netmgr", help="store and container state")
    p.add_argument("--run-dir", default="/run/netmgr", help="sandboxes (netns bind mounts), lock, socket")
    p.add_argument("--socket", default="", help="unix socket path (default RUN_DIR/netmgr.sock)")
    p.add_argument("--cluster-store", default="", help="etcd://HOST:PORT[,HOST:PORT] for global-scope networks")
    p.add_argument("--advertise-addr", default="", help="this host's underlay address (overlay)")
    p.add_argument("--node-name", default="", help="this host's name in the cluster (default: the host name)")
    p.add_argument("--cluster-ttl", type=int, default=10, metavar="SECONDS",
                   help="node lease TTL: a dead host's endpoints vanish from the others within it")
    p.add_argument("--cluster-prefix", default="/netmgr/", help="key prefix in etcd")
    p.add_argument("--plugin-dir", default="/run/netmgr/plugins", help="remote driver plugin sockets and specs")
    p.add_argument("--default-address-pool", action="append", default=[], metavar="base=CIDR,size=N",
                   help="replace the default address pools (repeatable)")
    p.add_argument("--dns-upstream", action="append", default=[], metavar="IP[:PORT]",
                   help="resolvers the embedded DNS forwards to (repeatable; 'none': no forwarding; "
                        "default: the nameservers of /etc/resolv.conf)")
    p.add_argument("--nft-table", default="netmgr", help="name of netmgr's nftables table (inet family)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return p
