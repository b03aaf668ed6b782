"""Where a coroutine waits: what a stop that overran names, for asyncio and trio tasks alike."""

from __future__ import annotations

from typing import Any


def innermost_line(coro: Any, skip: str = "") -> str | None:
    """The innermost `file:line function` of a coroutine's await chain, leaving out files whose
    path contains `skip` (a library's own machinery); None if every frame is skipped."""
    where = None
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is not None and not (skip and skip in frame.f_code.co_filename):
            where = f"{frame.f_code.co_filename}:{frame.f_lineno} {frame.f_code.co_name}"
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return where
