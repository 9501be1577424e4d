"""A container's own /etc/hosts, /etc/resolv.conf and /etc/hostname."""

from __future__ import annotations

import os

HOSTS_HEADER = """127.0.0.1\tlocalhost
::1\tlocalhost ip6-localhost ip6-loopback
fe00::0\tip6-localnet
ff00::0\tip6-mcastprefix
ff02::1\tip6-allnodes
ff02::2\tip6-allrouters
"""


def hosts(hostname: str, addresses: list[str]) -> str:
    """Docker's /etc/hosts: the loopback block, then each of the container's addresses."""
    lines = [HOSTS_HEADER.rstrip("\n")]
    for cidr in addresses:
        if cidr:
            lines.append(f"{cidr.split('/')[0]}\t{hostname}")
    return "\n".join(lines) + "\n"


def resolv_conf(host_resolv: str = "/etc/resolv.conf") -> str:
    """The host's resolv.conf without loopback nameservers (unreachable from a sandbox).

    netmgr adds no public fallback resolver (Docker adds 8.8.8.8): a container
    only talks to resolvers the host is configured with.
    """
    try:
        with open(host_resolv) as f:
            text = f.read()
    except OSError:
        text = ""
    kept = []
    for line in text.splitlines():
        words = line.split()
        if words[:1] == ["nameserver"] and len(words) > 1 and (words[1].startswith("127.") or words[1] == "::1"):
            continue
        kept.append(line)
    return "\n".join(kept).strip() + "\n"


def write(dir_path: str, hostname: str, addresses: list[str]) -> dict[str, str]:
    """Write the three files into ``dir_path``; return their paths by role."""
    files = {
        "hosts": (os.path.join(dir_path, "hosts"), hosts(hostname, addresses)),
        "resolv": (os.path.join(dir_path, "resolv.conf"), resolv_conf()),
        "hostname": (os.path.join(dir_path, "hostname"), hostname + "\n"),
    }
    for path, content in files.values():
        with open(path, "w") as f:
            f.write(content)
    return {role: path for role, (path, _) in files.items()}
