"""The application gunicorn serves (see project/gunicorn_conf.py).

A request's bytes are read asynchronously, in the worker's event loop, and only
a complete request reaches Django: its WSGI handler, run right there in the
worker, as a gunicorn sync worker runs it (one request at a time per worker,
the worker's own database connection kept per DB_CONN_MAX_AGE). So a client
that connects and stalls holds a coroutine and a socket, never the worker, and
cannot starve heartbeats; and a request costs what it cost under the sync
worker, with keep-alive on top.

Measured against the alternatives, side by side (3 workers, wrk -c32, a bare
view): Django's own ASGIHandler crosses between the event loop and a thread a
dozen times per request with our synchronous middleware, and gives each request
a new thread (so no database connection is ever reused): about a third of the
sync worker's throughput. asgiref's WsgiToAsgi with a thread pool: about the
sync worker's throughput, at 4-5x its p99. This: 1.6-2x the sync worker's, as
nothing crosses threads. Running the view in the loop blocks the loop for the
length of the view, exactly as a sync worker is blocked; every view here is
short, and one that hangs past gunicorn's timeout gets its worker restarted.

Long-polls (?wait=) are held here, between runs of the view, not in it: see
project/waiting.py. A waiting client holds a coroutine and a socket; the
worker and its database connection serve other requests meanwhile.
"""
import asyncio
import contextvars
import gc
import json
import os
import sys
from importlib import import_module
from io import BytesIO

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
# Django refuses database calls from a thread that runs an event loop, lest a
# coroutine interleave with them on the same connection. None can here: a
# request runs inside one synchronous call that never yields to the loop, and
# nothing asynchronous in this process touches Django (the waiters' database
# recheck, project/waiting.py, is one synchronous call too).
os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
django_application = get_wsgi_application()

from django.conf import settings  # noqa: E402  (configured by the line above)

from project.waiting import WaitHub, held_answer, wait_asked  # noqa: E402
from project.lean import lean_for_agents  # noqa: E402
from project.turns import FairTurns, flow_of  # noqa: E402
from wire.endpoints import HEARTBEAT, REPORT  # noqa: E402


def _environ(scope: dict, body: bytes) -> dict:
    environ = {
        "REQUEST_METHOD": scope["method"],
        "SCRIPT_NAME": scope.get("root_path", "").encode().decode("latin1"),
        "PATH_INFO": scope["path"].encode().decode("latin1"),
        "QUERY_STRING": scope["query_string"].decode("latin1"),
        "SERVER_PROTOCOL": f"HTTP/{scope['http_version']}",
        "SERVER_NAME": (scope.get("server") or ("localhost", 80))[0],
        "SERVER_PORT": str((scope.get("server") or ("localhost", 80))[1] or 80),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scope.get("scheme", "http"),
        "wsgi.input": BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    if scope.get("client"):
        environ["REMOTE_ADDR"] = scope["client"][0]
    for raw_name, raw_value in scope["headers"]:
        if b"_" in raw_name:
            continue  # X_Forwarded_For must not pass for X-Forwarded-For (gunicorn and runserver drop it too)
        name = raw_name.decode("latin1").upper().replace("-", "_")
        if name not in ("CONTENT_LENGTH", "CONTENT_TYPE"):
            name = f"HTTP_{name}"
        value = raw_value.decode("latin1")
        environ[name] = f"{environ[name]},{value}" if name in environ else value  # <= WEB_MAX_HEADERS of them
    # The body as read, chunked or not: Django reads CONTENT_LENGTH bytes.
    environ["CONTENT_LENGTH"] = str(len(body))
    return environ


# Inside a running event loop Django keeps its database connections per context
# (asgiref's Local), and every request task has a context of its own: each
# request would open a connection and leave it behind. Every request runs in
# this one context instead (never two at once: a request never yields to the
# loop), so the worker's connection is reused, as under a sync worker.
django_context = contextvars.Context()


def _call(wsgi_app, environ: dict, start_response) -> bytes:
    result = wsgi_app(environ, start_response)
    try:
        return b"".join(result)
    finally:
        if hasattr(result, "close"):
            result.close()  # Django's request_finished: its connection is kept or closed here


def _run(wsgi_app, scope: dict, body: bytes):
    """One run of the request through Django: ((status, headers, body), what its
    view asked to wait for, if anything)."""
    started = {}

    def start_response(status: str, headers: list, exc_info=None):
        started["status"] = int(status.split(" ", 1)[0])
        started["headers"] = [(k.lower().encode("latin1"), v.encode("latin1")) for k, v in headers]

    environ = _environ(scope, body)
    out = django_context.run(_call, wsgi_app, environ, start_response)
    ask = wait_asked(environ) if started["status"] == 200 else None
    return (started["status"], started["headers"], out), ask


BUSY = {"error": "unavailable", "detail": "Too many request bodies in flight on this server; retry shortly."}


def _too_large(limit: int) -> dict:
    return {"error": "payload_too_large", "detail": f"Request body is larger than {limit} bytes."}


async def _send_json(send, status: int, payload: dict, retry_after: int | None = None) -> None:
    body = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               (b"connection", b"close")]
    if retry_after is not None:
        headers.append((b"retry-after", str(retry_after).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def body_limit(path: str, largest: int | None, default: int | None) -> int | None:
    """Only an agent's outcome report may carry a result up to the largest body;
    every other request (a task submission, a summary, a heartbeat) fits in the
    default. Nobody has been authenticated yet when a body is buffered."""
    if REPORT.matches(path):
        return largest
    return default if default is not None and (largest is None or default < largest) else largest


class BufferBudget:
    """Bytes of request bodies a worker holds before their requests run: past
    the budget, a new body is refused with 503 (Retry-After) instead of growing
    the worker until the kernel kills it."""

    def __init__(self, limit: int | None):
        self.limit, self.held = limit, 0

    def fits(self, size: int) -> bool:
        return self.limit is None or self.held + size <= self.limit

    def take(self, size: int) -> bool:
        if self.limit is not None and self.held + size > self.limit:
            return False
        self.held += size
        return True

    def give_back(self, size: int) -> None:
        self.held -= size


def wsgi_after_body(wsgi_app, limit: int | None, default_limit: int | None = None,
                    budget: int | None = None, hub: WaitHub | None = None, turns: FairTurns | None = None):
    """An ASGI application that runs `wsgi_app` once the whole body is in. A
    body over its path's limit (body_limit: DATA_UPLOAD_MAX_MEMORY_SIZE for an
    agent's report, WEB_BODY_LIMIT otherwise) is refused with 413 JSON, by its
    Content-Length before a byte of it is read, or as soon as a chunked body
    passes it; bodies held past the worker's budget (WEB_BUFFER_BUDGET) get 503.
    A client that goes away (or is dropped by the server's read timeouts,
    project/gunicorn_conf.py) before its body is complete ends its request:
    nothing runs. A view that asks to wait (project/waiting.py) has its answer
    held on `hub` and its request run again when woken (no hub: sent at once).
    With `turns`, ready requests run round robin by caller (project/turns.py)."""
    held = BufferBudget(budget)

    async def app(scope, receive, send):
        if scope["type"] != "http":  # lifespan is off; no websockets here
            return
        arrived = asyncio.get_running_loop().time()  # a wait counts from here
        path_limit = body_limit(scope["path"], limit, default_limit)
        length = dict(scope["headers"]).get(b"content-length", b"")
        if path_limit is not None and length.isdigit() and int(length) > path_limit:
            return await _send_json(send, 413, _too_large(path_limit))
        if length.isdigit() and not held.fits(int(length)):
            return await _send_json(send, 503, BUSY, retry_after=2)  # before a byte of it is read
        chunks, size = [], 0
        try:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                chunk = message.get("body", b"")
                if path_limit is not None and size + len(chunk) > path_limit:
                    return await _send_json(send, 413, _too_large(path_limit))
                if not held.take(len(chunk)):
                    return await _send_json(send, 503, BUSY, retry_after=2)
                size += len(chunk)
                chunks.append(chunk)
                if not message.get("more_body", False):
                    break
            request_body = b"".join(chunks)
            if turns is None or HEARTBEAT.matches(scope["path"]):
                answer, ask = _run(wsgi_app, scope, request_body)
            else:
                async with turns.turn(flow_of(scope)):
                    answer, ask = _run(wsgi_app, scope, request_body)
        finally:
            held.give_back(size)
        if ask is not None:
            # No await between the view's read and the waiter's registration
            # (inside held_answer): see project/waiting.py.
            answer = await held_answer(hub, first=answer, ask=ask, deadline=arrived + ask.seconds,
                                       size=len(request_body), rerun=lambda: _run(wsgi_app, scope, request_body),
                                       receive=receive)
            if answer is None:
                return  # the client went away
        status, headers, body = answer
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


def _wait_hub() -> WaitHub | None:
    """The worker's waiters (a region's task long-polls; the router holds none):
    settings.WAIT_EVENTS names the role's module that announces finished tasks
    and checks them in the database."""
    events_module = settings.WAIT_EVENTS.get(settings.ROLE)
    if not events_module:
        return None
    from django.db import close_old_connections

    events = import_module(events_module)

    def check(task_ids: list[str]) -> set[str]:
        # Outside any request: the connection is handled as a request would
        # (reused, or closed past DB_CONN_MAX_AGE or after an error).
        def run() -> set[str]:
            close_old_connections()
            try:
                return events.task_finished_among(task_ids)
            finally:
                close_old_connections()
        return django_context.run(run)

    return WaitHub(redis_url=settings.REDIS_URL, channel=events.channel(), check=check,
                   max_waiters=settings.WAIT_MAX_WAITERS, max_ids=settings.WAIT_MAX_IDS,
                   max_bytes=settings.WAIT_MAX_BYTES, recheck_seconds=settings.WAIT_RECHECK_SECONDS)


wait_hub = _wait_hub()
application = wsgi_after_body(lean_for_agents(django_application), settings.DATA_UPLOAD_MAX_MEMORY_SIZE,
                              default_limit=settings.WEB_BODY_LIMIT, budget=settings.WEB_BUFFER_BUDGET,
                              hub=wait_hub, turns=FairTurns())


def _freeze_loaded_objects() -> None:
    """Everything loaded by now (Django, the apps, their URLs) lives as long as
    the worker: moved out of the garbage collector's sight (gc.freeze), so a
    full collection walks only what requests and held waiters allocate. A
    full collection pauses the whole worker; over the ~120,000 objects of a
    loaded worker it took 40-140 ms here, and 2,000 waiters arriving (their
    objects promoted to the oldest generation) set off several: heartbeats
    waited through each (bench/waiters.py)."""
    from django.urls import Resolver404, get_resolver

    try:
        get_resolver().resolve("/healthz")  # the URL patterns load on the first request otherwise
    except Resolver404:
        pass
    gc.collect()
    gc.freeze()


_freeze_loaded_objects()
