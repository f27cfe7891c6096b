"""A one-step saga that calls a remote HTTP service under a shared rate limit."""

from __future__ import annotations

from datetime import timedelta

import httpx
from pydantic import BaseModel

from sagaledger import RateLimitedError, Registry, RetrySafety, Saga, StepContext, step
from sagaledger.connectors import RateLimit

#: The remote side allows 5 calls a second. A limit is counted when it grants a
#: call, and a request reaches the remote a few (varying) milliseconds later, so
#: it is declared with a margin: 5 per 1.1 s.
REMOTE_LIMIT = RateLimit(name="remote", calls=5, per=timedelta(milliseconds=1100))


#: One client per process, made once: a call then costs little between the
#: rate limit's grant and the request reaching the wire.
client = httpx.Client(timeout=10)


class Call(BaseModel):
    url: str


@step(retry_safety=RetrySafety.IDEMPOTENCY_KEY, no_compensation="a read", rate_limit=REMOTE_LIMIT)
def call_remote(ctx: StepContext[Call]) -> dict[str, int]:
    response = client.post(ctx.input.url, headers={"Idempotency-Key": ctx.idempotency_key})
    if response.status_code == 429:
        raise RateLimitedError("429 from the remote side", retry_after=timedelta(seconds=1))
    response.raise_for_status()
    return {"status": response.status_code}


registry = Registry([Saga("limited", 1, Call, [call_remote])])
