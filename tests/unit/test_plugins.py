"""Remote plugins without root: discovery, reply checks, error mapping, the SDK and the client
over a real unix socket, and the IPAM router with a fake plugin."""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import time

import grpc
import pytest
from netmgr.drivers.base import EndpointInfo, NetworkInfo
from netmgr.drivers.remote import convert
from netmgr.drivers.remote.client import (
    DRIVER_SERVICE,
    IPAM_SERVICE,
    PluginClient,
    _short,
    map_rpc_error,
)

from netmgr import errors
from netmgr.ipam import IPAM
from netmgr.model import Network, PoolConfig
from netmgr.plugins import discovery, sdk
from netmgr.plugins.ipam import ANY_V4, IpamRouter
from netmgr.plugins.registry import PluginRegistry
from netmgr.plugins.sdk import dpb, ipb

# -- discovery ---------------------------------------------------------------------------


def _listen(path: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    return s


def test_find_socket_spec_and_json(tmp_path):
    d = str(tmp_path)
    assert discovery.find(d, "nothing") is None
    s1 = _listen(os.path.join(d, "one.sock"))
    os.mkdir(os.path.join(d, "two"))
    s2 = _listen(os.path.join(d, "two", "two.sock"))
    (tmp_path / "three.spec").write_text("tcp://127.0.0.1:7001\n")
    (tmp_path / "four.json").write_text(json.dumps({"Name": "four", "Addr": "tcp://10.0.0.5:7002", "Timeout": 3,
                                                    "TLSConfig": {"CAFile": "/ca.pem", "CertFile": "/c.pem",
                                                                  "KeyFile": "/k.pem"}}))
    (tmp_path / "five.spec").write_text("unix:///run/x/five.sock")
    try:
        one = discovery.find(d, "one")
        assert (one.target, one.address, one.tls) == (f"unix:{d}/one.sock", f"unix://{d}/one.sock", None)
        assert discovery.find(d, "two").target == f"unix:{d}/two/two.sock"
        three = discovery.find(d, "three", default_timeout=7)
        assert (three.target, three.address, three.timeout) == ("127.0.0.1:7001", "tcp://127.0.0.1:7001", 7)
        four = discovery.find(d, "four")
        assert four.tls == discovery.TLSFiles("/ca.pem", "/c.pem", "/k.pem") and four.timeout == 3
        assert discovery.find(d, "five").target == "unix:/run/x/five.sock"
        assert discovery.names(d) == ["five", "four", "one", "three", "two"]
    finally:
        s1.close()
        s2.close()


def test_a_regular_file_named_sock_is_not_a_plugin(tmp_path):
    (tmp_path / "fake.sock").write_text("")
    assert discovery.find(str(tmp_path), "fake") is None


@pytest.mark.parametrize("name", ["../etc", "a/b", ".hidden", "", "-x"])
def test_bad_names_never_resolve(tmp_path, name):
    assert discovery.find(str(tmp_path), name) is None


@pytest.mark.parametrize("content,message", [
    ("http://1.2.3.4:80", "want unix:///PATH or tcp://HOST:PORT"),
    ("tcp://1.2.3.4", "want tcp://HOST:PORT"),
    ("tcp://1.2.3.4:99999", "want tcp://HOST:PORT"),
    ("unix://relative.sock", "want unix:///absolute/path"),
])
def test_bad_spec_files(tmp_path, content, message):
    (tmp_path / "p.spec").write_text(content)
    with pytest.raises(errors.InvalidConfig, match=message):
        discovery.find(str(tmp_path), "p")


@pytest.mark.parametrize("doc,message", [
    ("not json", "bad plugin spec"),
    (json.dumps({"Addr": "tcp://h:1", "TLSConfig": {"InsecureSkipVerify": True}}), "InsecureSkipVerify"),
    (json.dumps({"Addr": "tcp://h:1", "TLSConfig": {"CertFile": "/c"}}), "go together"),
    (json.dumps({"Addr": "unix:///x.sock", "TLSConfig": {"CAFile": "/ca"}}), "needs a tcp:// address"),
    (json.dumps({"Addr": "tcp://h:1", "Timeout": 0}), "Timeout"),
])
def test_bad_json_specs(tmp_path, doc, message):
    (tmp_path / "p.json").write_text(doc)
    with pytest.raises(errors.InvalidConfig, match=message):
        discovery.find(str(tmp_path), "p")


def test_registry_resolves_known_names_only(tmp_path):
    reg = PluginRegistry(str(tmp_path), None, known=lambda: {"old"})
    with pytest.raises(errors.DriverNotFound, match='^plugin "new" not found$'):
        reg.client("new")
    assert reg.client("old").name == "old"  # used by a network: resolves even though it is gone
    with pytest.raises(errors.DriverNotFound, match='^plugin "old" not found$'):
        reg.client("old").activate()


# -- reply checks -----------------------------------------------------------------------------

NET = NetworkInfo(id="n" * 64, name="net", options={"parent": "eth1"}, pools=(("10.1.0.0/24", "10.1.0.1"),
                                                                              ("fd00::/64", "fd00::1")),
                  driver_data={"k": "v"})
EP = EndpointInfo(id="e" * 64, network_id="n" * 64, ipv4="10.1.0.2/24", mac="02:42:0a:01:00:02")


def test_network_message():
    msg = convert.network(NET)
    assert [(d.pool, d.gateway, d.address_space) for d in msg.ipv4_data] == [("10.1.0.0/24", "10.1.0.1/24",
                                                                               "LocalDefault")]
    assert [(d.pool, d.gateway) for d in msg.ipv6_data] == [("fd00::/64", "fd00::1/64")]
    assert dict(msg.options) == {"parent": "eth1"} and dict(msg.driver_data) == {"k": "v"}


def test_host_ifname_fits_ifnamsiz():
    assert len(convert.host_ifname("ab" * 32)) <= 15


def _join(**kw):
    iface = kw.pop("iface", dpb.InterfaceName(src_name="veth0", dst_prefix="eth"))
    return dpb.JoinResponse(interface_name=iface, **kw)


def test_join_reply_ok():
    src, prefix, info = convert.join_reply("p", _join(gateway="10.1.0.1", gateway_ipv6="fd00::1", static_routes=[
        dpb.StaticRoute(destination="10.9.0.0/16", route_type=0, next_hop="10.1.0.254"),
        dpb.StaticRoute(destination="10.8.0.0/16", route_type=1)]))
    assert (src, prefix, info.gateway, info.gateway6) == ("veth0", "eth", "10.1.0.1", "fd00::1")
    assert info.static_routes == (("10.9.0.0/16", "10.1.0.254"), ("10.8.0.0/16", ""))


@pytest.mark.parametrize("reply,message", [
    (_join(iface=dpb.InterfaceName()), "no interface name"),
    (_join(iface=dpb.InterfaceName(src_name="a-very-long-interface-name")), "is not an interface name"),
    (_join(iface=dpb.InterfaceName(src_name="a/b")), "is not an interface name"),
    (_join(gateway="fd00::1"), "gateway 'fd00::1' is not an IPv4 address"),
    (_join(gateway_ipv6="10.0.0.1"), "is not an IPv6 address"),
    (_join(static_routes=[dpb.StaticRoute(destination="x")]), "is not a CIDR"),
    (_join(static_routes=[dpb.StaticRoute(destination="10.0.0.0/8", route_type=0)]), "next hop"),
    (_join(static_routes=[dpb.StaticRoute(destination="10.0.0.0/8", route_type=7)]), "route type 7"),
])
def test_malformed_join_replies(reply, message):
    with pytest.raises(convert.MalformedReply, match=message):
        convert.join_reply("p", reply)


def test_create_endpoint_reply_may_only_fill_in():
    ok = dpb.CreateEndpointResponse(interface=dpb.EndpointInterface(address="10.1.0.2/24"), driver_data={"a": "b"})
    assert convert.check_created_endpoint("p", EP, ok) == {"a": "b"}
    bad = dpb.CreateEndpointResponse(interface=dpb.EndpointInterface(mac_address="02:00:00:00:00:01"))
    with pytest.raises(convert.MalformedReply, match="mac_address"):
        convert.check_created_endpoint("p", EP, bad)


class _Err(grpc.RpcError):
    def __init__(self, code, details):
        self._code, self._details = code, details

    def code(self):
        return self._code

    def details(self):
        return self._details


@pytest.mark.parametrize("code,cls,text", [
    (grpc.StatusCode.INVALID_ARGUMENT, errors.InvalidConfig, 'plugin "p": Join: bad'),
    (grpc.StatusCode.NOT_FOUND, errors.NotFound, 'plugin "p": Join: bad'),
    (grpc.StatusCode.ALREADY_EXISTS, errors.AlreadyExists, 'plugin "p": Join: bad'),
    (grpc.StatusCode.INTERNAL, errors.NetmgrError, 'plugin "p": Join: bad'),
    (grpc.StatusCode.DEADLINE_EXCEEDED, errors.Unavailable, 'plugin "p": Join did not answer within 2 s'),
    (grpc.StatusCode.UNAVAILABLE, errors.Unavailable, 'plugin "p" is not available at unix:///s: Join: bad'),
])
def test_rpc_errors_map_to_netmgr_errors(code, cls, text):
    err = map_rpc_error("p", "Join", _Err(code, "bad"), 2.0, "unix:///s")
    assert type(err) is cls and str(err) == text


def test_connection_errors_are_short():
    text = "failed to connect to all addresses; last error: UNAVAILABLE: unix:/tmp/x.sock: Connection refused"
    assert _short(text) == "connection failed: Connection refused"


# -- the SDK and the client over a real socket ------------------------------------------------------


class Driver(sdk.NetworkDriver):
    description = "test driver"

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.calls: list[str] = []

    def CreateNetwork(self, request, context):
        self.calls.append("CreateNetwork")
        if request.network.options.get("bad"):
            raise sdk.invalid("bad option")
        if request.network.options.get("crash"):
            raise RuntimeError("boom")
        time.sleep(self.delay)
        return dpb.CreateNetworkResponse(driver_data={"seen": request.network.name})


def _client(tmp_path, name: str) -> PluginClient:
    return PluginClient(name, lambda: discovery.find(str(tmp_path), name, 1.0) or (_ for _ in ()).throw(
        errors.DriverNotFound(f'plugin "{name}" not found')))


def _create(client: PluginClient, **options) -> dpb.CreateNetworkResponse:
    req = dpb.CreateNetworkRequest(network=dpb.Network(id="n" * 64, name="net1", options=options))
    return client.call("driver", "CreateNetwork", req)


def test_sdk_plugin_round_trip(tmp_path):
    plugin = sdk.serve("t1", driver=Driver(), plugin_dir=str(tmp_path))
    client = _client(tmp_path, "t1")
    try:
        assert client.activate() == {DRIVER_SERVICE}
        assert _create(client).driver_data["seen"] == "net1"
        with pytest.raises(errors.InvalidConfig, match='^plugin "t1": CreateNetwork: bad option$'):
            _create(client, bad="1")
        with pytest.raises(errors.NetmgrError, match="RuntimeError: boom"):
            _create(client, crash="1")
        with pytest.raises(errors.DriverNotFound, match="not an IPAM driver"):
            client.require(IPAM_SERVICE)
        caps = client.call("driver", "GetCapabilities", dpb.GetCapabilitiesRequest())
        assert caps.scope == dpb.SCOPE_LOCAL and caps.description == "test driver"
    finally:
        client.close()
        plugin.stop()
    assert not os.path.exists(plugin.socket)


def test_deadline(tmp_path):
    plugin = sdk.serve("t2", driver=Driver(delay=2.0), plugin_dir=str(tmp_path))
    client = _client(tmp_path, "t2")
    try:
        start = time.monotonic()
        with pytest.raises(errors.Unavailable, match="CreateNetwork did not answer within 1 s"):
            _create(client)
        assert time.monotonic() - start < 1.9
    finally:
        client.close()
        plugin.stop(grace=0)


def test_restarted_plugin_is_used_at_once(tmp_path):
    plugin = sdk.serve("t3", driver=Driver(), plugin_dir=str(tmp_path))
    client = _client(tmp_path, "t3")
    try:
        _create(client)
        plugin.stop(grace=0)
        with pytest.raises(errors.DriverNotFound):
            _create(client)  # the socket is gone
        plugin = sdk.serve("t3", driver=Driver(), plugin_dir=str(tmp_path))
        assert _create(client).driver_data["seen"] == "net1"  # not idempotent, yet right the first time
    finally:
        client.close()
        plugin.stop(grace=0)


def test_ipam_base_and_health(tmp_path):
    plugin = sdk.serve("t4", ipam=sdk.Ipam(), plugin_dir=str(tmp_path))
    client = _client(tmp_path, "t4")
    try:
        assert client.activate() == {IPAM_SERVICE}
        spaces = client.call("ipam", "GetDefaultAddressSpaces", ipb.GetDefaultAddressSpacesRequest())
        assert spaces.local_default_address_space == "LocalDefault"
        assert client.call("ipam", "RequestPool", ipb.RequestPoolRequest(), optional=True) is None
    finally:
        client.close()
        plugin.stop(grace=0)


# -- the IPAM router --------------------------------------------------------------------------------


class FakeIpam:
    """Stands in for RemoteIpam: hands out 10.50.N.0/24 pools and addresses from .1 up."""

    def __init__(self, fail_on: str = "") -> None:
        self.name = "fake"
        self.fail_on = fail_on
        self.pools: dict[str, set] = {}
        self.log: list[tuple] = []

    def check(self):
        pass

    def address_space(self, scope):
        return "FakeLocal"

    def request_pool(self, space, pool, sub_pool, options, v6):
        self.log.append(("RequestPool", pool))
        subnet = ipaddress.ip_network(pool or f"10.50.{len(self.pools)}.0/24")
        self.pools[f"{space}/{subnet}"] = set()
        return f"{space}/{subnet}", subnet, {}

    def release_pool(self, pool_id):
        self.log.append(("ReleasePool", pool_id))
        self.pools.pop(pool_id, None)

    def request_address(self, pool_id, subnet, address="", options=None):
        if self.fail_on == "address" and not options:
            raise errors.Unavailable('plugin "fake": RequestAddress did not answer within 1 s')
        taken = self.pools[pool_id]
        ip = address or next(str(h) for h in subnet.hosts() if str(h) not in taken)
        taken.add(ip)
        return ip

    def release_address(self, pool_id, address):
        self.log.append(("ReleaseAddress", address))
        self.pools.get(pool_id, set()).discard(address)


class FakeRegistry:
    def __init__(self, ipam):
        self.fake = ipam

    def ipam(self, name):
        if name != "fake":
            raise errors.DriverNotFound(f'plugin "{name}" not found')
        return self.fake


def _router(fail_on: str = ""):
    fake = FakeIpam(fail_on)
    return IpamRouter(IPAM(), FakeRegistry(fake)), fake


def _net(router, **kw) -> Network:
    pools = router.requested_pools(kw.pop("pools", ()), kw.get("ipv6", False))
    return Network(id="a" * 64, name="n", driver="bridge", ipam_driver="fake", pools=pools, **kw)


def test_router_remote_network_life():
    router, fake = _router()
    router.check_driver("fake")
    with pytest.raises(errors.DriverNotFound, match='^plugin "other" not found$'):
        router.check_driver("other")
    net = _net(router)
    assert net.pools == (ANY_V4,)
    net = router.open_network(net)
    assert [(p.subnet, p.gateway) for p in net.pools] == [("10.50.0.0/24", "10.50.0.1")]
    assert net.ipam_data["pools"][0]["pool_id"] == "FakeLocal/10.50.0.0/24"
    assert router.request_address(net.id, 4) == "10.50.0.2/24"
    assert router.request_address(net.id, 6) == ""
    with pytest.raises(errors.InvalidConfig, match="does not belong"):
        router.request_address(net.id, 4, "10.99.0.5")
    router.release_address(net.id, "10.50.0.2/24")
    router.remove_network(net.id)
    assert fake.pools == {} and ("ReleaseAddress", "10.50.0.1") in fake.log


def test_router_user_pools_and_reload():
    router, fake = _router()
    net = router.open_network(_net(router, pools=(PoolConfig("10.60.0.0/24", gateway="10.60.0.254",
                                                              aux={"x": "10.60.0.9"}),)))
    assert (net.pools[0].gateway, net.pools[0].aux) == ("10.60.0.254", {"x": "10.60.0.9"})
    again, _ = _router()
    again.plugins = FakeRegistry(fake)
    again.load_network(net)  # a restart: no plugin call
    assert fake.log == [("RequestPool", "10.60.0.0/24")]
    again.remove_network(net.id)
    assert fake.pools == {}


def test_router_rolls_back_a_failed_network():
    router, fake = _router(fail_on="address")
    with pytest.raises(errors.Unavailable):
        router.open_network(_net(router, pools=(PoolConfig("10.61.0.0/24", aux={"x": "10.61.0.9"}),)))
    assert fake.pools == {} and fake.log[-1] == ("ReleasePool", "FakeLocal/10.61.0.0/24")


def test_router_releases_never_fail_when_the_plugin_is_gone():
    router, _fake = _router()
    net = router.open_network(_net(router))
    router.plugins = FakeRegistry(None)
    router.plugins.ipam = lambda name: (_ for _ in ()).throw(errors.DriverNotFound(f'plugin "{name}" not found'))
    router.release_address(net.id, "10.50.0.2/24")
    router.remove_network(net.id)
    assert not router.has_network(net.id)


def test_router_default_networks_use_the_builtin_ipam():
    router, fake = _router()
    net = Network(id="b" * 64, name="d", driver="bridge", pools=(PoolConfig("10.70.0.0/24", "10.70.0.1"),))
    assert router.open_network(net) is net
    assert router.request_address(net.id, 4) == "10.70.0.2/24"
    assert router.in_use(net.id) == 2 and fake.log == []


# -- TCP with TLS (loopback only) ---------------------------------------------------------------------


def _openssl(*args: str, cwd: str) -> None:
    import subprocess

    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture
def certs(tmp_path):
    import shutil

    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    d = str(tmp_path)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "1",
             "-subj", "/CN=nmt-ca", cwd=d)
    (tmp_path / "san.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    for who in ("server", "client"):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{who}.key", "-out", f"{who}.csr",
                 "-subj", f"/CN=nmt-{who}", cwd=d)
        _openssl("x509", "-req", "-in", f"{who}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{who}.pem", "-days", "1", "-extfile", "san.cnf", cwd=d)
    return tmp_path


def test_tcp_plugin_with_mutual_tls(certs):
    read = lambda name: (certs / name).read_bytes()  # noqa: E731
    creds = grpc.ssl_server_credentials([(read("server.key"), read("server.pem"))], root_certificates=read("ca.pem"),
                                        require_client_auth=True)
    plugin = sdk.serve("tls", driver=Driver(), address="127.0.0.1:0", credentials=creds)
    plugin_dir = certs / "plugins"
    plugin_dir.mkdir()
    spec = {"Name": "tls", "Addr": f"tcp://127.0.0.1:{plugin.port}", "Timeout": 2,
            "TLSConfig": {"CAFile": str(certs / "ca.pem"), "CertFile": str(certs / "client.pem"),
                          "KeyFile": str(certs / "client.key")}}
    (plugin_dir / "tls.json").write_text(json.dumps(spec))
    client = _client(plugin_dir, "tls")
    try:
        assert _create(client).driver_data["seen"] == "net1"
        assert client.address == f"tcp://127.0.0.1:{plugin.port}"
        # without a client certificate the plugin refuses the connection
        del spec["TLSConfig"]["CertFile"], spec["TLSConfig"]["KeyFile"]
        (plugin_dir / "tls.json").write_text(json.dumps(spec))
        client.reset()
        with pytest.raises(errors.Unavailable):
            _create(client)
    finally:
        client.close()
        plugin.stop(grace=0)
