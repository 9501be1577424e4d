"""React at once when someone else touches the ruleset.

``nft flush ruleset`` deletes netmgr's tables; dockerd starting adds a
FORWARD policy of DROP. Both arrive as nftables netlink events; a short
debounce coalesces a burst (a flush is one event per table) into one
repair on the worker thread, without restarting anything.
"""

from __future__ import annotations

import asyncio
import logging

from netmgr.runtime import nftwatch

log = logging.getLogger("netmgr.watch")
DEBOUNCE = 0.05


class RulesetWatcher:
    """Calls ``repair(firewall, docker)`` on the worker when the ruleset changed under us."""

    def __init__(self, loop: asyncio.AbstractEventLoop, table: str, repair) -> None:
        self.loop = loop
        self.table = table
        self.repair = repair  # async callable (firewall: bool, docker: bool)
        self.sock = nftwatch.open_socket()
        self._pending = [False, False]
        self._task: asyncio.Task | None = None
        loop.add_reader(self.sock.fileno(), self._readable)

    def _readable(self) -> None:
        events = []
        while True:
            try:
                events += nftwatch.parse(self.sock.recv(1 << 16))
            except BlockingIOError:
                break
            except OSError as exc:  # ENOBUFS: we missed events, so assume the worst
                log.debug("nft event socket: %s", exc)
                events.append((nftwatch.NFT_MSG_DELTABLE, "inet", self.table))
                events.append((nftwatch.NFT_MSG_NEWCHAIN, "ip", "filter"))
                break
        ours, filt = nftwatch.concerns(events, self.table)
        if ours or filt:
            self._pending[0] |= ours
            self._pending[1] |= filt
            if self._task is None or self._task.done():
                self._task = self.loop.create_task(self._later())

    async def _later(self) -> None:
        await asyncio.sleep(DEBOUNCE)
        firewall, docker = self._pending
        self._pending = [False, False]
        try:
            await self.repair(firewall, docker)
        except Exception:
            log.exception("repairing the ruleset failed")

    def close(self) -> None:
        """Stop watching."""
        self.loop.remove_reader(self.sock.fileno())
        self.sock.close()
        if self._task:
            self._task.cancel()
