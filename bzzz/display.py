"""How values are shown to people, the same way in `bzzz status` and in the web view."""

from __future__ import annotations


def short_id(peer_id: str) -> str:
    """`12D3Ko…aXHoUh`, as the Go Bzzz shows peers: enough to tell them apart at a glance."""
    return peer_id if len(peer_id) <= 14 else f"{peer_id[:6]}…{peer_id[-6:]}"


def clip(text: object, width: int) -> str:
    """`text` in at most `width` characters, an ellipsis marking a cut (None shows empty)."""
    text = "" if text is None else str(text)
    return text if len(text) <= width else text[: width - 1] + "…"


def duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}m"
    return f"{hours // 24}d{hours % 24:02d}h"


def ago(seconds: float | None) -> str:
    return "-" if seconds is None else "now" if seconds < 1 else f"{duration(seconds)} ago"
