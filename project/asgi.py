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
"""
import contextvars
import json
import os
import sys
from io import BytesIO

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
# Django refuses database calls from a thread that runs an event loop, lest a
# coroutine interleave with them on the same connection. None can here: a
# request runs inside one synchronous call that never yields to the loop, and
# nothing asynchronous in this process touches Django.
os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
django_application = get_wsgi_application()

from django.conf import settings  # noqa: E402  (configured by the line above)


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
        environ[name] = f"{environ[name]},{value}" if name in environ else value
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


async def _send_json(send, status: int, payload: dict) -> None:
    body = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


def wsgi_after_body(wsgi_app, limit: int | None):
    """An ASGI application that runs `wsgi_app` once the whole body is in. A
    body over `limit` (DATA_UPLOAD_MAX_MEMORY_SIZE) is refused with 413 JSON,
    by its Content-Length before a byte of it is read, or as soon as a chunked
    body passes it. A client that goes away (or is dropped by the server's read
    timeouts, project/gunicorn_conf.py) before its body is complete ends its
    request: nothing runs."""

    async def app(scope, receive, send):
        if scope["type"] != "http":  # lifespan is off; no websockets here
            return
        too_large = {"error": "payload_too_large", "detail": f"Request body is larger than {limit} bytes."}
        length = dict(scope["headers"]).get(b"content-length", b"")
        if limit is not None and length.isdigit() and int(length) > limit:
            return await _send_json(send, 413, too_large)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if limit is not None and size > limit:
                return await _send_json(send, 413, too_large)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        started = {}

        def start_response(status: str, headers: list, exc_info=None):
            started["status"] = int(status.split(" ", 1)[0])
            started["headers"] = [(k.lower().encode("latin1"), v.encode("latin1")) for k, v in headers]

        body = django_context.run(_call, wsgi_app, _environ(scope, b"".join(chunks)), start_response)
        await send({"type": "http.response.start", "status": started["status"], "headers": started["headers"]})
        await send({"type": "http.response.body", "body": body})

    return app


application = wsgi_after_body(django_application, settings.DATA_UPLOAD_MAX_MEMORY_SIZE)
