"""What the router refuses: domain errors without HTTP handling, answered by
project.exceptions.api_exception_handler from their status and code."""
from __future__ import annotations

from project.exceptions import Refused


class RouterError(Refused):
    """What the router refuses, answered by the API exception handler."""


class Unauthenticated(RouterError):
    status, code = 401, "not_authenticated"


class Forbidden(RouterError):
    status, code = 403, "permission_denied"


class NotFound(RouterError):
    status, code = 404, "not_found"


class Stale(RouterError):
    status, code = 409, "conflict"


class NoRegion(RouterError):
    status, code = 503, "unavailable"


class ForwardUncertain(RouterError):
    status, code = 504, "timeout"


class ForwardBudgetSpent(NoRegion):
    """Every region tried was unreachable and the forward's time is up."""

    def __init__(self, detail: str, *, retry_after: int, **extra):
        super().__init__(detail, **extra)
        self.retry_after = retry_after


class NoSigningKey(NoRegion):
    """The router has no ROUTER_SIGNING_KEY: it cannot vouch for a caller to a region."""
