"""Dead or frozen, told apart: before the reaper holds evictions it asks the
region's real RabbitMQ (the test vhost, queues named for this test only) whether
the silent agents still hold their connections. Consumers gone: dead, evicted at
the TTL despite the hold. Consumers there: held. No answer: held, as before."""
import socket
import threading
import time
import uuid

import pytest
from django.conf import settings
from django.test import override_settings
from django.utils import timezone
from kombu import Connection, Consumer, Queue

from regions.clock import reaper
from regions.clock.reaper import agent_reap
from regions.models import Agent, Task
from regions.services import liveness
from regions.services.agents.presence import (CONNECTED, GONE, NO_QUEUE, UNKNOWN, agent_presence_check,
                                              presence_classify)
from regions.services.agents.registry import agent_register
from wire.protocol import agent_control_queue, agent_node_name, agent_queue

HOST = "host-1"


@pytest.mark.parametrize("own, control, verdict", [
    (1, None, CONNECTED),       # taking tasks
    (0, 1, CONNECTED),          # cordoned: task consumers cancelled, control queue still consumed
    (NO_QUEUE, 1, CONNECTED),
    (0, NO_QUEUE, GONE),        # killed: its queue stays (durable), the control queue went with it
    (0, 0, GONE),
    (NO_QUEUE, NO_QUEUE, UNKNOWN),  # never consumed here (or the broker lost its data)
    (None, None, UNKNOWN),      # not read
    (0, None, UNKNOWN),
])
def test_presence_is_a_verdict_only_when_the_agents_own_queue_is_there_and_nobody_consumes(own, control, verdict):
    assert presence_classify(own=own, control=control) == verdict


class FakeAgents:
    """Agent processes as the broker sees them: each holds one connection that
    consumes its own queue and its control queue, as run_agent's worker does."""

    def __init__(self):
        self.ids: list[str] = []
        self.conns: dict[str, Connection] = {}

    def start(self, agent_id: str, *, cordoned: bool = False) -> None:
        conn = Connection(settings.CELERY_BROKER_URL)
        channel = conn.channel()
        own = Queue(agent_queue(agent_id), durable=True, queue_arguments={"x-max-priority": 9}, channel=channel)
        # As Celery declares it (control_queue_exclusive, True by default).
        control = Queue(agent_control_queue(agent_node_name(agent_id, HOST)), durable=False, auto_delete=True,
                        exclusive=True, channel=channel)
        own.declare()
        control.declare()
        Consumer(channel, queues=[control] if cordoned else [own, control], no_ack=True).consume()
        self.ids.append(agent_id)
        self.conns[agent_id] = conn

    def kill(self, agent_id: str) -> None:
        """Its connection closes (a kill -9 closes the socket: RabbitMQ drops its consumers)."""
        self.conns.pop(agent_id).release()

    def close(self) -> None:
        for agent_id in list(self.conns):
            self.kill(agent_id)
        with Connection(settings.CELERY_BROKER_URL) as conn:
            channel = conn.channel()
            for agent_id in self.ids:
                channel.queue_delete(agent_queue(agent_id))


@pytest.fixture
def fake_agents():
    fleet = FakeAgents()
    yield fleet
    fleet.close()


def register(n: int, kind: str = "celery") -> list[str]:
    tag = uuid.uuid4().hex[:6]
    ids = [f"df-{tag}-{i}" for i in range(n)]
    for agent_id in ids:
        agent_register(agent_id=agent_id, capabilities=["echo"], hostname=HOST, kind=kind)
    return ids


def running_task(agent_id: str) -> Task:
    return Task.objects.create(capability="echo", timeout=10, max_attempts=3, status=Task.Status.RUNNING,
                               agent=agent_id, dispatched_at=timezone.now())


def silence(ids: list[str], *, now: float, ago: float) -> None:
    liveness.client().zadd(liveness.key("live"), {a: now - ago for a in ids})


def reap(now: float) -> dict:
    """A reap by a reaper that has been ticking all along (no outage, so no grace)."""
    liveness.reaped_set(now=now - 1)
    return agent_reap(now=now)


def offline() -> set[str]:
    return set(Agent.objects.filter(status=Agent.Status.OFFLINE).values_list("agent_id", flat=True))


@pytest.mark.django_db
@override_settings(HEARTBEAT_TTL=10, HEARTBEAT_INTERVAL=5, EVICTION_HOLD_RATIO=0.5)
def test_two_of_three_silent_with_their_broker_connections_gone_are_evicted_at_the_ttl_despite_the_hold(
        redis_clean, fake_agents):
    ids = register(3)
    for agent_id in ids:
        fake_agents.start(agent_id)
    tasks = [running_task(a) for a in ids]
    liveness.seed_mark(now=liveness.now())
    fake_agents.kill(ids[0])
    fake_agents.kill(ids[1])
    now = liveness.now()
    # Silent, not yet past the TTL: already 2 of 3 (a hold without the broker), yet no hold begins.
    silence(ids[:2], now=now, ago=6)
    result = reap(now)
    assert result["evicted"] == [] and result["held"] is False and liveness.hold_get() is None
    # Past the TTL: evicted, and the reason says how they were told dead.
    silence(ids[:2], now=now + 5, ago=11)
    result = reap(now + 5)
    assert sorted(result["evicted"]) == sorted(ids[:2]) == sorted(result["dead"]) and result["held"] is False
    assert offline() == set(ids[:2])
    for task in tasks:
        task.refresh_from_db()
    assert [t.attempt for t in tasks] == [2, 2, 1]
    assert all(t.status_reason == f"requeued: {reaper.DEAD} (agent {t.agent or a})"
               for t, a in zip(tasks[:2], ids[:2])), [t.status_reason for t in tasks]


@pytest.mark.django_db
@override_settings(HEARTBEAT_TTL=10, HEARTBEAT_INTERVAL=5, EVICTION_HOLD_RATIO=0.5)
def test_silent_agents_whose_connections_stay_are_held_cordoned_or_not(redis_clean, fake_agents):
    """Frozen (SIGSTOP): the connection stays open. A cordoned agent consumes only
    its control queue: still connected."""
    ids = register(3)
    fake_agents.start(ids[0])
    fake_agents.start(ids[1], cordoned=True)
    fake_agents.start(ids[2])
    liveness.seed_mark(now=liveness.now())
    now = liveness.now()
    silence(ids, now=now, ago=30)
    result = reap(now)
    assert result["held"] is True and result["evicted"] == [] and offline() == set()
    hold = liveness.hold_get()
    assert hold["silent"] == 3 and hold["dead"] == 0
    assert "evictions held" in hold["reason"] and "0 gone, 3 connected" in hold["broker"]


@pytest.mark.django_db
@override_settings(HEARTBEAT_TTL=10, HEARTBEAT_INTERVAL=5, EVICTION_HOLD_RATIO=0.5)
def test_the_dead_are_evicted_while_the_frozen_rest_of_the_fleet_is_held(redis_clean, fake_agents):
    ids = register(5)
    for agent_id in ids:
        fake_agents.start(agent_id)
    liveness.seed_mark(now=liveness.now())
    fake_agents.kill(ids[0])
    now = liveness.now()
    silence(ids[:4], now=now, ago=30)  # 1 dead, 3 frozen: 3 of the 4 living still silent
    result = reap(now)
    assert result["held"] is True and result["evicted"] == [ids[0]] == result["dead"]
    assert offline() == {ids[0]}
    assert liveness.hold_get()["silent"] == 3 and liveness.hold_get()["dead"] == 1


@pytest.mark.django_db
@override_settings(HEARTBEAT_TTL=10, HEARTBEAT_INTERVAL=5, EVICTION_HOLD_RATIO=0.5)
def test_agents_the_broker_cannot_tell_about_are_held_as_before(redis_clean, fake_agents):
    """HTTP agents hold no broker connection; a Celery agent whose queue never
    existed here says nothing either."""
    http = register(2, kind="http")
    never = register(1)
    liveness.seed_mark(now=liveness.now())
    now = liveness.now()
    silence(http + never, now=now, ago=30)
    assert reap(now)["held"] is True and offline() == set()
    assert "0 gone, 0 connected, 3 unknown" in liveness.hold_get()["broker"]


@pytest.mark.django_db
@pytest.mark.parametrize("broker", ["refused", "hung"])
@override_settings(HEARTBEAT_TTL=10, HEARTBEAT_INTERVAL=5, EVICTION_HOLD_RATIO=0.5, REAPER_BROKER_CHECK_SECONDS=0.5)
def test_when_the_broker_does_not_answer_the_reaper_holds_as_before_and_is_not_stalled(redis_clean, fake_agents,
                                                                                       broker):
    """Dead agents (their queues there, nobody consuming) behind a broker that
    refuses connections, or accepts them and never answers: nobody can be told
    dead, so the hold stands, says why, and the tick ends within its bound."""
    ids = register(3)
    for agent_id in ids:
        fake_agents.start(agent_id)
        fake_agents.kill(agent_id)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    accepted = []
    if broker == "hung":
        listener.listen(8)
        threading.Thread(target=lambda: accepted.append(listener.accept()), daemon=True).start()
    else:
        listener.close()
    liveness.seed_mark(now=liveness.now())
    now = liveness.now()
    silence(ids, now=now, ago=30)
    try:
        with override_settings(CELERY_BROKER_URL=f"amqp://guest:guest@127.0.0.1:{port}/meridian-unit"):
            started = time.monotonic()
            result = reap(now)
            took = time.monotonic() - started
    finally:
        listener.close()
    assert result["held"] is True and result["evicted"] == [] and offline() == set()
    hold = liveness.hold_get()
    assert "broker unavailable" in hold["broker"] and "3 unknown" in hold["broker"], hold
    assert "broker unavailable" in hold["reason"]
    assert took < 2.5, took  # the connect and each read bounded by REAPER_BROKER_CHECK_SECONDS


@pytest.mark.django_db
def test_the_check_asks_about_the_agents_it_can_within_its_time(fake_agents):
    ids = register(4)
    for agent_id in ids[:3]:
        fake_agents.start(agent_id)
    fake_agents.kill(ids[1])
    presence = agent_presence_check(agent_ids=ids, timeout=2)
    assert (presence.gone, presence.connected, presence.unknown, presence.error) == (
        [ids[1]], [ids[0], ids[2]], [ids[3]], "")
    no_time = agent_presence_check(agent_ids=ids, timeout=0)
    assert no_time.gone == no_time.connected == [] and no_time.unknown == ids and no_time.error
