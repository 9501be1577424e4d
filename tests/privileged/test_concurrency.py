"""Many clients at once against one daemon: no duplicate address or name, no deadlock, no lost update.

50 CLI calls start together (a barrier): 25 ``run`` on a user network and 25 ``network connect`` of
containers already running on the default bridge. Then races that only one caller may win: ten ``run``
with one name, ten ``connect`` with one ``--ip``. The kernel is read independently (``ip -j`` in each
sandbox). The 3-host overlay version is in test_overlay.py.
"""

from __future__ import annotations

import json
import uuid

import pytest

from tests.privileged.conftest import ip_json
from tests.privileged.helpers import together

pytestmark = pytest.mark.privileged


def ok(result):
    assert result.rc == 0, result.err
    return result.out


def test_fifty_concurrent_runs_and_connects(sim_host):
    h = sim_host
    tag = uuid.uuid4().hex[:4]
    net = f"nmt-cc{tag}"
    ok(h.cli("network", "create", "--subnet", "10.91.0.0/24", net))
    pre = [f"nmt-cp{tag}{k}" for k in range(25)]
    new = [f"nmt-cn{tag}{k}" for k in range(25)]
    try:
        for name in pre:
            ok(h.cli("run", "-d", "--name", name, "sleep", "600"))
        calls = [lambda n=n: h.cli("run", "-d", "--name", n, "--network", net, "sleep", "600", timeout=170)
                 for n in new]
        calls += [lambda n=n: h.cli("network", "connect", net, n, timeout=170) for n in pre]
        results = together(calls)
        assert [r.err for r in results if r.rc != 0] == []
        doc = json.loads(ok(h.cli("network", "inspect", net)))[0]
        members = {c["Name"]: c["IPv4Address"].split("/")[0] for c in doc["Containers"].values()}
        assert sorted(members) == sorted(pre + new)  # no lost update
        assert len(set(members.values())) == 50  # no address twice
        for name, ip in members.items():  # the kernel agrees with the store
            key = json.loads(ok(h.cli("inspect", name)))[0]["NetworkSettings"]["SandboxKey"]
            addrs = {a["local"] for link in ip_json(key, "addr") for a in link["addr_info"]}
            assert ip in addrs, (name, ip, addrs)
    finally:
        h.cli("rm", "-f", *pre, *new, timeout=120)
        h.cli("network", "rm", net)


def test_only_one_caller_wins_a_name_or_an_address(sim_host):
    h = sim_host
    tag = uuid.uuid4().hex[:4]
    net, name = f"nmt-cw{tag}", f"nmt-cwn{tag}"
    ok(h.cli("network", "create", "--subnet", "10.92.0.0/24", net))
    targets = [f"nmt-cwt{tag}{k}" for k in range(10)]
    try:
        results = together([lambda: h.cli("run", "-d", "--name", name, "--network", net, "sleep", "600")
                            for _ in range(10)])
        assert sum(r.rc == 0 for r in results) == 1
        for r in results:
            if r.rc:
                assert r.rc == 125 and r.err.count("\n") == 1
                assert r.err.startswith(f'Conflict. The container name "/{name}" is already in use')
        assert h.cli("ps", "-a", "--filter", f"name={name}", "--format", "{{.Names}}").out == f"{name}\n"
        for t in targets:
            ok(h.cli("run", "-d", "--name", t, "sleep", "600"))
        results = together([lambda t=t: h.cli("network", "connect", "--ip", "10.92.0.77", net, t) for t in targets])
        winners = [t for t, r in zip(targets, results) if r.rc == 0]
        assert len(winners) == 1
        assert {r.err for r in results if r.rc} == {"Address already in use\n"}
        doc = json.loads(ok(h.cli("network", "inspect", net)))[0]
        assert sorted(c["Name"] for c in doc["Containers"].values()) == sorted([name, winners[0]])
    finally:
        h.cli("rm", "-f", name, *targets, timeout=120)
        h.cli("network", "rm", net)
