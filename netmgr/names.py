"""Names and ID prefixes: validation and lookup with Docker's rules and wording."""

from __future__ import annotations

import random
import re
from typing import Callable, Iterable, TypeVar

from netmgr import errors

# used with fullmatch: "^...$" with match() would accept a final newline
NAME_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*")
T = TypeVar("T")

_ADJECTIVES = ("brave", "calm", "eager", "fervent", "gifted", "happy", "jolly", "keen", "lucid",
               "modest", "nifty", "quirky", "serene", "tender", "vibrant", "wizardly", "zealous")
_SCIENTISTS = ("allen", "babbage", "cerf", "dijkstra", "engelbart", "hopper", "kahn", "lamport",
               "liskov", "metcalfe", "postel", "ritchie", "shannon", "thompson", "turing", "wirth")


def check_container_name(name: str) -> None:
    """Docker's container name rule."""
    if not NAME_RE.fullmatch(name):
        raise errors.InvalidConfig(
            f"Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")


def check_network_name(name: str) -> None:
    """Network names follow the same rule (no spaces, no slashes), with netmgr's wording."""
    if not name:
        raise errors.InvalidConfig("network name must not be empty")
    if not NAME_RE.fullmatch(name):
        raise errors.InvalidConfig(
            f"invalid network name {name!r}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")


def random_name(taken: Callable[[str], bool]) -> str:
    """A Docker-style ``adjective_scientist`` name not yet taken."""
    for attempt in range(100):
        name = f"{random.choice(_ADJECTIVES)}_{random.choice(_SCIENTISTS)}"
        if attempt > 10:
            name += str(random.randint(1, 99))
        if not taken(name):
            return name
    raise errors.InternalError("could not pick a free container name")


def lookup(ref: str, items: Iterable[T], name_of: Callable[[T], str], id_of: Callable[[T], str],
           not_found: Callable[[str], errors.NetmgrError], kind: str) -> T:
    """Find by exact name, full ID, or unique ID prefix (Docker's order)."""
    items = list(items)
    for item in items:
        if id_of(item) == ref:
            return item
    for item in items:
        if name_of(item) == ref:
            return item
    if ref:
        matches = [i for i in items if id_of(i).startswith(ref)]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            if kind == "container":  # the daemon's wording for containers differs
                raise errors.Conflict(f"Multiple IDs found with provided prefix: {ref}")
            raise errors.Conflict(f"{kind} {ref} is ambiguous ({len(matches)} matches found based on ID prefix)")
    raise not_found(ref)
