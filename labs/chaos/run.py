"""A long chaos run on a 3-host lab: random operations, daemon SIGKILLs and restarts, invariants checked.

    sudo .venv/bin/python labs/chaos/run.py [--ops 5000] [--seed N] [--hosts 3] [--kill-rate 0.03]

See netmgr/testing/chaos.py for the operations and the invariants. Prints the seed first and a summary
at the end; exits 1 with the broken invariant (and the seed to replay it) on a failure. Everything it
creates is removed at the end, also after a failure.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))

from netmgr.testing.chaos import Chaos, InvariantBroken  # noqa: E402
from netmgr.testing.multihost import MultiHost  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ops", type=int, default=5000)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--hosts", type=int, default=3)
    p.add_argument("--kill-rate", type=float, default=0.03)
    p.add_argument("--check-every", type=int, default=100)
    args = p.parse_args()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 32)
    start = time.monotonic()
    with MultiHost(args.hosts, subnet_prefix="10.252.4", ttl=3, prefix="nmx" + os.urandom(2).hex()) as cluster:
        chaos = Chaos(cluster, seed, check_every=args.check_every, kill_rate=args.kill_rate)
        try:
            chaos.run(args.ops)
        except InvariantBroken as exc:
            print(f"chaos: FAILED (replay with --seed {seed}): {exc}\n{chaos.tally.summary()}", file=sys.stderr)
            return 1
    print(f"chaos: passed in {time.monotonic() - start:.0f} s (seed {seed})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
