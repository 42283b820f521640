"""One error shape for every API answer: {"error": code, "detail": message, ...}."""
import logging
from contextlib import contextmanager

from django.db import DatabaseError, InterfaceError, OperationalError
from django.http import JsonResponse
from rest_framework import status
from rest_framework.exceptions import APIException, AuthenticationFailed, NotFound, PermissionDenied
from rest_framework.response import Response
from rest_framework.views import exception_handler

from project.accounts.tokens import BEARER_CHALLENGE


logger = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 2
DATABASE_DOWN = "database unavailable; retry shortly"


class ServiceUnavailable(APIException):
    """A 503 that always says when to come back (Retry-After, default 2 s)."""

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "Service temporarily unavailable."
    default_code = "unavailable"

    def __init__(self, detail=None, code=None, retry_after: int = RETRY_AFTER_SECONDS):
        super().__init__(detail, code)
        self.wait = retry_after  # DRF's handler turns `wait` into Retry-After


class Refused(Exception):
    """A service's refusal, answered by the API as {"error": code, "detail":
    detail, **extra} with `status` (as Zulip's JsonableError): services raise
    it, views do not catch it, api_exception_handler answers it. Subclasses set
    status and code; `retry_after` (seconds) becomes Retry-After."""

    status = 400
    code = "invalid"
    retry_after: int | None = None

    def __init__(self, detail: str, **extra):
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


@contextmanager
def credential_refusals():
    """Around an authentication class's check: a service's refusal of the
    credential (401, 403, 404) is raised as DRF's own exception, so DRF marks
    the request unauthenticated (nothing asks again) and a 401 carries the
    class's challenge."""
    try:
        yield
    except Refused as exc:
        kind = {401: AuthenticationFailed, 403: PermissionDenied, 404: NotFound}.get(exc.status)
        if kind is None:
            raise  # any other refusal is answered as itself
        raise kind(exc.detail, exc.code) from exc


def refused_response(exc: Refused) -> Response:
    response = Response({"error": exc.code, "detail": exc.detail, **exc.extra}, status=exc.status)
    if exc.status == status.HTTP_401_UNAUTHORIZED:
        response["WWW-Authenticate"] = BEARER_CHALLENGE
    if exc.retry_after or exc.status == status.HTTP_503_SERVICE_UNAVAILABLE:  # every 503 says when to come back
        response["Retry-After"] = str(exc.retry_after or RETRY_AFTER_SECONDS)
    return response


class PayloadTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "Payload too large."
    default_code = "payload_too_large"


def database_unavailable(exc: DatabaseError) -> bool:
    """The database cannot be reached or dropped the connection (a restart, a
    failover, a network cut), as opposed to a bug in a query. psycopg2 reports
    both a refused connection and a server shutting down as OperationalError;
    Django raises InterfaceError for a connection already closed."""
    return isinstance(exc, (OperationalError, InterfaceError))


def database_error_line(exc: Exception) -> str:
    """The first line of a driver error: enough for a log line, no traceback."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


def database_unavailable_log(exc: Exception, where: str) -> None:
    """One line, not a traceback per request for the length of an outage."""
    logger.warning("database unavailable, answering 503 to %s: %s", where, database_error_line(exc))


def database_unavailable_response() -> JsonResponse:
    """For plain Django views (see project.middleware)."""
    response = JsonResponse({"error": "unavailable", "detail": DATABASE_DOWN}, status=503)
    response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


def api_exception_handler(exc, context):
    if isinstance(exc, Refused):
        return refused_response(exc)
    if database_unavailable(exc):
        request = context.get("request")
        database_unavailable_log(exc, f"{request.method} {request.path}" if request is not None else "an API call")
        exc = ServiceUnavailable(DATABASE_DOWN)
    response = exception_handler(exc, context)
    if response is None:
        return None
    if response.status_code == status.HTTP_503_SERVICE_UNAVAILABLE and "Retry-After" not in response:
        response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    data = response.data
    if isinstance(data, dict) and set(data) == {"detail"}:
        code = getattr(data["detail"], "code", None) or getattr(exc, "default_code", "error")
        body = {"error": code, "detail": str(data["detail"])}
    else:
        # Field errors from a serializer: name every field and its reason.
        body = {"error": "invalid", "detail": "Invalid input.", "fields": data}
    return Response(body, status=response.status_code, headers=_headers(response))


def _headers(response):
    return {k: v for k, v in response.items() if k.lower() in ("www-authenticate", "retry-after")}
