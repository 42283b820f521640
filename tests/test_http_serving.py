"""How the web is served (project/gunicorn_conf.py): clients that stall while
sending a request hold no worker, so health checks and heartbeats keep answering
and no agent is marked offline; stalled clients are dropped; an oversized body is
refused before it is read. Against a real region: gunicorn, worker, agent."""
import socket
import subprocess
import time
import uuid

import pytest
import requests

from tests import harness
from tests.harness import REGISTRATION_TOKEN, holds_for, wait_for

pytestmark = pytest.mark.integration
HEADER_TIMEOUT = 2
BODY_TIMEOUT = 3


@pytest.fixture(scope="module")
def served(region_template):
    region = harness.Region(region_template, WEB_HEADER_TIMEOUT=HEADER_TIMEOUT, WEB_BODY_TIMEOUT=BODY_TIMEOUT)
    region.start()
    agent = region.agent("echo")
    agent_id = f"probe-{uuid.uuid4().hex[:6]}"
    r = region.call("POST", "/api/v1/agents/register", key=REGISTRATION_TOKEN,
                    json={"agent_id": agent_id, "capabilities": ["echo"]})
    assert r.status_code == 201, r.text
    region.probe = (agent_id, r.json()["token"])
    yield region, agent
    agent.stop()
    region.stop()


def _stalled_upload(port: int) -> socket.socket:
    """Headers promising 100 bytes of body, one byte of it, then nothing."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"POST /api/v1/agents/x/heartbeat HTTP/1.1\r\nHost: 127.0.0.1\r\n"
              b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
    return s


def _closed_by_server(s: socket.socket) -> bool:
    s.setblocking(False)
    try:
        return s.recv(4096) == b""
    except BlockingIOError:
        return False
    except ConnectionError:
        return True


def _timed(call) -> float:
    start = time.monotonic()
    r = call()
    assert r.status_code == 200, r.text
    return time.monotonic() - start


def test_a_hundred_stalled_uploads_delay_neither_health_checks_nor_heartbeats(served):
    region, agent = served
    probe_id, probe_token = region.probe
    fresh = requests.Session()  # a new connection per check: the accept path is measured too
    checks = {
        "healthz": lambda: fresh.get(f"{region.url}/healthz", timeout=5, headers={"Connection": "close"}),
        "heartbeat": lambda: fresh.post(f"{region.url}/api/v1/agents/{probe_id}/heartbeat", json={"busy": 0},
                                        headers={"Authorization": f"Bearer {probe_token}"}, timeout=5),
    }
    slow = [_stalled_upload(region.port) for _ in range(100)]
    worst = dict.fromkeys(checks, 0.0)
    try:
        def all_answer_within_a_second() -> bool:
            for name, call in checks.items():
                worst[name] = max(worst[name], _timed(call))
            return max(worst.values()) < 1.0 and region.agent_info(agent.agent_id)["status"] == "online"

        # Longer than the agents' TTL (2 s here) and the stalled clients' own
        # body timeout: every reaper tick in between sees the agent alive.
        holds_for(all_answer_within_a_second, seconds=BODY_TIMEOUT + 1, what=f"fast answers (worst: {worst})")
        assert region.db_query("SELECT count(*) FROM regions_agent WHERE status = 'offline'") == [(0,)]
    finally:
        for s in slow:
            s.close()


def test_a_stalled_upload_is_dropped_after_the_body_timeout(served):
    region, _ = served
    slow = [_stalled_upload(region.port) for _ in range(5)]
    started = time.monotonic()
    wait_for(lambda: all(_closed_by_server(s) for s in slow), BODY_TIMEOUT + 5, what="stalled uploads dropped")
    assert time.monotonic() - started >= BODY_TIMEOUT - 0.5
    for s in slow:
        s.close()


def test_a_client_that_never_finishes_its_headers_is_dropped(served):
    region, _ = served
    silent = socket.create_connection(("127.0.0.1", region.port))
    partial = socket.create_connection(("127.0.0.1", region.port))
    partial.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
    wait_for(lambda: _closed_by_server(silent) and _closed_by_server(partial), HEADER_TIMEOUT + 5,
             what="connections without complete headers dropped")
    silent.close()
    partial.close()


def test_a_body_over_the_upload_limit_is_413_json_before_it_is_read(served):
    region, _ = served
    s = socket.create_connection(("127.0.0.1", region.port), timeout=5)
    # A gigabyte announced, none of it sent: the answer comes at once.
    s.sendall(b"POST /api/v1/tasks HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
              b"Content-Length: 1000000000\r\n\r\n")
    answer = b""
    while chunk := s.recv(4096):  # the server closes the connection after the answer
        answer += chunk
    answer = answer.decode()
    s.close()
    assert answer.startswith("HTTP/1.1 413 ") and '"error": "payload_too_large"' in answer


def test_a_chunked_body_over_the_upload_limit_is_413_json(served):
    region, _ = served

    def chunks():
        for _ in range(20):
            yield b"x" * (1024 * 1024)

    r = region.call("POST", "/api/v1/tasks", data=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["error"] == "payload_too_large"


def _raw_answer(port: int, request: bytes, timeout: float = 10) -> str:
    """What the server answers before it closes the connection ("" if nothing within `timeout`)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(request)
    except (BrokenPipeError, ConnectionResetError):
        pass  # refused while still sending: the answer is already waiting
    answer = b""
    try:
        while chunk := s.recv(65536):
            answer += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    s.close()
    return answer.decode(errors="replace")


@pytest.mark.parametrize("headers", [
    b"".join(b"X-A: aaaaaaaa\r\n" for _ in range(160_000)),  # 2.4 MB of repeated headers: once a worker timeout
    b"X-Big: " + b"y" * (3 * 1024 * 1024) + b"\r\n",  # one 3 MB value
    b"X-Big: " + b"y" * (100 * 1024) + b"\r\n",  # 100 KiB: over 64 KiB, once let through within one more read
    b"".join(b"X-H%d: v\r\n" % i for i in range(101)),  # more fields than allowed
])
def test_headers_over_the_bounds_are_431_json_and_the_worker_keeps_answering(served, headers):
    region, _ = served
    start = time.monotonic()
    answer = _raw_answer(region.port, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n" + headers + b"\r\n")
    assert answer.startswith("HTTP/1.1 431 ") and "request_header_fields_too_large" in answer, answer[:200]
    assert time.monotonic() - start < 5
    assert requests.get(f"{region.url}/healthz", timeout=2).status_code == 200


def test_only_an_agents_report_may_send_a_body_over_the_general_limit(served):
    region, _ = served
    big = b"{" + b" " * (2 * 1024 * 1024) + b"}"
    r = region.call("POST", "/api/v1/tasks", data=big, headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and "1048576" in r.json()["detail"]
    r = region.call("POST", "/api/v1/agents/nobody/report", key="not-a-token", data=big,
                    headers={"Content-Type": "application/json"})
    assert r.status_code in (401, 404), r.text  # read whole, then refused for who sent it


def test_bodies_held_past_the_workers_budget_get_503_with_retry_after(region_template):
    region = harness.Region(region_template, WEB_BUFFER_BUDGET=str(3 * 1024 * 1024), WEB_BODY_TIMEOUT="30")
    region.start_web(workers=1)
    held = []
    try:
        for _ in range(3):  # 3 x 900 KiB, each announced as 1 MB and left unfinished
            s = socket.create_connection(("127.0.0.1", region.port), timeout=10)
            s.sendall(b"POST /api/v1/tasks HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 1000000\r\n\r\n" + b" " * (900 * 1024))
            held.append(s)
        # Headers only: the refusal comes before a byte of the body is read.
        answer = wait_for(lambda: (a := _raw_answer(region.port, (
            b"POST /api/v1/tasks HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000000\r\n\r\n"), timeout=1)).startswith("HTTP/1.1 503 ") and a, 20,
            what="a 503 once the budget is held")
        assert "retry-after: 2" in answer.lower() and '"error": "unavailable"' in answer
        assert requests.get(f"{region.url}/healthz", timeout=2).status_code == 200
    finally:
        for s in held:
            s.close()
        region.stop()


def _web_database_connections(region) -> int:
    """Open connections to PostgreSQL held by the web's worker processes."""
    workers = subprocess.run(["pgrep", "-P", str(region.web.pid)], capture_output=True, text=True).stdout.split()
    sockets = subprocess.run(["ss", "-tnpH", "state", "established", "( dport = :5432 )"],
                             capture_output=True, text=True, check=True).stdout
    return sum(f"pid={pid}," in line for line in sockets.splitlines() for pid in workers)


def test_each_web_worker_keeps_one_database_connection_whatever_the_number_of_requests(served):
    """Django runs in the worker itself, not in a thread per request: its
    connection is reused (DB_CONN_MAX_AGE), not opened again and left behind."""
    region, _ = served
    for _ in range(3):
        for _ in range(50):
            assert requests.get(f"{region.url}/api/v1/agents", timeout=5,  # a new TCP connection each
                                headers={"Authorization": f"Bearer {region.api_key}"}).status_code == 200
        assert 1 <= _web_database_connections(region) <= 2  # -w 2


def test_the_served_app_answers_json_errors_html_admin_and_metrics(served):
    region, _ = served
    r = region.call("GET", "/api/v1/nope")
    assert r.status_code == 404 and r.json()["error"] == "not_found"
    r = region.call("GET", "/api/v1/agents/x/heartbeat")
    assert r.status_code == 405 and r.json()["error"] == "method_not_allowed" and r.headers["Allow"] == "POST"
    r = region.call("GET", "/admin/login/", key=None)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/html")
    r = region.call("GET", "/metrics")
    assert r.status_code == 200 and "meridian_agents{" in r.text
