"""Traffic helpers for the real-kernel tests: servers in containers, clients in namespaces.

Everything talks only to addresses inside namespaces the tests created.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

SERVER = textwrap.dedent('''
    import socket, sys
    proto, port, reply = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode()
    fam = socket.AF_INET6
    s = socket.socket(fam, socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("::", port))
    if proto == "tcp":
        s.listen(64)
        while True:
            c, addr = s.accept()
            c.sendall(reply + b" " + addr[0].removeprefix("::ffff:").encode())
            c.close()
    while True:
        data, addr = s.recvfrom(2048)
        s.sendto(reply + b" " + addr[0].removeprefix("::ffff:").encode(), addr)
''')

CLIENT = textwrap.dedent('''
    import socket, sys
    proto, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
    s.settimeout(float(sys.argv[4]))
    try:
        if proto == "tcp":
            s.connect((host, port))
            print(s.recv(200).decode())
        else:
            s.sendto(b"ping", (host, port))
            print(s.recvfrom(200)[0].decode())
    except OSError as e:
        print("FAIL", e)
        sys.exit(1)
''')


def server_argv(tmpdir: str, proto: str, port: int, reply: str) -> tuple[str, ...]:
    """argv of a server that answers ``reply <client address>`` (run it in a container)."""
    path = os.path.join(tmpdir, "nmt-server.py")
    if not os.path.exists(path):
        with open(path, "w") as f:
            f.write(SERVER)
    return ("/usr/bin/python3", path, proto, str(port), reply)


def request(netns_path: str | None, proto: str, host: str, port: int, timeout: float = 1.0) -> str | None:
    """One request from a namespace (None: ours); the reply, or None when nothing answered."""
    cmd = (["nsenter", f"--net={netns_path}"] if netns_path else []) + [
        sys.executable, "-I", "-S", "-c", CLIENT, proto, host, str(port), str(timeout)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout + 10)
    return proc.stdout.strip() if proc.returncode == 0 else None


def wait_for(fn, timeout: float = 10.0, interval: float = 0.02):
    """Call ``fn`` until it returns something true or ``timeout`` passes; its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)
