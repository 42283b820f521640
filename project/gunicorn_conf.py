"""How the web is served, for both roles and every deployment (Docker, systemd,
the demo, the tests, the benchmarks):

    gunicorn -c project/gunicorn_conf.py -b 0.0.0.0:8000 -w 4

gunicorn supervises the worker processes (restarts, graceful reloads, the
timeout on a hung worker); each worker is uvicorn, which reads a request's
whole body asynchronously before Django runs it (project/asgi.py). So a client
that sends its headers and then stalls holds a coroutine and a socket, not a
worker: a sync worker (or a gthread worker's thread) would sit in the body read
while heartbeats queue behind it and the reaper marks healthy agents offline.
A client is dropped when its headers take longer than WEB_HEADER_TIMEOUT
seconds or its body stops arriving for WEB_BODY_TIMEOUT seconds (nginx's
client_header_timeout and client_body_timeout, which uvicorn lacks).
Connections are not capped here: each stalled one costs a socket (the worker's
open-file limit) until its timeout. Command-line options (-b, -w) override the
values below.
"""
from __future__ import annotations

import logging
import os

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn_worker import UvicornWorker

wsgi_app = "project.asgi:application"
worker_class = "project.gunicorn_conf.MeridianWorker"
bind = os.environ.get("WEB_BIND", "0.0.0.0:8000")
workers = int(os.environ.get("WEB_WORKERS", "4"))
# A worker whose event loop has not checked in for this long is restarted.
timeout = 30
graceful_timeout = int(os.environ.get("WEB_GRACEFUL_TIMEOUT", "10"))
# Idle keep-alive connections are closed after this long (agents reconnect).
keepalive = 5
# gunicorn's control socket has one default path per user: every server on a
# host would share it. Nothing here uses it.
control_socket_disable = True

HEADER_TIMEOUT = float(os.environ.get("WEB_HEADER_TIMEOUT", "10"))
BODY_TIMEOUT = float(os.environ.get("WEB_BODY_TIMEOUT", "15"))

logger = logging.getLogger("uvicorn.error")


class ReadTimeoutProtocol(HttpToolsProtocol):
    """uvicorn's HTTP/1.1 protocol with read deadlines: the request line and
    headers must arrive within HEADER_TIMEOUT of the connection opening (or of
    the next request's first byte on a keep-alive connection), and the body may
    not pause for longer than BODY_TIMEOUT. Closing the transport ends the
    request: project/asgi.py sees a disconnect and never runs Django for it."""

    _read_deadline = None
    _reading = False  # between a request's first byte and its last

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._read_within(HEADER_TIMEOUT)

    def connection_lost(self, exc) -> None:
        self._read_done()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._reading = True
        self._read_within(HEADER_TIMEOUT)

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._read_within(BODY_TIMEOUT)

    def on_body(self, body: bytes) -> None:
        super().on_body(body)
        self._read_within(BODY_TIMEOUT)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._reading = False
        self._read_done()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._reading:  # a pipelined request, whose reading the server held, goes on
            self._read_within(BODY_TIMEOUT)

    def _read_within(self, seconds: float) -> None:
        self._read_done()
        if self.flow.read_paused:
            return  # the server is holding the read (a pipelined request waits), not the client
        self._read_deadline = self.loop.call_later(seconds, self._read_expired)

    def _read_done(self) -> None:
        if self._read_deadline is not None:
            self._read_deadline.cancel()
            self._read_deadline = None

    def _read_expired(self) -> None:
        self._read_deadline = None
        if self.transport is not None and not self.transport.is_closing():
            logger.info("closing %s: request not received in time", "%s:%d" % self.client if self.client else "?")
            self.transport.close()


class MeridianWorker(UvicornWorker):
    # Django speaks no lifespan protocol; uvloop and httptools are the fast paths.
    # No proxy headers: the client address is the peer's, and the router decides
    # itself whether it trusts X-Forwarded-For (ROUTER_TRUST_FORWARDED_FOR).
    CONFIG_KWARGS = {"loop": "uvloop", "http": ReadTimeoutProtocol, "lifespan": "off", "proxy_headers": False}
