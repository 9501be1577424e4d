"""Writing under the state dir: disk faults as :class:`~netmgr.errors.StorageError`, atomic files.

The state dir can fill up (ENOSPC, EDQUOT), turn read-only (EROFS) or fail
(EIO). Both writers of it, the SQLite store and the container state files,
map those failures here, so the user sees one line that says what is wrong
(``no space left on device: write the store /var/lib/netmgr/netmgr.db``)
rather than "internal error".

SQLite reports a full disk as ``SQLITE_FULL`` and a read-only one as
``SQLITE_READONLY``, but some paths (opening, growing the ``-shm`` file)
only say ``SQLITE_IOERR`` / ``SQLITE_CANTOPEN`` and drop the errno: for
those, :func:`probe` asks the file system itself with a small write.

:func:`write_atomic` writes a file so that a crash or a full disk never
leaves a truncated one: temp file, fsync, rename; the temp file is removed
on failure.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
from typing import Iterator

from netmgr.errors import StorageError

__all__ = ["STORAGE_ERRNOS", "guard", "probe", "storage_error", "write_atomic"]

#: errno → the words the message starts with (strerror's, lower-cased, as Go and Docker print them)
STORAGE_ERRNOS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EIO: "disk I/O error",
}

# primary result codes (sqlite3.h); an extended code's low byte is its primary code
_SQLITE_READONLY, _SQLITE_IOERR, _SQLITE_FULL, _SQLITE_CANTOPEN = 8, 10, 13, 14


def probe(path: str) -> int | None:
    """The errno a small write next to ``path`` fails with (EROFS, ENOSPC, EDQUOT, EIO), or None if it works.

    ``path`` may not exist yet: its nearest existing directory is tried. A
    real write, not ``statvfs``: ext4's emergency read-only state (after an
    I/O error, ``errors=remount-ro``) and quotas show only when writing.
    """
    directory = path
    while directory and not os.path.isdir(directory):
        parent = os.path.dirname(directory)
        if parent == directory:
            break
        directory = parent
    tmp = os.path.join(directory or ".", f".netmgr-probe-{os.getpid()}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, b"\0" * 4096)
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(tmp)
    except OSError as exc:
        return exc.errno if exc.errno in STORAGE_ERRNOS else None
    return None


def _errno_of(exc: BaseException, path: str) -> int | None:
    if isinstance(exc, OSError):
        return exc.errno if exc.errno in STORAGE_ERRNOS else None
    if isinstance(exc, sqlite3.Error):
        code = (getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF
        if code == _SQLITE_FULL:
            return errno.ENOSPC
        if code == _SQLITE_READONLY:
            return probe(path) or errno.EROFS
        if code in (_SQLITE_IOERR, _SQLITE_CANTOPEN):
            return probe(path) or (errno.EIO if code == _SQLITE_IOERR else None)
    return None


def storage_error(exc: BaseException, path: str, action: str) -> StorageError | None:
    """The :class:`StorageError` for ``exc`` raised while doing ``action`` on ``path``, or None if it is none."""
    code = _errno_of(exc, path)
    if code is None:
        return None
    return StorageError(f"{STORAGE_ERRNOS[code]}: {action} {path}", code)


@contextlib.contextmanager
def guard(path: str, action: str) -> Iterator[None]:
    """Turn a disk fault inside the block into a :class:`StorageError` (other errors pass through)."""
    try:
        yield
    except (OSError, sqlite3.Error) as exc:
        err = storage_error(exc, path, action)
        if err is None:
            raise
        raise err from exc


def write_atomic(path: str, data: str | bytes, mode: int = 0o644) -> None:
    """Write ``path`` whole or not at all (temp file, fsync, rename); disk faults raise StorageError."""
    raw = data.encode() if isinstance(data, str) else data
    tmp = f"{path}.tmp{os.getpid()}"
    with guard(path, "write"):
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
            try:
                view = memoryview(raw)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
