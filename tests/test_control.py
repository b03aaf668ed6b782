import asyncio
import json
import stat

import pytest

from bzzz import control
from bzzz.control import AlreadyRunning, ControlError, ControlServer, NoDaemon


async def ask_raw(path, payload: bytes) -> dict:
    reader, writer = await asyncio.open_unix_connection(str(path))
    writer.write(payload)
    await writer.drain()
    line = await reader.readline()
    writer.close()
    return json.loads(line)


async def test_commands_answer_and_bad_requests_get_errors(tmp_path):
    async def slow(args):
        return {"echo": args}

    def broken(args):
        raise ValueError("no such thing")

    server = ControlServer(tmp_path / "c.sock", {"echo": slow, "broken": broken})
    await server.start()
    try:
        assert stat.S_IMODE((tmp_path / "c.sock").stat().st_mode) == 0o660
        ok = await ask_raw(server.path, b'{"command": "echo", "args": {"x": 1}}\n')
        assert ok == {"ok": True, "result": {"echo": {"x": 1}}}
        assert (await ask_raw(server.path, b"nonsense\n"))["error"].startswith("bad request")
        unknown = await ask_raw(server.path, b'{"command": "reboot"}\n')
        assert unknown == {"ok": False, "error": "unknown command 'reboot'"}
        failed = await ask_raw(server.path, b'{"command": "broken"}\n')
        assert failed == {"ok": False, "error": "ValueError: no such thing"}
        # The blocking client used by the CLI, from a thread.
        result = await asyncio.to_thread(control.request, server.path, "echo", {"y": 2})
        assert result == {"echo": {"y": 2}}
        with pytest.raises(ControlError, match="unknown command"):
            await asyncio.to_thread(control.request, server.path, "reboot")
    finally:
        await server.stop()
    assert not server.path.exists()


async def test_a_live_socket_is_not_stolen_but_a_dead_one_is_replaced(tmp_path):
    path = tmp_path / "c.sock"
    first = ControlServer(path, {})
    await first.start()
    try:
        with pytest.raises(AlreadyRunning):
            await ControlServer(path, {}).start()
    finally:
        await first.stop()

    path.write_bytes(b"")  # a leftover file where no one listens
    second = ControlServer(path, {"ping": lambda args: "pong"})
    await second.start()
    try:
        assert await asyncio.to_thread(control.request, path, "ping") == "pong"
    finally:
        await second.stop()


def test_no_daemon_is_a_distinct_error(tmp_path):
    with pytest.raises(NoDaemon, match="no bzzz daemon answers"):
        control.request(tmp_path / "absent.sock", "status")


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        (b"{}\n", "bad request: command: Field required"),
        (b'{"command": []}\n', "bad request: command: Input should be a valid string"),
        (b'{"command": "status", "args": 5}\n', "bad request: args: Input should be"),
        (b"[" * 30_000 + b"\n", "bad request"),
        (b'{"command": "status", "extra": 1}\n', "bad request: extra: Extra inputs"),
        (b"x" * 70_000 + b"\n", "bad request: over 65536 bytes"),
        (b"\n", "bad request"),
    ],
)
async def test_every_request_gets_an_answer_whatever_it_holds(tmp_path, payload, error):
    server = ControlServer(tmp_path / "c.sock", {"status": lambda args: "fine"})
    await server.start()
    try:
        answer = await ask_raw(server.path, payload)
        assert answer["ok"] is False and answer["error"].startswith(error), answer
        assert (await ask_raw(server.path, b'{"command": "status"}\n'))["result"] == "fine"
    finally:
        await server.stop()


async def test_stalled_clients_are_cut_off_and_a_crowd_is_told_busy(tmp_path):
    server = ControlServer(
        tmp_path / "c.sock", {"status": lambda args: "fine"}, timeout=0.5, max_clients=4
    )
    await server.start()
    try:
        # Four clients that connect and never send a line hold every slot...
        stalled = [await asyncio.open_unix_connection(str(server.path)) for _ in range(4)]
        busy = await ask_raw(server.path, b'{"command": "status"}\n')
        assert busy == {"ok": False, "error": "busy: too many clients, try again"}
        assert server.refused_busy == 1
        # ...until the connection time limit ends them: each is closed without an answer.
        for reader, writer in stalled:
            async with asyncio.timeout(2):
                assert await reader.read() == b""
            writer.close()
        assert (await ask_raw(server.path, b'{"command": "status"}\n'))["result"] == "fine"
    finally:
        await server.stop()
