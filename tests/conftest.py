"""Shared fixtures.

* ``tests/unit`` needs neither root nor the kernel.
* ``tests/privileged`` (marked ``privileged``) needs root and the real kernel;
  it is skipped otherwise. Every kernel object a test makes carries a unique
  ``nmt-`` prefix and lives inside a fake host namespace that the fixture
  removes afterwards, also when the test fails.
"""

from __future__ import annotations

import os
import pathlib
import uuid

import pytest
from hypothesis import settings

# Property-based tests: in CI (CI=true, as .ci/run is run) the same cases every time, so a run is green or red
# for the code, not for the draw; elsewhere hypothesis draws new cases each run (and keeps failures in
# .hypothesis/ to replay). NETMGR_FUZZ_SCALE multiplies the case counts for long explorations.
settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
settings.register_profile("dev", print_blob=True)
settings.load_profile("ci" if os.environ.get("CI") else "dev")

ROOT = os.geteuid() == 0


def pytest_collection_modifyitems(config, items):
    here = pathlib.Path(__file__).parent
    for item in items:
        if (here / "privileged") in pathlib.Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.privileged)
            if not ROOT:
                item.add_marker(pytest.mark.skip(reason="needs root and the real kernel"))


def unique(prefix: str = "nmt") -> str:
    """A short unique name with the test prefix (fits in IFNAMSIZ with a few more chars)."""
    return f"{prefix}-{uuid.uuid4().hex[:6]}"
