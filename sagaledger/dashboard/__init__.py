"""The web dashboard (``sagaledger serve``; needs ``pip install 'sagaledger[dashboard]'``).

Runs with filters, a run's timeline, the compensation ledger, parked runs and
pending approvals, behind tokens (``sagaledger tokens``): operators act,
auditors read. Sensitive fields are redacted everywhere (see ``_redact``).
"""

from sagaledger.dashboard._app import create_app

__all__ = ["create_app"]
