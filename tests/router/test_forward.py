"""A forward cannot hold a router web worker past its budget, and never lands a
task in a second region when the first may already have it."""
import socket
import threading
import time

import pytest

from router.services import forwarding
from router.services.regions import region_create
from tests.router.test_api import caller, push, summary  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.router_urls")]

MARGIN = 1.5  # seconds: Django's test client, the database, a loaded CI host


@pytest.fixture
def budget(settings):
    settings.ROUTER_FORWARD_CONNECT_TIMEOUT = 0.5
    settings.ROUTER_FORWARD_BUDGET_SECONDS = 2.0
    return settings.ROUTER_FORWARD_BUDGET_SECONDS


@pytest.fixture
def servers():
    """Local TCP endpoints that misbehave; each counts the connections it accepted."""
    made = []

    class Server:
        def __init__(self, kind: str):
            self.sock = socket.socket()
            self.sock.bind(("127.0.0.1", 0))
            self.port = self.sock.getsockname()[1]
            self.accepted = 0
            self.held = []
            if kind == "blackhole":
                # No accept and a full queue: further SYNs are dropped, as by a
                # region whose packets vanish. Connects time out.
                self.sock.listen(0)
                for _ in range(3):
                    filler = socket.socket()
                    filler.setblocking(False)
                    filler.connect_ex(("127.0.0.1", self.port))
                    self.held.append(filler)
            else:
                self.sock.listen(16)
                threading.Thread(target=self._serve, args=(kind,), daemon=True).start()
            made.append(self)

        def _serve(self, kind):
            while True:
                try:
                    conn, _ = self.sock.accept()
                except OSError:
                    return
                self.accepted += 1
                if kind == "silent":  # reads the request, never answers
                    self.held.append(conn)
                elif kind == "drop":  # reads the request, then closes without a word
                    conn.settimeout(2)
                    try:
                        conn.recv(65536)
                    except OSError:
                        pass
                    conn.close()

        @property
        def url(self):
            return f"http://127.0.0.1:{self.port}"

    yield Server
    for server in made:
        for s in [server.sock, *server.held]:
            s.close()


def region_at(region_id: str, url: str, idle: int) -> None:
    _, token = region_create(region_id=region_id, orchestrator_url=url)
    r = push(token, summary(region_id, url=url, caps={"echo": {"count": 5, "idle": idle}}))
    assert r.status_code == 200, r.content


def forward(caller, **extra):
    started = time.monotonic()
    r = caller.post("/api/v1/tasks", {"capability": "echo", "payload": {}, "idempotency_key": "k1", **extra},
                    format="json")
    return r, time.monotonic() - started


def test_a_forward_to_regions_that_drop_packets_answers_503_within_the_budget(caller, budget, servers):
    for i in range(5):  # five candidates: 5 connect timeouts would be 2.5 s here, 50 s before
        region_at(f"r{i}", servers("blackhole").url, idle=5 - i)
    r, took = forward(caller)
    assert took < budget + MARGIN, took
    assert r.status_code == 503, r.content
    assert r["Retry-After"] == "2"
    body = r.json()
    assert body["error"] == "unavailable" and "ROUTER_FORWARD_BUDGET_SECONDS" in body["detail"]
    assert "sent nowhere" in body["detail"] and body["errors"]["r0"] == "unreachable: ConnectTimeout"


def test_a_region_that_accepts_and_never_answers_is_an_uncertain_forward_within_the_budget(caller, budget,
                                                                                         servers):
    silent, spare = servers("silent"), servers("silent")
    region_at("r-silent", silent.url, idle=5)
    region_at("r-spare", spare.url, idle=1)
    r, took = forward(caller)
    assert took < budget + MARGIN, took
    assert r.status_code == 504, r.content
    body = r.json()
    assert body["region_id"] == "r-silent" and body["regional_orchestrator_url"] == silent.url
    assert spare.accepted == 0  # another region could run it a second time


def test_an_uncertain_forward_tells_the_caller_to_retry_in_that_region_only(caller, budget, servers):
    dropped, spare = servers("drop"), servers("silent")
    region_at("r-drop", dropped.url, idle=5)
    region_at("r-spare", spare.url, idle=1)
    r, _ = forward(caller)
    # The connection closed after the request went out: the region may have it.
    assert r.status_code == 504, r.content
    body = r.json()
    assert spare.accepted == 0
    assert (body["region_id"], body["regional_orchestrator_url"]) == ("r-drop", dropped.url)
    assert body["retry_with"] == {"region": "r-drop"}
    assert "retry the same" not in body["detail"] and "per region" in body["detail"]
    assert f"{dropped.url}/api/v1/tasks" in body["detail"] and '"region": "r-drop"' in body["detail"]


def test_a_pinned_forward_goes_to_that_region_only(caller, monkeypatch):
    region_at("busy", "http://busy.example:8000", idle=0)
    region_at("idle", "http://idle.example:8000", idle=5)
    sent = []

    class Created:
        status_code = 201

        def json(self):
            return {"id": "t1"}

    monkeypatch.setattr(forwarding.requests, "post", lambda url, **k: sent.append(url) or Created())
    r, _ = forward(caller, region="busy")
    assert r.status_code == 201 and r.json()["region_id"] == "busy", r.content
    assert sent == ["http://busy.example:8000/api/v1/tasks"]


def test_a_forward_pinned_to_a_region_that_cannot_take_it_is_503_and_sent_nowhere(caller, monkeypatch):
    region_at("idle", "http://idle.example:8000", idle=5)
    _, stale = region_create(region_id="gone", orchestrator_url="http://gone.example:8000")
    monkeypatch.setattr(forwarding.requests, "post", lambda *a, **k: pytest.fail("forwarded"))
    for pin, why in [("gone", "stale"), ("nowhere", "no such region")]:
        r, _ = forward(caller, region=pin)
        assert r.status_code == 503, r.content
        assert f"in region {pin}" in r.json()["detail"] and why in r.json()["detail"]


@pytest.mark.parametrize("pin", ["", "a" * 65, "eu west", "eu\x00", ["eu"], 7])
def test_a_region_pin_is_bounded_like_the_other_fields(caller, pin):
    region_at("idle", "http://idle.example:8000", idle=5)
    r, _ = forward(caller, region=pin)
    assert r.status_code == 400 and list(r.json()["fields"]) == ["region"], r.content
