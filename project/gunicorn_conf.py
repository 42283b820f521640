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
open-file limit) until its timeout, each idle kept-alive one until `keepalive`
(docs/architecture.md, "Serving": the open-file limit the web needs).
Command-line options (-b, -w) override the values below.
"""
from __future__ import annotations

import json
import logging
import os

from django.conf import settings
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn_worker import UvicornWorker

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")  # read lazily, at `keepalive` below

wsgi_app = "project.asgi:application"
worker_class = "project.gunicorn_conf.MeridianWorker"
bind = os.environ.get("WEB_BIND", "0.0.0.0:8000")
workers = int(os.environ.get("WEB_WORKERS", "4"))
# A worker whose event loop has not checked in for this long is restarted.
timeout = 30
graceful_timeout = int(os.environ.get("WEB_GRACEFUL_TIMEOUT", "10"))
# Idle keep-alive connections are closed after this long: longer than any
# heartbeat interval the region hands out (settings.WEB_KEEPALIVE_SECONDS), so an
# agent's connection is not closed just as its next beat goes out.
keepalive = settings.WEB_KEEPALIVE_SECONDS
# gunicorn's control socket has one default path per user: every server on a
# host would share it. Nothing here uses it.
control_socket_disable = True

HEADER_TIMEOUT = float(os.environ.get("WEB_HEADER_TIMEOUT", "10"))
BODY_TIMEOUT = float(os.environ.get("WEB_BODY_TIMEOUT", "15"))
# A request line and headers larger than this, or more header fields, are
# refused with 431 before they are kept (nginx's large_client_header_buffers is
# 4 x 8 KiB; a header nobody bounds is memory and CPU anyone can take).
HEADERS_MAX_BYTES = int(os.environ.get("WEB_MAX_HEADER_BYTES", str(64 * 1024)))
HEADERS_MAX_COUNT = int(os.environ.get("WEB_MAX_HEADERS", "100"))

logger = logging.getLogger("uvicorn.error")


class HeadersRefused(Exception):
    pass


class ReadTimeoutProtocol(HttpToolsProtocol):
    """uvicorn's HTTP/1.1 protocol with read deadlines: the request line and
    headers must arrive within HEADER_TIMEOUT of the connection opening (or of
    the next request's first byte on a keep-alive connection), and the body may
    not pause for longer than BODY_TIMEOUT. Closing the transport ends the
    request: project/asgi.py sees a disconnect and never runs Django for it."""

    _read_deadline = None
    _reading = False  # between a request's first byte and its last
    _in_head = True  # reading a request line and headers
    _head_bytes = 0
    _head_refusal: str | None = None

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._read_within(HEADER_TIMEOUT)

    def data_received(self, data: bytes) -> None:
        if self._head_refusal is not None:
            return  # refused: the connection is closing
        if self._in_head:
            # Counted before httptools buffers a header it has not finished: a
            # 76 MB header value would otherwise sit in memory before on_header.
            # The parser gets no more than the allowance while the head lasts; a
            # read that also holds the body goes on once the head is complete.
            allowance = HEADERS_MAX_BYTES - self._head_bytes
            if len(data) > allowance:
                head, data = data[:allowance], data[allowance:]
                self._head_bytes += len(head)
                super().data_received(head)
                if self._head_refusal is not None:
                    return
                if self._in_head:
                    return self._refuse_head(f"request line and headers over {HEADERS_MAX_BYTES} bytes")
            else:
                self._head_bytes += len(data)
        super().data_received(data)

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(self.headers) >= HEADERS_MAX_COUNT:
            self._head_refusal = f"more than {HEADERS_MAX_COUNT} header fields"
            raise HeadersRefused(self._head_refusal)  # httptools stops; send_400_response answers 431
        super().on_header(name, value)

    def send_400_response(self, msg: str) -> None:
        if self._head_refusal is None:
            return super().send_400_response(msg)
        self._refuse_head(self._head_refusal)

    def _refuse_head(self, reason: str) -> None:
        self._head_refusal = reason
        body = json.dumps({"error": "request_header_fields_too_large", "detail": f"Refused: {reason}."}).encode()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
                                 b"content-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n" + body)
            self.transport.close()

    def connection_lost(self, exc) -> None:
        self._read_done()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._reading = True
        self._read_within(HEADER_TIMEOUT)

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()
        self._read_within(BODY_TIMEOUT)

    def on_body(self, body: bytes) -> None:
        super().on_body(body)
        self._read_within(BODY_TIMEOUT)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._reading = False
        self._in_head, self._head_bytes = True, 0  # the next request on this connection starts afresh
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
