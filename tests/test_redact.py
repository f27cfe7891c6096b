"""Redaction: sensitive fields hidden at any depth, whatever their case."""

from __future__ import annotations

from sagaledger._redact import DEFAULT_PATTERNS, REDACTED, Redactor, redact


def test_credentials_are_hidden_by_default_at_any_depth() -> None:
    value = {
        "order": "O-1",
        "Password": "hunter2",
        "headers": {"Authorization": "Bearer abc", "accept": "json"},
        "calls": [{"api_key": "k1"}, {"client_secret": "s1", "access_token": "t1"}],
        "token": "tok",
        "idempotency_key": "run:charge:forward",
    }

    hidden = redact(value)

    assert hidden == {
        "order": "O-1",
        "Password": REDACTED,
        "headers": {"Authorization": REDACTED, "accept": "json"},
        "calls": [{"api_key": REDACTED}, {"client_secret": REDACTED, "access_token": REDACTED}],
        "token": REDACTED,
        "idempotency_key": "run:charge:forward",
    }
    assert value["Password"] == "hunter2"  # the value given is left as it was


def test_the_setting_adds_glob_patterns() -> None:
    redactor = Redactor.from_setting(" card_number , *iban*,,")

    hidden = redactor({"card_number": "4242", "payee_IBAN": "DE00", "card_brand": "visa"})

    assert hidden == {"card_number": REDACTED, "payee_IBAN": REDACTED, "card_brand": "visa"}
    assert redactor.patterns[: len(DEFAULT_PATTERNS)] == DEFAULT_PATTERNS


def test_a_whole_subtree_under_a_sensitive_key_is_hidden_and_scalars_pass() -> None:
    redactor = Redactor(["card"], defaults=False)

    assert redactor({"card": {"number": "4242", "cvc": "123"}}) == {"card": REDACTED}
    assert redactor({"password": "x"}) == {"password": "x"}
    assert [redactor(v) for v in (None, 3, "card", [1, ("a",)])] == [None, 3, "card", [1, ["a"]]]
