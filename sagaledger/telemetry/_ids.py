"""Trace and span ids derived from a run's id, so that no store holds a span context.

A run id is a uuid4 in 32 hex digits: read as a number, it is the run's trace id.
The run's span and each drive's span have ids derived from the run id and the
drive's lease token (only claims change the token, so drive ``n`` follows drive
``n - 1``): any worker, days later, can name the span of the drive before its
own, and link to it.

The OpenTelemetry SDK draws every span id from its tracer's id generator; the
sagaledger tracer's is wrapped (:func:`pin_ids`) so that a span started under
:func:`pinned` gets the id given there, and every other span a random one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import Tracer

#: The (trace id, span id) the next span started in this context gets, if any.
_pinned: ContextVar[tuple[int, int] | None] = ContextVar("sagaledger_span_ids", default=None)


def run_trace_id(run_id: str) -> int:
    """The trace id of every span of run ``run_id``: the run id as a number."""
    return int(run_id, 16) or 1  # an all-zero id is invalid; a uuid4 is never zero


def run_span_id(run_id: str, token: int = 0) -> int:
    """The span id of the run's span (``token`` 0) or of the drive holding ``token``."""
    digest = hashlib.blake2b(f"{run_id}:{token}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") or 1


class _PinnableIds(IdGenerator):
    """The tracer's own generator, unless :func:`pinned` says which ids to use."""

    def __init__(self, inner: IdGenerator):
        self.inner = inner

    def generate_span_id(self) -> int:
        pinned = _pinned.get()
        return pinned[1] if pinned is not None else self.inner.generate_span_id()

    def generate_trace_id(self) -> int:
        pinned = _pinned.get()
        return pinned[0] if pinned is not None else self.inner.generate_trace_id()

    def is_trace_id_random(self) -> bool:
        return _pinned.get() is None and self.inner.is_trace_id_random()


def pin_ids(tracer: Tracer) -> bool:
    """Let :func:`pinned` choose the ids of ``tracer``'s spans; False if it cannot.

    Only the SDK's tracers draw ids from a generator; the API's no-op tracer
    records nothing anyway.
    """
    inner = getattr(tracer, "id_generator", None)
    if isinstance(inner, _PinnableIds):
        return True
    if not isinstance(inner, IdGenerator):
        return False
    tracer.id_generator = _PinnableIds(inner)  # type: ignore[attr-defined]
    return True


@contextmanager
def pinned(trace_id: int, span_id: int) -> Iterator[None]:
    """Start spans in this block with these ids (start exactly one)."""
    token = _pinned.set((trace_id, span_id))
    try:
        yield
    finally:
        _pinned.reset(token)
