"""The region's PostgreSQL restarts under load: the API says 503 (JSON, Retry-After)
while it is away, heartbeats keep being accepted, the region recovers by itself,
and nothing accepted is lost. The database is a private server (tests/faults.py),
never the machine's shared one."""
from __future__ import annotations

import re
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

import pytest
import requests

from tests.faults import PrivatePostgres
from tests.accounting import record
from tests.harness import REGISTRATION_TOKEN, wait_for

pytestmark = pytest.mark.faults

OUTAGE_SECONDS = 10


@pytest.fixture
def private_pg():
    pg = PrivatePostgres()
    yield pg
    pg.destroy()


@dataclass
class Answer:
    at: float
    what: str  # "submit", "list" or "heartbeat"
    status: int  # 0: no HTTP answer at all
    body: object = None
    content_type: str = ""
    retry_after: str | None = None
    error: str = ""


@dataclass
class Traffic:
    """Calls made steadily from threads of their own while the fault happens."""

    url: str
    api_key: str
    agent_id: str
    agent_token: str
    answers: list[Answer] = field(default_factory=list)
    accepted: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def _record(self, what: str, response: requests.Response | None, error: str = "") -> Answer:
        answer = Answer(at=time.monotonic(), what=what, status=0, error=error)
        if response is not None:
            answer.status = response.status_code
            answer.content_type = response.headers.get("Content-Type", "")
            answer.retry_after = response.headers.get("Retry-After")
            try:
                answer.body = response.json()
            except ValueError:
                answer.body = response.text[:300]
        with self.lock:
            self.answers.append(answer)
        return answer

    def _call(self, session: requests.Session, what: str, method: str, path: str, token: str, **kwargs):
        try:
            response = session.request(method, f"{self.url}{path}", timeout=10,
                                       headers={"Authorization": f"Bearer {token}"}, **kwargs)
        except requests.RequestException as exc:
            return self._record(what, None, error=repr(exc))
        return self._record(what, response)

    def _submitter(self) -> None:
        session = requests.Session()
        n = 0
        while not self.stop.is_set():
            n += 1
            answer = self._call(session, "submit", "POST", "/api/v1/tasks", self.api_key,
                                json={"capability": "echo", "payload": {"n": n}})
            if answer.status == 201:
                with self.lock:
                    self.accepted.append(answer.body["id"])
            if n % 5 == 0:
                self._call(session, "list", "GET", "/api/v1/tasks?status=succeeded", self.api_key)
            self.stop.wait(0.05)  # a steady rate, not a flood

    def _heartbeater(self) -> None:
        session = requests.Session()
        while not self.stop.is_set():
            self._call(session, "heartbeat", "POST", f"/api/v1/agents/{self.agent_id}/heartbeat", self.agent_token,
                       json={"busy": 0})
            self.stop.wait(0.1)

    def start(self) -> list[threading.Thread]:
        threads = [threading.Thread(target=self._submitter, daemon=True),
                   threading.Thread(target=self._heartbeater, daemon=True)]
        for t in threads:
            t.start()
        self.threads = threads
        return threads

    def finish(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(15)

    def between(self, start: float, end: float = float("inf"), what: str | None = None) -> list[Answer]:
        with self.lock:
            return [a for a in self.answers if start <= a.at < end and (what is None or a.what == what)]

    def count(self, status: int, what: str, since: float = 0.0) -> int:
        return sum(1 for a in self.between(since, what=what) if a.status == status)


def _register_http_agent(region) -> tuple[str, str]:
    """A plain HTTP agent (the article's kind): its heartbeats are our probe."""
    agent_id = f"probe-{uuid.uuid4().hex[:6]}"
    r = requests.post(f"{region.url}/api/v1/agents/register", timeout=10,
                      headers={"Authorization": f"Bearer {REGISTRATION_TOKEN}"},
                      json={"agent_id": agent_id, "capabilities": ["probe"], "kind": "http"})
    assert r.status_code == 201, r.text
    return agent_id, r.json()["token"]


def test_region_rides_out_a_postgres_restart_with_503s_and_loses_no_task(private_pg, fresh_region):
    url = private_pg.create_database("meridian_region", migrate_role="region")
    region = fresh_region(database_url=url)
    worker = region.agent("echo", concurrency=4)
    region.wait_task(region.submit("echo", {"warmup": True})["id"])
    probe_id, probe_token = _register_http_agent(region)
    traffic = Traffic(url=region.url, api_key=region.api_key, agent_id=probe_id, agent_token=probe_token)
    traffic.start()
    try:
        # Before: steady traffic accepted, heartbeats verified by every web worker.
        wait_for(lambda: len(traffic.accepted) >= 20 and traffic.count(200, "heartbeat") >= 20, 60,
                 what="traffic flowing before the outage")

        # The database goes away (fast shutdown: sessions killed, clean stop).
        down_at = time.monotonic()
        private_pg.stop("fast")
        stopped_at = time.monotonic()
        wait_for(lambda: time.monotonic() - stopped_at >= OUTAGE_SECONDS
                 and traffic.count(503, "submit", since=stopped_at) >= 3
                 and traffic.count(503, "list", since=stopped_at) >= 1,
                 OUTAGE_SECONDS + 30, what="an outage of 10 s answered with 503s")
        private_pg.start()
        up_at = time.monotonic()

        # It recovers by itself: nothing restarted by the test.
        wait_for(lambda: any(a.status == 201 for a in traffic.between(up_at, what="submit")), 60,
                 what="a submission accepted after PostgreSQL came back")
        recovered_at = min(a.at for a in traffic.between(up_at, what="submit") if a.status == 201)
        accepted_before_recovery = len(traffic.accepted)
        wait_for(lambda: len(traffic.accepted) >= accepted_before_recovery + 20, 60,
                 what="traffic flowing after the outage")
    finally:
        traffic.finish()

    # Every task accepted, before and after, completes.
    accepted = list(traffic.accepted)

    def statuses() -> Counter:
        rows = region.db_query("SELECT status, count(*) FROM regions_task WHERE id::text = ANY(%s) GROUP BY status",
                               (accepted,))
        return Counter(dict(rows))

    try:
        wait_for(lambda: statuses()["succeeded"] == len(accepted), 120, interval=0.5,
                 what="every accepted task succeeded")
    except AssertionError:
        pass  # reported with the figures below
    final = statuses()
    succeeded = final["succeeded"]
    lost = len(accepted) - succeeded

    outage = traffic.between(down_at, recovered_at)
    by_kind = {what: Counter(a.status for a in traffic.between(0, what=what)) for what in ("submit", "list", "heartbeat")}
    outage_503 = [a for a in outage if a.status == 503]
    bad = [a for a in traffic.answers if a.status not in (200, 201, 503)]
    bad_503 = [a for a in outage_503 if not (
        a.content_type.startswith("application/json") and isinstance(a.body, dict)
        and a.body.get("error") == "unavailable" and a.retry_after)]
    db_503 = [a for a in outage_503 if isinstance(a.body, dict) and "database" in a.body.get("detail", "")]
    outage_heartbeats = [a for a in traffic.between(stopped_at, up_at, what="heartbeat")]
    refused_heartbeats = [a for a in outage_heartbeats if a.status != 200]
    logs = {p.name: p.log.read_text(errors="replace") for p in region.procs}
    unrecoverable = {name: text.count("Unrecoverable") for name, text in logs.items() if "Unrecoverable" in text}
    exited = [p.name for p in region.procs if not p.alive()]
    tracebacks = {name: text.count("Traceback") for name, text in logs.items() if "Traceback" in text}
    failed_tasks = Counter(m for text in logs.values() for m in re.findall(r"Task ([\w.]+)\[[^\]]*\] raised", text))

    record(f"FAULT PostgreSQL restart: outage {up_at - down_at:.1f} s (stop took {stopped_at - down_at:.1f} s); "
          f"submitted {sum(by_kind['submit'].values())}, accepted {len(accepted)}, succeeded {succeeded}, "
          f"lost {lost} (final statuses {dict(final)}); 503s seen {len(outage_503)} "
          f"(submit {sum(1 for a in outage_503 if a.what == 'submit')}, "
          f"list {sum(1 for a in outage_503 if a.what == 'list')}, "
          f"heartbeat {sum(1 for a in outage_503 if a.what == 'heartbeat')}), "
          f"of which naming the database {len(db_503)}; recovery {recovered_at - up_at:.2f} s after start; "
          f"heartbeats during the outage {len(outage_heartbeats)}, refused {len(refused_heartbeats)}; "
          f"answers by kind {{{', '.join(f'{k}: {dict(v)}' for k, v in by_kind.items())}}}; "
          f"worker exits {exited or 'none'}; 'Unrecoverable' in logs {unrecoverable or 'none'}; "
          f"tracebacks in logs {tracebacks or 'none'}; Celery tasks that raised {dict(failed_tasks) or 'none'}")

    assert not bad, f"answers other than 200/201/503: {bad[:5]}\n{region.logs()}"
    assert not bad_503, f"503s without the JSON error shape or Retry-After: {bad_503[:5]}"
    assert any(a.what == "submit" for a in db_503) and any(a.what == "list" for a in db_503), outage_503[:5]
    assert not exited and not unrecoverable, region.logs()
    assert worker.alive()
    assert lost == 0, f"{lost} accepted tasks did not succeed: {dict(final)}\n{region.logs()}"
    assert not refused_heartbeats, (
        f"{len(refused_heartbeats)} of {len(outage_heartbeats)} heartbeats refused while PostgreSQL was down "
        f"(they need no database): {refused_heartbeats[:3]}")
    # The orchestrator's beat outlived the outage: it said so once, and leads the clock jobs again (or still).
    log = region.orchestrator.log.read_text(errors="replace")
    assert "clock lease: could not ask the database" in log, region.orchestrator.tail()
    wait_for(lambda: region.call("GET", "/api/v1/region/status").json()["clock"]["leader"], 15,
             what="the clock lease held again after the outage")
