import io
import json
import logging
import os
import socket
import struct
import threading
from datetime import datetime
from pathlib import Path

import pytest
import structlog

from bzzz import logs


@pytest.fixture(autouse=True)
def logging_back_on():
    yield
    logging.disable(logging.NOTSET)  # a test that called close() leaves the others logging


def configured(fmt: str, level: str = "info", env=None) -> io.StringIO:
    stream = io.StringIO()  # not a terminal, not the journal: a pipe or a file
    logs.configure(level, fmt, env or {}, stream=stream)
    return stream


def journal_file(tmp_path: Path):
    """A file standing for the journal stream, and the $JOURNAL_STREAM that names it."""
    stream = (tmp_path / "stdout").open("w")
    info = os.fstat(stream.fileno())
    return stream, {"JOURNAL_STREAM": f"{info.st_dev}:{info.st_ino}"}


def some_of_everything(log) -> None:
    log.info("node_ready", peers=2)
    log.warning("peer_stale", peer="12D3KooWx")
    logging.getLogger("github.Requester").warning("rate limited on %s", "/user")
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("node_failed")


def test_json_lines_are_pure_json_with_timestamp_level_and_event():
    stream = configured("json")
    some_of_everything(structlog.get_logger("t"))
    records = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [r["event"] for r in records] == [
        "node_ready",
        "peer_stale",
        "github_requester",
        "node_failed",
    ]
    for record in records:
        assert record["timestamp"].endswith("Z"), "UTC"
        datetime.fromisoformat(record["timestamp"])
        assert record["level"] in ("info", "warning", "error")
    assert records[2]["detail"] == "rate limited on /user" and "bzzz_event" not in records[2]
    assert "ValueError: boom" in records[3]["exception"]
    assert "Traceback (most recent call last)" in records[3]["exception"]


def test_json_has_no_priority_prefix_even_on_the_journal_stream(tmp_path: Path):
    stream, env = journal_file(tmp_path)
    logs.configure("info", "json", env, stream=stream, journal_socket=str(tmp_path / "none"))
    some_of_everything(structlog.get_logger("t"))
    stream.close()
    for line in (tmp_path / "stdout").read_text().splitlines():
        assert json.loads(line)["event"]


def test_console_lines_off_a_terminal_carry_a_timestamp_and_level():
    stream = configured("console")
    some_of_everything(structlog.get_logger("t"))
    lines = stream.getvalue().splitlines()
    stamp, *words = lines[0].split()
    datetime.fromisoformat(stamp)
    assert words[:3] == ["[info", "]", "node_ready"]
    assert "peers=2" in lines[0]
    assert "[warning" in lines[2] and "github_requester" in lines[2] and "rate limited" in lines[2]
    assert not any(line.startswith("<") for line in lines)
    assert "ValueError: boom" in stream.getvalue()


def test_an_inherited_journal_stream_that_is_not_ours_is_ignored(tmp_path: Path):
    _, env = journal_file(tmp_path)  # a service's variable, but we write to a pipe
    stream = configured("console", env=env)
    structlog.get_logger("t").info("node_ready")
    line = stream.getvalue()
    assert not line.startswith("<")
    datetime.fromisoformat(line.split()[0])


def test_on_the_journal_stream_without_journald_lines_keep_their_priority(tmp_path: Path):
    stream, env = journal_file(tmp_path)
    logs.configure("info", "console", env, stream=stream, journal_socket=str(tmp_path / "none"))
    some_of_everything(structlog.get_logger("t"))
    stream.close()
    lines = (tmp_path / "stdout").read_text().splitlines()
    assert lines[0].startswith("<6>") and "node_ready" in lines[0], "journald stamps the time"
    assert lines[1].startswith("<4>") and "peer_stale" in lines[1]
    assert lines[2].startswith("<4>") and "github_requester" in lines[2]
    assert all(line.startswith("<3>") for line in lines[3:]), "traceback lines keep priority"
    assert any("ValueError: boom" in line for line in lines[3:])


def test_libp2p_dial_failures_are_debug_with_our_event_names():
    def libp2p_records() -> None:
        swarm = logging.getLogger("libp2p.network.swarm")
        swarm.error("failed to upgrade security for peer %s: %s", "12D3KooWx", "handshake failed")
        logging.getLogger("libp2p.transport.tcp.tcp").error("Failed to open TCP stream: %s", "x")
        swarm.error("Error in background prune: %s", "y")
        logging.getLogger("libp2p.network.auto_connector").info("AUTO_CONNECTOR_STATE chatter")

    stream = configured("json")
    libp2p_records()
    [other] = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert other == {**other, "event": "libp2p_swarm", "level": "warning"}, "not an error"
    assert other["detail"] == "Error in background prune: y"

    stream = configured("json", level="debug")
    libp2p_records()
    records = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(r["event"], r["level"]) for r in records[:2]] == [
        ("libp2p_upgrade_failed", "debug"),
        ("libp2p_dial_failed", "debug"),
    ]
    assert "handshake failed" in records[0]["detail"]


def test_urllib3_retries_are_not_warnings():
    def retry() -> None:
        logging.getLogger("urllib3.connectionpool").warning(
            "Retrying (%r) after connection broken by '%r': %s",
            "Retry(total=2, connect=None, read=None, redirect=None, status=None)",
            "ProtocolError('Connection aborted.')",
            "/repos/acme/widgets/issues",
        )

    stream = configured("json")
    retry()
    assert stream.getvalue() == ""
    stream = configured("json", level="debug")
    retry()
    record = json.loads(stream.getvalue())
    assert (record["event"], record["level"]) == ("urllib3_retry", "debug")


def test_nothing_is_written_after_close():
    stream = configured("console")
    log = structlog.get_logger("t")
    log.info("node_stopped", uptime_s=1.0)
    logs.close()
    log.error("late")
    late = threading.Thread(target=lambda: logging.getLogger("urllib3.poolmanager").error("late"))
    late.start()
    late.join()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1 and "node_stopped" in lines[0]


def test_journal_fields_of_an_event():
    record = logging.makeLogRecord(
        {"pathname": "/opt/bzzz/node.py", "lineno": 7, "funcName": "run"}
    )
    event = {
        "event": "task_claimed",
        "level": "warning",
        "timestamp": "2026-01-01T00:00:00Z",
        "peer_id": "12D3KooWx",
        "task": "acme/widgets#3",
        "listen-addrs": ["/ip4/127.0.0.1/tcp/1"],
        "_private": 1,
        "2fa": True,
        "message": "not the MESSAGE",
        "big": "x" * 10_000,
        "detail": "a\nb",
    }
    fields = logs.journal_fields(event, "task_claimed peer_id=12D3KooWx", record)
    assert fields == {
        "MESSAGE": "task_claimed peer_id=12D3KooWx",
        "PRIORITY": "4",
        "SYSLOG_IDENTIFIER": "bzzz",
        "BZZZ_EVENT": "task_claimed",
        "CODE_FILE": "/opt/bzzz/node.py",
        "CODE_LINE": "7",
        "CODE_FUNC": "run",
        "PEER": "12D3KooWx",
        "TASK": "acme/widgets#3",
        "LISTEN_ADDRS": "['/ip4/127.0.0.1/tcp/1']",
        "PRIVATE": "1",
        "FA": "True",
        "BZZZ_MESSAGE": "not the MESSAGE",
        "BIG": "x" * logs.MAX_FIELD,
        "DETAIL": "a\nb",
    }


def read_entry(data: bytes) -> dict[str, str]:
    """One datagram of journald's native protocol, decoded."""
    fields, at = {}, 0
    while at < len(data):
        end = data.index(b"\n", at)
        line = data[at:end]
        if b"=" in line:
            key, _, value = line.partition(b"=")
            at = end + 1
        else:
            (size,) = struct.unpack("<Q", data[end + 1 : end + 9])
            key, value = line, data[end + 9 : end + 9 + size]
            at = end + 9 + size + 1
        fields[key.decode()] = value.decode()
    return fields


def test_under_systemd_each_record_is_one_journal_entry_with_fields(tmp_path: Path):
    journald = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    journald.bind(str(tmp_path / "journal.sock"))
    journald.settimeout(5)
    stream, env = journal_file(tmp_path)
    logs.configure(
        "info", "console", env, stream=stream, journal_socket=str(tmp_path / "journal.sock")
    )
    log = structlog.get_logger("t")
    log.info("peer_connected", peer="12D3KooWx", address="/ip4/127.0.0.1/tcp/4001")
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("node_failed")
    logging.getLogger("libp2p.network.swarm").error("Error in background prune: %s", "y")
    entries = [read_entry(journald.recv(1 << 20)) for _ in range(3)]

    assert entries[0]["MESSAGE"] == "peer_connected address=/ip4/127.0.0.1/tcp/4001 peer=12D3KooWx"
    assert entries[0]["PRIORITY"] == "6" and entries[0]["BZZZ_EVENT"] == "peer_connected"
    assert entries[0]["PEER"] == "12D3KooWx" and entries[0]["SYSLOG_IDENTIFIER"] == "bzzz"
    assert entries[0]["CODE_FILE"] == __file__ and entries[0]["CODE_FUNC"].startswith("test_under")
    assert entries[1]["PRIORITY"] == "3" and entries[1]["MESSAGE"].startswith("node_failed\n")
    assert "ValueError: boom" in entries[1]["MESSAGE"], "the traceback is in the entry"
    assert (entries[2]["BZZZ_EVENT"], entries[2]["PRIORITY"]) == ("libp2p_swarm", "4")
    assert entries[2]["DETAIL"] == "Error in background prune: y"
    assert not any("BZZZ_BZZZ" in name for entry in entries for name in entry)

    journald.close()  # journald gone: the line still reaches stdout, with its priority
    log.warning("peer_stale", peer="12D3KooWx")
    stream.close()
    [line] = (tmp_path / "stdout").read_text().splitlines()
    assert line.startswith("<4>") and "peer_stale" in line


@pytest.mark.parametrize(
    ("logger", "text", "event"),
    [
        ("libp2p.host.basic_host", "Failed to open stream to peer 12D3KooWx:\n  Error: x", None),
        ("libp2p.protocol_muxer.multiselect_client", "MultiselectClient handshake: read", None),
        ("libp2p.identity.identify.identify", "Error sending identify response to 12D3", None),
        ("libp2p.network.swarm", "Swarm::add_conn | muxer event_started set but", None),
        ("libp2p.identity.identify.identify", "Failed to parse identify response: x", "keep"),
    ],
)
def test_a_peer_going_away_is_not_a_warning_but_a_malformed_answer_is(logger, text, event):
    """What a restarting peer makes py-libp2p say is routine; what a peer sends wrongly is not."""
    name, level = logs.library_record(logger, text, logging.ERROR)
    if event == "keep":
        assert level == logging.WARNING and name == "libp2p_identify"
    else:
        assert level == logging.DEBUG and " " not in name
