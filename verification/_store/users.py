"""Review-app users: bcrypt-hashed passwords, roles, activation and authentication."""

from __future__ import annotations

from typing import Any

import bcrypt
import sqlalchemy as sa

from shelfwise.errors import ConfigError
from verification._db import utcnow
from verification._errors import QueueStoreError
from verification._retry import transient_retry
from verification._store.core import USERS, RowLike, StoreCore, aware
from verification._types import User
from verification.models import Role

__all__ = ["BCRYPT_MAX_BYTES", "UserOps"]

BCRYPT_MAX_BYTES = 72


class UserOps(StoreCore):
    """Users of the review app (bcrypt cost ``bcrypt_rounds``)."""

    _dummy: bytes | None = None

    def add_user(self, username: str, password: str, *, role: Role | str = Role.REVIEWER) -> None:
        """Create a user with a bcrypt-hashed password (raises if the name is taken)."""
        username = username.strip()
        if not username:
            raise ConfigError("username is empty; give a name such as 'alice'")
        role = self._role(role)
        taken = QueueStoreError(
            f"user {username!r} already exists; use set_password() (CLI: add-user --reset) to change it"
        )
        self._ensure_schema()  # a first write: the read below needs the tables
        if self.get_user(username) is not None:  # before the (deliberately slow) bcrypt hash
            raise taken
        hashed = self._hash(password, username)
        try:
            with self._writing() as conn:
                conn.execute(
                    sa.insert(USERS).values(
                        username=username,
                        password_hash=hashed,
                        role=role.value,
                        is_active=True,
                        created_at=utcnow(),
                    )
                )
        except sa.exc.IntegrityError:  # created in between by someone else
            raise taken from None

    def set_password(self, username: str, password: str, *, role: Role | str | None = None) -> None:
        """Change a user's password (and optionally role); the user's sessions end (epoch bumped)."""
        values: dict[str, Any] = {
            "password_hash": self._hash(password, username),
            "session_epoch": USERS.c.session_epoch + 1,
        }
        if role is not None:
            values["role"] = self._role(role).value
        with self._writing() as conn:
            res = conn.execute(sa.update(USERS).where(USERS.c.username == username).values(**values))
            if res.rowcount != 1:
                raise QueueStoreError(f"user {username!r} does not exist; create it with add_user()")

    @transient_retry
    def set_active(self, username: str, active: bool) -> None:
        """(De)activate a user; either way their sessions end, so re-activation never revives an old
        cookie."""
        self._bump(username, is_active=active)

    @transient_retry
    def end_sessions(self, username: str) -> None:
        """End every session of ``username`` (logout): cookies issued before now stop working."""
        self._bump(username)

    def _bump(self, username: str, **values: Any) -> None:
        with self._writing() as conn:
            res = conn.execute(
                sa.update(USERS)
                .where(USERS.c.username == username)
                .values(session_epoch=USERS.c.session_epoch + 1, **values)
            )
            if res.rowcount != 1:
                raise QueueStoreError(f"user {username!r} does not exist; create it with add_user()")

    @transient_retry
    def authenticate(self, username: str, password: str) -> User | None:
        """The user if the password matches (bcrypt), else ``None``; inactive users never authenticate."""
        with self._reading() as conn:
            row = (
                conn.execute(sa.select(USERS).where(USERS.c.username == username.strip())).mappings().first()
            )
        secret = password.encode("utf-8")
        if row is None or len(secret) > BCRYPT_MAX_BYTES:
            bcrypt.checkpw(b"x", self._dummy_hash())  # same cost whether or not the user exists
            return None
        if not bcrypt.checkpw(secret, row["password_hash"].encode("ascii")) or not row["is_active"]:
            return None
        return self._user(row)

    @transient_retry
    def get_user(self, username: str) -> User | None:
        with self._reading() as conn:
            row = conn.execute(sa.select(USERS).where(USERS.c.username == username)).mappings().first()
        return None if row is None else self._user(row)

    @transient_retry
    def list_users(self) -> list[User]:
        with self._reading() as conn:
            rows = conn.execute(sa.select(USERS).order_by(USERS.c.username)).mappings().all()
        return [self._user(r) for r in rows]

    def _dummy_hash(self) -> bytes:
        if self._dummy is None:
            self._dummy = bcrypt.hashpw(b"shelfwise-dummy", bcrypt.gensalt(rounds=self.bcrypt_rounds))
        return self._dummy

    @staticmethod
    def _user(row: RowLike) -> User:
        return User(
            username=row["username"],
            role=Role(row["role"]),
            is_active=bool(row["is_active"]),
            created_at=aware(row["created_at"]),  # type: ignore[arg-type]
            session_epoch=int(row["session_epoch"]),
        )

    @staticmethod
    def _role(role: Role | str) -> Role:
        try:
            return Role(role)
        except ValueError:
            raise ConfigError(
                f"role {role!r} is not known; use one of {', '.join(r.value for r in Role)}"
            ) from None

    def _hash(self, password: str, username: str) -> str:
        secret = password.encode("utf-8")
        if len(password) < 8:
            raise ConfigError(f"password for {username!r} is shorter than 8 characters; choose a longer one")
        if len(secret) > BCRYPT_MAX_BYTES:
            raise ConfigError(
                f"password for {username!r} is {len(secret)} bytes; bcrypt uses at most {BCRYPT_MAX_BYTES}, "
                "choose a shorter one"
            )
        return bcrypt.hashpw(secret, bcrypt.gensalt(rounds=self.bcrypt_rounds)).decode("ascii")
