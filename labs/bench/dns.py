"""DNS benchmark: the embedded DNS (127.0.0.11) as a container sees it.

    sudo .venv/bin/python labs/bench/dns.py [--queries 5000] [--clients 4] [--late 20] [--json FILE]

One simulated host (``netmgr.labhost.SimHost``, whose daemon forwards
nowhere: ``--dns-upstream none``), always torn down at the end (also on
Ctrl-C or SIGTERM). In it: a user bridge network ``dnsnet`` (10.214.0.0/24)
with three containers ``dns1``..``dns3`` (``sleep 3600``). Then:

1. load: a small stdlib-only client (``CLIENT`` below, a raw DNS query it
   builds itself) runs inside dns1's network namespace
   (``nsenter --net=<NetworkSettings.SandboxKey> python -I -S -c ...``) and
   sends ``--queries`` A queries for ``dns2`` to 127.0.0.11:53 over UDP,
   one at a time (send, wait for the answer with the same id, next); every
   answer is checked (NOERROR, dns2's address from inspect). Queries per
   second and p50/p95/p99 of the round trips;
2. the same with ``--clients`` client processes at once (same sandbox, each
   sending ``--queries``, started on a common clock tick): aggregate q/s
   and the round trips of all of them;
3. the NXDOMAIN path: a bare name no container has (``nmb-nosuch``);
4. a floor: the same client against a minimal blocking UDP echo server
   (stdlib, in the same sandbox on 127.0.0.1:5353): what a Python
   request/response over loopback costs on this machine, nothing of DNS;
5. "a container's name resolves before ``run`` returns": ``--late`` times,
   ``ContainerRun`` a new container and, right after the RPC returns, send
   one A query for its name from dns1 (from a UDP socket the benchmark
   opened inside dns1's namespace beforehand, so nothing starts between the
   two); count the names that resolved on the first try, with the address
   inspect reports.

Nothing here asserts on time: exit 0 when every step worked, 1 when one
failed, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import struct
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from attach import BenchError
from common import NS_PER_MS, log, machine_facts, now_ns, run_on_simhost, summary, summary99, write_json

NET, SUBNET = "dnsnet", "10.214.0.0/24"
CONTAINERS = ("dns1", "dns2", "dns3")
DNS_ADDR = "127.0.0.11"
ECHO_ADDR, ECHO_PORT = "127.0.0.1", 5353
UNKNOWN = "nmb-nosuch"

# The load client: argv = server port qname count start_at expect timeout. ``expect`` is
# "A:<ip>" (NOERROR with that address first), "NX" (NXDOMAIN) or "ECHO" (the packet back).
# Prints one JSON line: per-query round trips (ms) and counts of timeouts/wrong answers.
CLIENT = r"""
import json, socket, struct, sys, time
server, port, qname, count, start_at, expect, timeout = sys.argv[1:8]
port, count, start_at, timeout = int(port), int(count), float(start_at), float(timeout)
question = b"".join(bytes([len(l)]) + l.encode() for l in qname.split(".") if l) + b"\0" + struct.pack("!HH", 1, 1)
body = struct.pack("!HHHHH", 0x0100, 1, 0, 0, 0) + question  # RD, one question, A IN
want_ip = socket.inet_aton(expect[2:]) if expect.startswith("A:") else None
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect((server, port))
s.settimeout(timeout)
while time.monotonic() < start_at:
    time.sleep(min(0.01, max(0.0, start_at - time.monotonic())))
samples, timeouts, wrong, first_wrong = [], 0, 0, ""
perf = time.perf_counter_ns
t_start = time.monotonic()
for i in range(count):
    qid = (i * 7919 + 1) & 0xFFFF
    pkt = struct.pack("!H", qid) + body
    t0 = perf()
    s.send(pkt)
    while True:
        try:
            data = s.recv(4096)
        except socket.timeout:
            data = None
            break
        if len(data) >= 12 and struct.unpack_from("!H", data)[0] == qid:
            break
    t1 = perf()
    if data is None:
        timeouts += 1
        continue
    samples.append((t1 - t0) / 1e6)
    ok = True
    if expect == "ECHO":
        ok = data == pkt
    else:
        flags, qd, an = struct.unpack_from("!HHH", data, 2)
        rcode = flags & 0xF
        if not flags & 0x8000:
            ok = False
        elif expect == "NX":
            ok = rcode == 3 and an == 0
        else:
            off = 12 + len(question)
            if rcode != 0 or an < 1 or len(data) < off + 16:
                ok = False
            else:
                off += 2 if data[off] & 0xC0 == 0xC0 else data.index(b"\0", off) + 1 - off
                rtype, _cls, _ttl, rdlen = struct.unpack_from("!HHIH", data, off)
                ok = rtype == 1 and rdlen == 4 and data[off + 10:off + 14] == want_ip
    if not ok:
        wrong += 1
        first_wrong = first_wrong or data.hex()
t_end = time.monotonic()
print(json.dumps({"samples_ms": samples, "timeouts": timeouts, "wrong": wrong, "first_wrong": first_wrong,
                  "t_start": t_start, "t_end": t_end}))
"""

ECHO = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
print("ready", flush=True)
while True:
    data, peer = s.recvfrom(4096)
    s.sendto(data, peer)
"""


def pb():
    from netmgr.proto.gen import netmgr_v1_netmgr_pb2

    return netmgr_v1_netmgr_pb2


def inspect(client, name: str) -> dict:
    return client.documents("ContainerInspect", pb().Refs(refs=[name]))[0]


def address_of(client, name: str) -> str:
    return inspect(client, name)["NetworkSettings"]["Networks"][NET]["IPAddress"]


def run_clients(sandbox: str, server: str, port: int, qname: str, count: int, expect: str, clients: int,
                timeout: float) -> dict:
    """``clients`` load clients at once in ``sandbox``; their merged samples and the aggregate rate."""
    start_at = time.monotonic() + 0.5 + 0.1 * clients  # every process is up and waiting by then
    cmd = ["nsenter", f"--net={sandbox}", sys.executable, "-I", "-S", "-c", CLIENT, server, str(port), qname,
           str(count), f"{start_at:.6f}", expect, str(timeout)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(clients)]
    outs = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=max(120.0, count * timeout))
            if proc.returncode != 0:
                raise BenchError(f"DNS client exited {proc.returncode}: {err.strip()[-2000:]}")
            outs.append(json.loads(out))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    samples = [x for o in outs for x in o["samples_ms"]]
    began = min(o["t_start"] for o in outs)
    ended = max(o["t_end"] for o in outs)
    out = {"clients": clients, "queries": clients * count, "answered": len(samples),
           "timeouts": sum(o["timeouts"] for o in outs), "wrong": sum(o["wrong"] for o in outs),
           "first_wrong": next((o["first_wrong"] for o in outs if o["first_wrong"]), ""),
           "seconds": ended - began, "qps": len(samples) / (ended - began) if ended > began else 0.0,
           "per_client_qps": [len(o["samples_ms"]) / (o["t_end"] - o["t_start"]) for o in outs],
           "samples_ms": samples}
    if samples:
        out["summary"] = summary99(samples)
    return out


def start_echo(sandbox: str) -> subprocess.Popen:
    proc = subprocess.Popen(["nsenter", f"--net={sandbox}", sys.executable, "-I", "-S", "-c", ECHO, ECHO_ADDR,
                             str(ECHO_PORT)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline().strip()
    if line != "ready":
        proc.kill()
        proc.wait()
        raise BenchError(f"the UDP echo server did not start: {proc.stderr.read().strip()}")
    return proc


class InSandboxQuery:
    """A UDP socket opened inside a sandbox's namespace, used from this process (no process start per query)."""

    def __init__(self, sandbox: str) -> None:
        from netmgr.runtime import netns

        self.sock = netns.run_in(sandbox, lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        self.sock.connect((DNS_ADDR, 53))
        self.sock.settimeout(2.0)
        self.qid = 0

    def ask(self, qname: str) -> tuple[int, list[str], float]:
        """One A query: (rcode, addresses, round trip ms); rcode -1 on timeout."""
        from netmgr.dns import wire

        self.qid = (self.qid + 1) & 0xFFFF
        pkt = wire.build_query(qname, wire.A, self.qid)
        t0 = now_ns()
        self.sock.send(pkt)
        while True:
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                return -1, [], (now_ns() - t0) / NS_PER_MS
            if len(data) >= 12 and struct.unpack_from("!H", data)[0] == self.qid:
                break
        rtt = (now_ns() - t0) / NS_PER_MS
        msg = wire.decode_message(data)
        return msg.rcode, [r.data for r in msg.answers if r.type == wire.A], rtt

    def close(self) -> None:
        self.sock.close()


def late_names(client, sandbox: str, count: int) -> dict:
    """Run a container, query its name at once from dns1; ``count`` times."""
    p = pb()
    asker = InSandboxQuery(sandbox)
    rows = []
    try:
        for i in range(count):
            name = f"late{i + 1:02d}"
            t0 = now_ns()
            client.call("ContainerRun", p.RunRequest(argv=["sleep", "3600"], name=name, network=NET))
            run_ms = (now_ns() - t0) / NS_PER_MS
            rcode, addrs, rtt = asker.ask(name)  # right after the RPC returned
            row = {"name": name, "run_ms": run_ms, "rcode": rcode, "answers": addrs, "query_ms": rtt}
            if rcode != 0 or not addrs:
                # not there on the first try: how long until it is (bounded), for the report
                for _ in range(50):
                    time.sleep(0.02)
                    rcode2, addrs2, _ = asker.ask(name)
                    if rcode2 == 0 and addrs2:
                        row["resolved_after_ms"] = (now_ns() - t0) / NS_PER_MS - run_ms
                        break
            row["inspect_ip"] = address_of(client, name)
            row["first_try_ok"] = rcode == 0 and addrs == [row["inspect_ip"]]
            rows.append(row)
    finally:
        asker.close()
    return {"rows": rows, "resolved_first_try": sum(r["first_try_ok"] for r in rows), "count": len(rows)}


def bench(host, args, results: dict) -> None:
    p = pb()
    client = host.client()
    echo = None
    try:
        client.call("NetworkCreate", p.NetworkCreateRequest(name=NET, driver="bridge",
                                                            pools=[p.IPAMPool(subnet=SUBNET)]))
        for name in CONTAINERS:
            client.call("ContainerRun", p.RunRequest(argv=["sleep", "3600"], name=name, network=NET))
        sandbox = inspect(client, CONTAINERS[0])["NetworkSettings"]["SandboxKey"]
        target = CONTAINERS[1]
        target_ip = address_of(client, target)
        results["sandbox"], results["target"], results["target_ip"] = sandbox, target, target_ip
        # correctness first (not timed): one answer of each kind, as a container would get it
        asker = InSandboxQuery(sandbox)
        try:
            got = asker.ask(target)
            if got[0] != 0 or got[1] != [target_ip]:
                raise BenchError(f"{target} from {CONTAINERS[0]}: rcode {got[0]}, answers {got[1]}, "
                                 f"expected [{target_ip}]")
            got = asker.ask(UNKNOWN)
            if got[0] != 3:
                raise BenchError(f"{UNKNOWN} from {CONTAINERS[0]}: rcode {got[0]}, expected 3 (NXDOMAIN)")
        finally:
            asker.close()
        runs = results["load"]
        q, t = args.queries, args.timeout
        log(f"bench: warm-up: {args.warmup} queries")
        run_clients(sandbox, DNS_ADDR, 53, target, args.warmup, f"A:{target_ip}", 1, t)
        log(f"bench: {q} A queries for {target}, one client")
        runs["A, 1 client"] = run_clients(sandbox, DNS_ADDR, 53, target, q, f"A:{target_ip}", 1, t)
        log(f"bench: {q} A queries for {target} from each of {args.clients} clients at once")
        runs[f"A, {args.clients} clients"] = run_clients(sandbox, DNS_ADDR, 53, target, q, f"A:{target_ip}",
                                                         args.clients, t)
        log(f"bench: {q} A queries for {UNKNOWN} (NXDOMAIN), one client")
        runs["NXDOMAIN, 1 client"] = run_clients(sandbox, DNS_ADDR, 53, UNKNOWN, q, "NX", 1, t)
        log(f"bench: floor: {q} queries to a UDP echo server in the same sandbox")
        echo = start_echo(sandbox)
        runs["UDP echo floor, 1 client"] = run_clients(sandbox, ECHO_ADDR, ECHO_PORT, target, q, "ECHO", 1, t)
        for label, r in runs.items():
            if r["timeouts"] or r["wrong"]:
                results["problems"].append(f"{label}: {r['timeouts']} timeouts, {r['wrong']} wrong answers "
                                           f"(first wrong: {r['first_wrong'][:120]})")
        log(f"bench: {args.late} times: run a container, query its name at once")
        results["late"] = late_names(client, sandbox, args.late)
        late = results["late"]
        if late["resolved_first_try"] != late["count"]:
            results["problems"].append(f"only {late['resolved_first_try']}/{late['count']} new names resolved "
                                       "right after run returned")
        if results["problems"]:
            raise BenchError("; ".join(results["problems"]))
    finally:
        if echo is not None:
            echo.kill()
            echo.wait()
        client.close()


def render(results: dict) -> str:
    facts = results["facts"]
    lines = [
        (f"machine: kernel {facts['kernel']}, {facts['cpu_count']} CPUs ({facts['cpu_model']}), "
         f"Python {facts['python']}"),
        (f"client: stdlib UDP, one query at a time per process, inside {CONTAINERS[0]}'s namespace; server "
         f"{DNS_ADDR}:53 (the daemon's embedded DNS); p50/p95/p99 = nearest rank"),
        "",
        (f"{'test':<28} {'clients':>7} {'queries':>8} {'timeouts':>8} {'wrong':>5} {'q/s':>8} {'p50 ms':>7} "
        f"{'p95 ms':>7} {'p99 ms':>7} {'max ms':>7}"),
    ]
    for label, r in results["load"].items():
        s = r.get("summary")
        if not s:
            continue
        lines.append(f"{label:<28} {r['clients']:>7} {r['queries']:>8} {r['timeouts']:>8} {r['wrong']:>5} "
                     f"{r['qps']:>8.0f} {s['median_ms']:>7.3f} {s['p95_ms']:>7.3f} {s['p99_ms']:>7.3f} "
                     f"{s['max_ms']:>7.2f}")
    multi = next((r for label, r in results["load"].items() if r["clients"] > 1), None)
    if multi:
        per = ", ".join(f"{x:.0f}" for x in multi["per_client_qps"])
        lines.append(f"per client with {multi['clients']} at once: {per} q/s")
    late = results.get("late")
    if late and late["rows"]:
        runs = summary([r["run_ms"] for r in late["rows"]])
        qs = summary([r["query_ms"] for r in late["rows"]])
        lines += ["", (f"name resolves before run returns: {late['resolved_first_try']}/{late['count']} resolved on the "
                       f"first query sent right after ContainerRun returned"),
                  (f"  ContainerRun: median {runs['median_ms']:.2f} ms, p95 {runs['p95_ms']:.2f} ms, max "
                   f"{runs['max_ms']:.2f} ms; that first query: median {qs['median_ms']:.3f} ms, max "
                   f"{qs['max_ms']:.3f} ms")]
        for r in late["rows"]:
            if not r["first_try_ok"]:
                after = r.get("resolved_after_ms")
                lines.append(f"  {r['name']}: rcode {r['rcode']} answers {r['answers']} (inspect {r['inspect_ip']})"
                             + (f", resolved {after:.0f} ms after run returned" if after else ", never resolved"))
    for problem in results.get("problems", []):
        lines.append(f"problem: {problem}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="netmgr embedded DNS benchmark")
    ap.add_argument("--queries", type=int, default=5000, help="queries per client per test (default 5000)")
    ap.add_argument("--clients", type=int, default=4, help="client processes in the concurrent test (default 4)")
    ap.add_argument("--late", type=int, default=20, help="run-then-query iterations (default 20)")
    ap.add_argument("--warmup", type=int, default=200, help="uncounted queries first (default 200)")
    ap.add_argument("--timeout", type=float, default=1.0, help="seconds a client waits for one answer (default 1)")
    ap.add_argument("--json", metavar="FILE", help="also write every sample and summary to FILE")
    args = ap.parse_args(argv)
    if args.queries < 1 or args.clients < 2 or args.late < 0 or args.warmup < 1:
        ap.error("--queries >= 1, --clients >= 2, --late >= 0, --warmup >= 1")
    if os.geteuid() != 0:
        ap.error("needs root (network namespaces, bridges)")
    results: dict = {"facts": machine_facts(), "queries": args.queries, "clients": args.clients,
                     "warmup": args.warmup, "load": {}, "problems": [],
                     "percentile": "nearest rank: ceil(q*n)-th smallest sample"}
    rc = run_on_simhost("nmb", lambda host, base: bench(host, args, results), results)
    if rc == 130:
        return rc
    if results["load"]:
        print(render(results))
    write_json(args.json, results)
    return rc


if __name__ == "__main__":
    sys.exit(main())
