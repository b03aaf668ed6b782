"""One audit log entry: canonical JSON, its sha256, and its author's Ed25519 signature.

`canonical(entry)` is the JSON of `{seq, timestamp, author, type, data, prev}` with sorted keys
and no spaces; `hash = sha256(canonical)`; `signature = Ed25519(author's key, hash)`. Anyone
holding the author's peer id can check an entry and, through `prev`, the whole chain.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

GENESIS = "0" * 64  # `prev` of the first entry
MAX_ENTRY_BYTES = 16 * 1024
# What an entry keeps of a long string or list (e.g. text a peer sent): the rest is cut, with a
# marker that says how much and its hash, so the entry still proves what was seen.
MAX_STRING_CHARS = 1024
MAX_LIST_ITEMS = 32

Signer = Callable[[bytes], bytes]
Verifier = Callable[[str, bytes, bytes], bool]  # (peer id, data, signature) -> valid


class EntryError(ValueError):
    """A record that is not a well-formed, correctly hashed entry."""


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True)
class Entry:
    seq: int
    timestamp: str
    author: str
    type: str
    data: dict[str, Any]
    prev: str

    def fields(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "timestamp": self.timestamp,
            "author": self.author,
            "type": self.type,
            "data": self.data,
            "prev": self.prev,
        }

    @cached_property
    def canonical(self) -> bytes:
        """The bytes that are hashed (computed once: hashing and storing both need them)."""
        return _canonical(self.fields())

    def digest(self) -> str:
        return hashlib.sha256(self.canonical).hexdigest()


@dataclass(frozen=True)
class SignedEntry:
    entry: Entry
    hash: str
    signature: bytes

    @classmethod
    def create(cls, entry: Entry, sign: Signer) -> SignedEntry:
        digest = entry.digest()
        return cls(entry, digest, sign(bytes.fromhex(digest)))

    def to_record(self) -> bytes:
        """The stored and transmitted form: one canonical JSON object, no newline inside."""
        # Spelled out to reuse the entry's canonical bytes; the keys are in sorted order.
        sig = base64.b64encode(self.signature)
        return (
            b'{"entry":'
            + self.entry.canonical
            + b',"hash":"'
            + self.hash.encode()
            + (b'","sig":"' + sig + b'"}')
        )

    @classmethod
    def from_record(cls, raw: bytes) -> SignedEntry:
        """Parse a record and check that its hash is the hash of its entry (not the signature).

        Raises only EntryError, whatever `raw` holds (records come from disk and from peers)."""
        try:
            record = json.loads(raw)
            fields = record["entry"]
            seq = fields["seq"]
            if type(seq) is not int or not 0 <= seq < 2**63:
                raise ValueError(f"seq {str(seq)[:32]!r} is not a sequence number")
            text = {name: fields[name] for name in ("timestamp", "author", "type", "prev")}
            if not all(isinstance(value, str) for value in text.values()):
                raise TypeError("timestamp, author, type and prev must be strings")
            if not isinstance(fields["data"], dict) or not isinstance(record["hash"], str):
                raise TypeError("data must be an object and hash a string")
            entry = Entry(seq=seq, data=fields["data"], **text)
            signed = cls(entry, record["hash"], base64.b64decode(record["sig"], validate=True))
            digest = entry.digest()
        except (ValueError, KeyError, TypeError, binascii.Error, RecursionError) as exc:
            raise EntryError(f"malformed record: {str(exc)[:200]}") from None
        if digest != signed.hash:
            raise EntryError(f"seq {entry.seq}: hash does not match the entry")
        return signed

    def signed_by_author(self, verify: Verifier) -> bool:
        return verify(self.entry.author, bytes.fromhex(self.hash), self.signature)


def check_size(entry: Entry) -> None:
    if len(entry.canonical) > MAX_ENTRY_BYTES:
        raise EntryError(f"entry over {MAX_ENTRY_BYTES} bytes")


def fit(data: dict[str, Any], budget: int = MAX_ENTRY_BYTES // 2) -> dict[str, Any]:
    """`data` made fit for an entry, whatever it holds: long strings and lists cut (with a
    marker), values JSON cannot hold spelled as strings; if it is still over `budget` bytes,
    only its size and hash. Recording what a peer said can then never fail."""
    bounded = _bounded(data, depth=0)
    assert isinstance(bounded, dict)
    size = len(_canonical(bounded))
    if size <= budget:
        return bounded
    return {
        "cut": True,
        "bytes": size,
        "sha256": hashlib.sha256(_canonical(bounded)).hexdigest(),
        "keys": sorted(str(key)[:64] for key in bounded)[:MAX_LIST_ITEMS],
    }


def _bounded(value: Any, depth: int) -> Any:
    if isinstance(value, str):
        if len(value) <= MAX_STRING_CHARS:
            return value
        digest = hashlib.sha256(value.encode(errors="replace")).hexdigest()[:16]
        return f"{value[:MAX_STRING_CHARS]}…[cut {len(value) - MAX_STRING_CHARS} chars {digest}]"
    if value is None or isinstance(value, bool | int):
        return value if not isinstance(value, int) or abs(value) < 2**63 else str(value)[:64]
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if depth >= 8:
        return "…[nested too deep]"
    if isinstance(value, dict):
        items = list(value.items())
        kept = {str(k)[:128]: _bounded(v, depth + 1) for k, v in items[:MAX_LIST_ITEMS]}
        if len(items) > MAX_LIST_ITEMS:
            kept["…"] = f"cut {len(items) - MAX_LIST_ITEMS} keys"
        return kept
    if isinstance(value, list | tuple | set | frozenset):
        items = list(value)
        kept_items = [_bounded(v, depth + 1) for v in items[:MAX_LIST_ITEMS]]
        if len(items) > MAX_LIST_ITEMS:
            kept_items.append(f"…[cut {len(items) - MAX_LIST_ITEMS} items]")
        return kept_items
    return _bounded(str(value), depth)
