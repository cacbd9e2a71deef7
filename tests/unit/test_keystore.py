from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from userorg.platform.keystore import KeystoreError, LocalKeystore


async def test_round_trip_and_context_binding(tmp_path: Path) -> None:
    store = LocalKeystore.from_directory(tmp_path / "keys")
    sealed = await store.encrypt(b"top secret", context="row:1")
    assert b"top secret" not in sealed.encode()
    assert await store.decrypt(sealed, context="row:1") == b"top secret"
    with pytest.raises(KeystoreError):
        await store.decrypt(sealed, context="row:2")
    key_file = tmp_path / "keys" / "master.key"
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    # A second instance reads the same key.
    again = LocalKeystore.from_directory(tmp_path / "keys")
    assert await again.decrypt(sealed, context="row:1") == b"top secret"


async def test_wrong_key_fails(tmp_path: Path) -> None:
    sealed = await LocalKeystore(os.urandom(32)).encrypt(b"x", context="c")
    with pytest.raises(KeystoreError):
        await LocalKeystore(os.urandom(32)).decrypt(sealed, context="c")
    with pytest.raises(KeystoreError):
        await LocalKeystore(b"short").encrypt(b"x", context="c")


def test_construction_has_no_side_effects(tmp_path: Path) -> None:
    LocalKeystore.from_directory(tmp_path / "never")
    assert not (tmp_path / "never").exists()
