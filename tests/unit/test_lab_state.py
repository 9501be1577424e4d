"""The lab record: created once per name, written atomically, readable after a crash."""

from __future__ import annotations

import json
import os

import pytest

from netmgr.lab import state


@pytest.fixture
def labs_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(state, "LABS_DIR", str(tmp_path / "labs"))
    return tmp_path / "labs"


def test_create_open_and_list(labs_dir, tmp_path):
    rec = state.LabRecord.create("l1", "topo.yaml")
    assert rec.get("status") == "creating" and rec.get("tool_pid") == os.getpid()
    assert rec.get("topology") == os.path.abspath("topo.yaml")
    rec.add("namespaces", "/run/netns/nml-l1-ul")
    rec.set("status", "up")
    data = json.loads((labs_dir / "l1" / "state.json").read_text())
    assert data["namespaces"] == ["/run/netns/nml-l1-ul"] and data["status"] == "up"
    assert not (labs_dir / "l1" / "state.json.tmp").exists()
    assert state.LabRecord.open("l1").get("namespaces") == ["/run/netns/nml-l1-ul"]
    assert state.list_names() == ["l1"]


def test_a_name_is_taken_once(labs_dir):
    state.LabRecord.create("l1", "t.yaml")
    with pytest.raises(state.LabExists, match=r"^lab l1 already exists \(netmgr lab down l1 removes it\)$"):
        state.LabRecord.create("l1", "t.yaml")


def test_missing_and_half_made_labs(labs_dir):
    with pytest.raises(state.LabNotFound, match="^lab nope not found$"):
        state.LabRecord.open("nope")
    os.makedirs(labs_dir / "crashed")  # up died between mkdir and its first write
    rec = state.LabRecord.open("crashed")
    assert rec.get("status") == "failed" and rec.get("namespaces", []) == []
    assert state.list_names() == ["crashed"]


def test_the_lock_is_held_by_up(labs_dir):
    rec = state.LabRecord.create("l1", "t.yaml")  # holds the lock
    other = state.LabRecord.open("l1")
    assert other.lock(wait=False) is False
    rec.unlock()
    assert other.lock(wait=False) is True
    other.unlock()
