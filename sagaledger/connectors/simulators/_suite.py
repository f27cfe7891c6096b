"""All the simulators at once, for the demo, the examples and ``sagaledger simulators``.

A suite starts the payments, ERP, SMTP and email API simulators on loopback with
well-known local credentials. Its :class:`Endpoints` (plain JSON) is all another
process needs to build connectors that talk to it: a worker process the demo
starts, or an example run against ``sagaledger simulators`` in another terminal.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Self, TypeVar

from sagaledger.connectors._oauth1 import OAuth1Credentials
from sagaledger.connectors.email import HttpEmailApi, SmtpMailer
from sagaledger.connectors.erp import NetSuiteErp
from sagaledger.connectors.payments import StripePayments
from sagaledger.connectors.simulators._faults import Effect
from sagaledger.connectors.simulators.email_api import EmailApiSimulator
from sagaledger.connectors.simulators.erp import ErpSimulator
from sagaledger.connectors.simulators.payments import DEFAULT_API_KEY, PaymentsSimulator
from sagaledger.connectors.simulators.smtp import SmtpSimulator

T = TypeVar("T")

#: The local simulators' credentials. They guard nothing: anyone on this machine
#: may use them, and no real service accepts them.
PAYMENTS_API_KEY = DEFAULT_API_KEY
ERP_CREDENTIALS = OAuth1Credentials(
    realm="1234567_SB1",
    consumer_key="sagaledger-simulator-consumer",
    consumer_secret="sagaledger-simulator-consumer-secret",
    token_id="sagaledger-simulator-token",
    token_secret="sagaledger-simulator-token-secret",
)
SMTP_USERNAME = "sagaledger"
SMTP_PASSWORD = "simulator-password"
EMAIL_API_KEY = "re_test_simulator"
#: The environment variable that hands a suite's endpoints to another process.
ENDPOINTS_ENV = "SAGALEDGER_SIMULATORS"
#: Stock the ERP starts with, per item.
DEFAULT_STOCK: Mapping[str, int] = {"WIDGET-1": 1000, "GADGET-2": 1000, "GIZMO-3": 1000}


@dataclass(frozen=True)
class Endpoints:
    """Where a suite's simulators listen."""

    payments_url: str
    erp_url: str
    smtp_host: str
    smtp_port: int
    email_api_url: str

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Endpoints:
        return cls(**data)

    def to_env(self) -> dict[str, str]:
        """The environment entry that tells a child process where the simulators are."""
        return {ENDPOINTS_ENV: json.dumps(self.as_json())}

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Endpoints:
        """The endpoints a parent process handed over in :data:`ENDPOINTS_ENV`.

        Raises:
            LookupError: the variable is missing or unreadable (the message says how
                to set it).
        """
        text = environ.get(ENDPOINTS_ENV)
        if not text:
            raise LookupError(
                f"{ENDPOINTS_ENV} is not set: start the simulators (sagaledger simulators) "
                "and export the line it prints"
            )
        try:
            return cls.from_json(json.loads(text))
        except (ValueError, TypeError) as exc:
            raise LookupError(
                f"{ENDPOINTS_ENV} is not a simulators' endpoints JSON: {exc}"
            ) from None


@dataclass
class LocalConnectors:
    """Connectors configured for a suite's simulators (close them when done)."""

    payments: StripePayments
    erp: NetSuiteErp
    mailer: SmtpMailer
    email_api: HttpEmailApi

    @classmethod
    def for_endpoints(cls, endpoints: Endpoints) -> LocalConnectors:
        return cls(
            payments=StripePayments(PAYMENTS_API_KEY, base_url=endpoints.payments_url),
            erp=NetSuiteErp(ERP_CREDENTIALS, base_url=endpoints.erp_url),
            # The simulator speaks plain SMTP on loopback; real servers get STARTTLS.
            mailer=SmtpMailer(
                endpoints.smtp_host,
                endpoints.smtp_port,
                username=SMTP_USERNAME,
                password=SMTP_PASSWORD,
                starttls=False,
            ),
            email_api=HttpEmailApi(endpoints.email_api_url, api_key=EMAIL_API_KEY),
        )

    def close(self) -> None:
        self.payments.close()
        self.erp.close()
        self.email_api.close()


class SimulatorSuite:
    """The payments, ERP, SMTP and email API simulators, started and stopped together.

    Args:
        stock: The ERP's stock per item (default :data:`DEFAULT_STOCK`).
        ports: Fixed ports by simulator name (``payments``, ``erp``, ``smtp``,
            ``email_api``); any free port for those not given.
    """

    def __init__(
        self, *, stock: Mapping[str, int] | None = None, ports: Mapping[str, int] | None = None
    ):
        port = dict(ports or {})
        unknown = sorted(set(port) - {"payments", "erp", "smtp", "email_api"})
        if unknown:
            raise ValueError(f"unknown simulator(s) {unknown}: use payments, erp, smtp, email_api")
        self.payments = _bound(
            "payments", port, lambda p: PaymentsSimulator(PAYMENTS_API_KEY, port=p)
        )
        self.erp = _bound(
            "erp",
            port,
            lambda p: ErpSimulator(
                ERP_CREDENTIALS, stock=DEFAULT_STOCK if stock is None else stock, port=p
            ),
        )
        self.smtp = _bound(
            "smtp", port, lambda p: SmtpSimulator(p, username=SMTP_USERNAME, password=SMTP_PASSWORD)
        )
        self.email_api = _bound(
            "email_api", port, lambda p: EmailApiSimulator(p, api_key=EMAIL_API_KEY)
        )

    def start(self) -> Self:
        started: list[Any] = []
        try:
            for simulator in (self.payments, self.erp, self.smtp, self.email_api):
                simulator.start()
                started.append(simulator)
        except BaseException:
            for simulator in reversed(started):
                simulator.stop()
            raise
        return self

    def stop(self) -> None:
        for simulator in (self.email_api, self.smtp, self.erp, self.payments):
            simulator.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    @property
    def endpoints(self) -> Endpoints:
        return Endpoints(
            payments_url=self.payments.url,
            erp_url=self.erp.url,
            smtp_host=self.smtp.host,
            smtp_port=self.smtp.port,
            email_api_url=self.email_api.url,
        )

    def connectors(self) -> LocalConnectors:
        """Connectors for this suite, in this process."""
        return LocalConnectors.for_endpoints(self.endpoints)

    def ledgers(self) -> dict[str, list[Effect]]:
        """Every simulator's effects, by simulator name."""
        return {
            "payments": self.payments.ledger.effects(),
            "erp": self.erp.ledger.effects(),
            "smtp": self.smtp.ledger.effects(),
            "email_api": self.email_api.ledger.effects(),
        }


def _bound(name: str, ports: Mapping[str, int], make: Callable[[int], T]) -> T:
    """Make one simulator; a port that is taken says which simulator wanted it."""
    port = ports.get(name, 0)
    try:
        return make(port)
    except OSError as exc:
        raise OSError(exc.errno, f"{name} simulator, port {port}: {exc.strerror}") from None
