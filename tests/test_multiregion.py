"""Several regions and the Global Task Router on one machine, all real processes:
each region has its own PostgreSQL database, redis-server, beat and agents; the
router has its own database."""
import http.server
import json
import os
import signal
import sys
import threading
import time

import psycopg2
import pytest
import requests

from tests import harness
from tests.accounting import figures
from tests.harness import REGISTRATION_TOKEN, holds_for, wait_for

pytestmark = pytest.mark.integration
SECRET = "eu-only-s3cr3t-4b1d"


@pytest.fixture(scope="module")
def fleet(region_template, router_template):
    router = harness.Router(router_template).start()
    us = harness.Region(region_template, region_id="us-east-1")
    eu = harness.Region(region_template, region_id="eu-west-3")
    router.add_region(us, labels="us")
    router.add_region(eu, labels="eu,gdpr")
    eu.env["INGEST_API_TOKEN"] = SECRET  # a secret only eu-west-3 holds
    for region in (us, eu):
        region.start(api_key=router.api_key)
    # Agents find their region through the router, like the article's agents.
    us.agents = [us.agent("echo,file_processing", agent_id="us-agent-1")]
    eu.agents = [_router_agent(eu, router, "data_ingestion,echo", "eu-agent-1")]
    wait_for(lambda: all(r["capabilities"] for r in router.regions().values()), 20, what="first summaries")
    yield router, us, eu
    for proc in (*us.agents, *eu.agents):
        proc.stop()
    for r in (us, eu, router):
        r.stop()


def _router_agent(region, router, caps, agent_id):
    proc = region._spawn(f"agent-{agent_id}", [
        sys.executable, "manage.py", "run_agent", "--capabilities", caps, "--agent-id", agent_id,
        "--router-url", router.url, "--region", region.region_id,
    ])
    proc.agent_id = agent_id
    wait_for(lambda: "ready." in proc.log.read_text(errors="replace"), 40, what=f"{agent_id} ready")
    return proc


def test_article_registration_snippet_works_against_the_router(fleet):
    router, us, eu = fleet
    # The article's register_agent(), unchanged but for the URL and the auth header.
    import os

    GLOBAL_REGISTRATION_ENDPOINT = f"{router.url}/register_agent"

    def register_agent(agent_id, capabilities):
        try:
            response = requests.post(
                GLOBAL_REGISTRATION_ENDPOINT,
                json={"agent_id": agent_id, "capabilities": capabilities},
                headers={"Authorization": f"Bearer {REGISTRATION_TOKEN}"},
            )
            response.raise_for_status()
            registration_data = response.json()
            if "regional_orchestrator_url" in registration_data:
                os.environ["REGIONAL_ORCHESTRATOR_URL"] = registration_data["regional_orchestrator_url"]
                return True
            return False
        except requests.exceptions.RequestException:
            return False

    assert register_agent("agent-xyz-123", ["data_ingestion", "file_processing"]) is True
    assert os.environ.pop("REGIONAL_ORCHESTRATOR_URL") in (us.url, eu.url)


def test_article_summary_sender_works_against_the_router(fleet, router_template):
    router, us, eu = fleet
    region = harness.Region.__new__(harness.Region)  # just a name and URL for a third region
    region.region_id, region.env = "ap-southeast-1", {}
    region.url = "https://orchestrator-ap-southeast-1.mycompany.com"
    token = router.add_region(region, labels="apac", interval=60)
    # The article's send_status_to_gtr(), unchanged but for the URL and the auth header.
    GTR_ENDPOINT = f"{router.url}/update_regional_status"
    REGION_ID = "ap-southeast-1"
    REGIONAL_ORCHESTRATOR_URL = "https://orchestrator-ap-southeast-1.mycompany.com"

    def get_regional_agent_summary():
        return {
            "region_id": REGION_ID,
            "orchestrator_url": REGIONAL_ORCHESTRATOR_URL,
            "available_agents": 500,
            "agent_capabilities_summary": {
                "data_ingestion": {"count": 300, "idle": 200},
                "file_processing": {"count": 200, "idle": 150},
            },
            "last_updated": time.time(),
        }

    def send_status_to_gtr():
        summary = get_regional_agent_summary()
        response = requests.post(GTR_ENDPOINT, json=summary, headers={"Authorization": f"Bearer {token}"})
        response.raise_for_status()
        return response

    assert send_status_to_gtr().status_code == 200
    stored = router.regions()["ap-southeast-1"]
    assert stored["available_agents"] == 500 and stored["stale"] is False
    # It answers route queries until it goes stale (3 x 60 s), then it is skipped.
    r = router.call("GET", "/api/v1/route?capability=data_ingestion&residency=apac")
    assert r.json()["regions"][0]["region_id"] == "ap-southeast-1"
    router.manage("shell", "-c", "from router.models import Region; "
                  "Region.objects.filter(region_id='ap-southeast-1').update(enabled=False)")
    # A disabled region leaves every web process's directory at its next check (0.5 s).
    time.sleep(1.0)
    for _ in range(4):  # both gunicorn workers answer without it
        assert all(x["region_id"] != "ap-southeast-1" for x in router.call(
            "GET", "/api/v1/route?capability=data_ingestion&count=5").json()["regions"])


def test_discovery_route_submit_completes_in_the_right_region(fleet):
    router, us, eu = fleet
    info = eu.agent_info("eu-agent-1")
    assert info["status"] == "online"  # registered through the router, heartbeating in eu
    r = router.call("GET", "/api/v1/route?capability=data_ingestion")
    assert r.status_code == 200 and r.json()["regions"][0]["region_id"] == "eu-west-3"
    (eu.dir / "data" / "sensor.jsonl").write_text('{"id": 1, "t": 20.5}\n{"id": 2, "t": "hot"}\n')
    marker = "payload-marker-7f3a"
    sub = router.call("POST", "/api/v1/tasks", json={
        "capability": "data_ingestion", "residency": "eu",
        "payload": {"source": "sensor.jsonl", "schema": {"id": "int", "t": "float"}, "note": marker}})
    assert sub.status_code == 201, sub.text
    body = sub.json()
    assert body["region_id"] == "eu-west-3" and body["task"]["url"].startswith(eu.url)
    done = eu.wait_task(body["task"]["id"])
    assert done["result"]["records_valid"] == 1 and done["agent"] == "eu-agent-1"
    # Task data stays in its region: nothing of it in the router's database.
    assert marker not in _dump_database(router.db)
    assert marker in _dump_database(eu.db)
    assert marker not in _dump_database(us.db)


def _dump_database(name: str) -> str:
    conn = psycopg2.connect(dbname=name, **harness.PG)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            tables = [t for (t,) in cur.fetchall()]
            out = []
            for table in tables:
                cur.execute(f'SELECT * FROM "{table}"')
                out.append(repr(cur.fetchall()))
            return "\n".join(out)
    finally:
        conn.close()


def test_router_database_has_no_task_tables(fleet):
    router, _, _ = fleet
    tables = router.db_query("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    assert not [t for (t,) in tables if t.startswith("regions_")]


def test_residency_is_a_hard_constraint(fleet):
    router, _, _ = fleet
    r = router.call("GET", "/api/v1/route?capability=file_processing&residency=eu")
    assert r.status_code == 503 and "eu-west-3" in r.json()["detail"]
    r = router.call("GET", "/api/v1/route?capability=echo&residency=gdpr")
    assert [x["region_id"] for x in r.json()["regions"]] == ["eu-west-3"]


def test_router_input_errors(fleet):
    router, _, _ = fleet
    assert router.call("POST", "/api/v1/tasks", json={"capability": "Nope!"}).status_code == 400
    assert router.call("POST", "/api/v1/tasks", key=None, json={"capability": "echo"}).status_code == 401
    r = router.call("POST", "/api/v1/tasks", json={"capability": "no_such_cap"})
    assert r.status_code == 503 and "no agent serves" in r.json()["detail"]
    bad = router.call("POST", "/api/v1/tasks", json={"capability": "echo", "payload": {"x": "y" * 300_000}})
    assert bad.status_code == 413  # the region's answer passes through


def test_a_forward_carries_the_routers_assertion_never_the_callers_key(fleet):
    """A region behind the real router that records what reaches it: the
    router's one-request assertion, never the caller's API key."""
    router, _, _ = fleet
    seen = []

    class Capture(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            seen.append((str(self.headers), body))
            answer = json.dumps({"id": "captured"}).encode()
            self.send_response(201)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Capture)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        token = router.manage("router_add_region", "capture", url, "--summary-interval", "60")
        r = requests.post(f"{router.url}/update_regional_status", headers={"Authorization": f"Bearer {token}"},
                          timeout=10, json={"region_id": "capture", "orchestrator_url": url,
                                            "available_agents": 1, "last_updated": time.time(),
                                            "agent_capabilities_summary": {"capture_only": {"count": 1, "idle": 1}}})
        assert r.status_code == 200, r.text
        for key in (router.api_key, router.user_key):  # a staff key and a caller's
            sub = router.call("POST", "/api/v1/tasks", key=key, json={"capability": "capture_only"})
            assert sub.status_code == 201 and sub.json()["region_id"] == "capture", sub.text
        assert len(seen) == 2
        for headers, body in seen:
            assert "Bearer mra_" in headers
            for key in (router.api_key, router.user_key):
                assert key not in headers and key.encode() not in body
    finally:
        server.shutdown()
        router.manage("shell", "-c", "from router.models import Region; "
                                     "Region.objects.filter(region_id='capture').update(enabled=False)")


def test_a_forwarded_task_is_the_callers_own_at_the_region(fleet):
    """The router's caller is the region's user of the same name: its own key
    there reads the task the router forwarded (no shared key), and an assertion
    caught on the way cannot be used again."""
    router, us, eu = fleet
    sub = router.call("POST", "/api/v1/tasks", key=router.user_key,
                      json={"capability": "echo", "region": "us-east-1", "payload": {"mine": 1}})
    assert sub.status_code == 201, sub.text
    task_id = sub.json()["task"]["id"]
    assert router.user_key != us.user_key
    assert us.call("GET", f"/api/v1/tasks/{task_id}", key=us.user_key).status_code == 200
    assert us.wait_task(task_id)["result"]["echo"] == {"mine": 1}
    # Forwarding did not make the router's key a credential at the region.
    assert us.call("GET", f"/api/v1/tasks/{task_id}", key=router.user_key).status_code == 401


def test_a_registration_token_made_only_at_the_router_lets_an_agent_join_and_work(fleet):
    """No region knows this token: the router's registration grant admits the
    agent in the region it chose, for that agent id only."""
    router, us, _ = fleet
    token = router.manage("router_add_registration_token", "--name", "router-only")
    assert token != REGISTRATION_TOKEN
    assert requests.post(f"{us.url}/api/v1/agents/register", timeout=10, headers={
        "Authorization": f"Bearer {token}"}, json={"agent_id": "x", "capabilities": ["echo"]}).status_code == 401
    agent = us._spawn("agent-router-only", [
        sys.executable, "manage.py", "run_agent", "--capabilities", "echo", "--agent-id", "router-only-1",
        "--router-url", router.url, "--region", "us-east-1", "--registration-token", token,
    ])
    try:
        wait_for(lambda: "ready." in agent.log.read_text(errors="replace") or not agent.alive(), 40,
                 what="router-only-1 ready")
        assert agent.alive(), agent.tail()
        task = us.submit("echo", {"via": "grant"}, target_agent="router-only-1")
        done = us.wait_task(task["id"])
        assert done["agent"] == "router-only-1" and done["result"]["echo"] == {"via": "grant"}
    finally:
        agent.stop()


def test_stale_region_is_skipped_and_traffic_moves_then_comes_back(fleet):
    router, us, eu = fleet
    assert {x["region_id"] for x in router.call("GET", "/api/v1/route?capability=echo&count=5")
            .json()["regions"]} == {"us-east-1", "eu-west-3"}
    eu.orchestrator.signal(signal.SIGKILL)  # eu's beat stops: no more summaries
    eu.orchestrator.popen.wait(10)
    wait_for(lambda: router.regions()["eu-west-3"]["stale"], 10, what="eu stale")
    r = router.call("GET", "/api/v1/route?capability=echo&count=5").json()
    assert [x["region_id"] for x in r["regions"]] == ["us-east-1"] and "stale" in r["skipped"]["eu-west-3"]
    sub = router.call("POST", "/api/v1/tasks", json={"capability": "echo", "payload": {"moved": True}})
    assert sub.json()["region_id"] == "us-east-1"
    assert us.wait_task(sub.json()["task"]["id"])["result"]["echo"] == {"moved": True}
    eu.start_orchestrator()
    wait_for(lambda: not router.regions()["eu-west-3"]["stale"], 20, what="eu fresh again")


# 15 TTLs of the agents here (FAST timing): long enough to show heartbeats never need the router.
ROUTER_OUTAGE_SECONDS = float(os.environ.get("MERIDIAN_ROUTER_OUTAGE_SECONDS", "30"))


def test_region_keeps_working_while_the_router_is_down_and_summaries_resume(fleet):
    router, us, eu = fleet
    before = router.regions()["us-east-1"]["received_at"]
    router.web.stop()
    down_at = time.monotonic()
    submitted = succeeded = 0
    try:
        while time.monotonic() - down_at < ROUTER_OUTAGE_SECONDS:  # the outage's length is the scenario
            task = us.submit("echo", {"router": "down", "n": submitted})
            submitted += 1
            assert us.wait_task(task["id"])["result"]["echo"]["router"] == "down"
            succeeded += 1
            # Heartbeats keep the agent online through many TTLs.
            holds_for(lambda: us.agent_info("us-agent-1")["status"] == "online", 2, what="agent online")
        assert "router unreachable" in us.orchestrator.log.read_text()
    finally:
        router.start_web()
    restored = time.monotonic()
    wait_for(lambda: router.regions()["us-east-1"]["received_at"] > before, 15, what="summaries resume")
    figures(scenario=f"router down {ROUTER_OUTAGE_SECONDS:g}s", submitted=submitted, succeeded=succeeded,
            completed_twice=0, stale=0, recovery=time.monotonic() - restored)


def test_one_regions_redis_down_does_not_touch_another(fleet):
    router, us, eu = fleet
    us.redis.stop()
    try:
        task = eu.submit("echo", {"isolated": True})
        assert eu.wait_task(task["id"])["result"]["echo"] == {"isolated": True}
        holds_for(lambda: eu.agent_info("eu-agent-1")["status"] == "online", 2.5, what="eu agent online")
        assert eu.call("GET", "/api/v1/region/status").json()["liveness"]["ok"] is True
        assert us.call("GET", "/api/v1/region/status").json()["liveness"]["ok"] is False
    finally:
        us.redis.start()
    wait_for(lambda: us.call("GET", "/api/v1/region/status").json()["liveness"]["ok"], 10, what="us Redis back")


def _served_commits(region, calls: int) -> set[str]:
    """The configuration commits the region's web processes answer with (each call
    lands on one of its gunicorn workers)."""
    import re

    found = set()
    for _ in range(calls):
        r = region.call("GET", "/metrics")
        assert r.status_code == 200, r.text
        found.update(re.findall(r'meridian_config_info\{[^}]*sha="([^"]+)"', r.text))
    return found


def test_config_drift_is_visible_at_the_router_and_secrets_never_leave_the_region(fleet, tmp_path):
    router, us, eu = fleet
    commit = harness.config_repo(tmp_path / "config")
    base = {"schema_version": 1, "secrets": {"ingest_api_token": {"ref": "env:INGEST_API_TOKEN",
                                                                  "hosts": ["127.0.0.1"]}},
            "tasks": {"data_ingestion": {"timeout": 60}}}
    first = commit(base)
    second = commit({**base, "tasks": {"data_ingestion": {"timeout": 120}}})
    repo = str(tmp_path / "config")
    assert "applied" in us.manage("sync_config", "--repo", repo, "--ref", first)
    assert "applied" in eu.manage("sync_config", "--repo", repo, "--ref", second)
    # In force in every process of the region as soon as sync_config returns: no
    # web process may still serve the previous configuration (no waiting here).
    assert _served_commits(us, 6) == {first} and _served_commits(eu, 6) == {second}

    def drift():
        return router.call("GET", "/api/v1/config/drift").json()

    wait_for(lambda: set(drift()["commits"]) == {first, second}, 15, what="both commits reported")
    report = drift()
    assert report["in_sync"] is False
    assert [r["region_id"] for r in report["commits"][first]["regions"]] == ["us-east-1"]
    assert [r["region_id"] for r in report["commits"][second]["regions"]] == ["eu-west-3"]
    assert router.regions()["eu-west-3"]["config_since"]

    # A task in eu uses the secret (Bearer to an HTTP source); its value stays in eu's processes.
    import http.server
    import threading

    seen = []

    class Source(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append(self.headers.get("Authorization"))
            ok = self.headers.get("Authorization") == f"Bearer {SECRET}"
            self.send_response(200 if ok else 401)
            self.end_headers()
            self.wfile.write(b'{"id": 1}\n{"id": 2}\n' if ok else b"no")

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Source)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        sub = router.call("POST", "/api/v1/tasks", json={
            "capability": "data_ingestion", "residency": "eu",
            "payload": {"source": f"http://127.0.0.1:{server.server_port}/rows.jsonl",
                        "auth_secret": "ingest_api_token", "schema": {"id": "int"}}})
        assert sub.status_code == 201, sub.text
        done = eu.wait_task(sub.json()["task"]["id"])
        assert done["result"]["records_valid"] == 2 and done["timeout"] == 120
    finally:
        server.shutdown()
    assert seen == [f"Bearer {SECRET}"]
    eu.manage("sync_config", "--repo", repo, "--ref", first)
    assert _served_commits(eu, 6) == {first}
    wait_for(lambda: drift()["in_sync"], 15, what="regions back in sync")
    for name in (router.db, eu.db, us.db):
        assert SECRET not in _dump_database(name), name
    for proc in (*router.procs, *eu.procs, *us.procs):
        assert SECRET not in proc.log.read_text(errors="replace"), proc.name


def test_a_callback_url_forwarded_by_the_router_reaches_the_receiver_signed(fleet, receiver, tmp_path):
    """The router passes the body on: the region the task runs in delivers its
    callback, signed with the caller's secret there (made at the region itself,
    never through the router)."""
    from meridian_client import verify_callback

    router, us, _ = fleet
    commit = harness.config_repo(tmp_path / "config")
    sha = commit({"schema_version": 1, "callbacks": {"allowed_hosts": ["127.0.0.1"]}})
    assert "applied" in us.manage("sync_config", "--repo", str(tmp_path / "config"), "--ref", sha)
    assert router.call("POST", "/api/v1/callbacks/secret", key=router.user_key).status_code == 404
    secret = us.call("POST", "/api/v1/callbacks/secret", key=us.user_key).json()["secret"]
    hook = receiver()
    sub = router.call("POST", "/api/v1/tasks", key=router.user_key,
                      json={"capability": "echo", "region": "us-east-1", "payload": {"hook": 1},
                            "callback_url": hook.url})
    assert sub.status_code == 201, sub.text
    wait_for(lambda: hook.requests, 30, what="the callback at the receiver")
    task = verify_callback(hook.requests[0]["body"], hook.requests[0]["headers"]["Meridian-Signature"], secret)
    assert task["id"] == sub.json()["task"]["id"] and task["region_id"] == "us-east-1"
    assert task["result"]["echo"] == {"hook": 1}
