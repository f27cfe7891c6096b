"""``sagaledger tokens add|list|revoke`` in a subprocess, on SQLite then PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path

from sagaledger.store import SagaLog
from tests.cli.test_cli import assert_one_line_error, sagaledger


def test_tokens_are_printed_once_listed_without_the_token_and_revoked(
    store_url: str, tmp_path: Path
) -> None:
    def run(*args: str) -> tuple[int, str, str]:
        result = sagaledger(tmp_path, "tokens", *args, "--store", store_url)
        return result.returncode, result.stdout, result.stderr

    # When an operator's and an auditor's token are made
    code, alice, said = run("add", "alice@x.example", "--role", "operator", "--as", "root")
    assert code == 0, said
    assert "shown only now" in said
    _, audrey, _ = run("add", "audrey", "--role", "auditor")
    alice, audrey = alice.strip(), audrey.strip()

    # Then each is printed once, and the store knows it (by its hash)
    log = SagaLog.open(store_url)
    try:
        found = log.tokens.check(alice)
        assert found is not None
        assert (found.name, found.role.value, found.created_by) == (
            "alice@x.example",
            "operator",
            "root",
        )
    finally:
        log.close()
    code, listed, _ = run("list")
    assert code == 0 and alice not in listed
    assert [line.split()[:2] for line in listed.splitlines()] == [
        ["alice@x.example", "operator"],
        ["audrey", "auditor"],
    ]

    # And a second token for a name is refused, revoking works once
    again = sagaledger(
        tmp_path, "tokens", "add", "audrey", "--role", "operator", "--store", store_url
    )
    assert assert_one_line_error(again) == "error: 'audrey' has a token already: revoke it first"
    assert run("revoke", "audrey", "--as", "root")[1] == "revoked the token of audrey (auditor)\n"
    gone = sagaledger(tmp_path, "tokens", "revoke", "audrey", "--store", store_url)
    assert assert_one_line_error(gone) == "error: 'audrey' has no token to revoke"
    code, everything, _ = run("list", "--all", "--json")
    assert [(t["name"], t["revoked_by"]) for t in json.loads(everything)] == [
        ("alice@x.example", None),
        ("audrey", "root"),
    ]
