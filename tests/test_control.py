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
