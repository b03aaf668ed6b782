import io
import json
import logging

import structlog

from bzzz import logs


def configured(fmt: str, level: str = "info", env=None) -> io.StringIO:
    stream = io.StringIO()  # not a TTY: as under systemd
    logs.configure(level, fmt, env or {}, stream=stream)
    return stream


def test_each_line_carries_its_syslog_priority():
    stream = configured("console")
    log = structlog.get_logger("t")
    log.info("node_ready", peers=2)
    log.warning("peer_stale", peer="x")
    log.debug("hidden")
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("node_failed")
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("<6>") and "node_ready" in lines[0] and "peers=2" in lines[0]
    assert lines[1].startswith("<4>") and "peer_stale" in lines[1]
    assert not any("hidden" in line for line in lines)
    assert all(line.startswith("<3>") for line in lines[2:]), "traceback lines keep priority"
    assert any("ValueError: boom" in line for line in lines[2:])


def test_json_lines_are_one_object_each():
    stream = configured("json")
    structlog.get_logger("t").error("dial_failed", address="/ip4/1.2.3.4/tcp/1")
    [line] = stream.getvalue().splitlines()
    assert line.startswith("<3>")
    record = json.loads(line[3:])
    assert record["event"] == "dial_failed"
    assert record["level"] == "error"


def test_library_records_are_rendered_and_libp2p_errors_demoted():
    stream = configured("console")
    logging.getLogger("libp2p.network.swarm").error("Failed to open TCP stream")
    logging.getLogger("libp2p.network.auto_connector").info("AUTO_CONNECTOR_STATE chatter")
    logging.getLogger("github.Requester").warning("rate limited")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("<4>") and "Failed to open TCP stream" in lines[0]
    assert lines[1].startswith("<4>") and "rate limited" in lines[1]
