"""netmgr.names: name rules, lookup by name / ID / ID prefix, random names.

Lookup order and texts are Docker's (docs/docker-reference.md, "ID prefixes
and ambiguity").
"""

from __future__ import annotations

import re
from collections import namedtuple

import pytest

from netmgr import errors, names

Obj = namedtuple("Obj", "name id")

NETS = [
    Obj("net10", "2cfa88beb0c7833d432380e6c7dcbd61efe1dfd84429683a8393e974234e75e0"),
    Obj("inspnet", "05dbc8ed436eede44224b546db7521100b89a1c124dda76fa581f44a2ffb2d50"),
    Obj("intnet", "0827c0c6e54a760c96751632b5c80cab9583ad8dc127e7d3439d3681152aaa55"),
    Obj("host", "096c7bfdeecfc47ee981530ed14d7db833258c8745791fe390823a0be853d5fd"),
    Obj("bridge", "0da93a710419b5c8dbb887f0b9e38686ccb8585c3799b18ef930c17ef9c5ca69"),
    Obj("2cf", "74adb652994311f0b03ba450961ad4be167636a44fc76e003f16ab975708a745"),
]


def _net(ref, items=NETS):
    return names.lookup(
        ref,
        items,
        lambda o: o.name,
        lambda o: o.id,
        lambda r: errors.NetworkNotFound(f"network {r} not found"),
        "network",
    )


def _ctr(ref, items):
    return names.lookup(
        ref,
        items,
        lambda o: o.name,
        lambda o: o.id,
        lambda r: errors.ContainerNotFound(f"No such container: {r}"),
        "container",
    )


# -- name rules ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["c1", "web_1", "a.b-c", "0abc", "A", "x" * 200])
def test_valid_container_names(name):
    names.check_container_name(name)


@pytest.mark.parametrize("name", ["bad name", "-x", "_x", ".x", "a/b", "a:b", "", "é"])
def test_invalid_container_names(name):
    with pytest.raises(errors.InvalidConfig) as exc:
        names.check_container_name(name)
    assert (
        str(exc.value)
        == f"Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
    )


@pytest.mark.parametrize("name", ["net1", "my-net", "my_net.2", "Zed"])
def test_valid_network_names(name):
    names.check_network_name(name)


@pytest.mark.parametrize("name", ["my net", "my/net", "a:b", "-x", "\n"])
def test_invalid_network_names(name):
    with pytest.raises(errors.InvalidConfig) as exc:
        names.check_network_name(name)
    assert name in str(exc.value) or repr(name) in str(exc.value)
    assert "only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed" in str(exc.value)


def test_empty_network_name():
    with pytest.raises(errors.InvalidConfig) as exc:
        names.check_network_name("")
    assert str(exc.value) == "network name must not be empty"


def test_trailing_newline_is_not_a_valid_name():
    # "$" in Python regexes matches before a final newline; the rule must not let it through
    with pytest.raises(errors.InvalidConfig):
        names.check_container_name("c1\n")
    with pytest.raises(errors.InvalidConfig):
        names.check_network_name("net1\n")


# -- lookup ------------------------------------------------------------------------


def test_lookup_by_exact_name():
    assert _net("inspnet").name == "inspnet"


def test_lookup_by_full_id():
    assert _net(NETS[1].id).name == "inspnet"


def test_lookup_by_unique_prefix_even_one_char():
    assert _net("05d").name == "inspnet"
    assert _net("2").name == "net10"
    assert _net("7").name == "2cf"


def test_name_beats_id_prefix():
    # a network named "2cf" and another whose ID starts with 2cf: the name wins
    assert _net("2cf").name == "2cf"
    assert _net("2cfa").name == "net10"


def test_full_id_beats_a_name():
    tricky = [Obj("a" * 64, "b" * 64), Obj("other", "a" * 64)]
    assert _net("a" * 64, tricky).name == "other"


def test_name_prefix_does_not_match():
    with pytest.raises(errors.NetworkNotFound) as exc:
        _net("insp")
    assert str(exc.value) == "network insp not found"


def test_prefix_is_case_sensitive():
    with pytest.raises(errors.NetworkNotFound):
        _net("2CF")
    with pytest.raises(errors.NetworkNotFound):
        _net("BRIDGE")


def test_ambiguous_network_prefix():
    with pytest.raises(errors.Conflict) as exc:
        _net("0")
    assert str(exc.value) == "network 0 is ambiguous (4 matches found based on ID prefix)"


def test_ambiguous_container_prefix_docker_wording():
    ctrs = [Obj("a", "8e19" + "0" * 60), Obj("b", "8e20" + "0" * 60), Obj("c", "9" * 64)]
    with pytest.raises(errors.Conflict) as exc:
        _ctr("8", ctrs)
    assert str(exc.value) == "Multiple IDs found with provided prefix: 8"
    assert _ctr("8e1", ctrs).name == "a"


def test_empty_ref_is_not_found():
    with pytest.raises(errors.NetworkNotFound):
        _net("")


def test_not_found_uses_the_callers_error():
    with pytest.raises(errors.ContainerNotFound) as exc:
        _ctr("nosuchc", [])
    assert str(exc.value) == "No such container: nosuchc"


def test_lookup_accepts_any_iterable():
    assert _net("bridge", iter(NETS)).name == "bridge"
    assert _net("bridge", (n for n in NETS)).name == "bridge"


# -- random names --------------------------------------------------------------------


def test_random_name_shape_and_validity():
    for _ in range(50):
        name = names.random_name(lambda n: False)
        assert re.fullmatch(r"[a-z]+_[a-z]+", name)
        names.check_container_name(name)


def test_random_name_avoids_taken():
    taken = set()
    for _ in range(40):
        name = names.random_name(taken.__contains__)
        assert name not in taken
        taken.add(name)


def test_random_name_adds_digits_when_crowded(monkeypatch):
    calls = []

    def taken(name):
        calls.append(name)
        return len(calls) <= 11

    name = names.random_name(taken)
    assert re.fullmatch(r"[a-z]+_[a-z]+\d+", name)


def test_random_name_gives_up():
    with pytest.raises(errors.InternalError):
        names.random_name(lambda n: True)
