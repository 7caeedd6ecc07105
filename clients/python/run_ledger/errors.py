"""Exceptions that carry the ledger's error contract into the worker."""

from __future__ import annotations

from typing import Any, Mapping, Optional


class LedgerError(Exception):
    """Base class of everything this client raises."""


class Refused(LedgerError):
    """The ledger answered ``retryable: false``: the same request will be refused again.

    Raised at once, never retried. ``code`` is the stable problem code (``invalid-payload``,
    ``score-conflict``, ...), ``type`` its URN, ``status`` the HTTP status and ``run_status``
    the run's status when the ledger disclosed it.
    """

    def __init__(
        self,
        message: str,
        *,
        type: Optional[str] = None,
        code: Optional[str] = None,
        detail: Optional[str] = None,
        status: Optional[int] = None,
        run_status: Optional[str] = None,
        problem: Optional[Mapping[str, Any]] = None,
    ) -> None:
        super().__init__(message)
        self.type = type
        self.code = code
        self.detail = detail
        self.status = status
        self.run_status = run_status
        self.problem: Mapping[str, Any] = problem or {}

    @property
    def errors(self) -> Mapping[str, Any]:
        """Field -> messages, for invalid payloads."""
        value = self.problem.get("errors")
        return value if isinstance(value, dict) else {}

    @classmethod
    def from_problem(cls, status: int, problem: Mapping[str, Any]) -> "Refused":
        code = problem.get("code") if isinstance(problem.get("code"), str) else None
        detail = problem.get("detail") if isinstance(problem.get("detail"), str) else None
        title = problem.get("title") if isinstance(problem.get("title"), str) else None
        text = f"{status} {code or 'refused'}: {detail or title or 'the ledger refused the request'}"
        # What to fix, not only that something is wrong: each field with its messages and allowed values.
        fields = _fields(problem)
        if fields:
            text += " " + fields
        return cls(
            text,
            type=problem.get("type") if isinstance(problem.get("type"), str) else None,
            code=code,
            detail=detail,
            status=status,
            run_status=problem.get("runStatus") if isinstance(problem.get("runStatus"), str) else None,
            problem=problem,
        )


def _fields(problem: Mapping[str, Any]) -> str:
    """``errors`` (field -> messages) and ``allowed`` as one line: ``[errorClass: 'x' is not one; allowed: timeout, ...]``."""
    errors = problem.get("errors")
    parts: list[str] = []
    if isinstance(errors, dict):
        for field, messages in errors.items():
            said = messages if isinstance(messages, list) else [messages]
            parts.append(f"{field}: {' '.join(str(m) for m in said)}")
    allowed = problem.get("allowed")
    if isinstance(allowed, list) and allowed:
        parts.append("allowed: " + ", ".join(str(a) for a in allowed))
    return "[" + "; ".join(parts) + "]" if parts else ""


class RunTerminated(Refused):
    """The run has ended (finished, cancelled, lost, or this worker's lease is gone): stop working.

    Raised by the call that learned it and by every later call of the session. When raised by a
    later call, the problem fields describe the answer that ended the run (they are ``None``
    when the session ended for another reason).
    """


class Unavailable(LedgerError):
    """Retryable answers (429/503) or dropped connections outlasted the retry policy."""

    def __init__(self, message: str, *, attempts: int, last_status: Optional[int] = None,
                 last_problem: Optional[Mapping[str, Any]] = None) -> None:
        super().__init__(message)
        self.attempts = attempts
        self.last_status = last_status
        self.last_problem: Mapping[str, Any] = last_problem or {}


class IncompleteResults(LedgerError):
    """``complete()`` was called while a required score or output was not acknowledged.

    Nothing was sent. ``missing`` lists what is missing as the ledger spells it
    (``score:accuracy``, ``output:predictions``). Report them first, or pass ``force=True``.
    """

    def __init__(self, missing: list[str]) -> None:
        super().__init__("not complete: missing " + ", ".join(missing))
        self.missing = missing
