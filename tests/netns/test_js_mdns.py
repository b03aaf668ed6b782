"""A js-libp2p node and a bzzz daemon on two hosts of one LAN find each other by mDNS."""

import pytest

from tests.integration.harness import Cluster, await_until
from tests.interop.jspeer import JsPeer, unavailable
from tests.netns.lab import Lab

pytestmark = pytest.mark.skipif(unavailable() is not None, reason=str(unavailable()))


async def test_js_and_bzzz_discover_each_other_by_mdns(lab: Lab, cluster: Cluster):
    bzzz_host, js_host = lab.add_host(), lab.add_host()
    daemon = cluster.add("a", ip=bzzz_host.address, mdns=True, prefix=bzzz_host.prefix)
    daemon.start()
    async with JsPeer(
        f"/ip4/{js_host.address}/tcp/0",
        mdns_tag="_bzzz-peer-discovery._udp.local",
        prefix=js_host.prefix,
    ) as js:
        # js learns our peer id from our mDNS answers: nothing else told it.
        await js.wait_for(
            lambda e: e["event"] == "discovered" and e["peerId"] == daemon.peer_id, 15
        )
        # ...and the daemon found js from the dnsaddr= strings of its answers (js answers
        # carry no full service record for zeroconf to resolve).
        await await_until(
            lambda: f"peer={js.peer_id}" in daemon.log() and "peer_discovered" in daemon.log(),
            15,
            "bzzz discovers js",
        )
        discovered = [line for line in daemon.log().splitlines() if "peer_discovered" in line]
        assert any(js.peer_id in line for line in discovered)
        await await_until(
            lambda: (r := daemon.peer(js.peer_id)) and r["connected"],
            15,
            "a connection between them",
        )
