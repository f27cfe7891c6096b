"""Faults a simulator injects on request, and the ledger of effects it applied.

Both are shared by every simulator (HTTP and SMTP) and are safe to use from
the test thread while server threads handle requests.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any


class FaultKind(StrEnum):
    """What an injected fault does to the request it hits."""

    #: Wait ``delay`` seconds, then handle the request normally.
    LATENCY = "latency"
    #: Answer ``status`` (5xx by default) in the service's error shape; nothing applied.
    ERROR = "error"
    #: Answer 429 with ``Retry-After: retry_after``; nothing applied.
    RATE_LIMIT = "rate_limit"
    #: Hold the request ``delay`` seconds, then drop the connection; nothing applied.
    TIMEOUT = "timeout"
    #: Refuse as a business error (a declined card, an unknown item); nothing applied.
    DECLINE = "decline"
    #: Apply the effect, then drop the connection before answering.
    LOST_RESPONSE = "lost_response"


@dataclass
class Fault:
    """One fault to inject.

    Attributes:
        kind: What it does.
        operation: The operation it hits (``create_payment_intent``); None: any.
        times: How many matching requests it hits before it is used up.
        status: The status an ``ERROR`` answers.
        retry_after: Seconds a ``RATE_LIMIT`` asks to wait.
        delay: Seconds of ``LATENCY``, or how long a ``TIMEOUT`` holds the request.
        code: A ``DECLINE``'s error code (the simulator's default when None).
    """

    kind: FaultKind
    operation: str | None = None
    times: int = 1
    status: int = 500
    retry_after: float = 1.0
    delay: float = 0.0
    code: str | None = None

    def __post_init__(self) -> None:
        self.kind = FaultKind(self.kind)
        if self.times < 1:
            raise ValueError(f"fault {self.kind}: times must be at least 1, got {self.times}")
        if self.kind is FaultKind.ERROR and not 500 <= self.status <= 599:
            raise ValueError(f"fault error: status must be 5xx, got {self.status}")

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Fault:
        """A fault from its JSON form (the control endpoint's body)."""
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown fault field(s) {unknown}: use {sorted(known)}")
        if "kind" not in data:
            raise ValueError(f"a fault needs a kind: one of {[k.value for k in FaultKind]}")
        return cls(**data)


class FaultPlan:
    """The faults waiting to hit requests, in the order they were added."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []

    def add(self, fault: Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def pending(self) -> list[Fault]:
        with self._lock:
            return list(self._faults)

    def take(self, operation: str) -> Fault | None:
        """The first fault that hits ``operation``, used up by one."""
        with self._lock:
            for fault in self._faults:
                if fault.operation in (None, operation):
                    fault.times -= 1
                    if fault.times == 0:
                        self._faults.remove(fault)
                    return fault
        return None


@dataclass(frozen=True)
class Effect:
    """One effect a simulated service applied.

    Attributes:
        operation: What was done (``charge``, ``refund``, ``reserve``...).
        ref: The service's id of what it created or changed.
        key: The idempotency key (or external id) it was applied under.
        amount: Minor units, where money or quantity moved.
        currency: Where money moved.
        detail: Anything else worth checking.
        at: When (UTC, ISO 8601).
    """

    operation: str
    ref: str
    key: str | None = None
    amount: int | None = None
    currency: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())


class EffectLedger:
    """Every effect a simulator applied, in order: what tests check."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._effects: list[Effect] = []

    def record(self, effect: Effect) -> Effect:
        with self._lock:
            self._effects.append(effect)
        return effect

    def effects(self, operation: str | None = None) -> list[Effect]:
        with self._lock:
            return [e for e in self._effects if operation in (None, e.operation)]

    def as_json(self) -> list[dict[str, Any]]:
        return [asdict(e) for e in self.effects()]
