"""The one place sagaledger reads environment variables: the CLI's settings.

The library itself takes its configuration as explicit arguments (an
:class:`~sagaledger.Orchestrator` is given its lease and grace); only the
``sagaledger`` command and the processes it starts build a :class:`Settings`,
so a service embedding the library is never configured behind its back.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

#: Where runs are logged when nothing else is said: a SQLite file in the working directory.
DEFAULT_STORE = "sqlite:///sagaledger.db"
#: Every setting is read from ``SAGALEDGER_<NAME>`` (``SAGALEDGER_STORE``, ...).
ENV_PREFIX = "SAGALEDGER_"


class Settings(BaseSettings):
    """Settings of the ``sagaledger`` command, from ``SAGALEDGER_*`` variables.

    Values given to the constructor (the CLI's own options) win over the
    environment, which wins over the defaults.

    Attributes:
        store: SQLAlchemy URL of the saga log.
        broker: Where workers take their messages from: ``redis://...`` (shared by
            every worker on every machine), or None (``memory``) for an in-process
            broker per worker process.
        processes: Worker processes one ``sagaledger worker`` runs and supervises.
        threads: Worker threads, i.e. runs driven at once by one worker process.
        lease_seconds: How long a run's lease lasts without renewal; a crashed
            worker's runs are taken over this long after its last renewal.
        recovery_interval_seconds: How often a worker looks in the log for due runs.
        dispatch_grace_seconds: How long a newly due run may wait for its own
            message before the recovery pass drives it anyway.
        queue: Prefix of the broker's queue names (one queue per saga version).
        metrics_port: Serve Prometheus metrics at ``/metrics`` on this port (None:
            not at all). With N processes, process ``i`` (from 0) serves on
            ``metrics_port + i``.
        metrics_addr: The address the metrics server listens on.
        tracing: ``auto``: emit OpenTelemetry spans when the SDK is configured
            (a tracer provider is set, or ``OTEL_TRACES_EXPORTER`` names an
            exporter); ``on``: always, configuring the SDK from the ``OTEL_*``
            variables if nothing did; ``off``: never.
        redact: Comma-separated field names (shell-style globs, ``card_number,*iban*``)
            whose values the dashboard hides, besides credentials (see ``_redact``).
        dashboard_secret: Key that signs the dashboard's session cookies (None: a
            random one per ``sagaledger serve``, so a restart logs everyone out).
    """

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="ignore")

    store: str = Field(default=DEFAULT_STORE, min_length=1)
    broker: str | None = None
    processes: int = Field(default=1, ge=1)
    threads: int = Field(default=4, ge=1)
    lease_seconds: float = Field(default=30, gt=0)
    recovery_interval_seconds: float = Field(default=2, gt=0)
    dispatch_grace_seconds: float = Field(default=10, ge=0)
    queue: str = Field(default="sagaledger", pattern=r"^[A-Za-z_][A-Za-z0-9_.\-]*$")
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    metrics_addr: str = "0.0.0.0"
    tracing: Literal["auto", "on", "off"] = "auto"
    redact: str = ""
    dashboard_secret: str | None = Field(default=None, min_length=16)

    @property
    def lease(self) -> timedelta:
        """``lease_seconds`` as a duration."""
        return timedelta(seconds=self.lease_seconds)

    @property
    def recovery_interval(self) -> timedelta:
        """``recovery_interval_seconds`` as a duration."""
        return timedelta(seconds=self.recovery_interval_seconds)

    @property
    def dispatch_grace(self) -> timedelta:
        """``dispatch_grace_seconds`` as a duration."""
        return timedelta(seconds=self.dispatch_grace_seconds)
