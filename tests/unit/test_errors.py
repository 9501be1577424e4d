"""netmgr.errors: the hierarchy, stable exit and gRPC codes, wrap() and the API round trip."""

from __future__ import annotations

import pytest

from netmgr import errors

# grpc.StatusCode numbers (stable by the gRPC spec)
UNKNOWN, INVALID_ARGUMENT, NOT_FOUND, ALREADY_EXISTS = 2, 3, 5, 6
PERMISSION_DENIED, FAILED_PRECONDITION, INTERNAL, UNAVAILABLE = 7, 9, 13, 14

ALL = [getattr(errors, name) for name in errors.__all__ if name != "error_from_code"]

PARENTS = {
    errors.InvalidConfig: errors.NetmgrError,
    errors.CommandNotFound: errors.InvalidConfig,
    errors.NotFound: errors.NetmgrError,
    errors.NetworkNotFound: errors.NotFound,
    errors.EndpointNotFound: errors.NotFound,
    errors.ContainerNotFound: errors.NotFound,
    errors.DriverNotFound: errors.NotFound,
    errors.Conflict: errors.NetmgrError,
    errors.AlreadyExists: errors.Conflict,
    errors.InUse: errors.Conflict,
    errors.PermissionDenied: errors.NetmgrError,
    errors.Unavailable: errors.NetmgrError,
    errors.StorageError: errors.Unavailable,
    errors.KernelError: errors.NetmgrError,
    errors.InternalError: errors.NetmgrError,
}

GRPC = {
    errors.NetmgrError: UNKNOWN,
    errors.InvalidConfig: INVALID_ARGUMENT,
    errors.CommandNotFound: INVALID_ARGUMENT,
    errors.NotFound: NOT_FOUND,
    errors.NetworkNotFound: NOT_FOUND,
    errors.EndpointNotFound: NOT_FOUND,
    errors.ContainerNotFound: NOT_FOUND,
    errors.DriverNotFound: NOT_FOUND,
    errors.Conflict: FAILED_PRECONDITION,
    errors.AlreadyExists: ALREADY_EXISTS,
    errors.InUse: FAILED_PRECONDITION,
    errors.PermissionDenied: PERMISSION_DENIED,
    errors.Unavailable: UNAVAILABLE,
    errors.StorageError: UNAVAILABLE,
    errors.KernelError: INTERNAL,
    errors.InternalError: INTERNAL,
}


def test_all_lists_every_class():
    assert set(ALL) == set(GRPC)
    assert set(PARENTS) | {errors.NetmgrError} == set(ALL)


@pytest.mark.parametrize("cls", list(PARENTS), ids=lambda c: c.__name__)
def test_hierarchy(cls):
    assert cls.__bases__ == (PARENTS[cls],)
    assert issubclass(cls, errors.NetmgrError)
    assert issubclass(cls, Exception)


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_codes(cls):
    assert cls.grpc_code == GRPC[cls]
    assert cls.exit_code == (127 if cls is errors.CommandNotFound else 1)
    assert cls.kind == cls.__name__


def test_grpc_codes_match_grpc_if_installed():
    grpc = pytest.importorskip("grpc")
    for cls, code in GRPC.items():
        assert cls.grpc_code == code
    assert grpc.StatusCode.NOT_FOUND.value[0] == NOT_FOUND
    assert grpc.StatusCode.ALREADY_EXISTS.value[0] == ALREADY_EXISTS
    assert grpc.StatusCode.FAILED_PRECONDITION.value[0] == FAILED_PRECONDITION
    assert grpc.StatusCode.INVALID_ARGUMENT.value[0] == INVALID_ARGUMENT
    assert grpc.StatusCode.PERMISSION_DENIED.value[0] == PERMISSION_DENIED
    assert grpc.StatusCode.UNAVAILABLE.value[0] == UNAVAILABLE
    assert grpc.StatusCode.INTERNAL.value[0] == INTERNAL
    assert grpc.StatusCode.UNKNOWN.value[0] == UNKNOWN


def test_command_not_found_exit_127():
    err = errors.CommandNotFound('exec: "nosuchcmd": executable file not found in $PATH')
    assert err.exit_code == 127
    assert isinstance(err, errors.InvalidConfig)


def test_message_is_str():
    err = errors.NetworkNotFound("network nosuch not found")
    assert str(err) == "network nosuch not found"
    assert err.message == "network nosuch not found"
    assert err.args == ("network nosuch not found",)
    assert str(errors.NetmgrError()) == ""


def test_kernel_error_errno():
    err = errors.KernelError("File exists", errno=17)
    assert err.errno == 17
    assert errors.KernelError("x").errno == 0


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_wrap_keeps_class_and_prefixes(cls):
    err = cls("File exists")
    wrapped = err.wrap("add veth nm3f2a").wrap("create endpoint web1")
    assert type(wrapped) is cls
    assert str(wrapped) == "create endpoint web1: add veth nm3f2a: File exists"
    assert wrapped.args == (str(wrapped),)
    assert wrapped.exit_code == cls.exit_code and wrapped.grpc_code == cls.grpc_code
    assert str(err) == "File exists"  # the original is untouched
    with pytest.raises(cls):
        raise wrapped


def test_wrap_keeps_attributes():
    err = errors.KernelError("File exists", errno=17)
    err.cli_exit_code = 125  # set by `run` on the way out
    wrapped = err.wrap("add veth")
    assert wrapped.errno == 17
    assert wrapped.cli_exit_code == 125


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_error_from_code_round_trip(cls):
    err = cls("some message")
    back = errors.error_from_code(err.kind, str(err))
    assert type(back) is cls
    assert str(back) == "some message"
    assert back.args == ("some message",)
    assert back.exit_code == err.exit_code
    assert back.grpc_code == err.grpc_code
    if cls is errors.KernelError:
        assert back.errno == 0


def test_error_from_code_unknown_kind():
    back = errors.error_from_code("SomethingNew", "boom")
    assert type(back) is errors.NetmgrError
    assert str(back) == "boom"
    back = errors.error_from_code("", "")
    assert type(back) is errors.NetmgrError


def test_error_from_code_does_not_resolve_non_errors():
    assert type(errors.error_from_code("Exception", "x")) is errors.NetmgrError
    assert type(errors.error_from_code("ValueError", "x")) is errors.NetmgrError


def test_catching_by_family():
    with pytest.raises(errors.NotFound):
        raise errors.DriverNotFound('plugin "nosuch" not found')
    with pytest.raises(errors.Conflict):
        raise errors.InUse("error while removing network: network netA id x has active endpoints")
