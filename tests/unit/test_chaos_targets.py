"""The chaos checker's reachability rule (seed 7 once failed on it: a name ping on the default bridge)."""

from netmgr.testing.chaos import ping_targets


def test_default_bridge_peers_are_reached_by_address_only():
    # Docker's predefined bridge has no embedded DNS; netmgr keeps that (resolv.conf is the host's)
    assert ping_targets("bridge", "web", "172.17.0.4") == ("172.17.0.4",)


def test_user_defined_network_peers_are_reached_by_name_and_address():
    assert ping_targets("nmxbr1", "web", "172.18.0.4") == ("web", "172.18.0.4")
    assert ping_targets("nmxov3", "web", "10.0.1.4") == ("web", "10.0.1.4")
