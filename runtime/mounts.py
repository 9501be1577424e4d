"""Host-side view of mounts: list mount points and detach those below a directory.

The shim mounts only inside each container's private mount namespace, so the
host should never see container mounts; these helpers exist for cleanup after
manual intervention and for leak checks in tests.
"""

from __future__ import annotations

import errno
import os
import re

from netmgr.runtime import shim

__all__ = ["mount_points", "unmount_below"]

_OCTAL = re.compile(rb"\\([0-7]{3})")


def mount_points(mountinfo: str = "/proc/self/mountinfo") -> list[str]:
    """Mount points of the calling process's mount namespace, in mount order."""
    with open(mountinfo, "rb") as f:
        fields = [line.split()[4] for line in f]
    # mountinfo escapes space, tab, newline and backslash as \ooo
    return [os.fsdecode(_OCTAL.sub(lambda m: bytes([int(m[1], 8)]), p)) for p in fields]


def unmount_below(directory: str) -> list[str]:
    """Lazily detach every mount at or below ``directory``, deepest first.

    Returns one message per failure (already-gone mounts are not failures).
    """
    prefix = os.path.realpath(directory)
    points = {p for p in mount_points() if p == prefix or p.startswith(prefix + "/")}
    failures = []
    for point in sorted(points, key=len, reverse=True):
        try:
            shim.umount2(point, shim.MNT_DETACH)
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.ENOENT):
                failures.append(exc.strerror)
    return failures
