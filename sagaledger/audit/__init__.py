"""What finance reads: the saga log's tamper evidence (and, later, its compensation ledger)."""

from sagaledger.audit._seal import seal_period
from sagaledger.audit._verify import Problem, Verification, verify_log

__all__ = ["Problem", "Verification", "seal_period", "verify_log"]
