"""The retry and rate-limit policies both example apps give their steps.

An application would keep these next to its connectors' settings: every saga
that calls NetSuite or Stripe shares their limits.
"""

from __future__ import annotations

from datetime import timedelta

from sagaledger import RetryPolicy
from sagaledger.connectors import RateLimit

#: Short back-offs keep the examples quick; against real services, start at seconds.
RETRY = RetryPolicy(
    max_attempts=5, initial_backoff=timedelta(milliseconds=200), max_backoff=timedelta(seconds=5)
)
#: NetSuite limits requests in flight per account: every ERP step shares this limit.
NETSUITE = RateLimit(name="netsuite", concurrency=5)
#: Stripe's test mode allows 25 requests a second.
STRIPE = RateLimit(name="stripe", calls=25, per=timedelta(seconds=1))
