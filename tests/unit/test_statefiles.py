"""statefiles: disk faults mapped to StorageError, atomic writes (real file systems in the privileged twin:
tests/privileged/test_state_dir_faults.py)."""

from __future__ import annotations

import errno
import os
import sqlite3

import pytest

from netmgr import errors, statefiles


def test_write_atomic_writes_whole_file(tmp_path):
    path = tmp_path / "hosts"
    statefiles.write_atomic(str(path), "a\nb\n")
    assert path.read_text() == "a\nb\n"
    assert os.listdir(tmp_path) == ["hosts"]


def test_write_atomic_failure_leaves_no_file(tmp_path, monkeypatch):
    path = tmp_path / "hosts"
    path.write_text("old\n")

    def full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(errors.StorageError) as exc:
        statefiles.write_atomic(str(path), "new\n")
    assert str(exc.value) == f"no space left on device: write {path}"
    assert exc.value.errno == errno.ENOSPC
    assert path.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["hosts"]


def test_guard_passes_other_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        with statefiles.guard(str(tmp_path), "read"):
            raise FileNotFoundError(errno.ENOENT, "gone")


def test_sqlite_full_maps_to_enospc(tmp_path):
    exc = sqlite3.OperationalError("database or disk is full")
    exc.sqlite_errorcode = 13
    err = statefiles.storage_error(exc, str(tmp_path / "netmgr.db"), "write the store")
    assert isinstance(err, errors.StorageError) and err.errno == errno.ENOSPC


def test_probe_of_a_writable_dir_is_none(tmp_path):
    assert statefiles.probe(str(tmp_path / "not" / "yet")) is None
    assert os.listdir(tmp_path) == []
