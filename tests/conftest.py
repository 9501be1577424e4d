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
