"""Access tokens of the web dashboard, kept as their sha256.

A token is made once (:meth:`Tokens.add` returns it, and nothing keeps it in
the clear), checked by hashing what a request presents, and revoked by name.
A name has at most one live token; a revoked token keeps its row, so an
auditor can still tell who held the token that acted.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Engine, Row, select, update

from sagaledger._errors import TokenError
from sagaledger.store._engine import read
from sagaledger.store._schema import tokens

#: Every token starts with this, so one pasted in a chat or a log is recognisable.
TOKEN_PREFIX = "sl_"


class Role(StrEnum):
    """What a token's holder may do on the dashboard."""

    #: May read everything and act: operator actions, cancel, approve and reject.
    OPERATOR = "operator"
    #: May read everything, and act on nothing.
    AUDITOR = "auditor"

    @property
    def may_act(self) -> bool:
        """True for roles that may change runs."""
        return self is Role.OPERATOR


@dataclass(frozen=True)
class Token:
    """A token as the store keeps it: never the token itself."""

    id: int
    name: str
    role: Role
    created_at: datetime
    created_by: str
    revoked_at: datetime | None = None
    revoked_by: str | None = None

    @property
    def live(self) -> bool:
        """True until it is revoked."""
        return self.revoked_at is None


def digest(token: str) -> str:
    """The sha256 (hex) the store keeps for ``token``."""
    return hashlib.sha256(token.encode()).hexdigest()


class Tokens:
    """The dashboard's tokens in the saga log's database.

    Args:
        engine: The saga log's engine.
    """

    def __init__(self, engine: Engine):
        self.engine = engine

    def add(self, name: str, role: Role, *, by: str, now: datetime) -> tuple[Token, str]:
        """Make a token for ``name``; return it and the token, which is shown only now.

        Raises:
            TokenError: ``name`` is empty or already has a live token.
            ValueError: ``role`` is not a role.
        """
        name = name.strip()
        if not name:
            raise TokenError("a token needs a name (who holds it, as the log will name them)")
        role = Role(role)
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        row = {
            "name": name,
            "role": role.value,
            "token_hash": digest(secret),
            "created_at": now,
            "created_by": by,
        }
        with self.engine.begin() as conn:
            if conn.execute(_live_named(name)).first() is not None:
                raise TokenError(f"{name!r} has a token already: revoke it first")
            inserted = conn.execute(tokens.insert().values(row)).inserted_primary_key
            assert inserted is not None
            token_id = inserted[0]
        return Token(int(token_id), name, role, now, by), secret

    def check(self, presented: str) -> Token | None:
        """The live token ``presented`` is, or None (unknown, revoked, or empty)."""
        if not presented:
            return None
        wanted = digest(presented)
        query = select(tokens).where(tokens.c.token_hash == wanted, tokens.c.revoked_at.is_(None))
        with read(self.engine) as conn:
            row = conn.execute(query).first()
        # The lookup is by hash, but compare in constant time all the same.
        if row is None or not hmac.compare_digest(row.token_hash, wanted):
            return None
        return _token(row)

    def get(self, token_id: int) -> Token | None:
        """The live token with this id, or None (a session's token since revoked)."""
        query = select(tokens).where(tokens.c.id == token_id, tokens.c.revoked_at.is_(None))
        with read(self.engine) as conn:
            row = conn.execute(query).first()
        return _token(row) if row is not None else None

    def list(self, *, revoked: bool = False) -> list[Token]:
        """The live tokens (and the revoked ones too, if asked), by name."""
        query = select(tokens).order_by(tokens.c.name, tokens.c.id)
        if not revoked:
            query = query.where(tokens.c.revoked_at.is_(None))
        with read(self.engine) as conn:
            return [_token(row) for row in conn.execute(query)]

    def revoke(self, name: str, *, by: str, now: datetime) -> Token:
        """Revoke the live token of ``name``; sessions opened with it end at once.

        Raises:
            TokenError: ``name`` has no live token.
        """
        with self.engine.begin() as conn:
            row = conn.execute(_live_named(name)).first()
            if row is None:
                raise TokenError(f"{name!r} has no token to revoke")
            conn.execute(
                update(tokens).where(tokens.c.id == row.id).values(revoked_at=now, revoked_by=by)
            )
        return Token(**{**_token(row).__dict__, "revoked_at": now, "revoked_by": by})


def _live_named(name: str) -> Any:
    return select(tokens).where(tokens.c.name == name, tokens.c.revoked_at.is_(None))


def _token(row: Row[Any]) -> Token:
    m = row._mapping
    return Token(
        id=int(m["id"]),
        name=m["name"],
        role=Role(m["role"]),
        created_at=m["created_at"],
        created_by=m["created_by"],
        revoked_at=m["revoked_at"],
        revoked_by=m["revoked_by"],
    )
