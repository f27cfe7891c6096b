"""What every simulator's server shares: a thread on 127.0.0.1, a prompt stop, faults, a ledger."""

from __future__ import annotations

import socketserver
import threading
from typing import Self

from sagaledger.connectors.simulators._faults import EffectLedger, Fault, FaultPlan


class ServedSimulator:
    """A simulator whose ``server`` (HTTP or SMTP) runs in a thread of this process.

    Args:
        server: The bound server; it serves from :meth:`start` to :meth:`stop`.
    """

    #: The service's name, in logs and thread names.
    system = "simulator"

    def __init__(self, server: socketserver.BaseServer):
        self.faults = FaultPlan()
        self.ledger = EffectLedger()
        self._stopping = threading.Event()  # ends the waits of latency and timeout faults
        self._server = server
        self._thread: threading.Thread | None = None

    def start(self) -> Self:
        # A short poll interval: stop() waits for the serving loop to notice.
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"{self.system}-simulator",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:  # shutdown() waits forever for a loop never started
            self._server.shutdown()
        self._hang_up()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def _hang_up(self) -> None:
        """End the sessions still open before the server closes (none to end here)."""

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def inject(self, fault: Fault) -> None:
        """Add a fault for the next matching request(s)."""
        self.faults.add(fault)
