"""Compensations: planned from the saga log, run in reverse, parked when they keep failing."""

from sagaledger.compensation._plan import compensation_plan, completed_pivot, next_compensation

__all__ = ["compensation_plan", "completed_pivot", "next_compensation"]
