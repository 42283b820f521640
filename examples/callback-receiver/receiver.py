"""A receiver of Meridian completion callbacks, with nothing but the standard
library and meridian-client.

    MERIDIAN_CALLBACK_SECRET=whsec_... python receiver.py 8787

Submit with "callback_url": "http://127.0.0.1:8787/meridian" (the region's
callbacks.allowed_hosts must allow the host). Each finished task is printed
once; a forged, altered or replayed request is refused with 400.
"""
from __future__ import annotations

import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

from meridian_client import CallbackVerificationError, verify_callback

MAX_BODY = 1024 * 1024  # a task's representation; a larger body is not Meridian's


def make_server(secret: str, port: int = 0, on_task: Callable[[dict], None] = print,
                host: str = "127.0.0.1") -> ThreadingHTTPServer:
    """A server that verifies each callback and hands its task to on_task once
    (a delivery retried after a lost answer is acknowledged, not handed again)."""
    seen: set[tuple[str, int]] = set()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's name)
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                return self._answer(413, "too large")
            body = self.rfile.read(length)  # the raw bytes: verify before parsing
            try:
                task = verify_callback(body, self.headers.get("Meridian-Signature"), secret)
            except CallbackVerificationError as exc:
                return self._answer(400, str(exc))
            key = (task["id"], task.get("attempt", 0))
            with lock:
                fresh = key not in seen
                seen.add(key)
            if fresh:
                on_task(task)
            # Answer fast (2xx within the region's timeout); do slow work elsewhere.
            return self._answer(204, "")

        def _answer(self, status: int, text: str) -> None:
            data = text.encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args) -> None:
            pass

    return ThreadingHTTPServer((host, port), Handler)


def main() -> None:
    secret = os.environ.get("MERIDIAN_CALLBACK_SECRET", "")
    if not secret:
        sys.exit("set MERIDIAN_CALLBACK_SECRET (POST /api/v1/callbacks/secret shows it once)")
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8787
    server = make_server(secret, port, on_task=lambda task: print(json.dumps(
        {k: task.get(k) for k in ("id", "capability", "status", "result", "error")}), flush=True))
    print(f"listening on http://127.0.0.1:{server.server_address[1]}/", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
