"""Celery's own monitoring sees the agents: a real event receiver (what Flower and
`celery events` run) on a real region's broker, next to a real agent."""
import json
import os
import subprocess
import sys
import threading

import pytest
from celery import Celery
from kombu import Connection

from tests.harness import wait_for
from wire.broker import BROKER_ENV_OVERRIDES
from wire.protocol import EXECUTE_TASK, capability_queue

pytestmark = pytest.mark.integration


class EventLog:
    """Celery's EventReceiver on the region's broker, in a thread, keeping every
    event it gets (what `celery -b <url> events --dump` prints)."""

    def __init__(self, broker_url: str):
        # The URL goes to the connection: Celery's broker= yields to $CELERY_BROKER_URL.
        self.app = Celery("events-test")
        self.broker_url = broker_url
        self.events: list[dict] = []
        self.receiver = None
        self.thread = threading.Thread(target=self._run, name="event-receiver", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        with Connection(self.broker_url) as conn:
            self.receiver = self.app.events.Receiver(conn, handlers={"*": self.events.append})
            self.receiver.capture(limit=None, timeout=None, wakeup=False)

    def of(self, kind: str, **fields) -> list[dict]:
        return [e for e in list(self.events)
                if e["type"] == kind and all(e.get(k) == v for k, v in fields.items())]

    def close(self) -> None:
        if self.receiver is not None:
            self.receiver.should_stop = True
        self.thread.join(10)
        self.app.close()


@pytest.fixture
def event_log(region):
    log = EventLog(region.env["CELERY_BROKER_URL"])
    yield log
    log.close()


def agent_with(region, agents, capability: str, **env):
    """An agent started with these settings in its environment (the region's other
    processes keep theirs), stopped at the end of the test."""
    saved = dict(region.env)
    region.env.update(env)
    try:
        return agents(capability)
    finally:
        region.env.clear()
        region.env.update(saved)


def _celery_task_id(events: EventLog, region_task_id: str) -> str:
    """The Celery message id of a Meridian task (its kwargs name the task's id)."""
    received = wait_for(lambda: [e for e in events.of("task-received") if region_task_id in e.get("kwargs", "")],
                        60, what=f"task-received of {region_task_id}")
    return received[0]["uuid"]


def test_a_real_event_receiver_sees_the_agent_heartbeat_and_a_task_received_started_succeeded(
        region, agents, event_log):
    agent = agent_with(region, agents, "echo", AGENT_TASK_EVENTS="1")  # as `make demo` starts them
    hostname = wait_for(lambda: next((e["hostname"] for e in event_log.of("worker-heartbeat")
                                      if e["hostname"].startswith(f"{agent.agent_id}@")), None),
                        60, what="a worker-heartbeat of the agent")
    beat = event_log.of("worker-heartbeat", hostname=hostname)[-1]
    assert beat["freq"] > 0  # Flower's online/offline is judged against it

    task = region.submit("echo", {"hello": "events"})
    region.wait_task(task["id"], timeout=60)
    uuid = _celery_task_id(event_log, task["id"])
    wait_for(lambda: event_log.of("task-succeeded", uuid=uuid), 60, what="task-succeeded")
    kinds = [e["type"] for e in event_log.events if e.get("uuid") == uuid]
    assert kinds == ["task-received", "task-started", "task-succeeded"], kinds
    received = event_log.of("task-received", uuid=uuid)[0]
    assert received["name"] == EXECUTE_TASK and received["hostname"] == hostname
    # and an operator can still turn them off (Celery cannot in a worker started with -E)
    out = _celery_cli(region.env["CELERY_BROKER_URL"], "control", "disable_events", "-d", hostname, "-j", "-t", "5")
    assert json.loads(out.stdout) == [{hostname: {"ok": "task events disabled"}}], out.stdout + out.stderr


def test_a_failed_attempt_is_a_task_failed_event_acked_once_without_a_traceback(region, agents, event_log):
    agent = agent_with(region, agents, "fail", AGENT_TASK_EVENTS="1")
    task = region.submit("fail", {"message": "no good", "permanent": True}, max_attempts=3)
    done = region.wait_task(task["id"], statuses=("failed",), timeout=60)
    assert done["attempt"] == 1 and "no good" in done["error"]
    uuid = _celery_task_id(event_log, task["id"])
    failed = wait_for(lambda: event_log.of("task-failed", uuid=uuid), 60, what="task-failed")[0]
    assert "AttemptFailed" in failed["exception"] and "no good" in failed["exception"]
    assert not event_log.of("task-succeeded", uuid=uuid)
    # acked, not requeued: nothing left on the capability's queue, no second delivery
    wait_for(lambda: region.vhost.queue_depths().get(capability_queue("fail"), 0) == 0, 30,
             what="the fail queue empty")
    assert len(event_log.of("task-received", uuid=uuid)) == 1
    # Celery logged it as an expected error (one line), not with a traceback, and
    # the lost-attempt hook did not report it a second time.
    log = agent.log.read_text(errors="replace")
    assert "raised expected: AttemptFailed" in log and "Traceback" not in log, agent.tail()
    assert "worker process" not in log, agent.tail()


def _celery_cli(broker_url: str, *args: str) -> subprocess.CompletedProcess:
    """The command an operator types: `celery -b <region broker> ...` (no -A: any
    Celery app talks to the agents), with no CELERY_BROKER_URL to override -b."""
    env = {k: v for k, v in os.environ.items() if k not in BROKER_ENV_OVERRIDES and k != "DJANGO_SETTINGS_MODULE"}
    return subprocess.run([sys.executable, "-m", "celery", "-b", broker_url, *args], env=env, cwd="/tmp",
                          capture_output=True, text=True, timeout=120)


def test_celery_control_enable_events_turns_task_events_on_in_an_agent_started_without_them(
        region, agents, event_log):
    """AGENT_TASK_EVENTS off (the default): heartbeats only, until an operator (or
    Flower, which sends it every few seconds) asks for task events."""
    agent = agents("echo")
    url = region.env["CELERY_BROKER_URL"]
    hostname = wait_for(lambda: next((e["hostname"] for e in event_log.of("worker-heartbeat")
                                      if e["hostname"].startswith(f"{agent.agent_id}@")), None),
                        60, what="a worker-heartbeat of the agent")
    quiet = region.submit("echo", {"events": "off"})
    region.wait_task(quiet["id"], timeout=60)

    out = _celery_cli(url, "control", "enable_events", "-d", hostname, "-j", "-t", "5")
    assert out.returncode == 0, out.stdout + out.stderr
    assert json.loads(out.stdout) == [{hostname: {"ok": "task events enabled"}}], out.stdout
    loud = region.submit("echo", {"events": "on"})
    region.wait_task(loud["id"], timeout=60)
    uuid = _celery_task_id(event_log, loud["id"])
    wait_for(lambda: event_log.of("task-succeeded", uuid=uuid), 60, what="task-succeeded after enable_events")
    assert not [e for e in event_log.events if quiet["id"] in e.get("kwargs", "")], "events while off"

    out = _celery_cli(url, "control", "disable_events", "-d", hostname, "-j", "-t", "5")
    assert json.loads(out.stdout) == [{hostname: {"ok": "task events disabled"}}], out.stdout + out.stderr
