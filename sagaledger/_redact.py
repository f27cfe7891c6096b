"""Hiding secrets and sensitive fields in what people and programs are shown.

A :class:`Redactor` replaces the value of every mapping key that matches one
of its patterns (shell-style globs, compared without regard to case), however
deeply nested, with :data:`REDACTED`. The dashboard applies it to every input,
output, payload and error it shows or serves; exports should too.

Patterns come from the ``SAGALEDGER_REDACT`` setting (``card_number,*secret*``),
on top of :data:`DEFAULT_PATTERNS`.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import re
from collections.abc import Iterable
from typing import Any

from sagaledger.store import EventRecord, RunRecord

#: What a redacted value reads as.
REDACTED = "[redacted]"

#: Field names hidden whatever the settings say: credentials in any spelling.
DEFAULT_PATTERNS = (
    "*password*",
    "*passwd*",
    "*secret*",
    "token",
    "*_token",
    "*-token",
    "*api_key*",
    "*apikey*",
    "*api-key*",
    "authorization",
    "cookie",
    "set-cookie",
    "*private_key*",
)


class Redactor:
    """Replaces the values of sensitive keys, recursively.

    Args:
        patterns: Shell-style globs of field names (``card_number``, ``*secret*``),
            matched without regard to case, added to :data:`DEFAULT_PATTERNS`.
        defaults: Whether to add :data:`DEFAULT_PATTERNS` (True unless a test says).
    """

    def __init__(self, patterns: Iterable[str] = (), *, defaults: bool = True):
        chosen = [p.strip().lower() for p in patterns if p.strip()]
        self.patterns: tuple[str, ...] = tuple(
            dict.fromkeys([*(DEFAULT_PATTERNS if defaults else ()), *chosen])
        )
        self._match = re.compile(
            "|".join(f"(?:{fnmatch.translate(p)})" for p in self.patterns) or "(?!)"
        ).match

    @classmethod
    def from_setting(cls, setting: str | None) -> Redactor:
        """A redactor for a comma-separated list of patterns (``SAGALEDGER_REDACT``)."""
        return cls((setting or "").split(","))

    def sensitive(self, key: str) -> bool:
        """True when a field called ``key`` is to be hidden."""
        return self._match(key.lower()) is not None

    def __call__(self, value: Any) -> Any:
        """``value`` with every sensitive key's value replaced by :data:`REDACTED`.

        Mappings, lists and tuples are copied as they are walked; anything else
        is returned as is. The value given is never changed.
        """
        if isinstance(value, dict):
            return {
                k: REDACTED if isinstance(k, str) and self.sensitive(k) else self(v)
                for k, v in value.items()
            }
        if isinstance(value, list | tuple):
            return [self(v) for v in value]
        return value


    def run(self, run: RunRecord) -> RunRecord:
        """A copy of ``run`` with its input, last error and cancel request redacted."""
        return dataclasses.replace(
            run,
            input=self(run.input),
            last_error=self(run.last_error),
            cancel_requested=self(run.cancel_requested),
        )

    def event(self, event: EventRecord) -> EventRecord:
        """A copy of ``event`` with its payload and error redacted."""
        return dataclasses.replace(event, payload=self(event.payload), error=self(event.error))


def redact(value: Any, patterns: Iterable[str] = ()) -> Any:
    """``value`` with sensitive fields hidden (see :class:`Redactor`)."""
    return Redactor(patterns)(value)
