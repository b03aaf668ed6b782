"""SIGKILL at random moments never loses an acknowledged append, and never breaks the chain."""

import random
import signal
import subprocess
import sys
import time

from bzzz.auditlog import reader
from bzzz.p2p import Identity, verify


def test_fifty_kills_lose_no_acknowledged_entry(tmp_path):
    identity = Identity.generate()
    seed = identity.key_pair.private_key.to_bytes()[:32].hex()
    rng = random.Random(20261124)
    acknowledged = 0
    for kill in range(50):
        child = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.integration.log_writer",
                str(tmp_path),
                identity.peer_id,
                seed,
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None
        ready, head = child.stdout.readline().split()
        assert ready == "ready"
        # What survived the last kill: at least every acknowledged entry, nothing torn.
        assert int(head) >= acknowledged, f"kill {kill}: head {head} < acknowledged {acknowledged}"
        deadline = time.monotonic() + rng.uniform(0.005, 0.15)
        while time.monotonic() < deadline:
            acknowledged = int(child.stdout.readline())
        child.send_signal(signal.SIGKILL)
        child.wait()
        # Lines already printed before the kill were acknowledged too.
        for line in child.stdout.read().split():
            acknowledged = int(line)

        store, scan = reader.open_chain(tmp_path, identity.peer_id)
        assert scan.problems == [], f"kill {kill}: {scan.problems}"
        assert scan.head_seq >= acknowledged
        seqs = [signed.entry.seq for signed in reader.entries(store)]
        assert seqs == list(range(1, scan.head_seq + 1))

    heads, findings = reader.verify(tmp_path, verify)
    assert findings == []
    assert heads[identity.peer_id] >= acknowledged > 50
