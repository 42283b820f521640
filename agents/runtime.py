"""The agent side of a Celery worker: identity, task reports, heartbeats, desired state.

run_agent fills IDENTITY before the worker starts; prefork children inherit it.
The heartbeat thread runs in the worker's main process from worker_ready until
worker_shutdown, so a draining agent keeps beating while it finishes its work
and deregisters only once the pool is empty.
"""
from __future__ import annotations

import json
import logging
import os
import queue
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests
from django.conf import settings
from billiard.exceptions import WorkerLostError
from celery import signals
from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
from celery.worker import state as worker_state

from agents import state
from agents.client import RegionClient, RegionRefused
from project.celery import app
from wire import deadletter
from wire.protocol import EXECUTE_TASK, REPORT_TASK, REPORTS_QUEUE
from wire.signing import report_signature

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


def identity() -> Identity:
    if IDENTITY is None:
        raise RuntimeError("agent identity not set: start agents with manage.py run_agent")
    return IDENTITY


class RegionUnanswered(Exception):
    """The region (or router) did not answer within the patience given."""


URL_UNUSABLE = (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema, requests.exceptions.InvalidSchema)


def retrying(call, patience: float, what: str, *, also: tuple[int, ...] = (), first_delay: float = 0.2,
             max_delay: float = 5.0, say=logger.warning):
    """Call the region (or router) until it answers: 4xx other than 429 (and the
    statuses in `also`) are answers too, raised as RegionRefused. Past `patience`
    seconds, RegionUnanswered. A soft time limit firing meanwhile does not abandon
    the call: the hard limit leaves REPORT_ALLOWANCE_SECONDS for exactly this."""
    deadline = time.monotonic() + patience
    delay = first_delay
    while True:
        try:
            return call()
        except RegionRefused as exc:
            if exc.status not in (429, 503, *also):
                raise
            problem = f"{exc.status} {exc.detail}"
        except URL_UNUSABLE:
            raise  # no retry makes a malformed URL work
        except requests.RequestException as exc:
            problem = f"unreachable ({exc.__class__.__name__}: {str(exc)[:200]})"
        except SoftTimeLimitExceeded:
            problem = "the task's time limit passed while asking"
        if time.monotonic() + delay > deadline:
            raise RegionUnanswered(f"{what}: no answer within {patience:g}s (last: {problem})")
        say("%s: %s; retrying in %.1fs" % (what, problem, delay))
        try:
            time.sleep(delay)
        except SoftTimeLimitExceeded:
            pass
        delay = min(delay * 2, max_delay)


_CLIENTS: dict[tuple[int, int, str], RegionClient] = {}


def region_client(url: str) -> RegionClient:
    """One client (one kept-alive connection) per process and thread: a claim and
    a report per task would otherwise each open a new TCP connection. Keyed by
    pid too: a forked pool child never shares its parent's socket."""
    key = (os.getpid(), threading.get_ident(), url)
    client = _CLIENTS.get(key)
    if client is None:
        client = _CLIENTS[key] = RegionClient(url)
    return client


def claim(*, task_id: str, attempt: int, claim_id: str) -> dict | None:
    """Ask the region, synchronously, whether this attempt may run here. Returns
    the grant (with any secrets), or None when the attempt is not current
    (superseded, already running elsewhere, finished, cancelled) or this agent's
    credential no longer holds. Raises RegionUnanswered when the region is
    unreachable for AGENT_CLAIM_PATIENCE_SECONDS."""
    ident = identity()
    client = region_client(ident.region_url)
    try:
        return retrying(lambda: client.claim(agent_id=ident.agent_id, token=ident.token, task_id=task_id,
                                             attempt=attempt, claim_id=claim_id),
                        settings.AGENT_CLAIM_PATIENCE_SECONDS, f"claim {task_id}:{attempt}")
    except RegionRefused as exc:
        logger.warning("skipping task %s attempt %s: %s (%s)", task_id, attempt, exc.detail, exc.status,
                       extra={"agent": ident.agent_id, "task": str(task_id)})
        return None


def report_outcome(kind: str, *, task_id: str, attempt: int, body: dict, kept: Path | None = None) -> None:
    """Tell the region how the attempt ended: over HTTP, or over the broker when
    the region's web does not answer (the orchestrator's collector takes it).

    The outcome is in the agent's local outbox first (`kept`, or written here)
    and removed once delivered: an agent killed between its handler's end and
    the region's answer delivers it when it starts again, before it re-registers
    (and if the reaper requeued the attempt meanwhile, the region keeps the
    result while the next attempt is unclaimed): a finished attempt is not run a
    second time because a report was lost with a process."""
    ident = identity()
    spooled = kept or state.outbox_put(ident.agent_id, kind=kind, task_id=task_id, attempt=attempt, body=body)
    if _deliver(region_client(ident.region_url), ident.agent_id, ident.token, kind, task_id, attempt, body,
                settings.AGENT_REPORT_PATIENCE_SECONDS):
        spooled.unlink(missing_ok=True)
        return
    logger.warning("sending the %s of task %s attempt %s over the broker", kind, task_id, attempt)
    try:
        report(kind, task_id=task_id, attempt=attempt, body=body)
    except Exception as exc:  # the broker is away too: the outbox keeps it, the heartbeat thread retries
        logger.error("could not send %s of task %s attempt %s over the broker either (%s); kept in the outbox",
                     kind, task_id, attempt, exc)
        return
    spooled.unlink(missing_ok=True)


# Answers after which an outcome is settled: the attempt is not this agent's (any
# more), or the credential is gone. Anything else (400, 413, 5xx, no answer)
# keeps it: it goes over the broker and stays in the outbox until delivered.
FINAL_REFUSALS = (401, 403, 404, 409)


def _deliver(client: RegionClient, agent_id: str, token: str, kind: str, task_id: str, attempt: int, body: dict,
             patience: float) -> bool:
    """True once the region settled it (recorded, or refused for good); False if
    it could not take it (unreachable, or refused the request itself)."""
    try:
        answer = retrying(lambda: client.report(agent_id=agent_id, token=token, kind=kind, task_id=task_id,
                                                attempt=attempt, body=body),
                          patience, f"report {task_id}:{attempt}")
    except RegionRefused as exc:
        if exc.status in FINAL_REFUSALS:
            logger.warning("region refused %s of task %s attempt %s: %s %s", kind, task_id, attempt, exc.status,
                           exc.detail)
            return True
        logger.error("region could not take %s of task %s attempt %s: %s %s", kind, task_id, attempt, exc.status,
                     exc.detail)
        return False
    except RegionUnanswered as exc:
        logger.warning("%s", exc)
        return False
    if not answer.get("recorded"):
        logger.warning("region did not record %s of task %s attempt %s (superseded)", kind, task_id, attempt)
    return True


def outbox_flush(agent_id: str, *, region_url: str | None = None, token: str | None = None,
                 min_age: float = 0.0) -> int:
    """Deliver outcomes left undelivered (by a previous run of this agent, or by a
    report that found neither the region nor the broker), with the credential
    saved (before re-registering rotates it) or the one given. Entries younger
    than min_age may still be in the hands of the process that wrote them."""
    pending = state.outbox_pending(agent_id, min_age=min_age)
    if not pending:
        return 0
    if token is None:
        saved = state.credential_saved(agent_id)
        if saved is None:
            return 0
        region_url, token = saved
    client = RegionClient(region_url)
    delivered = 0
    for path in pending:
        try:
            item = json.loads(path.read_text())
            done = _deliver(client, agent_id, token, item["kind"], item["task_id"], int(item["attempt"]),
                            item["body"], patience=5.0)
        except (OSError, ValueError, KeyError, TypeError):
            done = True  # unreadable: nothing to deliver
        if done:
            path.unlink(missing_ok=True)
            delivered += 1
    logger.warning("agent %s delivered %d of %d outcome(s) left undelivered", agent_id, delivered, len(pending))
    return delivered


def report(kind: str, *, task_id: str, attempt: int, body: dict) -> None:
    """Send a signed report to the region's collector over the broker."""
    ident = identity()
    sig = report_signature(key=ident.report_key, kind=kind, task_id=task_id, attempt=attempt, body=body)
    app.send_task(
        REPORT_TASK, queue=REPORTS_QUEUE,
        kwargs={"agent_id": ident.agent_id, "kind": kind, "task_id": task_id, "attempt": attempt,
                "body": body, "sig": sig},
        retry=True, retry_policy={"max_retries": 30, "interval_start": 0.2, "interval_step": 0.5,
                                  "interval_max": 5},
    )


def _set_consuming(ident: Identity, consuming: bool) -> None:
    if ident.consuming == consuming:
        return
    for name in ident.queues:
        if consuming:
            app.control.add_consumer(name, destination=[ident.hostname])
        else:
            app.control.cancel_consumer(name, destination=[ident.hostname])
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
            _drain_outbox(ident)
            try:
                apply_desired(ident, reply.get("desired", "active"), busy)
            except Exception:  # a broker hiccup must not kill the heartbeat
                logger.exception("could not apply desired state")
        ident.stop.wait(ident.interval)


@signals.task_failure.connect
def _report_lost_attempt(sender=None, task_id=None, exception=None, kwargs=None, **_) -> None:
    """In the worker's main process: the pool process running an attempt died
    (killed, out of memory, a message that crashes the interpreter) or hit its
    hard time limit. The message is acked, not requeued (a message that kills
    its consumer must not loop); the region hears of it and retries the task as
    a new attempt while attempts remain."""
    if getattr(sender, "name", None) != EXECUTE_TASK or not isinstance(exception, (WorkerLostError,
                                                                                  TimeLimitExceeded)):
        return
    kwargs = kwargs or {}
    try:
        tid, attempt = str(kwargs["task_id"]), int(kwargs["attempt"])
    except (KeyError, TypeError, ValueError):
        logger.error("lost an execution of unreadable message %s: %r", task_id, exception)
        return
    what = "hit its hard time limit" if isinstance(exception, TimeLimitExceeded) else "died"
    kind, body = "failure", {"error": f"the agent's worker process {what} while running it ({exception})",
                             "retryable": True}
    spooled = state.outbox_get(identity().agent_id, task_id=tid, attempt=attempt)
    if spooled is not None:  # it finished and died reporting: the real outcome goes
        kind, body = spooled["kind"], spooled["body"]
    logger.error("task %s attempt %s: worker process %s (%s); reporting %s", tid, attempt, what, exception, kind)
    threading.Thread(target=_report_safely, args=(kind, tid, attempt, body), daemon=True,
                     name="meridian-lost-report").start()


def _report_safely(kind: str, task_id: str, attempt: int, body: dict) -> None:
    try:
        report_outcome(kind, task_id=task_id, attempt=attempt, body=body)
    except Exception:
        logger.exception("could not report %s of task %s attempt %s", kind, task_id, attempt)


def _drain_outbox(ident: Identity) -> None:
    try:
        outbox_flush(ident.agent_id, region_url=ident.region_url, token=ident.token,
                     min_age=2 * settings.AGENT_REPORT_PATIENCE_SECONDS + 10)
    except Exception:  # never let the outbox stop the heartbeats
        logger.exception("could not drain the outbox")


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


# --- dead letters: a message this agent dropped is reported to its region -----

_DEAD_LETTERS: "queue.Queue | None" = None
_DEAD_LETTER_PID = 0


def _dead_letter_to_region(letter) -> None:
    """Queued for one sender thread per process, so the consumer that dropped the
    message is not held by the region's answer; beyond 256 waiting, only logged."""
    global _DEAD_LETTERS, _DEAD_LETTER_PID
    if IDENTITY is None:
        return
    if _DEAD_LETTER_PID != os.getpid():  # first use in this (perhaps forked) process
        _DEAD_LETTERS, _DEAD_LETTER_PID = queue.Queue(maxsize=256), os.getpid()
        threading.Thread(target=_dead_letter_sender, args=(_DEAD_LETTERS,), name="meridian-dead-letters",
                         daemon=True).start()
    try:
        _DEAD_LETTERS.put_nowait(letter)
    except queue.Full:
        logger.warning("dead letter not reported to the region: 256 already waiting")


def _dead_letter_sender(pending: "queue.Queue") -> None:
    while True:
        letter = pending.get()
        ident = IDENTITY
        try:
            RegionClient(ident.region_url, timeout=3.0).dead_letter(agent_id=ident.agent_id, token=ident.token,
                                                                   letter=letter.as_dict())
        except Exception as exc:  # noqa: BLE001 - the log line is already written
            logger.warning("could not report a dead letter to the region: %s", exc)


def dead_letters_to_region() -> None:
    """run_agent: what this agent's consumers drop is reported to its region."""
    deadletter.set_sink(_dead_letter_to_region)
