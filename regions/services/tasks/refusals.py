"""What submission and the operator actions refuse; the API answers each with its
status and code (project.exceptions.Refused), a batch item too."""
from __future__ import annotations

from project.exceptions import Refused


class PayloadTooLargeError(Refused):
    status, code = 413, "payload_too_large"


class InvalidState(Refused):
    """The task is not in a state the action applies to."""

    status, code = 409, "conflict"


class AttemptLimit(Refused):
    """The task has had as many attempts as a task may (settings.TASK_ATTEMPTS_MAX)."""

    status, code = 409, "attempt_limit"


class CapabilityRefused(Refused):
    """The active configuration does not let this region run the capability."""

    status, code = 403, "permission_denied"


class NoAgent(Refused):
    """require_agent was asked and no live agent takes the task: nothing stored."""

    status, code = 409, "no_agent"


class IdempotencyConflict(Refused):
    """The idempotency key was used before for a different request."""

    status, code = 409, "idempotency_key_reused"


class CallbackRefused(Refused):
    """The callback_url is not one this region may call (callbacks.allowed_hosts,
    the SSRF guard)."""

    status, code = 403, "callback_refused"


class CallbackSecretMissing(Refused):
    """A callback_url was given before the caller had a signing secret."""

    status, code = 409, "callback_secret_missing"


class RateLimited(Refused):
    status, code = 429, "throttled"

    def __init__(self, message: str, retry_after: int, **extra):
        super().__init__(message, **extra)
        self.retry_after = retry_after


class QuotaExceeded(RateLimited):
    """A caller's quota (callers.<name> in the configuration) is spent; the
    answer names the quota and its limit."""

    code = "quota_exceeded"
