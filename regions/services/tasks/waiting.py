"""Why a task waits for an agent, and when its wait deadline fails it: the state
a new attempt starts in (submission, a retry), and the reason the sweeper writes
when a queued task stalls."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone as dt_timezone

from django.conf import settings
from django.utils import timezone

from project.dbbackends import json_list_has
from regions.models import Agent, Task
from regions.services.capabilities import capability_live
from regions.services.config.current import HOT_PATH_CHECK_SECONDS, config_current

NO_AGENT_REASON = "no live agent serves capability {cap}; the task runs when one checks in"
HELD_REASON = ("the agents serving capability {cap} are cordoned or draining ({agents}); the task runs when one is "
               "uncordoned or another checks in")


def initial_status(*, capability: str, target_agent: str) -> tuple[str, str]:
    """The status a new attempt starts in, with its reason: queued, or waiting
    (saying when its deadline fails it)."""
    if target_agent:
        agent = Agent.objects.filter(agent_id=target_agent).only("status", "desired", "capabilities").first()
        if agent is None or agent.status != Agent.Status.ONLINE:
            reason = f"target agent {target_agent} is not online"
        elif capability not in agent.capabilities:
            reason = f"target agent {target_agent} does not serve {capability}"
        else:
            return Task.Status.QUEUED, ""
        return Task.Status.WAITING, _with_deadline(reason, capability=capability, since=timezone.now())
    if capability_live(capability):
        return Task.Status.QUEUED, ""
    return Task.Status.WAITING, waiting_reason(capability, since=timezone.now())


def wait_deadline(capability: str, config=None) -> int:
    """Seconds a task of `capability` may wait for an agent: the configuration's
    tasks.<capability>.wait_deadline, else settings.TASK_WAIT_DEADLINE."""
    config = config or config_current(max_age=HOT_PATH_CHECK_SECONDS)
    return int(config.task_definition(capability).get("wait_deadline") or settings.TASK_WAIT_DEADLINE)


def _with_deadline(reason: str, *, capability: str, since: datetime | None) -> str:
    """The waiting reason and when the deadline fails the task: the time, when the
    wait starts now (submit, retry); its length otherwise (a queued task that
    stalls: its wait counts from when its attempt was sent)."""
    seconds = wait_deadline(capability)
    if since is not None:
        at = (since + timedelta(seconds=seconds)).astimezone(dt_timezone.utc)
        note = f"; it fails (no_agent) at {at:%Y-%m-%dT%H:%M:%SZ} if still waiting"
    else:
        note = f"; it fails (no_agent) {seconds} s after it was sent if still waiting"
    return reason[:255 - len(note)] + note


def waiting_reason(capability: str, *, since: datetime | None = None) -> str:
    """Why nobody takes a task of `capability`: no agent online serves it, or
    those online are held by the operator (cordoned or draining); and when the
    wait deadline fails it."""
    online_held = Agent.objects.filter(status=Agent.Status.ONLINE).exclude(desired=Agent.Desired.ACTIVE)
    held = list(online_held.filter(json_list_has("capabilities", capability)).values_list("agent_id", flat=True)[:4])
    if held:
        names = ", ".join(held[:3]) + (", …" if len(held) > 3 else "")
        return _with_deadline(HELD_REASON.format(cap=capability, agents=names), capability=capability, since=since)
    return _with_deadline(NO_AGENT_REASON.format(cap=capability), capability=capability, since=since)
