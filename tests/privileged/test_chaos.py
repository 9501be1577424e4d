"""Seeded chaos on a 3-host cluster (netmgr.testing.chaos): random operations, daemon SIGKILLs, invariants.

The suite runs a bounded count on a fixed seed, so CI is the same run every time (``NETMGR_CHAOS_OPS``,
default 150; ``NETMGR_CHAOS_SEED``, default 1, ``random`` for a new one); longer and other runs:
``NETMGR_CHAOS_SEED=random NETMGR_CHAOS_OPS=500 pytest tests/privileged/test_chaos.py`` or
``labs/chaos/run.py --ops 5000``. The seed is printed first and named in every failure, so a run replays
with ``NETMGR_CHAOS_SEED=<seed>``. (Daemon kills mid-operation land where the timing puts them.)
"""

from __future__ import annotations

import os
import random

import pytest

from netmgr.testing.chaos import Chaos, InvariantBroken
from netmgr.testing.multihost import MultiHost

pytestmark = pytest.mark.privileged


def test_chaos_keeps_every_invariant():
    wanted = os.environ.get("NETMGR_CHAOS_SEED") or "1"
    seed = random.SystemRandom().randrange(1 << 32) if wanted == "random" else int(wanted)
    ops = int(os.environ.get("NETMGR_CHAOS_OPS") or 150)
    print(f"NETMGR_CHAOS_SEED={seed}", flush=True)
    with MultiHost(3, subnet_prefix="10.252.5", ttl=3, prefix="nmx" + os.urandom(2).hex()) as cluster:
        chaos = Chaos(cluster, seed)
        try:
            tally = chaos.run(ops)
        except InvariantBroken as exc:
            pytest.fail(f"seed {seed}: {exc}\n{chaos.tally.summary()}", pytrace=False)
    assert sum(tally.ops.values()) + tally.kills >= ops
