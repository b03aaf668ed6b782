"""The libp2p side of the daemon: the only package that imports trio or libp2p.

Everything here is used from asyncio; peer ids and multiaddrs are plain strings.
"""

from bzzz.p2p._guest import GuestStopped
from bzzz.p2p._host import GossipSettings, Host, Incoming, ListenError, PeerEvent
from bzzz.p2p._stream import Stream, StreamError
from bzzz.p2p.identity import Identity, IdentityError, load_existing, load_or_create, verify

__all__ = [
    "GossipSettings",
    "GuestStopped",
    "Host",
    "Identity",
    "IdentityError",
    "Incoming",
    "ListenError",
    "PeerEvent",
    "Stream",
    "StreamError",
    "load_existing",
    "load_or_create",
    "verify",
]
