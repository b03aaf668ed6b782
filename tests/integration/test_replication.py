"""Daemons replicate each other's audit logs over /bzzz/log/1.0.0 and verify what they get."""

import json
import signal
import subprocess
import sys

from bzzz.auditlog.entry import Entry, SignedEntry
from tests.integration.harness import Cluster, Daemon, wait_until
from tests.integration.testpeer import LogAuthor


def replicas_complete(daemons: list[Daemon]) -> bool:
    heads = {d.peer_id: d.status()["auditlog"]["head"] for d in daemons}
    for daemon in daemons:
        replicas = daemon.status()["auditlog"]["replicas"]
        for other in daemons:
            if other is daemon:
                continue
            held = replicas.get(other.peer_id)
            if held is None or held["hash"] != heads[other.peer_id]["hash"]:
                return False
    return True


def log_verify(daemon: Daemon) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "bzzz",
            "--config",
            str(daemon.config_path),
            "log",
            "verify",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_three_daemons_hold_verified_replicas_and_a_returning_one_catches_up(cluster: Cluster):
    daemons = cluster.full_mesh(["a", "b", "c"])
    a, b, c = daemons
    wait_until(lambda: replicas_complete(daemons), 20, "every daemon holds the others' logs")
    for daemon in daemons:
        report = json.loads(log_verify(daemon).stdout)
        assert report["ok"] is True
        assert sorted(report["heads"]) == sorted(d.peer_id for d in daemons)

    c.signal(signal.SIGTERM)
    assert c.wait_exit(10) == 0
    # While c is away, a and b keep writing (b's restart: node_stopped, node_started, ...).
    b.signal(signal.SIGTERM)
    assert b.wait_exit(10) == 0
    b.start()
    moved = a.status()["auditlog"]["head"]["seq"]
    c.start()
    wait_until(lambda: replicas_complete(daemons), 20, "c catches up")
    assert c.status()["auditlog"]["replicas"][a.peer_id]["seq"] >= moved
    kinds = [
        json.loads(line)["type"]
        for line in subprocess.run(
            [
                sys.executable,
                "-m",
                "bzzz",
                "--config",
                str(c.config_path),
                "log",
                "show",
                "--json",
                "--author",
                b.peer_id,
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()
    ]
    assert kinds.count("node_started") == 2 and "node_stopped" in kinds
    assert "peer_joined" in kinds and "capability_changed" in kinds
    assert log_verify(c).returncode == 0


async def test_entries_altered_in_transit_are_refused_and_counted(cluster: Cluster):
    (daemon,) = cluster.full_mesh(["a"])
    author = LogAuthor()
    async with author.peer:
        await author.peer.join(daemon.address)
        for n in range(3):
            author.append("tick", {"n": n})
        # Seq 2 altered on the wire, its hash recomputed to match; the signature cannot be.
        original = author.served[1]
        altered = Entry(**{**original.entry.fields(), "data": {"n": 999}})
        author.served[1] = SignedEntry(altered, altered.digest(), original.signature)

        def refused() -> dict:
            return daemon.status()["auditlog"]["refused"]

        await author.announce_until(
            lambda: refused().get("bad_signature"), 10, "the altered entry refused"
        )
        replica = daemon.status()["auditlog"]["replicas"][author.peer.peer_id]
        assert replica["seq"] == 1, "only the entry before the altered one is kept"

        # Corrupted bytes (hash no longer matches): refused as malformed.
        author.served = list(author.entries)
        raw = author.served[1].to_record().replace(b'"n":1', b'"n":7')
        author.served[1] = _Raw(raw)  # type: ignore[assignment]
        await author.announce_until(
            lambda: refused().get("malformed"), 10, "the corrupted entry refused"
        )

        # The honest history is accepted afterwards.
        author.served = list(author.entries)
        await author.announce_until(
            lambda: daemon.status()["auditlog"]["replicas"][author.peer.peer_id]["seq"] == 3,
            10,
            "the honest entries",
        )


class _Raw:
    """Bytes that pretend to be an entry on the wire."""

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self.entry = type("E", (), {"seq": 2})()

    def to_record(self) -> bytes:
        return self.raw


async def test_a_rewritten_history_signed_by_its_author_is_a_fork(cluster: Cluster):
    (daemon,) = cluster.full_mesh(["a"])
    author = LogAuthor()
    async with author.peer:
        await author.peer.join(daemon.address)
        for n in range(3):
            author.append("tick", {"n": n})
        await author.announce_until(
            lambda: (
                (r := daemon.status()["auditlog"]["replicas"].get(author.peer.peer_id))
                and r["seq"] == 3
            ),
            10,
            "the first history replicated",
        )
        # The author rewrites seq 3 and goes on: every entry validly signed with its key.
        author.entries = author.entries[:2]
        author.append("tick", {"n": "rewritten"})
        author.append("tick", {"n": 4})
        forks = await author.announce_until(
            lambda: daemon.status()["auditlog"]["forks"], 10, "the fork"
        )
        assert forks[0]["author"] == author.peer.peer_id and forks[0]["seq"] == 3
        assert forks[0]["ours"] != forks[0]["theirs"]
        assert any(
            "[error" in line and "auditlog_fork" in line for line in daemon.log().splitlines()
        )

    verdict = log_verify(daemon)
    assert verdict.returncode == 1
    assert f"{author.peer.peer_id} seq 3: fork" in verdict.stderr
    evidence = json.loads((daemon.dir / "state/auditlog/forks.jsonl").read_text())
    assert evidence["ours"]["hash"] != evidence["theirs"]["hash"]
    assert evidence["ours"]["entry"]["seq"] == evidence["theirs"]["entry"]["seq"] == 3
