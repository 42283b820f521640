"""Every error the client raises, one class per shape the API answers with.

The API answers every refusal as ``{"error": code, "detail": message, ...}``;
:func:`error_from_answer` turns one into the matching exception. Catch
:class:`MeridianError` for everything, :class:`APIError` for a refusal by a
server, :class:`TaskError` for a task that ended badly or not in time.
"""
from __future__ import annotations

from typing import Any, Mapping

__all__ = [
    "MeridianError", "APIError", "ValidationError", "AuthenticationError", "PermissionDenied", "NotFound",
    "Conflict", "IdempotencyConflict", "NoAgent", "PayloadTooLarge", "RateLimited", "ServerError", "Unavailable",
    "NoRegion", "ForwardUncertain", "TransportError", "TaskError", "TaskFailed", "TaskCancelled", "WaitTimeout",
    "error_from_answer",
]


class MeridianError(Exception):
    """Base of every error this package raises."""


# --- refusals by a server ----------------------------------------------------------

class APIError(MeridianError):
    """A server answered with an error: ``status`` (HTTP), ``code`` (the body's
    ``error``), ``detail`` (for a person) and the whole ``body``."""

    def __init__(self, detail: str, *, status: int, code: str = "error", body: Mapping[str, Any] | None = None,
                 retry_after: float | None = None, url: str | None = None) -> None:
        super().__init__(f"{status} {code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail
        self.body: dict[str, Any] = dict(body or {})
        self.retry_after = retry_after
        self.url = url

    @property
    def fields(self) -> dict[str, Any]:
        """For a 400: each invalid field and its reasons (empty otherwise)."""
        fields = self.body.get("fields")
        return fields if isinstance(fields, dict) else {}


class ValidationError(APIError):
    """400: the request is malformed or a field is invalid (see ``fields``)."""


class AuthenticationError(APIError):
    """401: no API key, or not a valid one."""


class PermissionDenied(APIError):
    """403: the key may not do this (e.g. a capability it is not allowed)."""


class NotFound(APIError):
    """404: no such task (in that region), or no such region at the router."""


class Conflict(APIError):
    """409: the object is not in a state that allows this (cancel a finished task...)."""


class IdempotencyConflict(Conflict):
    """409 ``idempotency_key_reused``: the key was used for a different submission."""


class NoAgent(Conflict):
    """409 ``no_agent``: ``require_agent`` was asked and no agent serves the capability."""


class PayloadTooLarge(APIError):
    """413: the body is larger than the server's limit."""


class RateLimited(APIError):
    """429: too many requests; ``retry_after`` says when to come back. Retried
    by the client until its deadline."""


class ServerError(APIError):
    """A 5xx answer."""


class Unavailable(ServerError):
    """503: a store the server needs is down, or no region can take the task.
    Retried by the client (``Retry-After`` honoured) until its deadline."""


class NoRegion(Unavailable):
    """503 from the router: no healthy region serves the capability (with the
    residency asked). Not retried: ``body["skipped"]`` says why each was passed over."""


class ForwardUncertain(ServerError):
    """504 from the router: the region it forwarded to did not answer, so the
    task may have been accepted there. ``region_id`` says where; the client
    retries there only, with the same idempotency key, until its deadline."""

    @property
    def region_id(self) -> str | None:
        value = self.body.get("region_id")
        return value if isinstance(value, str) else None

    @property
    def region_url(self) -> str | None:
        value = self.body.get("regional_orchestrator_url")
        return value if isinstance(value, str) else None


class TransportError(MeridianError):
    """The server could not be reached, or the connection failed before an
    answer (retried where that is safe, until the deadline)."""


# --- tasks that ended badly ------------------------------------------------------------

class TaskError(MeridianError):
    """A task did not give a result: ``task`` is its last known state."""

    def __init__(self, message: str, *, task: Mapping[str, Any]) -> None:
        super().__init__(message)
        self.task: dict[str, Any] = dict(task)

    @property
    def task_id(self) -> str:
        return str(self.task.get("id", ""))

    @property
    def status(self) -> str:
        return str(self.task.get("status", ""))


class TaskFailed(TaskError):
    """The task failed: ``error`` (the handler's message), ``attempts`` made,
    ``status_reason``."""

    @property
    def error(self) -> str:
        return str(self.task.get("error") or "")

    @property
    def attempts(self) -> int:
        value = self.task.get("attempt")
        return value if isinstance(value, int) else 0

    @property
    def status_reason(self) -> str:
        return str(self.task.get("status_reason") or "")


class TaskCancelled(TaskError):
    """The task was cancelled before it gave a result."""


class WaitTimeout(TaskError):
    """The time given to wait ran out before the task (or every task) ended;
    ``task`` is the last state seen, ``pending`` the references still running."""

    def __init__(self, message: str, *, task: Mapping[str, Any] | None = None,
                 pending: list[Any] | None = None) -> None:
        super().__init__(message, task=task or {})
        self.pending: list[Any] = list(pending or [])


class WorkflowError(MeridianError):
    """A workflow ended without a result; ``workflow`` is its state as answered
    (``workflow["error"]`` names the step, ``workflow["steps"]`` has every step)."""

    def __init__(self, message: str, *, workflow: Mapping[str, Any]) -> None:
        super().__init__(message)
        self.workflow: dict[str, Any] = dict(workflow)


class WorkflowFailed(WorkflowError):
    """A step of the workflow failed (its attempts spent); ``workflow_retry`` resumes it."""


class WorkflowCancelled(WorkflowError):
    """The workflow was cancelled."""


# --- from an answer ---------------------------------------------------------------------

_BY_STATUS: dict[int, type[APIError]] = {
    400: ValidationError, 401: AuthenticationError, 403: PermissionDenied, 404: NotFound, 409: Conflict,
    413: PayloadTooLarge, 429: RateLimited, 503: Unavailable, 504: ForwardUncertain,
}
_BY_CODE: dict[str, type[APIError]] = {"idempotency_key_reused": IdempotencyConflict, "no_agent": NoAgent}


def error_from_answer(status: int, body: Any, *, retry_after: float | None = None,
                      url: str | None = None) -> APIError:
    """The exception for an error answer (any status >= 400, any body)."""
    if not isinstance(body, dict):
        body = {"detail": str(body)[:500] if body else ""}
    code = body.get("error") if isinstance(body.get("error"), str) else "error"
    detail = body.get("detail")
    if not isinstance(detail, str):
        detail = str(detail) if detail is not None else f"HTTP {status}"
    cls = _BY_CODE.get(code) or _BY_STATUS.get(status)
    if status == 503 and "skipped" in body:
        cls = NoRegion
    if status == 504 and "region_id" not in body:
        cls = ServerError  # a gateway's timeout, not the router's uncertain forward
    if cls is None:
        cls = ServerError if status >= 500 else APIError
    return cls(detail, status=status, code=code, body=body, retry_after=retry_after, url=url)
