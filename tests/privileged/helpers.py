"""Traffic helpers for the real-kernel tests: servers in containers, clients in namespaces.

Everything talks only to addresses inside namespaces the tests created.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
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


def together(calls) -> list:
    """Run every ``call()`` on its own thread, released at once; their results (a hang fails the test)."""
    results: list = [None] * len(calls)
    barrier = threading.Barrier(len(calls))

    def worker(k: int) -> None:
        barrier.wait()
        results[k] = calls[k]()

    threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
        assert not t.is_alive(), "a call never returned (deadlock?)"
    return results


def wait_for(fn, timeout: float = 10.0, interval: float = 0.02):
    """Call ``fn`` until it returns something true or ``timeout`` passes; its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


# A capture on one interface of a namespace, by a raw AF_PACKET socket (not scapy's sniff(timeout=…), whose
# socket opens some time after the process starts: a sleep before the traffic then decides what is seen).
# "ready" is printed once the socket is bound, so everything the tap sees after it is queued on the socket;
# on "stop" the queue is drained, then read on until nothing has come for QUIET seconds (frames still in a
# softirq backlog), and every frame is printed as hex.
CAPTURE = textwrap.dedent('''
    import select, socket, sys
    iface, quiet = sys.argv[1], float(sys.argv[2])
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    s.bind((iface, 0))
    print("ready", flush=True)
    sys.stdin.readline()
    frames = []
    while select.select([s], [], [], quiet)[0]:
        frames.append(s.recv(65535).hex())
    print("\\n".join(frames + ["end"]), flush=True)
''')


class Capture:
    """Frames seen on ``iface`` in ``netns_path`` between entering and ``stop()`` (scapy ``Ether`` objects)."""

    def __init__(self, netns_path: str, iface: str, quiet: float = 0.3):
        self._proc = subprocess.Popen(
            ["nsenter", f"--net={netns_path}", sys.executable, "-I", "-S", "-c", CAPTURE, iface, str(quiet)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.frames: list = []

    def __enter__(self) -> "Capture":
        line = self._proc.stdout.readline().strip()
        if line != "ready":
            self._proc.kill()
            raise RuntimeError(f"capture did not start: {line!r}")
        return self

    def stop(self) -> list:
        """End the capture; every frame seen, in order."""
        from scapy.layers.l2 import Ether

        self._proc.stdin.write("stop\n")
        self._proc.stdin.flush()
        hexes = []
        for line in self._proc.stdout:
            if line == "end\n":
                break
            hexes.append(line.strip())
        self.frames = [Ether(bytes.fromhex(h)) for h in hexes if h]
        self._proc.wait(timeout=10)
        return self.frames

    def __exit__(self, *exc) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
