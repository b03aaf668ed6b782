from bzzz.p2p import addresses
from bzzz.p2p.addresses import dialable

PEER = "12D3KooWPeer"


def test_wildcards_become_each_interface_address_loopback_last(monkeypatch):
    monkeypatch.setattr(
        addresses, "interface_addresses", lambda: (["192.0.2.7", "127.0.0.1"], ["fd00::7", "::1"])
    )
    bound = [f"/ip4/0.0.0.0/tcp/4001/p2p/{PEER}", f"/ip6/::/tcp/4001/p2p/{PEER}"]
    assert dialable(bound) == [
        f"/ip4/192.0.2.7/tcp/4001/p2p/{PEER}",
        f"/ip4/127.0.0.1/tcp/4001/p2p/{PEER}",
        f"/ip6/fd00::7/tcp/4001/p2p/{PEER}",
        f"/ip6/::1/tcp/4001/p2p/{PEER}",
    ]


def test_a_specific_address_stays_as_it_is():
    assert dialable([f"/ip4/127.0.0.1/tcp/5/p2p/{PEER}"]) == [f"/ip4/127.0.0.1/tcp/5/p2p/{PEER}"]


def test_this_hosts_interfaces_leave_out_link_local_and_put_loopback_last():
    v4, v6 = addresses.interface_addresses()
    assert v4[-1] == "127.0.0.1"
    assert not any(a.startswith("fe80") for a in v6)
