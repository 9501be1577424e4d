#!/usr/bin/env python3
"""A network driver plugin that misbehaves on purpose (SDK-based), for the rollback tests.

    misbehave.py --plugin-dir DIR --name NAME --mode MODE [--delay S] [--joined FILE]

Every mode creates the endpoint's interface (a veth pair: the end named as
netmgr suggests goes to the container, its peer ``nmq…`` stays) where a real
plugin would, then:

* ``ok``: behaves;
* ``slow-join``: Join sleeps ``--delay`` seconds first (and creates nothing if
  netmgr gave up meanwhile, as a well-written plugin checks);
* ``crash-join``: Join creates the interface, then the process dies (exit 3);
* ``crash-in-sandbox``: the same, with the interface created inside the sandbox;
* ``bad-join``: Join creates the interface and replies with a malformed gateway;
* ``ghost-join``: Join replies with an interface that does not exist;
* ``bad-endpoint``: CreateEndpoint replies with a different MAC address;
* ``fail-create``: CreateNetwork fails with INVALID_ARGUMENT.

With ``--joined FILE`` the plugin appends a line to FILE each time a Join
returns (so a test can wait for a slow Join to finish, not sleep).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time

from netmgr.plugins import sdk
from netmgr.plugins.sdk import dpb


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


class Misbehave(sdk.NetworkDriver):
    description = "misbehaves on purpose"

    def __init__(self, mode: str, delay: float, joined: str | None = None) -> None:
        self.mode = mode
        self.delay = delay
        self.joined = joined

    def CreateNetwork(self, request, context):
        if self.mode == "fail-create":
            raise sdk.invalid("refusing on purpose")
        return dpb.CreateNetworkResponse(driver_data={"mode": self.mode})

    def CreateEndpoint(self, request, context):
        if self.mode == "bad-endpoint":
            return dpb.CreateEndpointResponse(interface=dpb.EndpointInterface(mac_address="02:00:00:00:00:99"))
        return dpb.CreateEndpointResponse()

    def Join(self, request, context):
        try:
            return self._join(request, context)
        finally:
            if self.joined:
                with open(self.joined, "a") as f:
                    f.write("joined\n")

    def _join(self, request, context):
        name = request.host_ifname
        if self.mode == "slow-join":
            time.sleep(self.delay)
            if not context.is_active():
                return dpb.JoinResponse()
        if self.mode == "ghost-join":
            return dpb.JoinResponse(interface_name=dpb.InterfaceName(src_name="nmt-ghost0"))
        if self.mode == "crash-in-sandbox":
            subprocess.run(["nsenter", f"--net={request.sandbox_key}", "ip", "link", "add", name, "type", "veth",
                            "peer", "name", "nmq" + name[3:]], check=True, capture_output=True)
            os._exit(3)
        _ip("link", "add", name, "type", "veth", "peer", "name", "nmq" + name[3:])
        if self.mode == "crash-join":
            os._exit(3)
        gateway = "not-an-address" if self.mode == "bad-join" else request.network.ipv4_data[0].gateway.split("/")[0]
        return dpb.JoinResponse(interface_name=dpb.InterfaceName(src_name=name, dst_prefix="eth"), gateway=gateway)

    def DeleteEndpoint(self, request, context):
        subprocess.run(["ip", "link", "del", request.host_ifname], capture_output=True)
        return dpb.DeleteEndpointResponse()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--plugin-dir", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--mode", default="ok")
    parser.add_argument("--delay", type=float, default=3.0)
    parser.add_argument("--joined", default=None)
    args = parser.parse_args()
    sdk.run(args.name, driver=Misbehave(args.mode, args.delay, args.joined), plugin_dir=args.plugin_dir)


if __name__ == "__main__":
    main()
