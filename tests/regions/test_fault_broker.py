"""Fault matrix, broker: the region's RabbitMQ goes away under load and comes
back, with and without its data. The broker is reached through a TCP proxy that
cuts every connection at once (the machine's RabbitMQ is never touched); "without
its data" deletes and re-creates the region's vhost while it is cut, so every
queued message is gone. Nothing accepted may be lost, no worker may exit, no
handler may complete twice."""
from __future__ import annotations

import os
import threading
import time

import pytest

from tests.accounting import Ledger, figures, record
from tests.faults import TcpProxy
from tests.harness import RabbitVhost, wait_for

pytestmark = pytest.mark.faults

# Two outages (with its data, without) in CI; more with MERIDIAN_FAULT_REPETITIONS.
REPETITIONS = int(os.environ.get("MERIDIAN_FAULT_REPETITIONS", "2"))
OUTAGE_SECONDS = float(os.environ.get("MERIDIAN_BROKER_OUTAGE_SECONDS", "20"))
TERMINAL = ("succeeded", "failed", "cancelled")


def _statuses(region, ids):
    rows = region.db_query("SELECT id::text, status, attempt FROM regions_task WHERE id::text = ANY(%s)", (ids,))
    return {r[0]: (r[1], r[2]) for r in rows}


def test_broker_down_under_load_with_and_without_its_data(fresh_region):
    vhost = RabbitVhost(f"meridian-test-brokerfault-{os.getpid()}")
    proxy = TcpProxy(RabbitVhost.HOST, RabbitVhost.PORT)
    try:
        region = fresh_region(CELERY_BROKER_URL=vhost.url(proxy.port), TASK_UNCLAIMED_RESEND_AFTER="8",
                              HEARTBEAT_INTERVAL="1", HEARTBEAT_TTL="6", REAPER_INTERVAL="1")
        agents = [region.agent("sleep", agent_id=f"bk-{i}", concurrency=2) for i in range(2)]
        workers = [region.orchestrator, *agents]
        ids: list[str] = []
        submit_errors = []
        stop = threading.Event()

        def load():
            i = 0
            while not stop.is_set():
                r = region.call("POST", "/api/v1/tasks", json={"capability": "sleep", "payload": {"seconds": 0.05},
                                                               "max_attempts": 10, "idempotency_key": f"bk-{i}"})
                if r.status_code in (200, 201):
                    ids.append(r.json()["id"])
                else:
                    submit_errors.append(r.status_code)
                i += 1
                stop.wait(0.05)

        loader = threading.Thread(target=load)
        loader.start()
        try:
            for rep in range(REPETITIONS):
                keep_data = rep % 2 == 0
                wait_for(lambda: len(ids) >= 20 * (rep + 1), 30, what="load before the outage")
                proxy.cut()
                cut_at = time.monotonic()
                if not keep_data:
                    vhost.delete()
                    vhost.create()
                time.sleep(OUTAGE_SECONDS)  # the outage itself: its length is the scenario
                proxy.restore()
                restored = time.monotonic()
                before = list(ids)
                wait_for(lambda: all(s in TERMINAL for s, _ in _statuses(region, before).values()), 120,
                         interval=0.5, what=f"tasks accepted before restore #{rep + 1} to finish")
                record(f"FAULT broker outage #{rep + 1} ({'with' if keep_data else 'without'} its data): "
                      f"{restored - cut_at:.0f}s down, all {len(before)} earlier tasks done "
                      f"{time.monotonic() - restored:.1f}s after it returned")
        finally:
            stop.set()
            loader.join()
        final = wait_for(lambda: (s := _statuses(region, ids)) and all(v[0] in TERMINAL for v in s.values()) and s,
                         120, interval=0.5, what="every task to finish")
        exited = [p.name for p in workers if not p.alive()]
        unrecoverable = [p.name for p in workers if "Unrecoverable error" in p.log.read_text(errors="replace")]
        ledger = Ledger.from_logs({p.log for p in agents})
        succeeded = sum(1 for s, _ in final.values() if s == "succeeded")
        twice = ledger.completed_twice()
        stale = ledger.stale_starts({t: a for t, (_, a) in final.items()})
        figures(scenario=f"broker down {OUTAGE_SECONDS:g}s x{REPETITIONS} (with/without data)", submitted=len(ids),
                succeeded=succeeded, completed_twice=len(twice), stale=len(stale),
                crashes=len(set(exited) | set(unrecoverable)))
        assert not exited and not unrecoverable, region.logs()
        # A restart pages nobody: an ack that lost its channel is a WARNING (the test below).
        paged = [line for p in workers for line in p.log.read_text(errors="replace").splitlines()
                 if "CRITICAL/" in line]
        assert not paged, paged
        assert not submit_errors, submit_errors  # the API accepts while the broker is away (outbox)
        assert succeeded == len(ids), {t: v for t, v in final.items() if v[0] != "succeeded"}
        assert not twice and not stale
    finally:
        proxy.close()
        vhost.delete()



ACK_WARNING = "could not ack message"


def test_an_ack_on_a_closed_broker_connection_is_one_warning_not_a_critical(fresh_region):
    """A task that finishes while the broker is away is acked once the consumer
    is back, on the channel that closed: kombu logs that at CRITICAL with a
    traceback, paging someone for nothing. Meridian logs it once at WARNING with
    what happens next (the broker delivers the message again; the region's claim
    refuses the finished attempt), and that is what happens."""
    vhost = RabbitVhost(f"meridian-test-ackwarning-{os.getpid()}")
    proxy = TcpProxy(RabbitVhost.HOST, RabbitVhost.PORT)
    try:
        region = fresh_region(CELERY_BROKER_URL=vhost.url(proxy.port))
        agent = region.agent("sleep", agent_id="ack-1")
        task = region.submit("sleep", {"seconds": 2})
        region.wait_task(task["id"], statuses=("running",))
        proxy.cut()
        region.wait_task(task["id"])  # finished and reported over HTTP; its ack waits for the consumer
        proxy.restore()
        log = lambda: agent.log.read_text(errors="replace")  # noqa: E731
        wait_for(lambda: "Couldn't ack" in log() or ACK_WARNING in log(), 60, what="the failed ack logged")
        wait_for(lambda: f"skipping task {task['id']}" in log(), 60, what="the message delivered again, refused")
        lines = log().splitlines()
        assert not [line for line in lines if "CRITICAL/" in line or "Couldn't ack" in line], log()
        at = [i for i, line in enumerate(lines) if ACK_WARNING in line]
        assert len(at) == 1 and "WARNING/" in lines[at[0]], log()
        assert at[0] + 1 == len(lines) or lines[at[0] + 1].startswith("["), log()  # no traceback follows
        assert region.task(task["id"])["status"] == "succeeded"
        assert Ledger.from_logs([agent.log]).finishes[task["id"]] == [1]
        assert agent.alive()
    finally:
        proxy.close()
        vhost.delete()
