"""Telemetry: OpenTelemetry spans, Prometheus metrics and JSON logs of runs and steps.

Logs need nothing more than sagaledger. Spans and metrics need the ``telemetry``
extra (``pip install 'sagaledger[telemetry]'``: opentelemetry-api and -sdk,
prometheus-client); their classes are imported when first used, so that the
rest of sagaledger works without them.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from sagaledger.telemetry._context import RunContext, current_run
from sagaledger.telemetry._logs import JsonFormatter

if TYPE_CHECKING:
    from sagaledger.telemetry._collector import SagaLogCollector
    from sagaledger.telemetry._ids import run_span_id, run_trace_id
    from sagaledger.telemetry._metrics import MetricsHooks
    from sagaledger.telemetry._tracing import TracingHooks

#: Names that need the extra, and the module each comes from.
_EXTRA = {
    "MetricsHooks": "_metrics",
    "SagaLogCollector": "_collector",
    "TracingHooks": "_tracing",
    "run_span_id": "_ids",
    "run_trace_id": "_ids",
}


def __getattr__(name: str) -> Any:
    module = _EXTRA.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        return getattr(import_module(f"{__name__}.{module}"), name)
    except ImportError as exc:
        raise ImportError(
            f"sagaledger.telemetry.{name} needs the telemetry extra "
            f"(pip install 'sagaledger[telemetry]'): {exc}"
        ) from exc


__all__ = [
    "JsonFormatter",
    "MetricsHooks",
    "RunContext",
    "SagaLogCollector",
    "TracingHooks",
    "current_run",
    "run_span_id",
    "run_trace_id",
]
