"""Run Ledger worker client: carries the ledger's error contract into the worker.

Standard library only; Python >= 3.11.
"""

from .client import ENDED_CODES, TERMINAL_STATUSES, Ledger, RetryPolicy, RunSession
from .errors import IncompleteResults, LedgerError, Refused, RunTerminated, Unavailable

__all__ = [
    "ENDED_CODES",
    "TERMINAL_STATUSES",
    "IncompleteResults",
    "Ledger",
    "LedgerError",
    "Refused",
    "RetryPolicy",
    "RunSession",
    "RunTerminated",
    "Unavailable",
]

__version__ = "0.1.0"
