"""Finding plugins by name in the plugin directory (no I/O beyond the directory itself).

Docker's plugin discovery, narrowed to one directory (``--plugin-dir``,
default ``/run/netmgr/plugins``). For a plugin called NAME, in this order:

* ``NAME.sock`` or ``NAME/NAME.sock``: a unix socket the plugin listens on;
* ``NAME.spec``: one line, the address: ``unix:///path/to.sock`` or
  ``tcp://HOST:PORT`` (plaintext);
* ``NAME.json``: Docker's JSON spec, plus netmgr's ``Timeout``::

      {"Name": "NAME", "Addr": "tcp://10.0.0.5:7001",
       "TLSConfig": {"CAFile": "/etc/netmgr/ca.pem", "CertFile": "/etc/netmgr/cert.pem",
                     "KeyFile": "/etc/netmgr/key.pem"},
       "Timeout": 10}

  With ``TLSConfig`` the channel uses TLS: ``CAFile`` verifies the plugin's
  certificate, ``CertFile``/``KeyFile`` (both or neither) authenticate
  netmgr to the plugin. ``InsecureSkipVerify`` is refused (gRPC has no such
  mode; give the plugin's CA instead).

Names follow network names (``[a-zA-Z0-9][a-zA-Z0-9_.-]*``), so a name can
never point outside the directory.
"""

from __future__ import annotations

import json
import os
import re
import stat
from dataclasses import dataclass

from netmgr import errors

__all__ = ["DEFAULT_TIMEOUT", "PluginSpec", "TLSFiles", "find", "names", "parse_address", "valid_name"]

DEFAULT_TIMEOUT = 10.0
_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")


@dataclass(frozen=True)
class TLSFiles:
    """Files of a TLS client configuration (paths; read when the channel is made)."""

    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""


@dataclass(frozen=True)
class PluginSpec:
    """Where a plugin listens and how to talk to it."""

    name: str
    #: gRPC target: ``unix:/abs/path.sock`` or ``HOST:PORT``
    target: str
    #: the address as a user reads it: ``unix:///abs/path.sock`` or ``tcp://HOST:PORT``
    address: str
    #: the file it was found through
    source: str
    tls: TLSFiles | None = None
    #: deadline of each call, seconds
    timeout: float = DEFAULT_TIMEOUT


def valid_name(name: str) -> bool:
    """True for a name that can be looked up (no path separators, no leading dot)."""
    return bool(_NAME.match(name)) and len(name) <= 128


def parse_address(text: str, source: str) -> tuple[str, str]:
    """``unix:///p`` or ``tcp://h:p`` as (gRPC target, display address); InvalidConfig otherwise."""
    text = text.strip()
    if text.startswith("unix://"):
        path = text[len("unix://"):]
        if not path.startswith("/"):
            raise errors.InvalidConfig(f"bad plugin address {text!r} in {source}: want unix:///absolute/path")
        return f"unix:{path}", f"unix://{path}"
    if text.startswith("tcp://"):
        hostport = text[len("tcp://"):].rstrip("/")
        host, sep, port = hostport.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise errors.InvalidConfig(f"bad plugin address {text!r} in {source}: want tcp://HOST:PORT")
        return hostport, f"tcp://{hostport}"
    raise errors.InvalidConfig(f"bad plugin address {text!r} in {source}: want unix:///PATH or tcp://HOST:PORT")


def _is_socket(path: str) -> bool:
    try:
        return stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError:
        return False


def _from_json(name: str, path: str, default_timeout: float) -> PluginSpec:
    try:
        with open(path) as f:
            doc = json.load(f)
        if not isinstance(doc, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as exc:
        raise errors.InvalidConfig(f"bad plugin spec {path}: {exc}") from None
    target, address = parse_address(str(doc.get("Addr", "")), path)
    tls = None
    cfg = doc.get("TLSConfig")
    if cfg:
        if cfg.get("InsecureSkipVerify"):
            raise errors.InvalidConfig(f"bad plugin spec {path}: InsecureSkipVerify is not supported; set CAFile")
        tls = TLSFiles(cfg.get("CAFile", ""), cfg.get("CertFile", ""), cfg.get("KeyFile", ""))
        if bool(tls.cert_file) != bool(tls.key_file):
            raise errors.InvalidConfig(f"bad plugin spec {path}: CertFile and KeyFile go together")
        if address.startswith("unix:"):
            raise errors.InvalidConfig(f"bad plugin spec {path}: TLSConfig needs a tcp:// address")
    timeout = doc.get("Timeout", default_timeout)
    if not isinstance(timeout, (int, float)) or not 0 < timeout <= 600:
        raise errors.InvalidConfig(f"bad plugin spec {path}: Timeout must be a number of seconds in (0, 600]")
    return PluginSpec(name, target, address, path, tls, float(timeout))


def find(plugin_dir: str, name: str, default_timeout: float = DEFAULT_TIMEOUT) -> PluginSpec | None:
    """The spec of plugin ``name`` in ``plugin_dir``, or None; InvalidConfig for a broken spec file."""
    if not valid_name(name):
        return None
    for sock in (os.path.join(plugin_dir, f"{name}.sock"), os.path.join(plugin_dir, name, f"{name}.sock")):
        if _is_socket(sock):
            path = os.path.abspath(sock)
            return PluginSpec(name, f"unix:{path}", f"unix://{path}", path, None, default_timeout)
    spec = os.path.join(plugin_dir, f"{name}.spec")
    if os.path.isfile(spec):
        try:
            with open(spec) as f:
                line = f.readline()
        except OSError as exc:
            raise errors.InvalidConfig(f"bad plugin spec {spec}: {exc.strerror}") from None
        target, address = parse_address(line, spec)
        return PluginSpec(name, target, address, spec, None, default_timeout)
    path = os.path.join(plugin_dir, f"{name}.json")
    if os.path.isfile(path):
        return _from_json(name, path, default_timeout)
    return None


def names(plugin_dir: str) -> list[str]:
    """Every plugin name the directory offers (sockets, spec and JSON files), sorted."""
    try:
        entries = os.listdir(plugin_dir)
    except OSError:
        return []
    found = set()
    for entry in entries:
        base, dot, ext = entry.rpartition(".")
        if dot and ext in ("sock", "spec", "json") and valid_name(base):
            found.add(base)
        elif valid_name(entry) and _is_socket(os.path.join(plugin_dir, entry, f"{entry}.sock")):
            found.add(entry)
    return sorted(found)
