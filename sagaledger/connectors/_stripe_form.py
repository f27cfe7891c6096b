"""How the Stripe connector writes requests: bracket-notation forms, keyed metadata, literals."""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from typing import Any

from sagaledger.connectors._stripe_models import KEY_METADATA


def form_pairs(params: Mapping[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """Flatten ``params`` into Stripe's bracket notation, skipping None.

    ``{"metadata": {"a": "1"}, "types": ["card"], "confirm": True}`` becomes
    ``metadata[a]=1``, ``types[0]=card``, ``confirm=true``.
    """
    pairs: list[tuple[str, str]] = []
    for name, value in params.items():
        key = f"{prefix}[{name}]" if prefix else str(name)
        if value is None:
            continue
        if isinstance(value, Mapping):
            pairs.extend(form_pairs(value, key))
        elif isinstance(value, list | tuple):
            pairs.extend(form_pairs({str(i): item for i, item in enumerate(value)}, key))
        elif isinstance(value, bool):
            pairs.append((key, "true" if value else "false"))
        else:
            pairs.append((key, str(value)))
    return pairs


def keyed_metadata(metadata: Mapping[str, str] | None, idempotency_key: str) -> dict[str, str]:
    """``metadata`` plus the saga's key, within Stripe's limits on metadata keys."""
    fields = dict(metadata or {})
    if KEY_METADATA in fields:
        raise ValueError(f"metadata[{KEY_METADATA}] is set by the connector")
    bad = [k for k in fields if "[" in k or "]" in k or len(k) > 40]
    if bad:
        raise ValueError(f"metadata keys must be 1-40 characters without brackets: {bad}")
    fields[KEY_METADATA] = idempotency_key
    return fields


def search_literal(value: str) -> str:
    """A string literal of Stripe's search language."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def path_segment(value: str) -> str:
    """An id as one path segment, so a stray ``/`` cannot reach another endpoint."""
    return urllib.parse.quote(value, safe="")
