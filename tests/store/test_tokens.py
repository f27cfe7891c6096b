"""Dashboard tokens in the store: kept hashed, one live token per name, revocable."""

from __future__ import annotations

import hashlib

import pytest
from sqlalchemy import select

from sagaledger import TokenError
from sagaledger.store import Role, SagaLog, utc_now
from sagaledger.store._schema import tokens


def test_a_token_is_kept_as_its_sha256_and_checked_by_it(saga_log: SagaLog) -> None:
    token, secret = saga_log.tokens.add("alice", Role.OPERATOR, by="root", now=utc_now())

    with saga_log.engine.connect() as conn:
        kept = conn.execute(select(tokens.c.token_hash)).scalars().all()
    assert secret.startswith("sl_") and len(secret) > 40
    assert kept == [hashlib.sha256(secret.encode()).hexdigest()]
    assert saga_log.tokens.check(secret) == token
    assert saga_log.tokens.get(token.id) == token
    assert saga_log.tokens.check(secret[:-1]) is None
    assert saga_log.tokens.check("") is None


def test_a_name_has_one_live_token_and_revoking_ends_it(saga_log: SagaLog) -> None:
    _, first = saga_log.tokens.add("bob", Role.AUDITOR, by="root", now=utc_now())
    with pytest.raises(TokenError, match="'bob' has a token already"):
        saga_log.tokens.add("bob", Role.OPERATOR, by="root", now=utc_now())

    revoked = saga_log.tokens.revoke("bob", by="carol", now=utc_now())
    _, second = saga_log.tokens.add("bob", Role.OPERATOR, by="root", now=utc_now())

    assert (revoked.revoked_by, revoked.live) == ("carol", False)
    assert saga_log.tokens.check(first) is None
    again = saga_log.tokens.check(second)
    assert again is not None and again.role is Role.OPERATOR
    assert [t.live for t in saga_log.tokens.list(revoked=True)] == [False, True]
    assert len(saga_log.tokens.list()) == 1
    with pytest.raises(TokenError, match="'nobody' has no token to revoke"):
        saga_log.tokens.revoke("nobody", by="root", now=utc_now())
    with pytest.raises(TokenError, match="needs a name"):
        saga_log.tokens.add("  ", Role.AUDITOR, by="root", now=utc_now())
