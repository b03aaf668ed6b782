"""The node's Ed25519 key, kept in the libp2p protobuf format, and the peer id derived from it.

The key is created once, on first start, and reused ever after: the peer id is the node's name
in the cluster and in every signed log entry, so it must survive restarts and upgrades.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.keys import KeyPair
from libp2p.identity_utils import load_identity, save_identity
from libp2p.peer.id import ID

from bzzz.durable import fsync_dir

KEY_FILE_NAME = "identity.key"


class IdentityError(Exception):
    """The key file exists but cannot be used; a new key would silently rename the node."""


class Identity:
    """A node's key pair and peer id; signs bytes on the node's behalf."""

    def __init__(self, key_pair: KeyPair, path: Path | None = None) -> None:
        self.key_pair = key_pair
        self.path = path
        self.peer_id = ID.from_pubkey(key_pair.public_key).to_base58()

    @classmethod
    def generate(cls) -> Identity:
        """A throwaway identity (tests, test peers)."""
        return cls(create_new_key_pair())

    @property
    def short_id(self) -> str:
        """The last characters of the peer id: what operators read in tables and logs."""
        return self.peer_id[-6:]

    def sign(self, data: bytes) -> bytes:
        return bytes(self.key_pair.private_key.sign(data))


def verify(peer_id: str, data: bytes, signature: bytes) -> bool:
    """Check `signature` over `data` with the public key embedded in an Ed25519 peer id."""
    try:
        public_key = ID.from_base58(peer_id).extract_public_key()
    except Exception:  # malformed ids come from the network; any failure means "no"
        return False
    if public_key is None:
        return False
    try:
        return bool(public_key.verify(data, signature))
    except Exception:
        return False


def load_existing(state_dir: Path) -> Identity | None:
    """The node's identity if it has one (never creates it)."""
    path = state_dir / KEY_FILE_NAME
    try:
        return Identity(load_identity(path), path)
    except (OSError, ValueError):
        return None


def load_or_create(state_dir: Path) -> tuple[Identity, bool]:
    """Load the key from `state_dir`, creating it (mode 0600) on first use.

    Returns the identity and whether it was created now. Two processes racing to create it end
    up with the same key: the file is linked into place only if it does not exist yet.
    """
    path = state_dir / KEY_FILE_NAME
    try:
        return Identity(load_identity(path), path), False
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise IdentityError(f"{path}: cannot load the node key: {exc}") from None
    except ValueError as exc:
        # py-libp2p's words for a key it cannot parse ("RSA key format is not supported" for
        # an empty file) do not say what to do.
        what = "is empty" if path.stat().st_size == 0 else f"is not a libp2p private key ({exc})"
        raise IdentityError(
            f"{path}: {what}; restore it from a backup, or remove it to make a new key "
            "(a new peer id: update the others' bootstrap_peers and allow_peers)"
        ) from None

    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    key_pair = create_new_key_pair()
    fd, tmp_name = tempfile.mkstemp(prefix=".identity-", dir=state_dir)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        save_identity(key_pair, tmp)
        with tmp.open("rb") as handle:
            os.fsync(handle.fileno())
        os.link(tmp, path)
    except FileExistsError:
        return load_or_create(state_dir)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(state_dir)
    return Identity(key_pair, path), True


def key_file_too_open(identity: Identity) -> bool:
    """True when the key file can be read by group or others (worth a warning)."""
    if identity.path is None:
        return False
    return bool(identity.path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO))
