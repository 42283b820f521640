"""Garbage on every queue, put there directly, with the region's real workers
consuming: the orchestrator (reports, control) and an agent (its capability
queue and its own). Each message is dropped as a dead letter the operator can
see, no worker process dies or restarts, and the next real task runs."""
from __future__ import annotations

import bz2
import json
import os
import subprocess
import sys
import uuid

import pytest
from kombu import Connection

from project.celery import app
from tests import harness
from tests.accounting import record
from tests.harness import wait_for
from wire.protocol import EXECUTE_TASK, REPORT_TASK, REPORTS_QUEUE, agent_queue, capability_queue

pytestmark = pytest.mark.faults

MESSAGE_LIMIT = 1024 * 1024  # the region's BROKER_MESSAGE_MAX_BYTES here: "huge" is twice it
AGENT = "poison-1"


@pytest.fixture(scope="module")
def poisoned(region_template):
    region = harness.Region(region_template, BROKER_MESSAGE_MAX_BYTES=str(MESSAGE_LIMIT)).start()
    agent = region.agent("echo", agent_id=AGENT)
    # The queues exist and are consumed: one honest task went through.
    region.wait_task(region.submit("echo", {"warm": 1})["id"])
    yield region, agent
    region.stop()


def _raw_cases(task: str) -> dict[str, tuple[bytes, str, dict]]:
    """name -> (body, content type, headers): messages no producer of ours makes."""
    def headers(name=task):
        return {"task": name, "id": f"poison-{uuid.uuid4().hex[:8]}", "lang": "py"}

    deep = b"[" * 900 + b"]" * 900
    deep_header: dict = {"a": 1}
    for _ in range(3000):
        deep_header = {"a": deep_header}
    return {
        "header nested 3,000 deep": (b'[["x"], {}, {}]', "application/json", {**headers(), "deep": deep_header}),
        "bz2 bomb (20 MB of zeros)": (bz2.compress(b"0" * 20_000_000), "application/json",
                                      {**headers(), "compression": "application/x-bz2"}),
        "undecodable bytes": (b"\xff\xfe\x00garbage", "application/json", headers()),
        "truncated JSON": (b'[[], {"task_id": "ab', "application/json", headers()),
        "nested 900 deep": (b'[[], {"task_id": ' + deep + b'}, {}]', "application/json", headers()),
        "huge body": (b'[[], {"x": "' + b"a" * (2 * MESSAGE_LIMIT) + b'"}, {}]', "application/json", headers()),
        "pickle": (b"\x80\x04K\x01.", "application/x-python-serialize", headers()),
        "no task header": (b"[[], {}, {}]", "application/json", {}),
        "unknown task": (b"[[], {}, {}]", "application/json", headers("os.system")),
        "body not a list": (b'{"a": 1}', "application/json", headers()),
        "body null": (b"null", "application/json", headers()),
    }


def _celery_cases(queue: str, task: str) -> list[tuple[str, tuple, dict]]:
    """Well-formed Celery messages that are not ours: (name, args, kwargs)."""
    if task == EXECUTE_TASK:
        return [("positional args", (1, 2), {}),
                ("wrong types", (), {"task_id": 123, "attempt": "x", "payload": {"a": 1}})]
    if task == REPORT_TASK:
        body = {"result": {"forged": True}}
        return [("positional args", (1, 2), {}),
                ("wrong signature", (), {"agent_id": AGENT, "kind": "success", "task_id": str(uuid.uuid4()),
                                         "attempt": 1, "body": body, "sig": "0" * 64}),
                ("unknown agent", (), {"agent_id": "nobody", "kind": "success", "task_id": str(uuid.uuid4()),
                                       "attempt": 1, "body": body, "sig": "0" * 64})]
    return [("clock job with arguments", ("junk",), {"extra": [1]})]


def test_garbage_on_every_queue_is_dead_lettered_and_no_worker_dies(poisoned):
    region, agent = poisoned
    pids = {"orchestrator": region.orchestrator.pid, "agent": agent.pid}
    targets = [(REPORTS_QUEUE, REPORT_TASK), ("meridian.control", "regions.agent_reap"),
               (capability_queue("echo"), EXECUTE_TASK), (agent_queue(AGENT), EXECUTE_TASK)]
    sent: dict[str, list[str]] = {}
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(20_000)  # py-amqp writes header tables recursively: the deep header needs it here
    with Connection(region.vhost.url()) as conn:
        producer = conn.Producer()

        def publish(body: bytes, ctype: str, headers: dict) -> None:
            producer.publish(body, routing_key=queue, exchange="", content_type=ctype,
                             content_encoding="binary" if ctype != "application/json" else "utf-8",
                             headers=headers, serializer=None, retry=True)

        for queue, task in targets:
            for name, (body, ctype, headers) in _raw_cases(task).items():
                publish(body, ctype, headers)
                sent.setdefault(queue, []).append(name)
            for name, args, kwargs in _celery_cases(queue, task):
                message = app.amqp.as_task_v2(f"poison-{uuid.uuid4().hex[:8]}", task, args=args, kwargs=kwargs)
                publish(json.dumps(message.body).encode(), "application/json", message.headers)
                sent.setdefault(queue, []).append(name)
    sys.setrecursionlimit(limit)

    queues = [q for q, _ in targets]
    wait_for(lambda: all(region.vhost.queue_depths().get(q, 0) == 0 for q in queues), 60,
             what="every queue drained")

    def letters() -> dict[str, int]:
        rows = region.db_query("SELECT queue, count(*) FROM regions_deadletter GROUP BY queue")
        return dict(rows)

    try:
        wait_for(lambda: all(letters().get(q, 0) >= len(sent[q]) for q in queues), 30,
                 what="a dead letter for every message")
    except AssertionError:
        rows = region.db_query("SELECT queue, source, task_name, reason FROM regions_deadletter ORDER BY id")
        orchestrator = region.orchestrator.log.read_text(errors="replace")
        raise AssertionError(f"sent {json.dumps(sent)}\nrecorded:\n" + "\n".join(map(str, rows)) +
                             "\norchestrator:\n" + "\n".join(
                                 line for line in orchestrator.splitlines()
                                 if "Scheduler" not in line and "regions.agent_reap" not in line and
                                 "regions.liveness_flush" not in line and "regions.task_sweep" not in line)[-8000:]
                             ) from None

    assert region.orchestrator.alive() and agent.alive()
    assert {"orchestrator": region.orchestrator.pid, "agent": agent.pid} == pids
    for proc in (region.orchestrator, agent):
        log = proc.log.read_text(errors="replace")
        assert "Unrecoverable error" not in log and "Restarting" not in log, proc.tail(80)
    sources = {s for (s,) in region.db_query("SELECT DISTINCT source FROM regions_deadletter")}
    assert sources == {"orchestrator", f"agent:{AGENT}"}

    # Still consuming: an honest task runs end to end.
    task = region.submit("echo", {"after": "garbage"})
    assert region.wait_task(task["id"])["result"]["echo"] == {"after": "garbage"}
    # Remote control is no way in either: a broadcast telling the orchestrator to
    # stop consuming reports (what any agent could send) is not even received.
    def consumers(queue: str) -> int:
        out = harness.rabbitmqctl("list_queues", "-p", region.vhost.name, "name", "consumers", "--no-table-headers")
        return dict((n, int(c)) for n, c in (line.split() for line in out.splitlines() if line.strip()))[queue]

    broadcast = ("import sys; from celery import Celery; "
                 "print(Celery(broker=sys.argv[1]).control.cancel_consumer(sys.argv[2], reply=True, timeout=2))")
    plain_env = {k: v for k, v in os.environ.items() if not k.startswith(("CELERY", "DJANGO"))}
    answer = subprocess.run([sys.executable, "-c", broadcast, region.vhost.url(), REPORTS_QUEUE], env=plain_env,
                            capture_output=True, text=True, timeout=60)
    assert answer.returncode == 0 and "orchestrator@" not in answer.stdout, answer
    harness.holds_for(lambda: consumers(REPORTS_QUEUE) == 1, seconds=3, what="the orchestrator still consuming reports")
    total = sum(len(v) for v in sent.values())
    record(f"POISON {total} garbage messages on {len(queues)} queues: {total} dead letters, "
                     "0 worker exits, next task succeeded")
