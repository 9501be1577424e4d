"""nftables: atomic JSON batches through libnftables.

A batch is the JSON document ``nft -j -f -`` reads; we hand it to
libnftables (the library behind the ``nft`` binary, package libnftables1)
through ctypes instead of exec'ing ``nft`` for each change: same parser,
same atomic transaction, ~0.15 ms per element instead of ~2 ms of exec.
Nothing ever parses ``nft list`` text: reads use JSON output too.

A libnftables context opens its netlink socket when it is created, so an
:class:`Nft` made for a namespace (``Nft(netns_path)``) is created on a
throwaway thread inside that namespace and stays bound to it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import threading
from typing import Any

from netmgr import errors
from netmgr.runtime import netns

NFT_CTX_OUTPUT_JSON = 1 << 4
_lib = None
_lib_lock = threading.Lock()

__all__ = ["Nft", "NftError"]


class NftError(errors.KernelError):
    """libnftables rejected a batch (the message is nft's own error text)."""


def _load():
    global _lib
    with _lib_lock:
        if _lib is None:
            name = ctypes.util.find_library("nftables") or "libnftables.so.1"
            try:
                lib = ctypes.CDLL(name)
            except OSError as exc:
                raise errors.Unavailable("libnftables not found: install the nftables package") from exc
            lib.nft_ctx_new.restype = ctypes.c_void_p
            lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
            lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
            lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
            lib.nft_run_cmd_from_buffer.restype = ctypes.c_int
            for fn in ("nft_ctx_get_output_buffer", "nft_ctx_get_error_buffer"):
                getattr(lib, fn).restype = ctypes.c_char_p
                getattr(lib, fn).argtypes = [ctypes.c_void_p]
            for fn in ("nft_ctx_buffer_output", "nft_ctx_buffer_error"):
                getattr(lib, fn).argtypes = [ctypes.c_void_p]
            lib.nft_ctx_output_set_flags.argtypes = [ctypes.c_void_p, ctypes.c_uint]
            _lib = lib
        return _lib


class Nft:
    """One libnftables context, bound to the namespace it was created in."""

    def __init__(self, netns_path: str | None = None) -> None:
        lib = _load()

        def make() -> int:
            ctx = lib.nft_ctx_new(0)
            lib.nft_ctx_buffer_output(ctx)
            lib.nft_ctx_buffer_error(ctx)
            lib.nft_ctx_output_set_flags(ctx, NFT_CTX_OUTPUT_JSON)
            return ctx

        self._ctx = netns.run_in(netns_path, make) if netns_path else make()
        self._lock = threading.Lock()

    def close(self) -> None:
        """Free the context (idempotent)."""
        if self._ctx:
            _load().nft_ctx_free(self._ctx)
            self._ctx = None

    def run(self, commands: list[dict[str, Any]] | str) -> dict | None:
        """Apply a batch atomically (all commands or none); return the JSON output if any."""
        text = commands if isinstance(commands, str) else json.dumps({"nftables": commands})
        lib = _load()
        with self._lock:
            rc = lib.nft_run_cmd_from_buffer(self._ctx, text.encode())
            out = lib.nft_ctx_get_output_buffer(self._ctx) or b""
            err = lib.nft_ctx_get_error_buffer(self._ctx) or b""
        if rc != 0:
            first = err.decode(errors="replace").strip().splitlines()
            raise NftError("nftables: " + (first[0] if first else "batch rejected"))
        return json.loads(out) if out.strip() else None

    def list_table(self, family: str, name: str) -> list[dict] | None:
        """The table's objects as JSON dicts, or None when the table does not exist."""
        try:
            out = self.run(f"list table {family} {name}")
        except NftError:
            return None
        return [item for item in (out or {}).get("nftables", []) if "metainfo" not in item]

    def delete_table(self, family: str, name: str) -> None:
        """Delete the table; already gone is success."""
        try:
            self.run([{"delete": {"table": {"family": family, "name": name}}}])
        except NftError:
            if self.list_table(family, name) is not None:
                raise
