"""Run trio as a guest of the running asyncio loop, and call trio code from asyncio.

py-libp2p is written for trio, the rest of the daemon for asyncio. `trio.lowlevel.start_guest_run`
lets both share one thread: trio's tasks run as callbacks of the asyncio loop, so plain objects
(futures, queues) can be handed across without locks. What crosses the boundary here is only
"start this trio coroutine and give me its result", with cancellation going both ways.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import trio
from outcome import Outcome

from bzzz.stacks import innermost_line

T = TypeVar("T")

STOP_TIMEOUT_S = 5.0


class GuestStopped(RuntimeError):
    """The trio side has ended, so the call could not run (or was cut short)."""


class TrioGuest:
    """One trio run inside the asyncio loop, with a nursery that asyncio callers can use.

    `start(main)` runs `main(task_status)` in trio; `main` calls `task_status.started()` once it is
    ready to serve calls, then returns when `stop_event` (passed to it) is set.
    """

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._nursery: trio.Nursery | None = None
        self._stop: trio.Event | None = None
        self._done: asyncio.Future[None] | None = None

    async def start(self, main: Callable[..., Awaitable[None]]) -> None:
        """Start the trio run and wait until `main` reports started (or fails)."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        started: asyncio.Future[None] = loop.create_future()
        done: asyncio.Future[None] = loop.create_future()
        self._done = done

        async def root() -> None:
            self._token = trio.lowlevel.current_trio_token()
            self._stop = trio.Event()
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                await nursery.start(main, self._stop)
                if not started.done():
                    started.set_result(None)
                await self._stop.wait()
                nursery.cancel_scope.cancel()

        def finished(result: Outcome[None]) -> None:
            self._nursery = None
            try:
                result.unwrap()
            except BaseException as exc:
                error = _single(exc)
                if not isinstance(error, Exception):
                    error = GuestStopped(repr(error))
                # A failure before start-up is raised by start(); later ones by wait_done().
                if not started.done():
                    started.set_exception(error)
                    done.set_result(None)
                else:
                    done.set_exception(error)
            else:
                if not started.done():
                    started.set_exception(GuestStopped("trio ended before it started"))
                done.set_result(None)

        def run_sync_soon_threadsafe(fn: Callable[[], object]) -> None:
            loop.call_soon_threadsafe(fn)

        trio.lowlevel.start_guest_run(
            root,
            run_sync_soon_threadsafe=run_sync_soon_threadsafe,
            done_callback=finished,
            # asyncio owns signals: trio must not install its wakeup fd or SIGINT handler.
            host_uses_signal_set_wakeup_fd=True,
            strict_exception_groups=True,
        )
        await started

    @property
    def running(self) -> bool:
        return self._nursery is not None

    async def wait_done(self) -> None:
        """Return when the trio run has ended; raise what ended it, if it failed."""
        assert self._done is not None, "not started"
        await asyncio.shield(self._done)

    async def stop(self) -> list[str]:
        """Ask `main` to return, cancel what is still running, and wait for the end, at most
        `STOP_TIMEOUT_S`: a trio task deaf to cancellation must not hold the node's stop (the
        process's exit closes its sockets). Returns where the tasks still running were."""
        if self._done is None:
            return []
        if self._token is not None and self._stop is not None and not self._done.done():
            with contextlib.suppress(trio.RunFinishedError):
                self._token.run_sync_soon(self._stop.set)
        done, _ = await asyncio.wait([self._done], timeout=STOP_TIMEOUT_S)
        if done:
            return []
        return await self._where_tasks_are()

    async def _where_tasks_are(self) -> list[str]:
        """Each running trio task and the line it waits at (to say what did not stop)."""
        assert self._loop is not None and self._token is not None
        loop = self._loop
        found: asyncio.Future[list[str]] = loop.create_future()

        def look() -> None:
            tasks = _leaf_tasks(trio.lowlevel.current_root_task())
            places = [place for place in map(_place, tasks) if place is not None]
            if not found.done():
                found.set_result(places)  # trio's callbacks run in the asyncio loop's thread

        try:
            self._token.run_sync_soon(look)
        except trio.RunFinishedError:
            return []
        try:
            async with asyncio.timeout(1.0):
                return await found
        except TimeoutError:
            return ["(trio did not answer)"]

    async def call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run `fn(*args)` in trio and return its result; cancelling the caller cancels it."""
        if self._token is None or self._nursery is None or self._loop is None:
            raise GuestStopped("the p2p host is not running")
        future: asyncio.Future[T] = self._loop.create_future()
        scope = trio.CancelScope()

        async def runner() -> None:
            try:
                with scope:
                    result = await fn(*args)
                    if not future.done():
                        future.set_result(result)
            except Exception as exc:
                if not future.done():
                    future.set_exception(exc)
            finally:
                # Cancelled, or the nursery is shutting down: the caller must not hang.
                if not future.done():
                    future.set_exception(GuestStopped("cancelled in trio"))

        nursery = self._nursery

        def spawn() -> None:
            try:
                nursery.start_soon(runner)
            except RuntimeError:  # the nursery is closing: the host is stopping
                if not future.done():
                    future.set_exception(GuestStopped("the p2p host is stopping"))

        try:
            self._token.run_sync_soon(spawn)
        except trio.RunFinishedError:
            raise GuestStopped("the p2p host is not running") from None
        try:
            return await future
        except asyncio.CancelledError:
            with contextlib.suppress(trio.RunFinishedError):
                self._token.run_sync_soon(scope.cancel)
            raise


def _leaf_tasks(task: trio.lowlevel.Task | None) -> list[trio.lowlevel.Task]:
    if task is None:
        return []
    children = [child for nursery in task.child_nurseries for child in nursery.child_tasks]
    if not children:
        return [task]
    return [leaf for child in children for leaf in _leaf_tasks(child)]


def _place(task: trio.lowlevel.Task) -> str | None:
    """`task`'s name and the innermost line of its coroutine chain outside trio itself (None
    for trio's own tasks)."""
    where = innermost_line(task.coro, skip=f"{os.sep}trio{os.sep}")
    return None if where is None else f"{task.name} at {where}"


def _single(exc: BaseException) -> BaseException:
    """The one real error inside trio's nested exception groups, when there is just one."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc
