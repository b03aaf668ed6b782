"""Two hosts running the installed service on one LAN find each other by mDNS alone."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.integration.harness import wait_until
from tests.systemd.sdbox import Box, unavailable

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(unavailable() is not None, reason=str(unavailable())),
]


@pytest.fixture
def boxes(staged: Path) -> Iterator[list[Box]]:
    tag = os.getpid() % 10000
    subnet = f"10.78.{tag % 250}"
    machines = [Box(f"bzmd{tag}{n}", net=f"sdbm{tag}:{subnet}.{n + 2}/24") for n in range(2)]
    try:
        for machine in machines:
            machine.up()
            machine.cp(staged / "bzzz", "/srv/bzzz")
            machine.cp(staged / "wheels", "/srv/wheels")
        yield machines
    finally:
        for machine in machines:
            machine.down()


def test_two_services_on_one_lan_find_each_other_by_mdns(boxes: list[Box]):
    def install(box: Box) -> None:
        box.exec("/srv/bzzz/install-service.sh", "--wheelhouse", "/srv/wheels", timeout=300)

    with ThreadPoolExecutor(len(boxes)) as pool:
        list(pool.map(install, boxes))

    def status(box: Box) -> dict:
        return json.loads(box.exec("bzzz", "status", "--json").stdout)

    ids = [status(box)["peer_id"] for box in boxes]
    for box, other in ((boxes[0], ids[1]), (boxes[1], ids[0])):
        row = wait_until(
            lambda b=box, o=other: next(
                (r for r in status(b)["peers"] if r["peer_id"] == o and r["connected"]), None
            ),
            30,
            "the other box, found by mDNS",
        )
        assert row["capabilities"] == ["general"]
        journal = box.exec("journalctl", "-u", "bzzz", "--no-pager").stdout
        assert "mdns_started" in journal
    # Neither was told about the other: mDNS did it, under the unit's hardening.
    config = boxes[0].exec("cat", "/etc/bzzz/config.toml").stdout
    assert "bootstrap_peers = []" in config
