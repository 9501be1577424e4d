"""Seeded chaos on a 3-host cluster (netmgr.testing.chaos): random operations, daemon SIGKILLs, invariants.

CI runs a bounded count (``NETMGR_CHAOS_OPS``, default 500); ``labs/chaos/run.py`` runs long ones. The seed
(``NETMGR_CHAOS_SEED``, default random) is printed first and named in every failure, so a run replays with
``NETMGR_CHAOS_SEED=<seed> pytest tests/privileged/test_chaos.py``.
"""

from __future__ import annotations

import os
import random

import pytest

from netmgr.testing.chaos import Chaos, InvariantBroken
from netmgr.testing.multihost import MultiHost

pytestmark = pytest.mark.privileged


def test_chaos_keeps_every_invariant():
    seed = int(os.environ.get("NETMGR_CHAOS_SEED") or random.SystemRandom().randrange(1 << 32))
    ops = int(os.environ.get("NETMGR_CHAOS_OPS") or 500)
    print(f"NETMGR_CHAOS_SEED={seed}", flush=True)
    with MultiHost(3, subnet_prefix="10.252.5", ttl=3, prefix="nmx" + os.urandom(2).hex()) as cluster:
        chaos = Chaos(cluster, seed)
        try:
            tally = chaos.run(ops)
        except InvariantBroken as exc:
            pytest.fail(f"seed {seed}: {exc}\n{chaos.tally.summary()}", pytrace=False)
    assert sum(tally.ops.values()) + tally.kills >= ops
