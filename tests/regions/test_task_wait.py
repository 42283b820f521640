"""Waiting without polling, on real servers: gunicorn with the project's uvicorn
workers (project/asgi.py holds the long-polls, project/waiting.py wakes them),
the region's own redis-server, real agents running the built-in `sleep`."""
from __future__ import annotations

import http.client
import json
import signal
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import pytest

from tests import harness

pytestmark = pytest.mark.integration


def when(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


POOL = ThreadPoolExecutor(64)


class Held:
    """A long-poll on a connection of its own: its request is in the kernel's
    hands when the constructor returns, its answer is read in a thread. On a
    one-worker web, a request on a connection opened later (read_all) answered
    means this one was read and, if it waits, is held: the worker accepts and
    reads new connections in the order they arrive, and the view runs, and
    the waiter is registered, before any other request's turn. (Not so for a
    keep-alive connection opened before: its next request can be read before
    a newer connection is accepted.)"""

    def __init__(self, region: harness.Region, method: str, path: str, body: dict | None = None):
        self.conn = http.client.HTTPConnection("127.0.0.1", region.port, timeout=120)
        self.conn.request(method, path, body=json.dumps(body) if body is not None else None,
                          headers={"Authorization": f"Bearer {region.api_key}", "Content-Type": "application/json"})
        self.sent = time.time()
        self.future = POOL.submit(self._read)

    def _read(self):
        try:
            response = self.conn.getresponse()
            raw = response.read()
        finally:
            self.conn.close()
        return response.status, json.loads(raw), time.time()

    def drop(self) -> None:
        """The client goes away before its answer."""
        self.conn.sock.shutdown(socket.SHUT_RDWR)

    def answer(self, timeout: float = 120) -> tuple[int, dict, float, float]:
        """(status, body, wall-clock time it arrived, seconds it took)."""
        status, body, answered = self.future.result(timeout=timeout)
        return status, body, answered, answered - self.sent


def read_all(region: harness.Region) -> None:
    """Every Held made before is read, and held if it waits (see Held)."""
    conn = http.client.HTTPConnection("127.0.0.1", region.port, timeout=10)
    try:
        conn.request("GET", "/healthz")
        assert conn.getresponse().status == 200
    finally:
        conn.close()


@pytest.fixture(scope="module")
def wait_region(region_template):
    """Rechecks only every 60 s: a waiter answered sooner was woken by Redis."""
    r = harness.Region(region_template, WAIT_RECHECK_SECONDS="60").start()
    yield r
    r.stop()


@pytest.fixture
def sleeper(wait_region):
    proc = wait_region.agent("sleep", concurrency=2)
    yield proc
    proc.stop()


def test_a_waiter_is_answered_as_soon_as_its_task_completes(wait_region, sleeper):
    task = wait_region.submit("sleep", {"seconds": 2})
    status, body, answered, took = Held(wait_region, "GET", f"/api/v1/tasks/{task['id']}?wait=60").answer()
    assert status == 200, body
    assert body["status"] == "succeeded" and body["result"]["slept"] == 2, body
    finished = when(body["finished_at"])
    assert answered >= finished  # after the completion...
    assert answered - finished < 5, (answered - finished, wait_region.logs())  # ...at once, not at a recheck (60 s)
    assert took < 30  # well before the wait expired


def test_a_wait_that_times_out_answers_with_the_current_state(wait_region):
    task = wait_region.submit("nobody_serves_this")
    status, body, _, took = Held(wait_region, "GET", f"/api/v1/tasks/{task['id']}?wait=2.5").answer()
    assert status == 200 and body["status"] == "waiting", body
    assert 2.5 <= took < 15
    assert body["region_id"] == wait_region.region_id


def test_waiting_on_many_answers_when_the_first_of_them_finishes(wait_region, sleeper):
    never = wait_region.submit("nobody_serves_this")
    quick = wait_region.submit("sleep", {"seconds": 1.5})
    status, body, answered, took = Held(wait_region, "POST", "/api/v1/tasks/wait",
                                        {"ids": [never["id"], quick["id"]], "wait": 60}).answer()
    assert status == 200, body
    assert [t["id"] for t in body["done"]] == [quick["id"]] and body["done"][0]["status"] == "succeeded"
    assert body["pending"] == [never["id"]] and body["missing"] == []
    assert answered >= when(body["done"][0]["finished_at"]) and took < 30


def test_waiting_on_many_answers_at_once_for_an_id_that_is_not_there(wait_region):
    never = wait_region.submit("nobody_serves_this")
    other = "00000000-0000-4000-8000-000000000000"
    status, body, _, took = Held(wait_region, "POST", "/api/v1/tasks/wait",
                                 {"ids": [never["id"], other], "wait": 60}).answer()
    assert status == 200 and body == {"done": [], "pending": [never["id"]], "missing": [other]}
    assert took < 10


@pytest.mark.parametrize("wait", ["61", "soon", "-3"])
def test_a_bad_wait_is_400_naming_wait_on_the_real_server(wait_region, wait):
    task = wait_region.submit("nobody_serves_this")
    r = wait_region.call("GET", f"/api/v1/tasks/{task['id']}", params={"wait": wait})
    assert r.status_code == 400 and list(r.json()["fields"]) == ["wait"], r.text
    r = wait_region.call("POST", "/api/v1/tasks/wait", json={"ids": [task["id"]], "wait": wait})
    assert r.status_code == 400 and list(r.json()["fields"]) == ["wait"], r.text


# --- one worker, many waiters; Redis lost -------------------------------------------------

def one_worker(template, **env) -> harness.Region:
    r = harness.Region(template, **env)
    try:
        r.start_web(workers=1)
        r.start_orchestrator()
        r.api_key = r.manage("create_api_key", "operator", "--staff")
    except BaseException:
        r.stop()
        raise
    return r


@pytest.fixture
def one_worker_region(region_template):
    r = one_worker(region_template)
    yield r
    r.stop()


def test_fifty_waiters_leave_a_single_worker_free_for_health_checks_and_heartbeats(one_worker_region):
    region = one_worker_region
    reg = region.call("POST", "/api/v1/agents/register", key=harness.REGISTRATION_TOKEN,
                      json={"agent_id": "hb-1", "capabilities": ["echo"]})
    assert reg.status_code == 201, reg.text
    tasks = [region.submit("nobody_serves_this")["id"] for _ in range(50)]
    held = [Held(region, "GET", f"/api/v1/tasks/{task_id}?wait=60") for task_id in tasks]
    for _ in range(5):
        started = time.monotonic()
        assert region.session.get(f"{region.url}/healthz", timeout=10).status_code == 200
        beat = region.call("POST", "/api/v1/agents/hb-1/heartbeat", key=reg.json()["token"], json={"busy": 0})
        assert beat.status_code == 200, beat.text
        assert time.monotonic() - started < 2.0  # two requests; behind a held worker they would take 60 s
    assert not any(h.future.done() for h in held), "waiters answered before their tasks finished"
    # Their tasks end: every waiter is answered at once with the final state.
    for task_id in tasks:
        assert region.call("POST", f"/api/v1/tasks/{task_id}/cancel").status_code == 200
    cancelled = time.time()
    answers = [h.answer() for h in held]
    assert all(status == 200 and body["status"] == "cancelled" for status, body, _, _ in answers)
    assert max(answered for _, _, answered, _ in answers) - cancelled < 20


def test_with_its_redis_stopped_a_waiter_is_still_answered_by_the_recheck_never_an_error(one_worker_region):
    region = one_worker_region
    ending = region.submit("nobody_serves_this")["id"]
    staying = region.submit("nobody_serves_this")["id"]
    first = Held(region, "GET", f"/api/v1/tasks/{ending}?wait=40")
    second = Held(region, "POST", "/api/v1/tasks/wait", {"ids": [staying], "wait": 8})
    read_all(region)
    region.redis.stop()
    cancel = region.call("POST", f"/api/v1/tasks/{ending}/cancel")
    assert cancel.status_code == 200, cancel.text  # nothing published: Redis is down
    cancelled_at = time.time()
    status, body, answered, _ = first.answer()
    assert status == 200 and body["status"] == "cancelled", body
    assert answered - cancelled_at < 15  # the recheck (every 2 s), not the 40 s deadline
    status, body, _, took = second.answer()
    assert status == 200 and body == {"done": [], "pending": [staying], "missing": []}, body
    assert 8 <= took < 20
    # Redis back: waiting goes on as before.
    region.redis.start()
    third = Held(region, "GET", f"/api/v1/tasks/{staying}?wait=40")
    read_all(region)
    assert region.call("POST", f"/api/v1/tasks/{staying}/cancel").status_code == 200
    status, body, _, took = third.answer()
    assert status == 200 and body["status"] == "cancelled" and took < 20


def test_a_full_worker_answers_a_new_wait_at_once_and_a_client_that_leaves_frees_its_place(region_template):
    region = one_worker(region_template, WAIT_MAX_WAITERS="1")
    try:
        first, second = (region.submit("nobody_serves_this")["id"] for _ in range(2))
        holding = Held(region, "GET", f"/api/v1/tasks/{first}?wait=60")
        status, body, _, took = Held(region, "GET", f"/api/v1/tasks/{second}?wait=60").answer()
        assert status == 200 and body["status"] == "waiting" and took < 10  # the worker holds its one waiter
        assert not holding.future.done()
        holding.drop()

        def held_again() -> bool:  # the place is free once the server has dropped the waiter that left
            return Held(region, "GET", f"/api/v1/tasks/{second}?wait=1.5").answer()[3] >= 1.5

        harness.wait_for(held_again, 30, interval=0.2, what="a new waiter held after the first client left")
    finally:
        region.stop()


def test_a_graceful_stop_answers_every_waiter_at_once_with_its_current_state(one_worker_region):
    region = one_worker_region
    task = region.submit("nobody_serves_this")["id"]
    held = [Held(region, "GET", f"/api/v1/tasks/{task}?wait=60") for _ in range(3)]
    read_all(region)
    stopping = time.monotonic()
    region.web.signal(signal.SIGTERM, group=False)  # what a deploy or systemd sends gunicorn
    for waiter in held:
        status, body, _, _ = waiter.answer(timeout=30)
        assert status == 200 and body["status"] == "waiting", body
    assert time.monotonic() - stopping < 4  # not the 60 s wait, nor the 5 s graceful timeout
    region.web.popen.wait(15)
