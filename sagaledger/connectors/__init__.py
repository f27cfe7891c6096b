"""Connectors to the systems steps act on, and the limits that protect them."""

from sagaledger.connectors._http import HttpConnector
from sagaledger.connectors._ratelimit import (
    MemoryRateLimiter,
    RateLimit,
    RateLimiter,
    RedisRateLimiter,
)

__all__ = ["HttpConnector", "MemoryRateLimiter", "RateLimit", "RateLimiter", "RedisRateLimiter"]
