"""Users with bcrypt-hashed passwords and roles."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from shelfwise.errors import ConfigError
from verification import QueueStoreError, Role
from verification.store import QueueStore


def test_add_and_authenticate(store: QueueStore) -> None:
    store.add_user("alice", "correct horse", role=Role.ADMIN)
    store.add_user("bob", "battery staple")
    alice = store.authenticate("alice", "correct horse")
    assert alice is not None and alice.role == Role.ADMIN and alice.is_admin
    assert store.authenticate("alice", "Correct horse") is None
    assert store.authenticate("carol", "correct horse") is None
    bob = store.get_user("bob")
    assert bob is not None and bob.role == Role.REVIEWER and not bob.is_admin
    assert [u.username for u in store.list_users()] == ["alice", "bob"]

    with store.engine.connect() as conn:
        hashes = dict(conn.execute(sa.text("SELECT username, password_hash FROM review_users")).all())
    assert hashes["alice"].startswith("$2b$") and "horse" not in hashes["alice"]


def test_user_errors_and_changes(store: QueueStore) -> None:
    store.add_user("alice", "correct horse")
    with pytest.raises(QueueStoreError, match="already exists"):
        store.add_user("alice", "another one")
    with pytest.raises(ConfigError, match="shorter than 8"):
        store.add_user("bob", "short")
    with pytest.raises(ConfigError, match="role 'boss' is not known"):
        store.add_user("bob", "long enough", role="boss")
    with pytest.raises(ConfigError, match="bcrypt uses at most 72"):
        store.add_user("bob", "x" * 80)

    store.set_password("alice", "new password", role="admin")
    assert store.authenticate("alice", "correct horse") is None
    assert store.authenticate("alice", "new password").role == Role.ADMIN
    store.set_active("alice", False)
    assert store.authenticate("alice", "new password") is None
    assert store.get_user("alice").is_active is False
