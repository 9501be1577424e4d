"""The undo stack every multi-step operation runs under.

Each step that changed something registers its undo right after it
succeeded; if a later step raises, the undos run in reverse order and the
*original* error propagates. An undo that fails is logged and does not hide
the original error (pyroute2 ndb ``Transaction.commit``; CNI ``cmdAdd``).
Undo functions must accept "partly done" and "already gone".
"""

from __future__ import annotations

import logging
from typing import Any, Callable

log = logging.getLogger("netmgr.undo")


class UndoStack:
    """Use as ``with UndoStack() as undo: ...; undo.push(fn, *args); ...; undo.commit()``."""

    def __init__(self) -> None:
        self._steps: list[tuple[str, Callable[..., Any], tuple]] = []
        self._committed = False

    def push(self, name: str, fn: Callable[..., Any], *args: Any) -> None:
        """Register ``fn(*args)`` to run if the operation fails later."""
        self._steps.append((name, fn, args))

    def commit(self) -> None:
        """The operation succeeded: forget every undo."""
        self._committed = True
        self._steps.clear()

    def rollback(self) -> list[str]:
        """Run the undos in reverse order; return the names of the ones that failed."""
        failed = []
        while self._steps:
            name, fn, args = self._steps.pop()
            try:
                fn(*args)
            except Exception:  # keep undoing: one failed undo must not strand the rest
                log.exception("undo step %r failed", name)
                failed.append(name)
        return failed

    def __enter__(self) -> "UndoStack":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is not None and not self._committed:
            self.rollback()
        return False
