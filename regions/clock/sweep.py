"""The sweeper's tick (regions.task_sweep): each task job of the clock in turn."""
from __future__ import annotations

from django.utils import timezone

from regions.clock.held import release_held_tasks
from regions.clock.lost_in_flight import resend_lost_in_flight
from regions.clock.overdue import fail_overdue_running
from regions.clock.stopped_agents import requeue_tasks_of_stopped_agents
from regions.clock.unsent import send_unsent
from regions.clock.wait_deadline import fail_waiting_past_deadline
from regions.clock.workflows import advance_stalled_workflows, cancel_tasks_of_cancelled_workflows
from regions.clock.waiting import stall_queued, wake_waiting
from regions.services.capabilities import live_capabilities


def task_sweep(*, now=None, batch: int = 500) -> dict:
    """Re-send what the broker never got, start due retries, send held tasks
    whose turn has come, keep 'waiting' honest (and fail what waited past its
    deadline), re-send the same attempt when it was lost in flight (never
    claimed), fail attempts overdue, and requeue what stopped agents still ran
    (attempt + 1); bring workflows a lost transition left behind up to date."""
    now = now or timezone.now()
    sent = send_unsent(now=now, batch=batch)
    released = release_held_tasks(batch=batch)
    live = live_capabilities()
    woke = wake_waiting(live=live)
    stalled = stall_queued(live=live, batch=batch)
    no_agent = fail_waiting_past_deadline(now=now, batch=batch, live=live)
    resent = resend_lost_in_flight(now=now, batch=batch)
    overdue = fail_overdue_running(now=now, batch=batch)
    orphaned = requeue_tasks_of_stopped_agents(now=now)
    workflows = advance_stalled_workflows(now=now, batch=batch)
    workflow_cancels = cancel_tasks_of_cancelled_workflows(batch=batch)
    return {"sent": sent, "released": released, "woke": woke, "stalled": stalled, "no_agent": no_agent,
            "resent": resent, "overdue": overdue, "orphaned": orphaned, "workflows": workflows,
            "workflow_cancels": workflow_cancels}
