"""The HTTP half of every simulator: a threaded server on loopback that injects faults.

A simulator subclass authenticates a request and routes it to an operation
(a name and the function that applies it); this base does the rest: injects
the next matching fault, keeps every request for tests to inspect, and serves
a small control API so that a simulator in another process (``sagaledger
simulators``) can be driven like one in this process:

    GET    /_simulator/ledger     the effects applied, in order (JSON list)
    GET    /_simulator/faults     the faults still waiting
    POST   /_simulator/faults     add a fault (JSON: see ``Fault``)
    DELETE /_simulator/faults     drop every waiting fault
"""

from __future__ import annotations

import json
import logging
import threading
import urllib.parse
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from sagaledger.connectors.simulators._faults import Fault, FaultKind
from sagaledger.connectors.simulators._serving import ServedSimulator

CONTROL_PREFIX = "/_simulator/"

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SimRequest:
    """One request as the simulator received it."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # names lower-cased
    body: bytes

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def form(self) -> dict[str, str]:
        """The form-encoded body (last value wins), as Stripe-style APIs send it."""
        pairs = urllib.parse.parse_qsl(self.body.decode(), keep_blank_values=True)
        return dict(pairs)

    def json(self) -> Any:
        return json.loads(self.body or b"null")


@dataclass
class SimResponse:
    """What the simulator answers."""

    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


#: What a route returns: the operation's name and the function that applies it.
Operation = tuple[str, Callable[[], SimResponse]]


class HttpSimulator(ServedSimulator, ABC):
    """A simulated HTTP service on ``127.0.0.1``.

    Args:
        port: 0 for any free port (see :attr:`url`).
    """

    def __init__(self, port: int = 0):
        self.requests: list[SimRequest] = []
        self._lock = threading.RLock()  # held while an operation applies its effect
        self._http = ThreadingHTTPServer(("127.0.0.1", port), _handler_for(self))
        self._http.daemon_threads = True
        super().__init__(self._http)

    @property
    def url(self) -> str:
        host, port = self._http.server_address[:2]
        return f"http://{host!s}:{port}"

    # -- what subclasses provide ------------------------------------------------

    @abstractmethod
    def authenticate(self, request: SimRequest) -> SimResponse | None:
        """None when the request may go on, else the service's 401 answer."""

    @abstractmethod
    def route(self, request: SimRequest) -> Operation | SimResponse:
        """The operation the request asks for, or an answer (404, 400) without one."""

    @abstractmethod
    def error(self, status: int, code: str, message: str) -> SimResponse:
        """An error in the service's own shape."""

    @abstractmethod
    def decline(self, operation: str, fault: Fault) -> SimResponse:
        """The service's business refusal of ``operation`` (a DECLINE fault)."""

    # -- handling -----------------------------------------------------------------

    def handle(self, request: SimRequest) -> SimResponse | None:
        """The answer to ``request``, or None to drop the connection without one."""
        if request.path.startswith(CONTROL_PREFIX):
            return self._control(request)
        with self._lock:
            self.requests.append(request)
        refused = self.authenticate(request)
        if refused is not None:
            return refused
        try:
            return self._respond(request)
        except Exception as exc:
            # A bug here must not look like a lost response (an unknown outcome) to the client.
            _log.exception("%s simulator: %s %s failed", self.system, request.method, request.path)
            return self.error(500, "simulator_bug", f"{type(exc).__name__}: {exc}")

    def _respond(self, request: SimRequest) -> SimResponse | None:
        routed = self.route(request)
        if isinstance(routed, SimResponse):
            return routed
        operation, apply = routed
        fault = self.faults.take(operation)
        if fault is None:
            return self._apply(apply)
        if fault.kind is FaultKind.LATENCY:
            self._stopping.wait(fault.delay)
            return self._apply(apply)
        if fault.kind is FaultKind.ERROR:
            return self.error(fault.status, "simulated_error", "simulated server error")
        if fault.kind is FaultKind.RATE_LIMIT:
            limited = self.error(429, "rate_limit", "too many requests")
            limited.headers["Retry-After"] = f"{fault.retry_after:g}"
            return limited
        if fault.kind is FaultKind.TIMEOUT:
            self._stopping.wait(fault.delay)
            return None
        if fault.kind is FaultKind.DECLINE:
            return self.decline(operation, fault)
        self._apply(apply)  # LOST_RESPONSE: the effect lands, the answer does not
        return None

    def _apply(self, apply: Callable[[], SimResponse]) -> SimResponse:
        # One effect at a time: idempotency checks and writes must not interleave.
        with self._lock:
            return apply()

    def _control(self, request: SimRequest) -> SimResponse:
        what = request.path.removeprefix(CONTROL_PREFIX).strip("/")
        if what == "ledger" and request.method == "GET":
            return SimResponse(200, self.ledger.as_json())
        if what == "faults" and request.method == "GET":
            return SimResponse(200, [asdict(f) for f in self.faults.pending()])
        if what == "faults" and request.method == "DELETE":
            self.faults.clear()
            return SimResponse(200, {"cleared": True})
        if what == "faults" and request.method == "POST":
            try:
                self.inject(Fault.from_json(request.json()))
            except (ValueError, TypeError) as exc:
                return SimResponse(400, {"error": str(exc)})
            return SimResponse(201, {"added": True})
        return SimResponse(404, {"error": f"no control endpoint {request.method} {request.path}"})


def _handler_for(simulator: HttpSimulator) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as real APIs serve
        # Headers and body go out in separate writes: without this each answer waits
        # for the client's delayed ACK (about 40 ms).
        disable_nagle_algorithm = True

        def _serve(self) -> None:
            parsed = urllib.parse.urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            request = SimRequest(
                method=self.command,
                path=parsed.path,
                query=urllib.parse.parse_qs(parsed.query, keep_blank_values=True),
                headers={k.lower(): v for k, v in self.headers.items()},
                body=self.rfile.read(length) if length else b"",
            )
            response = simulator.handle(request)
            if response is None:  # a timeout or a lost response: hang up, say nothing
                self.close_connection = True
                return
            if isinstance(response.body, str):
                response.body = response.body.encode()
            if isinstance(response.body, bytes):
                payload = response.body
                content_type = response.headers.pop("Content-Type", "text/plain")
            else:
                payload = json.dumps(response.body).encode()
                content_type = "application/json"
            self.send_response(response.status)
            if response.status in (204, 304):  # no body may follow, not even "null"
                payload = b""
            else:
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(payload)))
            for name, value in response.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:
            pass  # tests read the request list; stderr stays quiet

    return Handler
