"""The task path's agent check (claims and reports): no database read for a token
this process verified, and the same revocation bound as heartbeats."""
import pytest
import redis

from regions.services import agent_auth
from regions.services import liveness
from regions.services.agents import heartbeat, registry
from regions.services.agents.registry import AuthError, ForbiddenError, NotFound, agent_set_desired
from regions.services.heartbeat_buffer import REVOCATION_BOUND_SECONDS, HeartbeatBuffer
from tests import factories
from tests.regions.test_services_heartbeat_buffer import Clock, elsewhere, reregister

pytestmark = pytest.mark.django_db


@pytest.fixture
def buffer(redis_clean, monkeypatch):
    buf = HeartbeatBuffer(flush_seconds=0.05, autostart=False)
    for module in (agent_auth, heartbeat, registry):
        monkeypatch.setattr(module, "get_buffer", lambda: buf)
    monkeypatch.setattr(agent_auth, "_verified", {})
    return buf


def caller(reg):
    return agent_auth.agent_caller(agent_id=reg.agent.agent_id, raw_token=reg.token)


def test_a_verified_token_costs_no_query_after_the_first_call(buffer, django_assert_num_queries):
    reg = factories.agent("a1", capabilities=("echo", "sleep"))
    assert caller(reg).capabilities == ["echo", "sleep"]
    with django_assert_num_queries(0):
        for _ in range(5):
            assert caller(reg) == agent_auth.AgentCaller(agent_id="a1", capabilities=["echo", "sleep"])


def test_wrong_foreign_or_missing_tokens_are_refused_even_when_cached(buffer):
    a, b = factories.agent("a1"), factories.agent("a2")
    caller(a)
    caller(b)
    with pytest.raises(ForbiddenError):
        agent_auth.agent_caller(agent_id="a1", raw_token=b.token)
    with pytest.raises(AuthError):
        agent_auth.agent_caller(agent_id="a1", raw_token="mat_forged")
    with pytest.raises(AuthError):
        agent_auth.agent_caller(agent_id="a1", raw_token=None)
    with pytest.raises(NotFound):
        agent_auth.agent_caller(agent_id="nobody", raw_token=a.token.replace("a", "b"))


def test_a_revoked_agent_is_refused_within_the_bound_even_if_revoked_elsewhere(buffer, monkeypatch):
    reg = factories.agent("a1")
    clock = Clock().install(monkeypatch)
    caller(reg)
    elsewhere(monkeypatch)
    agent_set_desired(agent_id="a1", desired="stopped")
    clock.advance(REVOCATION_BOUND_SECONDS + 0.01)
    with pytest.raises(AuthError):
        caller(reg)


def test_a_replaced_token_is_refused_and_the_new_one_brings_its_capabilities(buffer, monkeypatch):
    old = factories.agent("a1", capabilities=("sleep",))
    clock = Clock().install(monkeypatch)
    assert caller(old).capabilities == ["sleep"]
    elsewhere(monkeypatch)
    new = reregister(old)  # registers with ["echo"]
    assert caller(new).capabilities == ["echo"]  # at once
    clock.advance(REVOCATION_BOUND_SECONDS + 0.01)
    with pytest.raises(AuthError):
        caller(old)
    assert caller(new).capabilities == ["echo"]


def test_without_redis_every_call_is_checked_against_the_database(buffer, monkeypatch, django_assert_num_queries):
    reg = factories.agent("a1")
    caller(reg)
    dead = redis.Redis(port=1, socket_connect_timeout=0.2, decode_responses=True)
    monkeypatch.setattr(liveness, "client", lambda: dead)
    buffer.synced_at = float("-inf")  # the bound has passed: the cache needs a sync Redis cannot give
    with django_assert_num_queries(1):
        assert caller(reg).agent_id == "a1"  # a claim does not depend on the liveness store
    monkeypatch.undo()


def test_without_a_buffer_every_call_reads_the_database(redis_clean, monkeypatch, django_assert_num_queries):
    for module in (agent_auth, heartbeat, registry):
        monkeypatch.setattr(module, "get_buffer", lambda: None)
    reg = factories.agent("a1")
    caller(reg)
    with django_assert_num_queries(1):
        caller(reg)


def test_a_replaced_token_cannot_deregister_the_agent_that_replaced_it(buffer, monkeypatch):
    """Deregistration reads the database, not this process's cache: an old
    process finishing its warm shutdown after its replacement registered (through
    another web process) must not stop the new one."""
    from rest_framework.test import APIClient

    from regions.models import Agent

    old = factories.agent("a1")
    caller(old)  # this web process verified the old token
    monkeypatch.setattr(registry, "_forget_locally", lambda agent_id: None)  # re-registered elsewhere
    new = registry.agent_register(agent_id="a1", capabilities=["echo"], current_token=old.token)
    assert new.token != old.token
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {old.token}")
    refused = client.post("/api/v1/agents/a1/deregister")
    assert refused.status_code == 401 and refused["WWW-Authenticate"].startswith("Bearer")
    assert Agent.objects.get(agent_id="a1").status == Agent.Status.ONLINE
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {new.token}")
    assert client.post("/api/v1/agents/a1/deregister").status_code == 200
    assert Agent.objects.get(agent_id="a1").status == Agent.Status.STOPPED
