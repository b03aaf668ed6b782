"""The audit log on disk: chain, signatures, torn tails, damage, group commit."""

import asyncio
import json
import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bzzz.auditlog import reader
from bzzz.auditlog.entry import (
    GENESIS,
    MAX_LIST_ITEMS,
    MAX_STRING_CHARS,
    Entry,
    EntryError,
    SignedEntry,
    check_size,
    fit,
)
from bzzz.auditlog.log import AuditLog, ChainWriter
from bzzz.auditlog.segments import HEADER, ChainStore
from bzzz.p2p import Identity, verify
from tests import strategies


@pytest.fixture
def identity() -> Identity:
    return Identity.generate()


async def opened(root: Path, identity: Identity, fsync: str = "always") -> AuditLog:
    author = identity.peer_id
    log = AuditLog(ChainWriter(ChainStore(root / author, author), fsync), author, identity.sign)
    await log.start()
    return log


def segment_of(root: Path, identity: Identity) -> Path:
    [segment] = (root / identity.peer_id).glob("*.seg")
    return segment


async def test_entries_chain_sign_and_survive_a_restart(tmp_path, identity):
    log = await opened(tmp_path, identity)
    first = await log.append("node_started", {"version": "0.1.0"})
    second = await log.append("peer_joined", {"peer": "12D3KooWx"})
    await log.stop()
    assert (first.entry.seq, first.entry.prev) == (1, GENESIS)
    assert (second.entry.seq, second.entry.prev) == (2, first.hash)
    assert second.signed_by_author(verify)

    again = await opened(tmp_path, identity)
    assert again.head is not None and again.head.hash == second.hash
    third = await again.append("node_stopped", {})
    await again.stop()
    assert third.entry.prev == second.hash
    heads, findings = reader.verify(tmp_path, verify)
    assert heads == {identity.peer_id: 3}
    assert findings == []


async def test_batch_mode_acknowledges_concurrent_appends_in_order(tmp_path, identity):
    log = await opened(tmp_path, identity, fsync="batch")
    appended = await asyncio.gather(*(log.append("tick", {"n": n}) for n in range(200)))
    await log.stop()
    assert [s.entry.seq for s in appended] == list(range(1, 201))
    assert [s.entry.data["n"] for s in appended] == list(range(200))
    _, scan = reader.open_chain(tmp_path, identity.peer_id)
    assert (scan.head_seq, scan.count, scan.problems) == (200, 200, [])


async def test_a_torn_last_record_is_cut_back_on_open(tmp_path, identity):
    log = await opened(tmp_path, identity)
    for n in range(5):
        await log.append("tick", {"n": n})
    await log.stop()
    segment = segment_of(tmp_path, identity)
    whole = segment.read_bytes()
    segment.write_bytes(whole[:-7])  # the last record half written, as after a crash

    log = await opened(tmp_path, identity)
    assert log.writer.head_seq == 4
    assert log.writer.store.scan.tail_cut > 0
    assert log.writer.store.scan.problems == []
    fifth = await log.append("tick", {"n": "again"})
    await log.stop()
    assert fifth.entry.seq == 5
    assert reader.verify(tmp_path, verify)[1] == []


async def test_a_flipped_byte_in_the_middle_is_reported_with_its_seq(tmp_path, identity):
    log = await opened(tmp_path, identity)
    for n in range(5):
        await log.append("tick", {"n": n})
    await log.stop()
    segment = segment_of(tmp_path, identity)
    data = bytearray(segment.read_bytes())
    at = data.find(b'"n":2')
    data[at + 4] ^= 0x01  # seq 3's data, checksum now wrong
    segment.write_bytes(bytes(data))

    _, findings = reader.verify(tmp_path, verify)
    assert [(f.problem.seq, "unreadable" in f.problem.reason) for f in findings] == [(3, True)]
    log = await opened(tmp_path, identity)  # not a torn tail: nothing is cut
    assert log.writer.store.scan.tail_cut == 0
    assert log.writer.head_seq == 5
    await log.stop()
    assert segment.stat().st_size == len(data)


async def test_a_rewritten_entry_with_a_fixed_checksum_fails_its_signature(tmp_path, identity):
    log = await opened(tmp_path, identity)
    for n in range(3):
        await log.append("tick", {"n": n})
    await log.stop()
    segment = segment_of(tmp_path, identity)
    store, _ = reader.open_chain(tmp_path, identity.peer_id)
    records = [e for e in reader.entries(store)]
    # Rewrite seq 2 as a forger without the key would: new data, new hash, old signature.
    forged_entry = records[1].entry.__class__(**{**records[1].entry.fields(), "data": {"n": 99}})
    forged = SignedEntry(forged_entry, forged_entry.digest(), records[1].signature)
    out = bytearray()
    for signed in (records[0], forged, records[2]):
        payload = signed.to_record()
        out += HEADER.pack(len(payload), zlib.crc32(payload)) + payload
    segment.write_bytes(bytes(out))

    _, findings = reader.verify(tmp_path, verify)
    reasons = {(f.problem.seq, f.problem.reason) for f in findings}
    assert (2, "signature does not verify") in reasons
    assert (3, "prev is not the hash of the entry before") in reasons


async def test_whatever_a_peer_said_is_recorded_cut_to_fit_never_refused(tmp_path, identity):
    log = await opened(tmp_path, identity)
    signed = await log.append("objection", {"reason": "x" * 20000, "tags": list(range(5000))})
    data = signed.entry.data
    assert data["reason"].startswith("x" * MAX_STRING_CHARS)
    assert "cut 18976 chars" in data["reason"]
    assert len(data["tags"]) == MAX_LIST_ITEMS + 1 and "cut 4968 items" in data["tags"][-1]
    huge = await log.append("flood", {f"k{i}": "y" * 1000 for i in range(30)})
    assert huge.entry.data["cut"] is True and len(huge.entry.data["sha256"]) == 64
    assert log.writer.head_seq == 2
    await log.stop()


@settings(max_examples=200, deadline=None)
@given(strategies.json_values, st.integers(0, 40_000))
def test_fit_bounds_any_data_below_the_entry_limit(value, padding):
    data = fit({"value": value, "padding": "p" * padding, "odd": {1, 2}, "nan": float("nan")})
    entry = Entry(1, "2026-01-01T00:00:00+00:00", "author", "t", data, GENESIS)
    check_size(entry)  # never raises
    json.loads(entry.canonical)  # plain JSON


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 100_000,
        b'{"entry": {"seq": Infinity}}',
        b'{"entry": {"seq": 1e999}}',
        b'{"entry": {"seq": -1, "timestamp": "", "author": "", "type": "", "data": {}, '
        b'"prev": ""}, "hash": "", "sig": ""}',
        b'{"entry": {"seq": 1, "timestamp": 5, "author": "", "type": "", "data": {}, '
        b'"prev": ""}, "hash": "", "sig": ""}',
        b'{"entry": {"seq": 1, "timestamp": "", "author": "", "type": "", "data": [], '
        b'"prev": ""}, "hash": "", "sig": ""}',
        b"\xff\xfe",
        b"null",
    ],
)
def test_a_malformed_record_is_an_entry_error_whatever_it_holds(raw):
    with pytest.raises(EntryError):
        SignedEntry.from_record(raw)


async def test_a_pull_cancelled_as_its_read_completes_is_cancelled(tmp_path):
    """Python 3.11's asyncio.wait_for swallowed a cancellation that arrived in the same loop
    step as the read it waited for (gh-86296): the replicator's loop then ran on, and the node's
    stop waited for it until its deadline (exit status 1)."""
    from bzzz.auditlog.replication import Replicator

    class ClosingStream:
        """A peer's stream whose next line (its end) arrives exactly when we are cancelled."""

        def __init__(self) -> None:
            self.line: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

        async def write(self, data: bytes) -> None:
            return None

        async def readline(self, limit: int) -> bytes:
            return await self.line

    stream = ClosingStream()
    replicator = Replicator(None, None, tmp_path, None)  # type: ignore[arg-type]
    asking = asyncio.ensure_future(replicator._ask(stream, "author", 1))  # type: ignore[arg-type]
    for _ in range(3):
        await asyncio.sleep(0)  # the pull waits for its line
    stream.line.set_result(b"")  # the peer closed: "mid-answer" is what the pull would say
    asking.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asking
    replicator._pool.shutdown()
