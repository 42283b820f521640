"""Fleet scale: the heartbeat interval grows with the fleet within a budget of
beats a second (and the reaper holds agents to the TTL that goes with it), and
the per-capability counters the summary and the submit-time check read stay
equal to a scan of the agents through every change an agent goes through."""
import pytest
from django.db import connection
from django.test import override_settings

from regions.clock.liveness_flush import liveness_flush
from regions.clock.reaper import agent_reap
from regions.models import Agent, CapabilityCounter
from regions.services import capabilities, liveness, summary
from regions.services.agents import heartbeat
from regions.services.agents.heartbeat import heartbeat_record
from regions.services.agents.registry import agent_deregister, agent_register, agent_set_desired
from regions.services.config.current import EffectiveConfig, config_current
from tests import factories


def config(**agents) -> EffectiveConfig:
    return EffectiveConfig(sha="", content={"agents": {"heartbeat_interval": 5, "heartbeat_ttl": 15, **agents}})


# --- the interval rule (pure) -------------------------------------------------------

@pytest.mark.parametrize("fleet", [0, 1, 1_000, 19_999, 20_000, 20_001, 50_000, 123_457, 240_000])
def test_interval_keeps_the_fleet_within_its_budget_and_never_below_the_configured_interval(fleet):
    timing = config(heartbeat_budget=4000, heartbeat_interval_max=60).heartbeat_timing(fleet)
    assert timing.interval >= 5
    assert fleet / timing.interval <= 4000
    assert timing.ttl == pytest.approx(3 * timing.interval)  # the configured ratio: TTL >= 2 intervals
    if fleet <= 20_000:
        assert (timing.interval, timing.ttl) == (5, 15)  # a small fleet is not slowed down
    else:
        assert timing.interval <= fleet / 4000 + 0.1  # rounded up to 0.1 s, no more


def test_interval_stops_at_its_maximum_so_detection_stays_bounded():
    timing = config(heartbeat_budget=4000, heartbeat_interval_max=60).heartbeat_timing(1_000_000)
    assert (timing.interval, timing.ttl) == (60, 180)


def test_a_budget_of_zero_turns_the_rule_off():
    assert config(heartbeat_budget=0).heartbeat_timing(10**6).interval == 5


@override_settings(HEARTBEAT_BUDGET_PER_SECOND=100, HEARTBEAT_INTERVAL_MAX=30)
def test_budget_and_maximum_come_from_settings_unless_the_region_configuration_sets_them():
    assert config().heartbeat_timing(1000).interval == 10
    assert config().heartbeat_timing(10**6).interval == 30
    assert config(heartbeat_budget=50).heartbeat_timing(1000).interval == 20


# --- the rule in the heartbeat reply and the reaper ------------------------------------

def live_fleet(n: int, now: float) -> None:
    liveness.client().zadd(liveness.key("live"), {f"sim-{i}": now for i in range(n)})


@pytest.fixture
def fresh_config():
    config_current.cache_clear()
    heartbeat._fleet_seen[:] = [float("-inf"), 0]
    yield
    config_current.cache_clear()
    heartbeat._fleet_seen[:] = [float("-inf"), 0]


@pytest.mark.django_db
@override_settings(HEARTBEAT_INTERVAL=5, HEARTBEAT_TTL=15, HEARTBEAT_BUDGET_PER_SECOND=10)
def test_heartbeat_reply_hands_out_the_interval_for_the_fleet_size(redis_clean, fresh_config):
    reg = factories.agent("a1")
    assert heartbeat_record(agent_id="a1", raw_token=reg.token, busy=0)["interval"] == 5
    live_fleet(199, liveness.now())  # 200 agents at a budget of 10/s: 20 s
    heartbeat._fleet_seen[:] = [float("-inf"), 0]  # the per-process count is read once a second
    reply = heartbeat_record(agent_id="a1", raw_token=reg.token, busy=0)
    assert (reply["interval"], reply["ttl"]) == (20, 60)


@pytest.mark.django_db
@override_settings(HEARTBEAT_INTERVAL=5, HEARTBEAT_TTL=15, HEARTBEAT_BUDGET_PER_SECOND=10,
                   AGENT_REGISTRATION_TOKEN="reg-token")
def test_registration_hands_out_the_interval_for_the_fleet_size_too(redis_clean, fresh_config):
    from rest_framework.test import APIClient

    live_fleet(199, liveness.now())  # 200 agents once this one registers: at 10/s, 20 s
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Bearer reg-token")
    r = client.post("/api/v1/agents/register", {"agent_id": "new-1", "capabilities": ["echo"]}, format="json")
    assert r.status_code == 201, r.content
    assert (r.json()["heartbeat_interval"], r.json()["heartbeat_ttl"]) == (20, 60)


@pytest.mark.django_db
@override_settings(HEARTBEAT_INTERVAL=5, HEARTBEAT_TTL=15, HEARTBEAT_BUDGET_PER_SECOND=10, REAPER_INTERVAL=5)
def test_reaper_holds_agents_to_the_scaled_ttl_not_the_configured_one(redis_clean, fresh_config):
    factories.agent("quiet"), factories.agent("dead")
    liveness.seed_mark(now=liveness.now())
    now = liveness.now()
    live_fleet(198, now)  # 200 agents: interval 20 s, TTL 60 s
    liveness.client().zadd(liveness.key("live"), {"quiet": now - 40, "dead": now - 61})
    liveness.reaped_set(now=now - 1)
    result = agent_reap(now=now)
    assert result["evicted"] == ["dead"]  # 40 s of silence is within the scaled TTL (the configured one is 15 s)
    assert Agent.objects.get(agent_id="quiet").status == Agent.Status.ONLINE


@pytest.mark.django_db
@override_settings(HEARTBEAT_INTERVAL=5, HEARTBEAT_TTL=15, HEARTBEAT_BUDGET_PER_SECOND=10, REAPER_INTERVAL=5)
def test_reaper_keeps_the_longer_ttl_for_one_ttl_after_the_fleet_shrinks(redis_clean, fresh_config):
    factories.agent("a1")
    liveness.seed_mark(now=liveness.now())
    now = liveness.now()
    live_fleet(199, now)
    liveness.reaped_set(now=now - 1)
    agent_reap(now=now)  # 200 agents: TTL 60 s handed out
    liveness.client().zrem(liveness.key("live"), *[f"sim-{i}" for i in range(199)])  # the fleet shrinks to 1
    # a1 was told "every 20 s" just before: 30 s of silence is not death yet.
    liveness.client().zadd(liveness.key("live"), {"a1": now + 10 - 30})
    liveness.reaped_set(now=now + 9)
    assert agent_reap(now=now + 10)["evicted"] == []
    # One long TTL later the configured timing is back.
    liveness.client().zadd(liveness.key("live"), {"a1": now + 70 - 16})
    liveness.reaped_set(now=now + 69)
    assert agent_reap(now=now + 70)["evicted"] == ["a1"]


# --- counters ----------------------------------------------------------------

def assert_counters_match_a_scan() -> None:
    assert summary.capability_counts() == summary.capability_counts_scan()
    for idle in (False, True):
        assert capabilities.live_capabilities(idle_only=idle) == \
            capabilities.live_capabilities_scan(idle_only=idle)
    live = capabilities.live_capabilities_scan()
    for capability in live | {"echo", "resize", "thumbnail", "nobody"}:
        assert capabilities.capability_live(capability) == (capability in live), capability


@pytest.mark.postgresql
@pytest.mark.django_db
def test_counters_follow_every_change_of_an_agent_and_match_the_scan(redis_clean, fresh_config):
    assert connection.vendor == "postgresql"
    assert_counters_match_a_scan()
    a = factories.agent("a1", ["echo", "resize"])
    factories.agent("a2", ["echo"])
    assert_counters_match_a_scan()
    assert summary.capability_counts() == ({"echo": (2, 2), "resize": (1, 1)}, 2)
    assert capabilities.live_capabilities() == {"echo", "resize"}

    # busy, as the bulk flush writes it
    heartbeat_record(agent_id="a1", raw_token=a.token, busy=1)
    liveness_flush()
    assert summary.capability_counts() == ({"echo": (2, 1), "resize": (1, 0)}, 1)
    assert capabilities.live_capabilities(idle_only=True) == {"echo"}
    assert_counters_match_a_scan()

    # cordoned, then active again
    agent_set_desired(agent_id="a1", desired=Agent.Desired.CORDONED)
    assert capabilities.live_capabilities() == {"echo"}
    assert_counters_match_a_scan()
    agent_set_desired(agent_id="a1", desired=Agent.Desired.ACTIVE)
    assert capabilities.live_capabilities() == {"echo", "resize"}
    assert_counters_match_a_scan()

    # capability change: re-registered with other capabilities (the same agent, its token)
    agent_register(agent_id="a1", capabilities=["thumbnail"], current_token=a.token)
    assert capabilities.live_capabilities() == {"echo", "thumbnail"}
    assert_counters_match_a_scan()

    # offline: the reaper
    now = liveness.now()
    liveness.seed_mark(now=now)
    liveness.reaped_set(now=now - 1)
    liveness.client().zadd(liveness.key("live"), {"a2": now - 100})
    assert agent_reap(now=now)["evicted"] == ["a2"]
    assert capabilities.live_capabilities() == {"thumbnail"}
    assert_counters_match_a_scan()

    # deregistered, revoked, deleted, bulk updates that bypass the services
    agent_deregister(agent_id="a1")
    assert capabilities.live_capabilities() == set()
    assert_counters_match_a_scan()
    Agent.objects.update(status=Agent.Status.ONLINE)
    assert capabilities.live_capabilities() == {"echo", "thumbnail"}
    agent_set_desired(agent_id="a2", desired=Agent.Desired.STOPPED)
    assert_counters_match_a_scan()
    Agent.objects.filter(agent_id="a1").delete()
    assert capabilities.live_capabilities() == set()
    assert_counters_match_a_scan()
    assert not CapabilityCounter.objects.filter(agents__lt=0).exists()
    assert not CapabilityCounter.objects.filter(idle__lt=0).exists()


@pytest.mark.django_db
def test_an_update_that_changes_no_counted_column_leaves_the_counters_alone(redis_clean):
    factories.agent("a1", ["echo"])
    before = list(CapabilityCounter.objects.order_by("capability").values_list())
    Agent.objects.update(last_seen=None, hostname="elsewhere")
    assert list(CapabilityCounter.objects.order_by("capability").values_list()) == before


@pytest.mark.django_db
def test_summary_counts_idle_agents_from_the_counters(redis_clean):
    factories.agent("a1", ["echo"])
    factories.agent("a2", ["echo", "resize"])
    Agent.objects.filter(agent_id="a2").update(busy=True)
    config_current()  # loaded: the summary itself then reads the counters only
    built = summary.region_summary_build()
    assert built["available_agents"] == 1
    assert built["agent_capabilities_summary"] == {"echo": {"count": 2, "idle": 1}, "resize": {"count": 1, "idle": 0}}


def test_a_tiny_heartbeat_budget_gives_the_longest_interval_not_an_overflow():
    from regions.services.config.parse import config_parse

    content = config_parse({"global.yaml": "agents:\n  heartbeat_budget: 1.0e-320\n"})
    cfg = EffectiveConfig(sha="x", content=content)
    assert cfg.heartbeat_timing(10).interval == max(cfg.heartbeat_interval, cfg.heartbeat_interval_max)
