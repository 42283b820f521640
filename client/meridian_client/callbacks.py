"""Receiving a completion callback: check that Meridian sent it.

A region POSTs a finished task (the JSON of ``GET /api/v1/tasks/<id>``) to the
submission's ``callback_url`` with the header::

    Meridian-Signature: t=1767225600,v1=5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd

``v1`` is the hex HMAC-SHA256, keyed with your signing secret (``POST
/api/v1/callbacks/secret``, shown once), of ``"<t>." + body``: the timestamp is
under the MAC, so a replayer cannot move it. During a rotation the header may
carry several ``v1=``; one matching is enough. Verify the raw body as received,
before any JSON parsing::

    from meridian_client import CallbackVerificationError, verify_callback

    try:
        task = verify_callback(request.body, request.headers["Meridian-Signature"], SECRET)
    except CallbackVerificationError as exc:
        return 400, str(exc)

A delivery may come more than once (a lost answer is retried): the
``Meridian-Delivery`` header names it, and the task id with its ``attempt``
makes processing idempotent.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

from meridian_client.errors import MeridianError

__all__ = ["CallbackVerificationError", "verify_callback", "SIGNATURE_HEADER", "DEFAULT_TOLERANCE"]

SIGNATURE_HEADER = "Meridian-Signature"
DEFAULT_TOLERANCE = 300  # seconds, either way: Stripe's default


class CallbackVerificationError(MeridianError):
    """The callback is not one Meridian signed with this secret, or it is too
    old or too far in the future (a replay): refuse it."""


def _parse(header: str | None) -> tuple[int, list[str]]:
    if not isinstance(header, str) or not header.strip():
        raise CallbackVerificationError(f"no {SIGNATURE_HEADER} header")
    timestamp: int | None = None
    signatures: list[str] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            continue
        if key == "t":
            try:
                timestamp = int(value)
            except ValueError:
                raise CallbackVerificationError(f"{SIGNATURE_HEADER}: t is not a unix time: {value[:20]!r}") from None
        elif key == "v1":
            signatures.append(value)
    if timestamp is None or not signatures:
        raise CallbackVerificationError(f"{SIGNATURE_HEADER} header must be 't=<unix time>,v1=<hex hmac>'")
    return timestamp, signatures


def verify_callback(body: bytes, header: str | None, secret: str, tolerance: float = DEFAULT_TOLERANCE,
                    *, now: float | None = None) -> dict[str, Any]:
    """Check a callback's signature and age; return the task it carries.

    ``body`` is the raw request body (bytes, not re-serialized JSON), ``header``
    the ``Meridian-Signature`` header's value, ``secret`` your signing secret.
    Raises :class:`CallbackVerificationError` when the header is missing or
    malformed, no signature matches (forged or altered), the timestamp is more
    than ``tolerance`` seconds from now (a replay, or a clock far off), or the
    body is not a JSON object. ``ValueError`` for an empty secret (a
    configuration mistake on your side, not a forgery)."""
    if not secret:
        raise ValueError("verify_callback: the signing secret is empty")
    if isinstance(body, str):
        body = body.encode()
    timestamp, signatures = _parse(header)
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + bytes(body), hashlib.sha256).hexdigest()
    # As bytes: compare_digest refuses str with non-ASCII characters, and a
    # forged header may carry any.
    if not any(hmac.compare_digest(expected.encode(), candidate.encode("utf-8", "surrogatepass"))
               for candidate in signatures):
        raise CallbackVerificationError("no signature matches: not signed with this secret, or the body was changed")
    age = (time.time() if now is None else now) - timestamp
    if abs(age) > tolerance:
        raise CallbackVerificationError(
            f"signed {int(abs(age))} s {'ago' if age > 0 else 'in the future'}, outside the tolerance of "
            f"{int(tolerance)} s: a replay, or a clock far off")
    try:
        task = json.loads(body)
    except ValueError:
        raise CallbackVerificationError("the signed body is not JSON") from None
    if not isinstance(task, dict):
        raise CallbackVerificationError("the signed body is not a JSON object")
    return task
