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
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

GENESIS = "0" * 64  # `prev` of the first entry
MAX_ENTRY_BYTES = 16 * 1024

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
        """Parse a record and check that its hash is the hash of its entry (not the signature)."""
        try:
            record = json.loads(raw)
            fields = record["entry"]
            entry = Entry(
                seq=int(fields["seq"]),
                timestamp=str(fields["timestamp"]),
                author=str(fields["author"]),
                type=str(fields["type"]),
                data=dict(fields["data"]),
                prev=str(fields["prev"]),
            )
            signed = cls(entry, str(record["hash"]), base64.b64decode(record["sig"], validate=True))
        except (ValueError, KeyError, TypeError, binascii.Error) as exc:
            raise EntryError(f"malformed record: {exc}") from None
        if entry.digest() != signed.hash:
            raise EntryError(f"seq {entry.seq}: hash does not match the entry")
        return signed

    def signed_by_author(self, verify: Verifier) -> bool:
        return verify(self.entry.author, bytes.fromhex(self.hash), self.signature)


def check_size(entry: Entry) -> None:
    if len(entry.canonical) > MAX_ENTRY_BYTES:
        raise EntryError(f"entry over {MAX_ENTRY_BYTES} bytes")
