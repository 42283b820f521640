"""The application gunicorn serves (see project/gunicorn_conf.py).

Django's WSGI handler, behind asgiref's WSGI-to-ASGI adapter: a request's whole
body is read asynchronously, in the worker's event loop, and only then does the
request take one of the worker's THREADS. A client that stalls mid-request
holds a coroutine and a socket, never a thread, so it cannot starve heartbeats.

Why not Django's own ASGIHandler: with synchronous middleware and views (ours,
and Django's own) it crosses between the event loop and a thread a dozen times
per request, and gives every request a new thread, so no database connection is
ever reused (Django advises CONN_MAX_AGE=0 under ASGI). Measured on the
heartbeat path: about a third of the throughput of this adapter. Here each
request crosses once, the threads live as long as the worker, and
DB_CONN_MAX_AGE works as under any WSGI server.
"""
import json
import os
from concurrent.futures import ThreadPoolExecutor

from asgiref.sync import SyncToAsync
from asgiref.wsgi import WsgiToAsgi, WsgiToAsgiInstance
from django.core.wsgi import get_wsgi_application

from project.gunicorn_conf import THREADS

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
django_application = get_wsgi_application()

from django.conf import settings  # noqa: E402  (configured by the line above)


class _Instance(WsgiToAsgiInstance):
    # asgiref runs every request in one thread per process (thread_sensitive):
    # a slow view (a forward to a region) would hold up every heartbeat behind
    # it. A pool instead, as gunicorn's gthread worker has.
    run_wsgi_app = SyncToAsync(WsgiToAsgiInstance.__dict__["run_wsgi_app"].func, thread_sensitive=False,
                               executor=ThreadPoolExecutor(THREADS, thread_name_prefix="request"))


class ThreadedWsgiToAsgi(WsgiToAsgi):
    async def __call__(self, scope, receive, send):
        await _Instance(self.wsgi_application, self.duplicate_header_limit)(scope, receive, send)


class _RequestEnded(Exception):
    """The client went away, or was answered, before its body was complete."""


def _too_large_body(limit: int) -> bytes:
    return json.dumps({"error": "payload_too_large",
                       "detail": f"Request body is larger than {limit} bytes."}).encode()


async def _send_too_large(send, limit: int) -> None:
    body = _too_large_body(limit)
    await send({"type": "http.response.start", "status": 413, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


def guarded(app, limit: int | None):
    """A body over DATA_UPLOAD_MAX_MEMORY_SIZE is refused (413 JSON) by its
    Content-Length before a byte of it is read, or as soon as a chunked body
    passes the limit: the adapter would otherwise read it all first. A client
    that disconnects (or is dropped by the server's read timeouts) mid-body ends
    its request quietly."""

    async def app_guarded(scope, receive, send):
        if scope["type"] != "http":
            return await app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length", b"")
        if limit is not None and length.isdigit() and int(length) > limit:
            return await _send_too_large(send, limit)
        received = 0

        async def receive_guarded():
            nonlocal received
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _RequestEnded
            received += len(message.get("body", b""))
            if limit is not None and received > limit:
                await _send_too_large(send, limit)
                raise _RequestEnded
            return message

        try:
            await app(scope, receive_guarded, send)
        except _RequestEnded:
            pass

    return app_guarded


application = guarded(ThreadedWsgiToAsgi(django_application), settings.DATA_UPLOAD_MAX_MEMORY_SIZE)
