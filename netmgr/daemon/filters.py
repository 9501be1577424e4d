"""``--filter`` for ``network ls/prune`` and ``ps``, with Docker's semantics.

The same key given twice is OR, different keys are AND; ``name`` is a
case-sensitive substring match; an unknown key is ``Invalid filter 'KEY'``.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import defaultdict
from typing import Callable, Iterable, TypeVar

from netmgr import errors

T = TypeVar("T")
NETWORK_KEYS = {"driver", "name", "id", "label", "scope", "type", "dangling"}
PRUNE_KEYS = {"label", "label!", "until"}
CONTAINER_KEYS = {"name", "id", "status", "network", "exited", "label"}


def _group(raw, allowed: set[str]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = defaultdict(list)
    for f in raw:
        if f.key not in allowed:
            raise errors.InvalidConfig(f"Invalid filter '{f.key}'")
        groups[f.key].append(f.value)
    return groups


def _label_match(labels: dict[str, str], want: str) -> bool:
    key, eq, value = want.partition("=")
    return key in labels and (not eq or labels[key] == value)


_GO_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}


def _parse_time(text: str) -> dt.datetime:
    """An RFC3339 time as netmgr stores it (nanoseconds cut to microseconds)."""
    if not text:
        return dt.datetime.min.replace(tzinfo=dt.timezone.utc)
    base, _, frac = text.rstrip("Z").partition(".")
    return dt.datetime.fromisoformat(base + ("." + (frac + "000000")[:6] if frac else "")).replace(
        tzinfo=dt.timezone.utc)


def _until(value: str) -> dt.datetime:
    """``until=``: a Go duration before now (``24h``, ``1h30m``), a Unix time or an RFC3339 date/time."""
    now = dt.datetime.now(dt.timezone.utc)
    if value != "0" and re.fullmatch(f"(?:{_GO_DURATION.pattern})+", value):
        return now - dt.timedelta(seconds=sum(float(n) * _UNIT_SECONDS[u] for n, u in _GO_DURATION.findall(value)))
    try:
        return dt.datetime.fromtimestamp(float(value), dt.timezone.utc)
    except (ValueError, OverflowError, OSError):
        pass
    try:
        stamp = dt.datetime.fromisoformat(value)
    except ValueError:
        raise errors.InvalidConfig(f"invalid filter 'until={value}'") from None
    return stamp if stamp.tzinfo else stamp.astimezone()  # no zone: local time, as Docker


def networks(nets: list, raw, ctl, prune: bool = False) -> list:
    """The networks that pass every filter group."""
    groups = _group(raw, PRUNE_KEYS if prune else NETWORK_KEYS)
    tests: dict[str, Callable] = {
        "driver": lambda n, v: n.driver == v,
        "name": lambda n, v: v in n.name,
        "id": lambda n, v: n.id.startswith(v),
        "label": lambda n, v: _label_match(n.labels, v),
        "label!": lambda n, v: not _label_match(n.labels, v),
        "scope": lambda n, v: n.scope == v,
        "type": lambda n, v: (v == "builtin") == n.predefined,
        "dangling": lambda n, v: (v in ("true", "1")) == (not n.predefined and not ctl.network_endpoints(n.id)),
        "until": lambda n, v: _parse_time(n.created) < _until(v),
    }
    if "type" in groups and any(v not in ("custom", "builtin") for v in groups["type"]):
        bad = next(v for v in groups["type"] if v not in ("custom", "builtin"))
        raise errors.InvalidConfig(f"invalid filter: 'type'='{bad}'")
    return [n for n in nets if all(any(tests[k](n, v) for v in vals) for k, vals in groups.items())]


STATUSES = {"created", "restarting", "running", "removing", "paused", "exited", "dead"}


def wants_all(raw) -> bool:
    """``ps --filter status=exited`` implies ``-a`` (as Docker)."""
    return any(f.key in ("status", "exited") for f in raw)


def containers(ctrs: list, raw, ctl) -> list:
    """The containers that pass every filter group."""
    groups = _group(raw, CONTAINER_KEYS)
    for value in groups.get("status", []):
        if value not in STATUSES:
            raise errors.InvalidConfig(f"Invalid filter 'status={value}'")
    for value in groups.get("name", []):
        try:
            re.compile(value)
        except re.error as exc:
            raise errors.InvalidConfig(f"Invalid filter 'name={value}': {exc}") from None

    def on_network(c, v):
        for ep in ctl.container_endpoints(c.id):
            net = ctl.networks.get(ep.network_id)
            if net and (net.name == v or net.id.startswith(v)):
                return True
        return False

    tests: dict[str, Callable] = {
        "name": lambda c, v: re.search(v, "/" + c.name) is not None,
        "id": lambda c, v: c.id.startswith(v),
        "status": lambda c, v: c.state.status == v,
        "network": on_network,
        "exited": lambda c, v: c.state.status == "exited" and str(c.state.exit_code) == v,
        "label": lambda c, v: False,
    }
    return [c for c in ctrs if all(any(tests[k](c, v) for v in vals) for k, vals in groups.items())]


def natural_sorted(items: Iterable[T], key: Callable[[T], str]) -> list[T]:
    """Case-sensitive natural order (``net2`` before ``net10``, ``Zed`` before ``alpha``)."""
    def natural(item):
        # digits sort before letters; ints and strings never meet in one comparison
        # equal numbers: fewer leading zeros first (fvbommel/sortorder, used by the docker CLI)
        parts = re.split(r"(\d+)", key(item))
        return [(0, int(part), len(part)) if part.isdigit() else (1, 0, part) for part in parts]
    return sorted(items, key=natural)
