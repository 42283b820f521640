import pytest
from rest_framework.test import APIClient

from regions.services.tasks import dispatch
from tests import factories


@pytest.fixture
def api(redis_clean):
    """A caller's API client (its user as .user), with the real Redis emptied."""
    user, key = factories.caller()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    client.user = user
    return client


@pytest.fixture
def sent(monkeypatch):
    """The broker messages the task services send, kept here instead."""
    messages = []
    monkeypatch.setattr(dispatch.app, "send_task", lambda *a, **kw: messages.append(kw))
    return messages


class Receiver:
    """A real HTTP receiver of completion callbacks on 127.0.0.1 (a threaded
    http.server): it records every request and answers with what `answers`
    holds next (status, headers), the last one repeated."""

    def __init__(self, answers=((200, {}),), delay: float = 0.0):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.requests: list[dict] = []
        self.answers = list(answers)
        self.delay = delay
        self.in_flight = self.most_in_flight = 0
        lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                import time

                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with lock:
                    receiver.in_flight += 1
                    receiver.most_in_flight = max(receiver.most_in_flight, receiver.in_flight)
                    receiver.requests.append({"path": self.path, "headers": dict(self.headers), "body": body,
                                              "at": time.monotonic()})
                    status, headers = receiver.answers.pop(0) if len(receiver.answers) > 1 else receiver.answers[0]
                if receiver.delay:
                    time.sleep(receiver.delay)  # the receiver is slow, not the test: widens a race
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")
                with lock:
                    receiver.in_flight -= 1

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    """receiver(answers=..., delay=...) starts one; all are stopped at the end."""
    started = []

    def start(*args, **kwargs) -> Receiver:
        started.append(Receiver(*args, **kwargs))
        return started[-1]

    yield start
    for r in started:
        r.stop()
