"""Agent identity in a region: one id grammar (dots included) from the validator
to every URL and queue; a revoked or replaced token refused by every web process
within the stated bound; an online agent's id not taken over by a registration
token alone."""
from __future__ import annotations

import re
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from django.urls import NoReverseMatch, resolve, reverse
from rest_framework.test import APIClient

from agents import state
from project.validation import AGENT_ID_RE, AgentIdentitySerializer
from regions.models import Agent
from regions.services.agents.registry import agent_set_desired
from regions.services.heartbeat_buffer import REVOCATION_BOUND_SECONDS
from tests import harness
from tests.accounting import record
from tests.harness import wait_for

AGENT_URLS = ("agent-heartbeat", "agent-detail", "agent-claim", "agent-report", "agent-deregister", "agent-drain",
              "agent-cordon", "agent-uncordon", "agent-revoke")
IDS = ["host.example.com", "a", "A1", "w-1_x.y", "9lives", "a" * 100, "a..b", "a.", "x-", "ag-3f2a91",
       # refused everywhere:
       ".hidden", "-a", "_a", "a" * 101, "a b", "a/b", "a\n", "ä", "", "a%2Fb", "a:b"]


# --- one grammar ----------------------------------------------------------------------

@pytest.mark.parametrize("agent_id", IDS)
def test_every_agent_url_takes_exactly_the_ids_the_validator_accepts(agent_id):
    valid = AgentIdentitySerializer(data={"agent_id": agent_id, "capabilities": ["echo"]}).is_valid()
    assert valid == bool(re.search(AGENT_ID_RE, agent_id))
    for name in AGENT_URLS:
        try:
            url = reverse(name, kwargs={"agent_id": agent_id})
        except NoReverseMatch:
            assert not valid, f"{name} refuses the valid id {agent_id!r}"
            continue
        assert valid, f"{name} takes the invalid id {agent_id!r}"
        assert resolve(url).kwargs == {"agent_id": agent_id}


def test_an_agent_id_with_a_trailing_newline_is_refused():
    data = AgentIdentitySerializer(data={"agent_id": "host.example.com\n", "capabilities": ["echo"]})
    assert not data.is_valid() and "agent_id" in data.errors


@pytest.fixture
def registration(settings):
    settings.AGENT_REGISTRATION_TOKEN = "reg-secret"
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Bearer reg-secret")

    def register(agent_id: str, current_token: str | None = None):
        extra = {"HTTP_X_AGENT_TOKEN": current_token} if current_token else {}
        return client.post("/api/v1/agents/register", {"agent_id": agent_id, "capabilities": ["echo"]},
                           format="json", **extra)

    return register


def agent_call(action: str, agent_id: str, token: str, body: dict | None = None):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client.post(f"/api/v1/agents/{agent_id}/{action}", body or {}, format="json")


@pytest.mark.django_db
def test_a_dotted_agent_id_registers_beats_and_deregisters_over_the_api(redis_clean, registration):
    r = registration("host.example.com")
    assert r.status_code == 201, r.content
    token = r.json()["token"]
    assert "meridian.agent.host.example.com" in r.json()["queues"]
    assert agent_call("heartbeat", "host.example.com", token, {"busy": 0}).status_code == 200
    assert agent_call("deregister", "host.example.com", token).status_code == 200
    assert Agent.objects.get(agent_id="host.example.com").status == Agent.Status.STOPPED


# --- taking over an id -----------------------------------------------------------------

@pytest.mark.django_db
def test_re_registering_an_online_agent_without_its_token_is_refused_with_409(redis_clean, registration):
    first = registration("host.example.com").json()
    for proof in (None, "mat_not-its-token"):
        r = registration("host.example.com", current_token=proof)
        assert r.status_code == 409, r.content
        assert r.json()["error"] == "agent_id_in_use"
        assert "X-Agent-Token" in r.json()["detail"] and "online" in r.json()["detail"]
    # The agent holding the id is untouched: its token still works.
    assert agent_call("heartbeat", "host.example.com", first["token"]).status_code == 200


@pytest.mark.django_db
def test_an_online_agent_re_registering_with_its_current_token_gets_a_new_one(redis_clean, registration):
    first = registration("host.example.com").json()
    r = registration("host.example.com", current_token=first["token"])
    assert r.status_code == 201, r.content
    assert agent_call("heartbeat", "host.example.com", r.json()["token"]).status_code == 200
    assert agent_call("heartbeat", "host.example.com", first["token"]).status_code == 401


@pytest.mark.django_db
@pytest.mark.parametrize("status", [Agent.Status.OFFLINE, Agent.Status.STOPPED])
def test_an_offline_or_stopped_agent_id_may_be_taken_over(redis_clean, registration, status):
    first = registration("host.example.com").json()
    Agent.objects.filter(agent_id="host.example.com").update(status=status)
    r = registration("host.example.com")
    assert r.status_code == 201, r.content
    assert agent_call("heartbeat", "host.example.com", first["token"]).status_code == 401


@pytest.mark.django_db
def test_a_revoked_agent_is_still_refused_with_403_not_409(redis_clean, registration):
    first = registration("a1").json()
    agent_set_desired(agent_id="a1", desired="stopped")
    assert registration("a1", current_token=first["token"]).status_code == 403


def test_an_agent_sends_its_saved_credential_only_to_the_region_it_came_from(tmp_path, settings):
    settings.AGENT_STATE_DIR = str(tmp_path)
    assert state.credential_load("host.example.com", region_url="http://eu:8000") is None
    state.credential_save("host.example.com", region_url="http://eu:8000/", token="mat_x")
    assert state.credential_load("host.example.com", region_url="http://eu:8000") == "mat_x"
    assert state.credential_load("host.example.com", region_url="http://us:8000") is None
    (tmp_path / "host.example.com" / "credential.json").write_text("{not json")
    assert state.credential_load("host.example.com", region_url="http://eu:8000") is None


# --- end to end: a real worker with a dotted id ---------------------------------------------

@pytest.mark.integration
def test_a_dotted_agent_id_registers_beats_runs_a_task_and_deregisters(region, agents):
    agent = agents("echo", agent_id="host.example.com")
    seen = region.agent_info("host.example.com")["last_seen"]
    wait_for(lambda: region.agent_info("host.example.com")["last_seen"] != seen, 15, what="a heartbeat")
    # Sent to the agent's own queue (meridian.agent.host.example.com on RabbitMQ), not a capability queue.
    task = region.submit("echo", {"n": 1}, target_agent="host.example.com")
    done = region.wait_task(task["id"])
    assert done["agent"] == "host.example.com" and done["result"]["echo"] == {"n": 1}
    assert "meridian.agent.host.example.com" in region.vhost.queue_depths()
    agent.stop()
    assert agent.popen.returncode == 0, agent.tail()
    assert region.agent_info("host.example.com")["status"] == "stopped"
    assert "refused heartbeat" not in agent.log.read_text()


def register_over_http(region, agent_id: str, current_token: str | None = None) -> requests.Response:
    headers = {"Authorization": f"Bearer {harness.REGISTRATION_TOKEN}"}
    if current_token:
        headers["X-Agent-Token"] = current_token
    return requests.post(f"{region.url}/api/v1/agents/register", timeout=10, headers=headers,
                         json={"agent_id": agent_id, "capabilities": ["echo"]})


TAKEN = "is registered to an agent that is online"


def restart(agents, proc, **kwargs):
    """Start the agent again under its id; its log continues the same file."""
    offset = proc.log.stat().st_size
    again = agents("echo", agent_id=proc.agent_id, wait=False, **kwargs)

    def since() -> str:
        with open(again.log, errors="replace") as fh:
            fh.seek(offset)
            return fh.read()

    again.since = since
    return again


def joined(again, timeout: float) -> None:
    try:
        wait_for(lambda: "ready." in again.since() or not again.alive(), timeout, what="the agent to join")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{again.since()[-3000:]}") from None


@pytest.mark.integration
def test_nobody_takes_over_a_live_agent_and_one_restarted_after_kill_9_rejoins_at_once(region, agents):
    agent = agents("echo", agent_id="k9.example.com")
    r = register_over_http(region, "k9.example.com")
    assert r.status_code == 409 and r.json()["error"] == "agent_id_in_use", r.text
    with region.orchestrator_frozen():  # no reaper: the old entry stays online throughout
        agent.signal(signal.SIGKILL)
        agent.popen.wait(10)
        started = time.monotonic()
        again = restart(agents, agent)  # proves itself with the credential it saved
        joined(again, 40)
        rejoined = time.monotonic() - started
        assert again.alive() and TAKEN not in again.since(), again.tail()
        assert region.agent_info("k9.example.com")["status"] == "online"
    done = region.wait_task(region.submit("echo", {"n": 2}, target_agent="k9.example.com")["id"])
    assert done["agent"] == "k9.example.com"
    record(f"IDENTITY agent restarted after kill -9, old entry still online: rejoined in {rejoined:.1f}s")


@pytest.mark.integration
def test_an_agent_that_lost_its_credential_waits_for_its_old_entry_to_go_offline(region, agents):
    agent = agents("echo", agent_id="lost.example.com")
    with region.orchestrator_frozen():  # no reaper until the new process has been refused
        agent.signal(signal.SIGKILL)
        agent.popen.wait(10)
        (region.dir / "agents" / "lost.example.com" / "credential.json").unlink()
        again = restart(agents, agent)
        try:
            wait_for(lambda: TAKEN in again.since(), 40, what="a 409 for the id still online")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{again.since()[-3000:]}") from None
        assert again.alive(), again.tail()
    joined(again, 60)  # the reaper marks the old entry offline; the id is free
    assert again.alive(), again.tail()
    done = region.wait_task(region.submit("echo", {"n": 3}, target_agent="lost.example.com")["id"])
    assert done["agent"] == "lost.example.com"


# --- revocation and rotation on every web process, within the bound -----------------------

BOUND = REVOCATION_BOUND_SECONDS
SPREAD = 8  # concurrent requests, each on a connection of its own: they spread over the workers


@pytest.fixture(scope="module")
def wide_region(region_template):
    """A region web with 4 worker processes and heartbeat batching on, as deployed."""
    r = harness.Region(region_template, broker="redis", HEARTBEAT_FLUSH_SECONDS="0.2")
    try:
        r.start_web(workers=4)
        r.api_key = r.manage("create_api_key", "operator", "--staff")
        yield r
    finally:
        r.stop()


def beat(region, agent_id: str, token: str) -> int:
    """One heartbeat on a new connection (so a different worker may take it)."""
    return requests.post(f"{region.url}/api/v1/agents/{agent_id}/heartbeat", json={"busy": 0}, timeout=10,
                         headers={"Authorization": f"Bearer {token}", "Connection": "close"}).status_code


def beats(region, agent_id: str, token: str, n: int = 48) -> list[int]:
    with ThreadPoolExecutor(SPREAD) as pool:
        return list(pool.map(lambda _: beat(region, agent_id, token), range(n)))


def probe(region, agent_id: str, token: str, start: float, seconds: float) -> list[tuple[float, int]]:
    """Heartbeats from SPREAD clients at once for `seconds`: (time since start, status)."""
    deadline = time.monotonic() + seconds

    def client(_):
        out = []
        while time.monotonic() < deadline:
            code = beat(region, agent_id, token)
            out.append((time.monotonic() - start, code))
        return out

    with ThreadPoolExecutor(SPREAD) as pool:
        return sorted(x for xs in pool.map(client, range(SPREAD)) for x in xs)


def register(region, agent_id: str, current_token: str | None = None) -> str:
    r = register_over_http(region, agent_id, current_token)
    assert r.status_code == 201, r.text
    return r.json()["token"]


def revoke(region, agent_id: str) -> None:
    r = region.call("POST", f"/api/v1/agents/{agent_id}/revoke")
    assert r.status_code == 200, r.text


@pytest.mark.integration
def test_workers_that_preloaded_tokens_and_served_no_heartbeat_refuse_revoked_and_replaced_ones(wide_region):
    """Every worker loads the digests on its first registration, and none has
    served a heartbeat (so none has started its flush thread)."""
    region = wide_region
    revoked, rotated = register(region, "gone.example.com"), register(region, "moved.example.com")
    with ThreadPoolExecutor(SPREAD) as pool:
        list(pool.map(lambda i: register(region, f"other-{i}.example.com"), range(16)))
    revoke(region, "gone.example.com")
    new = register(region, "moved.example.com", current_token=rotated)
    changed = time.monotonic()
    time.sleep(BOUND)  # the scenario: nothing reaches any worker until the bound has passed
    waited = time.monotonic() - changed
    old_revoked = beats(region, "gone.example.com", revoked)
    old_rotated = beats(region, "moved.example.com", rotated)
    record(f"IDENTITY {waited:.2f}s after the change, -w 4, idle workers: revoked token accepted "
           f"{old_revoked.count(200)}/{len(old_revoked)}, replaced token accepted "
           f"{old_rotated.count(200)}/{len(old_rotated)}")
    assert set(old_revoked) == {401} and set(old_rotated) == {401}, (old_revoked, old_rotated)
    assert set(beats(region, "moved.example.com", new)) == {200}


@pytest.mark.integration
@pytest.mark.parametrize("change", ["revoke", "re-register"])
def test_every_worker_refuses_an_old_token_within_the_bound_and_takes_the_new_one_at_once(wide_region, change):
    region = wide_region
    agent_id = f"{change}.example.com"
    token = register(region, agent_id)
    assert set(beats(region, agent_id, token)) == {200}  # every worker has it cached
    if change == "revoke":
        revoke(region, agent_id)
        new = None
    else:
        new = register(region, agent_id, current_token=token)
    changed = time.monotonic()
    if new is not None:
        assert set(beats(region, agent_id, new)) == {200}  # at once, on every worker
    seen = probe(region, agent_id, token, changed, BOUND + 1.0)
    accepted = [t for t, code in seen if code == 200]
    last = max(accepted, default=0.0)
    record(f"IDENTITY old token after {change}, -w 4: {len(accepted)} of {len(seen)} heartbeats accepted, "
           f"the last {last:.3f}s after the change (bound {BOUND:g}s)")
    assert {code for _, code in seen} <= {200, 401}
    assert last <= BOUND, seen
    assert [code for t, code in seen if t > BOUND] and all(code == 401 for t, code in seen if t > BOUND)
