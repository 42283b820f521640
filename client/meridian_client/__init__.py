"""Meridian's Python client, CLI and the public API for task code.

Submit and wait (``Client`` / ``AsyncClient``, docs/client.md)::

    from meridian_client import Client, TaskFailed

    with Client("https://router.example.com", "mk_...") as client:
        ref = client.submit("echo", {"hello": "world"}, residency="eu")
        print(ref.result(timeout=60))

Receiving a completion callback (``verify_callback``): see
``meridian_client.callbacks``.

Task code (``handler``, ``Context``, ``HandlerError``): see
``meridian_client.handlers``.
"""
from meridian_client.callbacks import CallbackVerificationError, verify_callback
from meridian_client.client import AsyncClient, AsyncTaskRef, Client, Refusal, TaskRef
from meridian_client.errors import (APIError, AuthenticationError, Conflict, ForwardUncertain, IdempotencyConflict,
                                    MeridianError, NoAgent, NoRegion, NotFound, PayloadTooLarge, PermissionDenied,
                                    RateLimited, ServerError, TaskCancelled, TaskError, TaskFailed, TransportError,
                                    Unavailable, ValidationError, WaitTimeout, WorkflowCancelled, WorkflowError,
                                    WorkflowFailed)
from meridian_client._version import __version__
from meridian_client.handlers import Context, HandlerError, HandlerSpec, handler, registered

__all__ = [
    # task code
    "Context", "HandlerError", "HandlerSpec", "handler", "registered",
    # receiving a completion callback
    "verify_callback", "CallbackVerificationError",
    # the client
    "Client", "AsyncClient", "TaskRef", "AsyncTaskRef", "Refusal",
    # errors
    "MeridianError", "APIError", "ValidationError", "AuthenticationError", "PermissionDenied", "NotFound",
    "Conflict", "IdempotencyConflict", "NoAgent", "PayloadTooLarge", "RateLimited", "ServerError", "Unavailable",
    "NoRegion", "ForwardUncertain", "TransportError", "TaskError", "TaskFailed", "TaskCancelled", "WaitTimeout",
    "WorkflowError", "WorkflowFailed", "WorkflowCancelled",
    "__version__",
]
