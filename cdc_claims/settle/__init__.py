"""Settle: debounce touched encounters/visits until they are quiet enough to claim."""

from cdc_claims.settle.window import Due, DueReason, SettleTracker, Unit

__all__ = ["Due", "DueReason", "SettleTracker", "Unit"]
