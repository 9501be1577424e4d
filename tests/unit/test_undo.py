"""netmgr.undo: the undo stack every multi-step operation runs under."""

from __future__ import annotations

import logging

import pytest

from netmgr import errors
from netmgr.undo import UndoStack


class StepFailed(Exception):
    pass


def test_undos_run_in_reverse_order_on_failure():
    done = []
    with pytest.raises(StepFailed), UndoStack() as undo:
        undo.push("one", done.append, 1)
        undo.push("two", done.append, 2)
        undo.push("three", done.append, 3)
        raise StepFailed("step 4")
    assert done == [3, 2, 1]


def test_undo_gets_its_arguments():
    seen = []
    with pytest.raises(StepFailed), UndoStack() as undo:
        undo.push("del", lambda *a: seen.append(a), "veth0", 7)
        raise StepFailed()
    assert seen == [("veth0", 7)]


def test_original_error_propagates_when_an_undo_raises(caplog):
    done = []

    def broken():
        raise OSError("undo broke")

    original = errors.KernelError("add veth nm3f2a: File exists", errno=17)
    with (
        caplog.at_level(logging.ERROR, logger="netmgr.undo"),
        pytest.raises(errors.KernelError) as exc,
        UndoStack() as undo,
    ):
        undo.push("first", done.append, "first")
        undo.push("broken", broken)
        undo.push("last", done.append, "last")
        raise original
    assert exc.value is original
    assert done == ["last", "first"]  # the failed undo did not stop the others
    assert "broken" in caplog.text


def test_rollback_reports_failed_steps_and_empties_the_stack():
    undo = UndoStack()
    done = []
    undo.push("a", done.append, "a")
    undo.push("b", lambda: 1 / 0)
    undo.push("c", lambda: {}["x"])
    assert undo.rollback() == ["c", "b"]
    assert done == ["a"]
    assert undo.rollback() == []
    assert done == ["a"]


def test_commit_prevents_rollback():
    done = []
    with pytest.raises(StepFailed), UndoStack() as undo:
        undo.push("one", done.append, 1)
        undo.commit()
        raise StepFailed("after commit")
    assert done == []


def test_success_without_commit_runs_nothing():
    done = []
    with UndoStack() as undo:
        undo.push("one", done.append, 1)
    assert done == []


def test_success_with_commit():
    done = []
    with UndoStack() as undo:
        undo.push("one", done.append, 1)
        undo.commit()
    assert done == []
    assert undo.rollback() == []


def test_failure_before_any_step():
    with pytest.raises(StepFailed), UndoStack():
        raise StepFailed()


def test_base_exceptions_roll_back_too():
    done = []
    with pytest.raises(KeyboardInterrupt), UndoStack() as undo:
        undo.push("one", done.append, 1)
        raise KeyboardInterrupt
    assert done == [1]


def test_nested_stacks_each_roll_back_their_own():
    done = []
    with pytest.raises(StepFailed), UndoStack() as outer:
        outer.push("outer", done.append, "outer")
        with UndoStack() as inner:
            inner.push("inner", done.append, "inner")
            raise StepFailed()
    assert done == ["inner", "outer"]


def test_inner_commit_but_outer_failure():
    done = []
    with pytest.raises(StepFailed), UndoStack() as outer:
        outer.push("outer", done.append, "outer")
        with UndoStack() as inner:
            inner.push("inner", done.append, "inner")
            inner.commit()
        raise StepFailed()
    assert done == ["outer"]
