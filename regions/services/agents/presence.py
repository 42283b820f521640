"""Whether silent agents still hold their broker connection: the second signal
the reaper asks before it holds evictions (regions/clock/reaper.py).

Silence alone cannot tell a frozen agent from a dead one. The broker can: a
process killed outright loses its TCP connection at once and RabbitMQ drops its
consumers with it, while a frozen (SIGSTOP) process, or one cut off from the
region's web only, keeps them (until the broker's own heartbeat timeout, when it
is cut off from the broker too). Two queues say it, read with a passive declare
(nothing is created; no management plugin):

- the agent's own queue (wire.protocol.agent_queue), durable, consumed while the
  agent takes tasks: still there, with no consumer, once its process is gone;
- its Celery remote-control queue, ``<node>.celery.pidbox``, consumed on the
  same connection for as long as the process holds it, cordoned or not (a cordon
  cancels the task consumers, not this one), and deleted with it. Celery makes it
  exclusive to that connection by default (control_queue_exclusive): a passive
  declare from elsewhere answers 405 RESOURCE_LOCKED while it is held, 404 once
  it is gone.

connected: either queue has a consumer. gone: its own queue has none and the
control queue none or no longer exists. unknown: its own queue does not exist
(the agent never consumed on this broker, or the broker lost its data), the agent
consumes no broker (kind http), the broker is Redis (its transport keeps no
consumer count), or the broker did not answer in time. Only `gone` is a verdict;
the reaper treats `unknown` as it treats silence.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from django.conf import settings

from regions.models import Agent
from wire.broker import QueueRefused, broker_kind, queue_inspector
from wire.protocol import agent_control_queue, agent_node_name, agent_queue

logger = logging.getLogger("regions.services.agents")  # the agents' log stream, whichever module writes

CONNECTED, GONE, UNKNOWN = "connected", "gone", "unknown"
NO_QUEUE = -1  # a passive declare answered 404: no such queue
NOT_FOUND, RESOURCE_LOCKED = 404, 405


def presence_classify(*, own: int | None, control: int | None) -> str:
    """From the consumers of the agent's own queue and of its control queue
    (NO_QUEUE: the queue does not exist; None: not read). Pure."""
    if (own or 0) > 0 or (control or 0) > 0:
        return CONNECTED
    if own is None or own == NO_QUEUE:
        return UNKNOWN
    if control is None:
        return UNKNOWN
    return GONE


@dataclass
class BrokerPresence:
    gone: list[str] = field(default_factory=list)
    connected: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    error: str = ""  # why the broker could not say, for some or all of them

    def summary(self) -> str:
        text = f"broker: {len(self.gone)} gone, {len(self.connected)} connected, {len(self.unknown)} unknown"
        return f"{text} ({self.error})" if self.error else text


def agent_presence_check(*, agent_ids: list[str], timeout: float | None = None,
                         url: str | None = None) -> BrokerPresence:
    """Whether each of these agents still holds its connection to the region's
    broker (see the module docstring). Never raises and never takes much longer
    than `timeout` (REAPER_BROKER_CHECK_SECONDS) in all: a broker that does not
    answer leaves the agents not yet read unknown, with the reason in `error`."""
    timeout = settings.REAPER_BROKER_CHECK_SECONDS if timeout is None else timeout
    url = url or settings.CELERY_BROKER_URL
    result = BrokerPresence()
    if not agent_ids:
        return result
    if broker_kind(url) != "amqp":
        result.unknown, result.error = list(agent_ids), "the Redis broker keeps no consumer counts"
        return result
    hosts = dict(Agent.objects.filter(agent_id__in=agent_ids, kind="celery").values_list("agent_id", "hostname"))
    result.unknown = [a for a in agent_ids if a not in hosts]  # HTTP agents hold no broker connection
    todo = [a for a in agent_ids if a in hosts]
    if not todo:
        return result
    deadline = time.monotonic() + timeout
    done = 0
    try:
        with queue_inspector(url, timeout=timeout) as ask:

            def consumers(name: str) -> int:
                try:
                    return ask(name)[1]
                except QueueRefused as exc:
                    if exc.code == NOT_FOUND:
                        return NO_QUEUE
                    if exc.code == RESOURCE_LOCKED:
                        return 1  # an exclusive queue, held by its (live) connection
                    raise

            for agent_id in todo:
                if time.monotonic() > deadline:
                    result.error = f"no answer for {len(todo) - done} of {len(todo)} agents within {timeout:g}s"
                    break
                own = consumers(agent_queue(agent_id))
                control = None
                if own <= 0:  # cordoned (its task consumers cancelled), or gone
                    control = consumers(agent_control_queue(agent_node_name(agent_id, hosts[agent_id])))
                getattr(result, presence_classify(own=own, control=control)).append(agent_id)
                done += 1
    except Exception as exc:  # noqa: BLE001 - whatever the transport raises, the reaper falls back to silence
        result.error = f"broker unavailable ({type(exc).__name__}: {str(exc)[:200]})"
    result.unknown += todo[done:]
    return result
