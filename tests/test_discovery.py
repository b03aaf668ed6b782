from bzzz.discovery import decode_txt, encode_txt, parse_announcement, peer_id_of, service_type

PEER = "12D3KooWJjhQdGBSTNtqVcgfUUR2bGPCeGQAmtMn7wVdKTpC4vyG"
OTHER = "12D3KooWNPLc23nn3XdBLhKnY6Ryoz2BVQQ7ZRbmx7CKw3rA7Sdx"


def test_the_service_type_keeps_the_long_tag_of_the_go_bzzz():
    assert service_type("bzzz-peer-discovery") == "_bzzz-peer-discovery._udp.local."


def test_txt_strings_round_trip_and_are_length_prefixed():
    strings = [f"dnsaddr=/ip4/10.0.0.1/tcp/4001/p2p/{PEER}", "network=bzzz", ""]
    data = encode_txt(strings)
    assert data[0] == len(strings[0])
    assert decode_txt(data) == strings


def test_an_announcement_names_the_peer_its_addresses_and_network():
    found = parse_announcement(
        [
            f"dnsaddr=/ip4/10.0.0.1/tcp/4001/p2p/{PEER}",
            f"dnsaddr=/ip6/fd00::1/tcp/4001/p2p/{PEER}",
            f"dnsaddr=/ip4/10.0.0.9/tcp/4001/p2p/{OTHER}",  # not the same peer: left out
            "dnsaddr=/ip4/10.0.0.1/tcp/4001",  # no peer id: unusable
            "network=alpha",
        ]
    )
    assert found is not None
    assert found.peer_id == PEER
    assert found.addresses == [
        f"/ip4/10.0.0.1/tcp/4001/p2p/{PEER}",
        f"/ip6/fd00::1/tcp/4001/p2p/{PEER}",
    ]
    assert found.network == "alpha"


def test_js_and_go_announcements_carry_no_network():
    found = parse_announcement([f"dnsaddr=/ip4/192.168.1.5/tcp/4001/p2p/{PEER}"])
    assert found is not None and found.network is None
    assert parse_announcement(["txtvers=1"]) is None
    assert peer_id_of(f"/ip4/1.2.3.4/tcp/1/p2p/{PEER}") == PEER


def test_a_lan_flooded_with_announcements_is_dialled_within_a_bound():
    from bzzz.config import MdnsConfig
    from bzzz.discovery import MAX_LAN_PEERS, Dialer, MdnsDiscovery
    from bzzz.p2p import Identity

    class NoHost:
        peer_id = PEER

    dialer = Dialer(NoHost())  # type: ignore[arg-type]
    mdns = MdnsDiscovery(NoHost(), dialer, MdnsConfig(), "bzzz")  # type: ignore[arg-type]
    for _ in range(MAX_LAN_PEERS + 40):
        peer = Identity.generate().peer_id
        mdns.on_txt(encode_txt([f"dnsaddr=/ip4/10.0.0.9/tcp/4001/p2p/{peer}"]), ttl=120)
    assert len(dialer._wants) == MAX_LAN_PEERS and mdns.ignored == 40
