"""Heartbeats, the reaper, the bulk flush and the eviction hold, on the real
Redis and PostgreSQL (no worker processes needed)."""
import pytest
from django.test import override_settings
from django.utils import timezone

from regions.models import Agent, Task
from regions.services import agents as agent_services
from regions.services import liveness
from tests import factories

pytestmark = pytest.mark.django_db


def beat(reg, busy=0):
    return agent_services.heartbeat_record(agent_id=reg.agent.agent_id, raw_token=reg.token, busy=busy)


def running_task(agent_id: str, attempt: int = 1, max_attempts: int = 3) -> Task:
    return Task.objects.create(capability="echo", timeout=10, max_attempts=max_attempts, attempt=attempt,
                               status=Task.Status.RUNNING, agent=agent_id, dispatched_at=timezone.now())


def test_heartbeat_writes_nothing_to_postgresql(redis_clean, django_assert_num_queries):
    reg = factories.agent("a1")
    beat(reg)  # first one may fill the cache
    with django_assert_num_queries(0):
        for _ in range(20):
            beat(reg, busy=1)
    score, busy = liveness.agent_last_seen(agent_id="a1")
    assert busy == 1 and score == pytest.approx(liveness.now(), abs=2)


def test_heartbeat_refills_its_cache_after_redis_lost_its_data(redis_clean):
    reg = factories.agent("a1")
    redis_clean.flushdb()
    assert beat(reg)["desired"] == "active"
    assert liveness.agent_last_seen(agent_id="a1")[0] is not None


@override_settings(HEARTBEAT_TTL=10)
def test_reaper_marks_silent_agent_offline_and_requeues_its_running_task(redis_clean):
    factories.agent("live"), factories.agent("dead")
    liveness.seed_mark(now=liveness.now())
    task = running_task("dead")
    now = liveness.now()
    liveness.client().zadd(liveness.key("live"), {"dead": now - 11, "live": now})
    result = agent_services.agent_reap(now=now)
    assert result["evicted"] == ["dead"]
    assert Agent.objects.get(agent_id="dead").status == Agent.Status.OFFLINE
    assert Agent.objects.get(agent_id="live").status == Agent.Status.ONLINE
    task.refresh_from_db()
    assert (task.status, task.attempt, task.agent) == (Task.Status.QUEUED, 2, "")
    assert "missed its heartbeat" in task.status_reason


@override_settings(HEARTBEAT_TTL=10)
def test_reaper_fails_the_task_of_a_lost_agent_on_its_last_attempt(redis_clean):
    factories.agent("dead")
    liveness.seed_mark(now=liveness.now())
    task = running_task("dead", attempt=3, max_attempts=3)
    liveness.client().zadd(liveness.key("live"), {"dead": liveness.now() - 60})
    agent_services.agent_reap(now=liveness.now())
    task.refresh_from_db()
    assert task.status == Task.Status.FAILED and "3 of 3" in task.error


@override_settings(HEARTBEAT_TTL=10, EVICTION_HOLD_RATIO=0.5, EVICTION_HOLD_MIN_AGENTS=3)
def test_reaper_holds_instead_of_mass_evicting_and_lifts_the_hold_when_beats_resume(redis_clean):
    regs = [factories.agent(f"a{i}") for i in range(5)]
    liveness.seed_mark(now=liveness.now())
    now = liveness.now()
    liveness.client().zadd(liveness.key("live"), {f"a{i}": now - 30 for i in range(4)})
    result = agent_services.agent_reap(now=now)
    assert result["held"] is True
    assert Agent.objects.filter(status=Agent.Status.OFFLINE).count() == 0
    assert "evictions held" in liveness.hold_get()["reason"]
    for reg in regs[:3]:
        beat(reg)
    result = agent_services.agent_reap(now=liveness.now())
    assert result["held"] is False and result["evicted"] == ["a3"]
    assert liveness.hold_get() is None


@override_settings(HEARTBEAT_TTL=10)
def test_reaper_reseeds_from_the_database_after_a_redis_restart_without_evicting(redis_clean):
    for i in range(3):
        factories.agent(f"a{i}")
    redis_clean.flushdb()  # Redis restarted: no liveness, no tokens
    result = agent_services.agent_reap(now=liveness.now())
    assert result["seeded"] is True
    assert liveness.live_count() == 3
    assert agent_services.agent_reap(now=liveness.now())["evicted"] == []


def test_a_heartbeat_landing_during_the_reap_keeps_its_agent(redis_clean):
    factories.agent("a1")
    now = liveness.now()
    liveness.client().zadd(liveness.key("live"), {"a1": now})  # beat arrived after the read
    assert liveness.evict(agent_ids=["a1"], cutoff=now - 10) == []


def test_flush_writes_last_seen_in_bulk_and_welcomes_back_offline_agents(redis_clean, django_assert_max_num_queries):
    regs = [factories.agent(f"a{i}") for i in range(50)]
    Agent.objects.filter(agent_id="a7").update(status=Agent.Status.OFFLINE, offline_since=timezone.now())
    Agent.objects.update(last_seen=None)
    for reg in regs:
        beat(reg, busy=1 if reg.agent.agent_id == "a3" else 0)
    with django_assert_max_num_queries(12):
        assert agent_services.liveness_flush() == 50
    assert Agent.objects.filter(last_seen__isnull=True).count() == 0
    assert Agent.objects.get(agent_id="a7").status == Agent.Status.ONLINE
    assert list(Agent.objects.filter(busy=True).values_list("agent_id", flat=True)) == ["a3"]


def test_desired_state_reaches_the_agent_in_its_heartbeat_reply(redis_clean):
    reg = factories.agent("a1")
    agent_services.agent_set_desired(agent_id="a1", desired="draining")
    assert beat(reg)["desired"] == "draining"
    agent_services.agent_set_desired(agent_id="a1", desired="active")
    assert beat(reg)["desired"] == "active"


def test_re_registration_rotates_the_token(redis_clean):
    old = factories.agent("a1")
    new = factories.agent("a1")
    with pytest.raises(agent_services.AuthError):
        beat(old)
    assert beat(new)["desired"] == "active"


def test_revoked_agent_cannot_register_again(redis_clean):
    factories.agent("a1")
    agent_services.agent_set_desired(agent_id="a1", desired="stopped")
    with pytest.raises(agent_services.ForbiddenError):
        factories.agent("a1")


def test_a_beat_older_than_the_eviction_does_not_revive_the_agent(redis_clean):
    factories.agent("a1")
    evicted_at = timezone.now()
    Agent.objects.filter(agent_id="a1").update(status=Agent.Status.OFFLINE, offline_since=evicted_at)
    # A web process flushes a beat it buffered before the eviction.
    liveness.client().zadd(liveness.key("live"), {"a1": evicted_at.timestamp() - 3})
    agent_services.liveness_flush()
    assert Agent.objects.get(agent_id="a1").status == Agent.Status.OFFLINE
    liveness.client().zadd(liveness.key("live"), {"a1": evicted_at.timestamp() + 1})
    agent_services.liveness_flush()
    assert Agent.objects.get(agent_id="a1").status == Agent.Status.ONLINE


@override_settings(HEARTBEAT_TTL=10, EVICTION_HOLD_RATIO=0.5, EVICTION_HOLD_MIN_AGENTS=3, EVICTION_HOLD_MAX_SECONDS=60)
def test_an_eviction_hold_expires_so_a_real_mass_failure_is_evicted(redis_clean):
    for i in range(4):
        factories.agent(f"a{i}")
    liveness.seed_mark(now=liveness.now())
    now = liveness.now()
    liveness.client().zadd(liveness.key("live"), {f"a{i}": now - 30 for i in range(4)})
    assert agent_services.agent_reap(now=now)["held"] is True
    assert agent_services.agent_reap(now=now + 30)["held"] is True
    result = agent_services.agent_reap(now=now + 61)
    assert result["held"] is False and len(result["evicted"]) == 4


@override_settings(HEARTBEAT_TTL=10, LIVENESS_FLUSH_INTERVAL=5)
def test_an_agent_online_in_the_database_but_gone_from_redis_is_reaped(redis_clean):
    factories.agent("lost")
    liveness.seed_mark(now=liveness.now())
    liveness.client().zrem(liveness.key("live"), "lost")  # a reap that died half-way
    Agent.objects.filter(agent_id="lost").update(last_seen=timezone.now() - timezone.timedelta(seconds=60))
    task = running_task("lost")
    assert agent_services.agent_reap(now=liveness.now())["evicted"] == ["lost"]
    assert Agent.objects.get(agent_id="lost").status == Agent.Status.OFFLINE
    task.refresh_from_db()
    assert task.attempt == 2
