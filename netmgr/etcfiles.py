"""A container's own /etc/hosts, /etc/resolv.conf and /etc/hostname."""

from __future__ import annotations

import os

from netmgr import statefiles

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


EMBEDDED_DNS = "127.0.0.11"


def resolv_conf(embedded_dns: bool = False, host_resolv: str = "/etc/resolv.conf") -> str:
    """A container's resolv.conf.

    On a user-defined network: the embedded DNS at 127.0.0.11 (it forwards
    what is not a container name to the host's resolvers), with the host's
    search domains, as Docker writes it. Otherwise: the host's file without
    loopback nameservers (unreachable from a sandbox). netmgr adds no public
    fallback resolver (Docker adds 8.8.8.8).
    """
    try:
        with open(host_resolv) as f:
            text = f.read()
    except OSError:
        text = ""
    kept = []
    for line in text.splitlines():
        words = line.split()
        if words[:1] == ["nameserver"] and (embedded_dns or (len(words) > 1 and (
                words[1].startswith("127.") or words[1] == "::1"))):
            continue
        if embedded_dns and words[:1] == ["options"]:
            continue
        kept.append(line)
    if embedded_dns:
        kept = [f"nameserver {EMBEDDED_DNS}"] + [k for k in kept if k.strip()] + ["options ndots:0"]
    return "\n".join(kept).strip() + "\n"


def write(dir_path: str, hostname: str, addresses: list[str], embedded_dns: bool = False) -> dict[str, str]:
    """Write the three files into ``dir_path``; return their paths by role."""
    files = {
        "hosts": (os.path.join(dir_path, "hosts"), hosts(hostname, addresses)),
        "resolv": (os.path.join(dir_path, "resolv.conf"), resolv_conf(embedded_dns)),
        "hostname": (os.path.join(dir_path, "hostname"), hostname + "\n"),
    }
    for path, content in files.values():
        statefiles.write_atomic(path, content)
    return {role: path for role, (path, _) in files.items()}


def rewrite_in_place(path: str, content: str) -> None:
    """Replace ``path``'s content, keeping its inode (a running container's bind mount shows it).

    Not atomic, unlike :func:`write`: a rename would leave the container on the old file. The file is
    a few hundred bytes: the write fits in the one block the file already has.
    """
    raw = content.encode()
    with statefiles.guard(path, "write"):
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            view = memoryview(raw)
            while view:
                view = view[os.write(fd, view):]
            os.ftruncate(fd, len(raw))
            os.fsync(fd)
        finally:
            os.close(fd)
