"""What finance reads: the compensation ledger, and the saga log's tamper evidence."""

from sagaledger.audit._effects import Effect, record_effect
from sagaledger.audit._ledger import Ledger, LedgerEntry, RunBalance, compensation_ledger
from sagaledger.audit._seal import seal_period
from sagaledger.audit._verify import Problem, Verification, verify_log

__all__ = [
    "Effect",
    "Ledger",
    "LedgerEntry",
    "Problem",
    "RunBalance",
    "Verification",
    "compensation_ledger",
    "record_effect",
    "seal_period",
    "verify_log",
]
