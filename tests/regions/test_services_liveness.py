"""Heartbeats, the reaper, the bulk flush and the eviction hold, on the real
Redis and PostgreSQL (no worker processes needed)."""
import pytest
from django.test import override_settings
from django.utils import timezone

from regions.clock.liveness_flush import liveness_flush
from regions.clock.reaper import agent_reap, eviction_rule
from regions.models import Agent, Task
from regions.services import liveness
from regions.services.agents.heartbeat import heartbeat_record
from regions.services.agents.registry import AuthError, ForbiddenError, agent_register, agent_set_desired
from tests import factories

pytestmark = pytest.mark.django_db


def beat(reg, busy=0):
    return heartbeat_record(agent_id=reg.agent.agent_id, raw_token=reg.token, busy=busy)


def reap(now: float) -> dict:
    """A reap by a reaper that has been ticking all along (no outage, so no grace)."""
    liveness.reaped_set(now=now - 1)
    return agent_reap(now=now)


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
    result = agent_reap(now=now)
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
    agent_reap(now=liveness.now())
    task.refresh_from_db()
    assert task.status == Task.Status.FAILED and "3 of 3" in task.error


@override_settings(HEARTBEAT_TTL=10, EVICTION_HOLD_RATIO=0.5)
def test_reaper_holds_instead_of_mass_evicting_and_gives_a_ttl_of_grace_when_beats_resume(redis_clean):
    regs = [factories.agent(f"a{i}") for i in range(5)]
    liveness.seed_mark(now=liveness.now())
    now = liveness.now()
    liveness.client().zadd(liveness.key("live"), {f"a{i}": now - 30 for i in range(4)})
    result = reap(now)
    assert result["held"] is True
    assert Agent.objects.filter(status=Agent.Status.OFFLINE).count() == 0
    assert "evictions held" in liveness.hold_get()["reason"]
    for reg in regs[:3]:
        beat(reg)
    # The tick that hears most of the fleet again must not evict those it has not heard yet.
    now = liveness.now()
    result = reap(now)
    assert result["held"] is False and result["evicted"] == [] and "hold lifted" in result["grace"]
    assert liveness.hold_get() is None
    live = {f"a{i}": now + 10 for i in (0, 1, 2, 4)}  # the others kept beating through the grace
    liveness.client().zadd(liveness.key("live"), live)
    assert reap(now + 10.5)["evicted"] == ["a3"]


@override_settings(HEARTBEAT_TTL=10)
def test_reaper_reseeds_from_the_database_after_a_redis_restart_without_evicting(redis_clean):
    for i in range(3):
        factories.agent(f"a{i}")
    redis_clean.flushdb()  # Redis restarted: no liveness, no tokens
    result = agent_reap(now=liveness.now())
    assert result["seeded"] is True
    assert liveness.live_count() == 3
    assert agent_reap(now=liveness.now())["evicted"] == []


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
        assert liveness_flush() == 50
    assert Agent.objects.filter(last_seen__isnull=True).count() == 0
    assert Agent.objects.get(agent_id="a7").status == Agent.Status.ONLINE
    assert list(Agent.objects.filter(busy=True).values_list("agent_id", flat=True)) == ["a3"]


def test_desired_state_reaches_the_agent_in_its_heartbeat_reply(redis_clean):
    reg = factories.agent("a1")
    agent_set_desired(agent_id="a1", desired="draining")
    assert beat(reg)["desired"] == "draining"
    agent_set_desired(agent_id="a1", desired="active")
    assert beat(reg)["desired"] == "active"


def test_re_registration_rotates_the_token(redis_clean):
    old = factories.agent("a1")
    new = agent_register(agent_id="a1", capabilities=["echo"], current_token=old.token)
    with pytest.raises(AuthError):
        beat(old)
    assert beat(new)["desired"] == "active"


def test_revoked_agent_cannot_register_again(redis_clean):
    factories.agent("a1")
    agent_set_desired(agent_id="a1", desired="stopped")
    with pytest.raises(ForbiddenError):
        factories.agent("a1")


def test_a_beat_older_than_the_eviction_does_not_revive_the_agent(redis_clean):
    factories.agent("a1")
    evicted_at = timezone.now()
    Agent.objects.filter(agent_id="a1").update(status=Agent.Status.OFFLINE, offline_since=evicted_at)
    # A web process flushes a beat it buffered before the eviction.
    liveness.client().zadd(liveness.key("live"), {"a1": evicted_at.timestamp() - 3})
    liveness_flush()
    assert Agent.objects.get(agent_id="a1").status == Agent.Status.OFFLINE
    liveness.client().zadd(liveness.key("live"), {"a1": evicted_at.timestamp() + 1})
    liveness_flush()
    assert Agent.objects.get(agent_id="a1").status == Agent.Status.ONLINE


@override_settings(HEARTBEAT_TTL=10, EVICTION_HOLD_RATIO=0.5, EVICTION_HOLD_MAX_SECONDS=60)
def test_an_eviction_hold_expires_so_a_real_mass_failure_is_evicted(redis_clean):
    for i in range(4):
        factories.agent(f"a{i}")
    liveness.seed_mark(now=liveness.now())
    now = liveness.now()
    liveness.client().zadd(liveness.key("live"), {f"a{i}": now - 30 for i in range(4)})
    assert reap(now)["held"] is True
    assert reap(now + 30)["held"] is True
    result = reap(now + 61)
    assert result["held"] is False and len(result["evicted"]) == 4


@override_settings(HEARTBEAT_TTL=10, LIVENESS_FLUSH_INTERVAL=5)
def test_an_agent_online_in_the_database_but_gone_from_redis_is_reaped(redis_clean):
    factories.agent("lost")
    liveness.seed_mark(now=liveness.now())
    liveness.client().zrem(liveness.key("live"), "lost")  # a reap that died half-way
    Agent.objects.filter(agent_id="lost").update(last_seen=timezone.now() - timezone.timedelta(seconds=60))
    task = running_task("lost")
    assert agent_reap(now=liveness.now())["evicted"] == ["lost"]
    assert Agent.objects.get(agent_id="lost").status == Agent.Status.OFFLINE
    task.refresh_from_db()
    assert task.attempt == 2


# --- the eviction rule (Kubernetes' node lifecycle controller) ---------------------------

@pytest.mark.parametrize("silent,fleet,mode,limit", [
    (1, 1, "normal", None),      # a lone agent: no mass to tell a fault of the region from its death
    (1, 3, "normal", None),
    (2, 3, "hold", 0),           # small fleet, partial disruption
    (3, 3, "hold", 0),
    (6, 12, "normal", None),     # half is not more than half
    (7, 12, "hold", 0),
    (12, 12, "hold", 0),
    (40, 60, "limited", 1),      # large fleet, partial disruption: the secondary rate
    (60, 60, "hold", 0),         # large fleet, full disruption
    (40, 1000, "normal", None),
    (600, 1000, "limited", 10),
])
@override_settings(EVICTION_HOLD_RATIO=0.5, EVICTION_LARGE_FLEET=50, EVICTION_SECONDARY_RATE=0.01)
def test_eviction_rule_holds_small_fleets_and_slows_large_ones(silent, fleet, mode, limit):
    rule = eviction_rule(silent=silent, fleet=fleet)
    assert (rule.mode, rule.limit) == (mode, limit)


def make_fleet(size: int, now: float, silent: range | list = (), silent_for: float = 30) -> list[str]:
    """`size` registered agents; those in `silent` last beat `silent_for` s ago or
    more (the higher the index, the older), the others just now."""
    ids = [f"f{i:02d}" for i in range(size)]
    for agent_id in ids:
        factories.agent(agent_id)
    liveness.seed_mark(now=now)
    liveness.client().zadd(liveness.key("live"), {
        a: now - silent_for - i if i in silent else now for i, a in enumerate(ids)})
    return ids


def offline() -> set[str]:
    return set(Agent.objects.filter(status=Agent.Status.OFFLINE).values_list("agent_id", flat=True))


@override_settings(HEARTBEAT_TTL=10)
def test_three_agents_silent_together_are_held_and_their_tasks_stay_put(redis_clean):
    now = liveness.now()
    ids = make_fleet(3, now, silent=range(3))
    tasks = [running_task(a) for a in ids]
    result = reap(now)
    assert result["held"] is True and result["evicted"] == [] and offline() == set()
    for task in tasks:
        task.refresh_from_db()
        assert (task.status, task.attempt) == (Task.Status.RUNNING, 1)
    assert liveness.hold_get()["mode"] == "hold"


@override_settings(HEARTBEAT_TTL=10)
def test_twelve_agents_mostly_silent_are_held(redis_clean):
    now = liveness.now()
    make_fleet(12, now, silent=range(9))
    assert reap(now)["held"] is True and offline() == set()


@override_settings(HEARTBEAT_TTL=10, EVICTION_SECONDARY_RATE=0.05)
def test_sixty_agents_partly_silent_are_evicted_slowly_oldest_silence_first(redis_clean):
    now = liveness.now()
    ids = make_fleet(60, now, silent=range(40))
    result = reap(now)
    assert result["limited"] is True and result["held"] is False
    assert result["evicted"] == ["f39", "f38", "f37"]  # 5% of 60 per tick, the longest silent first
    assert liveness.hold_get()["mode"] == "limited"
    assert reap(now + 0.5)["evicted"] == ["f36", "f35"]  # 5% of the 57 left
    assert offline() == set(ids[35:40])


@override_settings(HEARTBEAT_TTL=10)
def test_sixty_agents_all_silent_are_held(redis_clean):
    now = liveness.now()
    make_fleet(60, now, silent=range(60))
    result = reap(now)
    assert result["held"] is True and result["evicted"] == [] and offline() == set()


@override_settings(HEARTBEAT_TTL=10)
def test_a_lone_agent_that_goes_silent_is_evicted(redis_clean):
    now = liveness.now()
    make_fleet(1, now, silent=[0])
    assert reap(now)["evicted"] == ["f00"]


@override_settings(HEARTBEAT_TTL=10, HEARTBEAT_INTERVAL=5)
def test_agents_frozen_together_are_held_before_the_last_of_them_crosses_the_ttl(redis_clean):
    """Their last beats are up to an interval apart: the first to expire must not be
    evicted alone while the others are still within their TTL."""
    now = liveness.now()
    ids = make_fleet(3, now)
    frozen_at = now - 10.2
    liveness.client().zadd(liveness.key("live"), {ids[0]: frozen_at - 0.3, ids[1]: frozen_at + 0.4,
                                                  ids[2]: frozen_at + 0.9})
    assert liveness.expired(cutoff=now - 10) == [ids[0]]
    result = reap(now)
    assert result["held"] is True and offline() == set()


@override_settings(HEARTBEAT_TTL=10, HEARTBEAT_INTERVAL=5, REAPER_INTERVAL=5)
def test_after_a_liveness_outage_every_agent_gets_a_full_ttl_of_grace(redis_clean):
    """Redis kept its data through a 20 s outage: every last beat is older than the
    TTL when it returns, and nobody could beat meanwhile."""
    now = liveness.now()
    make_fleet(2, now - 20)  # both beat last just before the outage
    liveness.reaped_set(now=now - 20)  # and so did the reaper
    result = agent_reap(now=now)
    assert result["evicted"] == [] and "no reaper tick for 20.0s" in result["grace"]
    assert liveness.grace_get()["until"] == now + 10
    liveness.client().zadd(liveness.key("live"), {"f00": now + 1})  # f00 is heard again, f01 not
    assert agent_reap(now=now + 5)["grace"]  # still within the grace
    assert agent_reap(now=now + 9.9)["grace"]
    liveness.client().zadd(liveness.key("live"), {"f00": now + 9.9})
    assert agent_reap(now=now + 10.5)["evicted"] == ["f01"]  # the grace is one TTL
    assert offline() == {"f01"} and liveness.grace_get() is None


@override_settings(HEARTBEAT_TTL=10, HEARTBEAT_INTERVAL=5, REAPER_INTERVAL=5)
def test_a_late_reaper_tick_is_not_an_outage(redis_clean):
    now = liveness.now()
    make_fleet(1, now, silent=[0])
    liveness.reaped_set(now=now - 9)  # one tick missed
    assert agent_reap(now=now)["evicted"] == ["f00"]


# --- registration while the liveness store is down ------------------------------------

def _dead_redis():
    import redis

    from tests.harness import free_port

    return redis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.5, socket_timeout=0.5,
                       decode_responses=True)


@pytest.fixture
def redis_down(redis_clean):
    """The liveness store refuses connections (undone before redis_clean empties it)."""
    from unittest import mock

    dead = _dead_redis()
    with mock.patch.object(liveness, "client", lambda: dead):
        yield


def test_registering_while_redis_is_down_leaves_no_agent_behind(redis_clean, redis_down):
    with pytest.raises(liveness.RedisError):
        factories.agent("ghost")
    assert not Agent.objects.filter(agent_id="ghost").exists()


def test_re_registering_while_redis_is_down_keeps_the_current_token(redis_clean):
    old = factories.agent("a1")
    Agent.objects.filter(agent_id="a1").update(status=Agent.Status.OFFLINE)
    before = Agent.objects.get(agent_id="a1")
    from unittest import mock

    dead = _dead_redis()
    with mock.patch.object(liveness, "client", lambda: dead), pytest.raises(liveness.RedisError):
        factories.agent("a1")
    after = Agent.objects.get(agent_id="a1")
    assert (after.token_hash, after.status) == (before.token_hash, Agent.Status.OFFLINE)
    assert beat(old)["desired"] == "active"  # the token the agent holds still works


def test_register_api_while_redis_is_down_is_503_with_retry_after_and_stores_nothing(redis_clean, redis_down,
                                                                                      settings):
    from rest_framework.test import APIClient

    settings.AGENT_REGISTRATION_TOKEN = "reg-secret"
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Bearer reg-secret")
    r = client.post("/api/v1/agents/register", {"agent_id": "ghost", "capabilities": ["echo"]}, format="json")
    assert r.status_code == 503 and "Redis" in r.json()["detail"] and r["Retry-After"] == "2"
    assert not Agent.objects.filter(agent_id="ghost").exists()
