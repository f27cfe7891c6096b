"""Telemetry of a ``sagaledger worker`` process: its metrics server and its tracer.

Only the worker command calls these; a service embedding sagaledger passes
:class:`MetricsHooks` and :class:`TracingHooks` to its orchestrator itself.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from importlib.metadata import entry_points

from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from prometheus_client import REGISTRY, start_http_server

from sagaledger._errors import SagaLedgerError
from sagaledger.store import SagaLog
from sagaledger.telemetry._collector import SagaLogCollector
from sagaledger.telemetry._metrics import MetricsHooks
from sagaledger.telemetry._tracing import TracingHooks

#: The service name of a worker's spans when OTEL_SERVICE_NAME does not give one.
DEFAULT_SERVICE = "sagaledger-worker"
#: OpenTelemetry's variables that ask for an SDK set up from the environment.
_ASKING = (
    "OTEL_TRACES_EXPORTER",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
)


class MetricsServerError(SagaLedgerError):
    """The metrics server cannot listen where it was asked to."""


def serve_metrics(log: SagaLog, port: int, addr: str) -> tuple[MetricsHooks, Callable[[], None]]:
    """Count this process's work and serve it, with the log's figures, on ``addr:port``.

    Returns:
        The hooks to give the orchestrator, and a function that stops the server.

    Raises:
        MetricsServerError: the port is taken (or the address is not this host's).
    """
    hooks = MetricsHooks(REGISTRY)
    collector = SagaLogCollector(log)
    REGISTRY.register(collector)
    try:
        server, thread = start_http_server(port, addr, REGISTRY)
    except OSError as exc:
        REGISTRY.unregister(collector)
        raise MetricsServerError(
            f"cannot serve metrics on {addr}:{port}: {exc.strerror or exc}"
        ) from None

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(5)
        REGISTRY.unregister(collector)

    return hooks, stop


def tracing_hooks(mode: str) -> TracingHooks | None:
    """Spans of this worker's drives, or None when ``mode`` (auto, on, off) says not.

    ``auto`` traces when a tracer provider is set (by ``opentelemetry-instrument``,
    or by the app's module) or when the ``OTEL_*`` variables name an exporter;
    ``on`` always does. Without a provider, one is set up from the ``OTEL_*``
    variables: ``OTEL_TRACES_EXPORTER`` (``otlp`` by default, ``console``...),
    ``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES`` and the exporter's own.

    Raises:
        ValueError: no installed exporter has the name ``OTEL_TRACES_EXPORTER`` gives.
    """
    if mode == "off" or _sdk_disabled():
        return None
    provider = trace.get_tracer_provider()
    if isinstance(provider, trace.ProxyTracerProvider):  # nobody set one
        if mode == "auto" and not any(os.environ.get(name) for name in _ASKING):
            return None
        provider = provider_from_env()
        trace.set_tracer_provider(provider)
    return TracingHooks(provider)


def provider_from_env() -> TracerProvider:
    """An SDK tracer provider with the exporters and resource the ``OTEL_*`` variables name.

    It is shut down (its spans flushed) when the process exits.
    """
    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE}))
    provider = TracerProvider(resource=resource)
    names = os.environ.get("OTEL_TRACES_EXPORTER", "otlp")
    for name in (n.strip() for n in names.split(",")):
        if name and name != "none":
            provider.add_span_processor(BatchSpanProcessor(_exporter(name)))
    return provider


def _exporter(name: str) -> SpanExporter:
    found = entry_points(group="opentelemetry_traces_exporter", name=name)
    if not found:
        hint = " (pip install opentelemetry-exporter-otlp)" if name == "otlp" else ""
        raise ValueError(f"OTEL_TRACES_EXPORTER names {name!r}: no such exporter installed{hint}")
    exporter: SpanExporter = next(iter(found)).load()()
    return exporter


def _sdk_disabled() -> bool:
    return os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"
