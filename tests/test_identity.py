import stat

import pytest

from bzzz.p2p import IdentityError, load_or_create, verify


def test_created_once_with_mode_0600_and_reused(tmp_path):
    state = tmp_path / "state"
    first, created = load_or_create(state)
    assert created
    assert first.peer_id.startswith("12D3KooW")
    assert stat.S_IMODE(first.path.stat().st_mode) == 0o600
    assert [p.name for p in state.iterdir()] == ["identity.key"]

    again, created_again = load_or_create(state)
    assert not created_again
    assert again.peer_id == first.peer_id


def test_a_corrupt_key_file_is_an_error_not_a_new_identity(tmp_path):
    (tmp_path / "identity.key").write_bytes(b"garbage")
    with pytest.raises(IdentityError, match=r"identity\.key"):
        load_or_create(tmp_path)
    assert (tmp_path / "identity.key").read_bytes() == b"garbage"


def test_an_empty_key_file_says_it_is_empty_and_what_to_do(tmp_path):
    (tmp_path / "identity.key").write_bytes(b"")
    with pytest.raises(IdentityError) as error:
        load_or_create(tmp_path)
    assert "identity.key: is empty; restore it from a backup, or remove it" in str(error.value)
    assert "RSA" not in str(error.value)


def test_signatures_verify_against_the_peer_id_only(tmp_path):
    identity, _ = load_or_create(tmp_path / "a")
    other, _ = load_or_create(tmp_path / "b")
    signature = identity.sign(b"entry")
    assert verify(identity.peer_id, b"entry", signature)
    assert not verify(identity.peer_id, b"entrx", signature)
    assert not verify(other.peer_id, b"entry", signature)
    assert not verify("not-a-peer-id", b"entry", signature)
