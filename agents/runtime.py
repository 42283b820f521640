"""The agent side of a Celery worker: identity, task reports, heartbeats, desired state.

run_agent fills IDENTITY before the worker starts; prefork children inherit it.
The heartbeat thread runs in the worker's main process from worker_ready until
worker_shutdown, so a draining agent keeps beating while it finishes its work
and deregisters only once the pool is empty.
"""
from __future__ import annotations

import logging
import os
import signal
import threading
from dataclasses import dataclass, field

import requests
from celery import signals
from celery.worker import state as worker_state

from agents.client import RegionClient, RegionRefused
from project.celery import REPORTS_QUEUE, app
from regions.services.reports import report_signature

logger = logging.getLogger("meridian.agent")


@dataclass
class Identity:
    agent_id: str
    token: str
    report_key: str
    region_url: str
    queues: list[str]
    interval: float
    hostname: str = ""
    desired: str = "active"
    consuming: bool = True
    stop: threading.Event = field(default_factory=threading.Event)


IDENTITY: Identity | None = None


def report(kind: str, *, task_id: str, attempt: int, body: dict) -> None:
    """Send a signed report to the region's collector over the broker."""
    ident = IDENTITY
    if ident is None:
        raise RuntimeError("agent identity not set: start agents with manage.py run_agent")
    sig = report_signature(key=ident.report_key, kind=kind, task_id=task_id, attempt=attempt, body=body)
    app.send_task(
        "regions.report", queue=REPORTS_QUEUE,
        kwargs={"agent_id": ident.agent_id, "kind": kind, "task_id": task_id, "attempt": attempt,
                "body": body, "sig": sig},
        retry=True, retry_policy={"max_retries": 30, "interval_start": 0.2, "interval_step": 0.5,
                                  "interval_max": 5},
    )


def _set_consuming(ident: Identity, consuming: bool) -> None:
    if ident.consuming == consuming:
        return
    for queue in ident.queues:
        if consuming:
            app.control.add_consumer(queue, destination=[ident.hostname])
        else:
            app.control.cancel_consumer(queue, destination=[ident.hostname])
    ident.consuming = consuming
    logger.warning("agent %s %s taking new tasks", ident.agent_id, "resumed" if consuming else "stopped")


def apply_desired(ident: Identity, desired: str, busy: int) -> None:
    """What the heartbeat reply asks: active, cordoned, draining or stopped."""
    if desired != ident.desired:
        logger.warning("region asks agent %s to be %s", ident.agent_id, desired)
        ident.desired = desired
    if desired == "active":
        _set_consuming(ident, True)
    elif desired in ("cordoned", "draining", "stopped"):
        _set_consuming(ident, False)
    if desired == "stopped" or (desired == "draining" and busy == 0):
        ident.stop.set()
        os.kill(os.getpid(), signal.SIGTERM)  # warm shutdown: current work finishes


def heartbeat_loop(ident: Identity) -> None:
    client = RegionClient(ident.region_url)
    while not ident.stop.is_set():
        busy = len(worker_state.active_requests)
        try:
            reply = client.heartbeat(agent_id=ident.agent_id, token=ident.token, busy=busy)
        except RegionRefused as exc:
            if exc.status != 503:
                logger.error("region refused heartbeat of %s (%s); shutting down", ident.agent_id, exc)
                ident.stop.set()
                os.kill(os.getpid(), signal.SIGTERM)
                return
            logger.warning("region degraded, heartbeat not recorded: %s", exc.detail)
            reply = None
        except requests.RequestException as exc:
            logger.warning("heartbeat failed, region unreachable: %s", exc)
            reply = None
        if reply is not None:
            ident.interval = float(reply.get("interval", ident.interval))
            try:
                apply_desired(ident, reply.get("desired", "active"), busy)
            except Exception:  # a broker hiccup must not kill the heartbeat
                logger.exception("could not apply desired state")
        ident.stop.wait(ident.interval)


@signals.worker_ready.connect
def _start_heartbeats(sender=None, **kwargs) -> None:
    if IDENTITY is None:
        return
    IDENTITY.hostname = sender.hostname
    threading.Thread(target=heartbeat_loop, args=(IDENTITY,), name="meridian-heartbeat", daemon=True).start()


@signals.worker_shutdown.connect
def _deregister(sender=None, **kwargs) -> None:
    ident = IDENTITY
    if ident is None:
        return
    ident.stop.set()
    try:
        RegionClient(ident.region_url).deregister(agent_id=ident.agent_id, token=ident.token)
        logger.warning("agent %s deregistered", ident.agent_id)
    except Exception as exc:
        logger.warning("could not deregister %s (the reaper will mark it offline): %s", ident.agent_id, exc)
