"""netmgr's one error hierarchy.

Every failure that crosses a module boundary is one of these classes::

    NetmgrError                      exit 1, grpc UNKNOWN
    ├── InvalidConfig                exit 1, grpc INVALID_ARGUMENT  (bad input)
    │   └── CommandNotFound          exit 127 (run/exec of a missing command)
    ├── NotFound                     exit 1, grpc NOT_FOUND
    │   ├── NetworkNotFound
    │   ├── EndpointNotFound
    │   ├── ContainerNotFound
    │   └── DriverNotFound
    ├── Conflict                     exit 1, grpc ALREADY_EXISTS / FAILED_PRECONDITION
    │   ├── AlreadyExists
    │   └── InUse
    ├── PermissionDenied             exit 1, grpc PERMISSION_DENIED
    ├── Unavailable                  exit 1, grpc UNAVAILABLE  (daemon, etcd, plugin)
    │   └── StorageError(errno)      (state dir full, read-only, I/O error)
    ├── KernelError(errno)           exit 1, grpc INTERNAL      (netlink, nft, mount)
    └── InternalError                exit 1, grpc INTERNAL

Each class carries a stable ``exit_code`` and ``grpc_code`` (the numeric value
of ``grpc.StatusCode``; kept as ints so this module imports nothing heavy).
Messages use Docker's wording where Docker has one, so they can be shown to the
user unchanged. Context is added by wrapping (:meth:`NetmgrError.wrap`), which
keeps the class and prefixes the message: ``create endpoint web1: add veth
nm3f2a: File exists``.
"""

from __future__ import annotations

__all__ = [
    "NetmgrError",
    "InvalidConfig",
    "NotFound",
    "NetworkNotFound",
    "EndpointNotFound",
    "ContainerNotFound",
    "DriverNotFound",
    "Conflict",
    "AlreadyExists",
    "InUse",
    "PermissionDenied",
    "Unavailable",
    "StorageError",
    "KernelError",
    "InternalError",
    "CommandNotFound",
    "error_from_code",
]

# grpc.StatusCode values (grpc/__init__.py); stable by the gRPC spec.
_GRPC_UNKNOWN = 2
_GRPC_INVALID_ARGUMENT = 3
_GRPC_NOT_FOUND = 5
_GRPC_ALREADY_EXISTS = 6
_GRPC_PERMISSION_DENIED = 7
_GRPC_FAILED_PRECONDITION = 9
_GRPC_INTERNAL = 13
_GRPC_UNAVAILABLE = 14


class NetmgrError(Exception):
    """Base of every error netmgr raises on purpose."""

    exit_code = 1
    grpc_code = _GRPC_UNKNOWN
    #: stable short name sent over the API so the client can rebuild the class
    kind = "NetmgrError"

    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message

    def wrap(self, context: str) -> "NetmgrError":
        """Return the same kind of error with ``context: `` in front of the message."""
        err = self.__class__.__new__(self.__class__)
        err.__dict__.update(self.__dict__)
        err.message = f"{context}: {self.message}"
        err.args = (err.message,)
        return err

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        cls.kind = cls.__name__
        _REGISTRY[cls.__name__] = cls


_REGISTRY: dict[str, type[NetmgrError]] = {"NetmgrError": NetmgrError}


class InvalidConfig(NetmgrError):
    """The request itself is wrong: bad CIDR, bad name, gateway outside the subnet."""

    grpc_code = _GRPC_INVALID_ARGUMENT


class NotFound(NetmgrError):
    """A named object does not exist."""

    grpc_code = _GRPC_NOT_FOUND


class NetworkNotFound(NotFound):
    """No network has that name or ID prefix."""


class EndpointNotFound(NotFound):
    """The container is not connected to that network."""


class ContainerNotFound(NotFound):
    """No container has that name or ID prefix."""


class DriverNotFound(NotFound):
    """Neither a built-in driver nor a discovered plugin has that name."""


class Conflict(NetmgrError):
    """The request clashes with existing state."""

    grpc_code = _GRPC_FAILED_PRECONDITION


class AlreadyExists(Conflict):
    """Duplicate name, address already taken, endpoint already there."""

    grpc_code = _GRPC_ALREADY_EXISTS


class InUse(Conflict):
    """The object is still used (a network with active endpoints)."""


class PermissionDenied(NetmgrError):
    """The kernel or the socket refused us (not root, EPERM)."""

    grpc_code = _GRPC_PERMISSION_DENIED


class Unavailable(NetmgrError):
    """A service we depend on is not there: the daemon, etcd, a plugin."""

    grpc_code = _GRPC_UNAVAILABLE


class StorageError(Unavailable):
    """The state dir cannot be written: disk full (ENOSPC), quota (EDQUOT), read-only (EROFS), I/O error.

    Raised by the store and by the writers of container state files
    (:mod:`netmgr.statefiles`) with the errno's words first, e.g. ``no space
    left on device: write the store /var/lib/netmgr/netmgr.db``. The operation
    changed nothing; it succeeds again once space returns, with no restart.
    """

    def __init__(self, message: str = "", errno: int = 0) -> None:
        super().__init__(message)
        self.errno = errno


class KernelError(NetmgrError):
    """A kernel call failed for a reason not mapped to a more precise class."""

    grpc_code = _GRPC_INTERNAL

    def __init__(self, message: str = "", errno: int = 0) -> None:
        super().__init__(message)
        self.errno = errno


class InternalError(NetmgrError):
    """A bug: something netmgr did not expect. Shown as 'internal error'."""

    grpc_code = _GRPC_INTERNAL


def error_from_code(kind: str, message: str) -> NetmgrError:
    """Rebuild an error from the ``kind`` name sent over the API (unknown kinds: NetmgrError)."""
    cls = _REGISTRY.get(kind, NetmgrError)
    err = cls.__new__(cls)
    NetmgrError.__init__(err, message)
    if isinstance(err, (KernelError, StorageError)):
        err.errno = 0
    return err


class CommandNotFound(InvalidConfig):
    """``run``/``exec`` of a command that does not exist (Docker exits 127)."""

    exit_code = 127
