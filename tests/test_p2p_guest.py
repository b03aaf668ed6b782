"""The asyncio-to-trio bridge: results, errors and cancellation cross in both directions."""

import asyncio

import pytest
import trio
import trio.lowlevel

from bzzz.p2p._guest import GuestStopped, TrioGuest


async def serve(stop: trio.Event, task_status=trio.TASK_STATUS_IGNORED) -> None:
    task_status.started()
    await stop.wait()


async def test_results_and_errors_come_back():
    guest = TrioGuest()
    await guest.start(serve)
    try:

        async def add(a: int, b: int) -> int:
            await trio.lowlevel.checkpoint()
            return a + b

        async def fail() -> None:
            raise KeyError("missing")

        assert await guest.call(add, 2, 3) == 5
        with pytest.raises(KeyError, match="missing"):
            await guest.call(fail)
    finally:
        await guest.stop()


async def test_cancelling_the_asyncio_caller_cancels_the_trio_task():
    guest = TrioGuest()
    await guest.start(serve)
    cancelled = trio.Event()
    try:

        async def forever() -> None:
            try:
                await trio.sleep_forever()
            finally:
                cancelled.set()

        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.1):
                await guest.call(forever)
        await guest.call(cancelled.wait)
        assert cancelled.is_set()
    finally:
        await guest.stop()


async def test_calls_in_flight_when_trio_stops_fail_instead_of_hanging():
    guest = TrioGuest()
    await guest.start(serve)
    pending = asyncio.ensure_future(guest.call(trio.sleep_forever))
    await asyncio.sleep(0.05)
    await guest.stop()
    with pytest.raises(GuestStopped):
        await pending
    with pytest.raises(GuestStopped):
        await guest.call(trio.sleep, 0)


async def test_a_trio_task_deaf_to_cancellation_cannot_hold_the_stop(monkeypatch):
    """The node's stop is bounded: after STOP_TIMEOUT_S it goes on, saying what still ran."""
    monkeypatch.setattr("bzzz.p2p._guest.STOP_TIMEOUT_S", 0.3)
    release = trio.Event()

    async def deaf(stop: trio.Event, task_status=trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await stop.wait()
        with trio.CancelScope(shield=True):
            await release.wait()

    guest = TrioGuest()
    await guest.start(deaf)
    try:
        stuck = await asyncio.wait_for(guest.stop(), 5)
        assert len(stuck) == 1 and stuck[0].endswith(" deaf") and "test_p2p_guest.py:" in stuck[0]
    finally:
        guest._token.run_sync_soon(release.set)
        await guest.wait_done()
    assert await guest.stop() == []


async def test_a_failing_start_raises_in_asyncio():
    async def broken(stop, task_status=trio.TASK_STATUS_IGNORED):
        raise OSError("cannot listen")

    guest = TrioGuest()
    with pytest.raises(OSError, match="cannot listen"):
        await guest.start(broken)
