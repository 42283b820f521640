"""The web process's heartbeat batching, on the real Redis."""
import time
import types

import pytest
import redis

from regions.services import liveness
from regions.services.agents import heartbeat, registry
from regions.services.agents.heartbeat import heartbeat_record
from regions.services.agents.registry import AuthError, ForbiddenError, agent_register, agent_set_desired
from regions.services import heartbeat_buffer
from regions.services.heartbeat_buffer import REVOCATION_BOUND_SECONDS, HeartbeatBuffer
from tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def buffer(redis_clean, monkeypatch):
    buf = HeartbeatBuffer(flush_seconds=0.05, autostart=False)
    for module in (heartbeat, registry):
        monkeypatch.setattr(module, "get_buffer", lambda: buf)
    return buf


def beat(reg, busy=0):
    return heartbeat_record(agent_id=reg.agent.agent_id, raw_token=reg.token, busy=busy)


def test_beats_are_written_in_one_flush(buffer, django_assert_num_queries):
    regs = [factories.agent(f"a{i}") for i in range(20)]
    liveness.client().delete(liveness.key("live"))
    for reg in regs:
        beat(reg)  # first beat verifies against Redis and caches the digest
    with django_assert_num_queries(0):
        for reg in regs:
            beat(reg, busy=1)
    assert liveness.live_count() == 0  # nothing written yet
    assert buffer.flush() == 20
    assert liveness.live_count() == 20
    assert liveness.agent_last_seen(agent_id="a3")[1] == 1


def test_a_late_flush_never_rewinds_last_seen(buffer):
    reg = factories.agent("a1")
    beat(reg)
    buffer.pending["a1"] = (1000.0, 0)  # an old beat held by a slow process
    liveness.client().zadd(liveness.key("live"), {"a1": 5000.0})
    buffer.flush()
    assert liveness.agent_last_seen(agent_id="a1")[0] == 5000.0


def test_wrong_or_foreign_tokens_are_refused_even_when_cached(buffer):
    a, b = factories.agent("a1"), factories.agent("a2")
    beat(a)
    with pytest.raises(ForbiddenError):
        heartbeat_record(agent_id="a1", raw_token=b.token, busy=0)
    with pytest.raises(AuthError):
        heartbeat_record(agent_id="a1", raw_token="mat_forged", busy=0)


def test_desired_state_reaches_buffered_heartbeats_after_a_flush(buffer):
    reg = factories.agent("a1")
    assert beat(reg)["desired"] == "active"
    liveness.agent_desired_set(agent_id="a1", desired="cordoned")  # set by another process
    buffer.flush()
    assert beat(reg)["desired"] == "cordoned"


def test_redis_outage_turns_heartbeats_into_503_and_keeps_the_beats(buffer, monkeypatch):
    reg = factories.agent("a1")
    beat(reg)
    dead = redis.Redis(port=1, socket_connect_timeout=0.2, decode_responses=True)
    monkeypatch.setattr(liveness, "client", lambda: dead)
    beat(reg)
    assert buffer.flush() == 0 and "a1" in buffer.pending
    time.sleep(1.1)
    with pytest.raises(liveness.RedisError):
        beat(reg)
    monkeypatch.undo()
    for module in (heartbeat, registry):
        monkeypatch.setattr(module, "get_buffer", lambda: buffer)
    assert buffer.flush() == 1 and buffer.healthy()
    assert liveness.agent_last_seen(agent_id="a1")[0] is not None


def reregister(reg):
    """The agent registers again under its id, proving itself with its token."""
    return agent_register(agent_id=reg.agent.agent_id, capabilities=["echo"],
                          current_token=reg.token)


def test_a_token_replaced_in_another_process_stops_working_after_one_flush(buffer, monkeypatch):
    old = factories.agent("a1")
    beat(old)
    assert buffer.digest_for("a1")
    monkeypatch.setattr(registry, "_forget_locally", lambda agent_id: None)  # as if elsewhere
    new = reregister(old)
    buffer.flush()
    with pytest.raises(AuthError):
        beat(old)
    assert beat(new)["desired"] == "active"


def test_a_new_process_preloads_every_digest_in_one_query(buffer, django_assert_num_queries):
    regs = [factories.agent(f"a{i}") for i in range(30)]
    fresh = HeartbeatBuffer(flush_seconds=0.05, autostart=False)
    fresh.sync()
    with django_assert_num_queries(1):
        assert fresh.preload() == 30
    assert all(fresh.digest_for(r.agent.agent_id) for r in regs)


# --- revocation and rotation reach every process within the bound -------------------------

class Clock:
    """This process's clocks: wall time skewed by `skew`, monotonic time advanced by hand."""

    def __init__(self, skew: float = 0.0):
        self.skew = skew
        self.offset = 0.0

    def install(self, monkeypatch) -> "Clock":
        monkeypatch.setattr(heartbeat_buffer, "time", types.SimpleNamespace(
            time=lambda: time.time() + self.skew, monotonic=lambda: time.monotonic() + self.offset,
            sleep=time.sleep))
        return self

    def advance(self, seconds: float) -> None:
        self.offset += seconds


def elsewhere(monkeypatch):
    """What follows happens in another web process: this one's cache is not told."""
    monkeypatch.setattr(registry, "_forget_locally", lambda agent_id: None)


def preloaded(monkeypatch) -> HeartbeatBuffer:
    """A web process that loaded the digests (get_buffer) and never served a beat: no flush thread."""
    buf = HeartbeatBuffer(flush_seconds=0.05, autostart=False)
    buf.sync()
    buf.preload()
    for module in (heartbeat, registry):
        monkeypatch.setattr(module, "get_buffer", lambda: buf)
    return buf


def test_a_revoked_token_is_refused_by_a_process_that_preloaded_and_never_flushed(redis_clean, monkeypatch):
    reg = factories.agent("a1")
    clock = Clock().install(monkeypatch)
    buf = preloaded(monkeypatch)
    assert buf.digest_for("a1")
    elsewhere(monkeypatch)
    agent_set_desired(agent_id="a1", desired="stopped")
    clock.advance(REVOCATION_BOUND_SECONDS + 0.01)  # 12 s later or 1 s later: the same
    with pytest.raises(AuthError):
        beat(reg)


def test_a_replaced_token_is_refused_by_a_process_that_preloaded_and_never_flushed(redis_clean, monkeypatch):
    old = factories.agent("a1")
    clock = Clock().install(monkeypatch)
    preloaded(monkeypatch)
    elsewhere(monkeypatch)
    new = reregister(old)
    assert beat(new)["desired"] == "active"  # the new token works at once
    clock.advance(REVOCATION_BOUND_SECONDS + 0.01)
    with pytest.raises(AuthError):
        beat(old)
    assert beat(new)["desired"] == "active"


@pytest.mark.parametrize("skew", [-3600.0, 3600.0])
def test_revocation_reaches_a_process_whose_wall_clock_is_an_hour_off(redis_clean, monkeypatch, skew):
    reg = factories.agent("a1")
    Clock(skew=skew).install(monkeypatch)
    buf = HeartbeatBuffer(flush_seconds=0.05, autostart=False)
    for module in (heartbeat, registry):
        monkeypatch.setattr(module, "get_buffer", lambda: buf)
    beat(reg)
    assert buf.digest_for("a1")
    elsewhere(monkeypatch)
    agent_set_desired(agent_id="a1", desired="stopped")
    buf.flush()
    with pytest.raises(AuthError):
        beat(reg)


def test_a_digest_read_before_a_change_the_process_already_saw_is_not_cached(buffer, monkeypatch):
    old = factories.agent("a1")
    buffer.sync()
    seq = buffer.seq  # a heartbeat starts verifying against the database...
    elsewhere(monkeypatch)
    reregister(old)  # ...the token changes meanwhile, and the flush thread sees it...
    buffer.flush()
    buffer.remember("a1", old.agent.token_hash, seq)  # ...before the heartbeat caches what it read
    assert buffer.digest_for("a1") is None


def test_a_process_trusts_no_cached_token_after_redis_lost_its_data(buffer, redis_clean, monkeypatch):
    old = factories.agent("a1")
    beat(old)
    assert buffer.digest_for("a1")
    elsewhere(monkeypatch)
    redis_clean.flushdb()  # the record of token changes is gone with it
    new = reregister(old)
    buffer.flush()
    assert buffer.digest_for("a1") == new.agent.token_hash  # reloaded from the database
    with pytest.raises(AuthError):
        beat(old)


def test_tokens_are_still_cached_next_to_a_time_scored_record_left_by_an_older_release(buffer, redis_clean):
    reg = factories.agent("a1")
    redis_clean.zadd(liveness.key("rotated"), {"a1": time.time() + 60})
    beat(reg)
    buffer.flush()
    assert buffer.digest_for("a1") == reg.agent.token_hash


def test_a_failed_reload_after_redis_lost_its_data_leaves_the_tokens_to_be_verified_one_by_one(buffer, redis_clean,
                                                                                                monkeypatch):
    from django.db import OperationalError

    reg = factories.agent("a1")
    beat(reg)
    redis_clean.flushdb()

    def down(*args, **kwargs):
        raise OperationalError("the database is away")

    monkeypatch.setattr(buffer, "preload", down)
    buffer.flush()  # does not raise: the flush thread goes on
    assert buffer.digest_for("a1") is None
    assert beat(reg)["desired"] == "active"  # verified again, then cached
    assert buffer.digest_for("a1") == reg.agent.token_hash
