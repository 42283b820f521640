"""The region's "needs attention" panel (regions/attention.py): what needs an
operator, each line a link to the list that shows it; the router's refusals
the region learns from its answers; a rejected commit recorded once."""
from __future__ import annotations

import json
import threading
import time
from datetime import timedelta
from urllib.parse import urlencode
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.utils import timezone

from regions.selectors import region_attention
from regions.models import Agent, ConfigVersion, DeadLetter, Task
from regions.services import liveness

pytestmark = pytest.mark.django_db


def _task(cap: str, status: str, **fields) -> Task:
    return Task.objects.create(capability=cap, timeout=60, max_attempts=1, status=status, **fields)


def _agent(agent_id: str, caps: list[str], **fields) -> Agent:
    return Agent.objects.create(agent_id=agent_id, capabilities=caps, token_hash="x" * 64, **fields)


def _live(*agent_ids: str) -> None:
    for agent_id in agent_ids:
        liveness.client().zadd(liveness.key("live"), {agent_id: time.time()})


def _kinds(items: list[dict]) -> dict[str, dict]:
    return {i["kind"]: i for i in items}


def test_nothing_needs_attention_in_a_healthy_region(redis_clean):
    _agent("a1", ["echo"])
    _live("a1")
    _task("echo", Task.Status.RUNNING, agent="a1")
    assert region_attention() == []


def test_zero_live_agents_is_critical(redis_clean):
    items = region_attention()
    assert _kinds(items)["no_agents"]["severity"] == "critical"
    assert items[0]["kind"] == "no_agents"


def test_waiting_tasks_are_grouped_by_why_each_a_link_to_the_same_rows(redis_clean, admin_client):
    _agent("a1", ["echo"])
    _agent("c1", ["ocr"], desired=Agent.Desired.CORDONED)
    _live("a1", "c1")
    for _ in range(3):
        _task("pdf", Task.Status.WAITING, status_reason="no live agent serves capability pdf; ...")
    _task("ocr", Task.Status.WAITING, status_reason="the agents serving capability ocr are cordoned (c1); ...")
    _task("echo", Task.Status.WAITING, target_agent="gone-1", status_reason="target agent gone-1 is not online")
    _task("echo", Task.Status.QUEUED, held=True)
    _task("echo", Task.Status.QUEUED, dispatched_at=timezone.now() - timedelta(minutes=7))
    _task("echo", Task.Status.QUEUED, dispatched_at=timezone.now())  # just sent: fine
    items = _kinds(region_attention())
    assert {k: items[f"waiting_{k}"]["count"] for k in ("no_agent", "agents_held", "target_agent", "fair_share",
                                                         "queued_long")} == {
        "no_agent": 3, "agents_held": 1, "target_agent": 1, "fair_share": 1, "queued_long": 1}
    assert items["waiting_no_agent"]["text"] == "3 tasks waiting: no live agent serves its capability"
    # Capabilities with pending tasks and no agent taking work: pdf (none) and ocr (cordoned).
    unserved = [i for i in region_attention() if i["kind"] == "no_live_agent"]
    assert [(i["text"], i["severity"]) for i in unserved] == [
        ("capability pdf: 3 pending tasks and no live agent takes its work", "critical"),
        ("capability ocr: 1 pending task and no live agent takes its work", "critical")]
    # Each link shows exactly the rows counted.
    for kind in ("waiting_no_agent", "waiting_agents_held", "waiting_fair_share", "waiting_queued_long"):
        page = admin_client.get(items[kind]["href"])
        assert page.status_code == 200, kind
        assert f"{items[kind]['count']} task" in page.content.decode(), kind
    page = admin_client.get(unserved[0]["href"]).content.decode()
    assert "3 tasks" in page


def test_capability_failing_above_its_usual_rate(redis_clean):
    _agent("a1", ["ocr", "echo"])
    _live("a1")
    now = timezone.now()

    def finished(cap: str, status: str, ago: timedelta, n: int) -> None:
        for _ in range(n):
            task = _task(cap, status)
            Task.objects.filter(pk=task.pk).update(finished_at=now - ago)

    finished("ocr", Task.Status.SUCCEEDED, timedelta(hours=5), 90)
    finished("ocr", Task.Status.FAILED, timedelta(hours=5), 10)   # usually 10 %
    finished("ocr", Task.Status.SUCCEEDED, timedelta(minutes=10), 4)
    finished("ocr", Task.Status.FAILED, timedelta(minutes=10), 6)  # 60 % in the last hour
    finished("echo", Task.Status.FAILED, timedelta(minutes=10), 1)  # one failure is no alarm
    items = [i for i in region_attention(now=now) if i["kind"] == "failing"]
    assert [i["text"] for i in items] == ["capability ocr: 6 of 10 failed in the last hour (60%; usually 10%)"]
    assert items[0]["href"] == "/admin/regions/task/?" + urlencode(
        {"capability__exact": "ocr", "status__exact": "failed", "finished_at__gte": (now - timedelta(hours=1)).isoformat()})


def test_dead_letters_rejected_config_liveness_and_hold(redis_clean, monkeypatch):
    _agent("a1", ["echo"])
    _live("a1")
    DeadLetter.objects.create(source="orchestrator", queue="q", reason="undecodable")
    ConfigVersion.objects.create(sha="f" * 40, result="rejected", error="global.yaml: bad\nline 3")
    liveness.hold_set({"mode": "hold", "reason": "4 of 7 agents silent"})
    items = _kinds(region_attention())
    assert items["dead_letters"]["text"] == "1 dead letter in the last hour"
    assert items["config_rejected"]["text"] == "configuration commit ffffffffffff rejected: global.yaml: bad line 3"
    assert items["config_rejected"]["severity"] == "critical"
    assert items["eviction_hold"]["text"].endswith("(4 of 7 agents silent)")
    ConfigVersion.objects.create(sha="e" * 40, result="applied", is_active=True)
    assert "config_rejected" not in _kinds(region_attention())
    monkeypatch.setattr(liveness, "ping", lambda: False)
    assert _kinds(region_attention())["liveness_down"]["severity"] == "critical"


def test_overview_carries_the_attention_items(redis_clean):
    from regions.selectors import fleet_overview

    assert [i["kind"] for i in fleet_overview()["attention"]] == ["no_agents"]


# --- the router's refusal, learned from its answer -----------------------------------------

class _Router:
    """A real HTTP listener answering every POST with `status` and a JSON body."""

    def __init__(self, status: int, body: dict):
        router = self
        self.status, self.body, self.posts = status, body, 0

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                router.posts += 1
                data = json.dumps(router.body).encode()
                self.send_response(router.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def router_stub():
    started = []

    def start(status: int, body: dict) -> _Router:
        started.append(_Router(status, body))
        return started[-1]

    yield start
    for r in started:
        r.stop()


def test_router_refusal_is_kept_shown_as_critical_and_cleared_by_the_next_accepted_push(
        redis_clean, router_stub, settings):
    from regions.services.summary import summary_push

    _agent("a1", ["echo"])
    _live("a1")
    router = router_stub(400, {"error": "invalid", "detail": "Invalid input.",
                               "fields": {"attention": ["at most 50 items"]}})
    settings.ROUTER_URL = router.url
    assert summary_push(force=True) == {"sent": False, "status": 400}
    kept = liveness.router_refusal_get()
    assert kept["status"] == 400 and "at most 50 items" in kept["error"] and kept["at"] <= time.time()
    assert 0 < liveness.client().pttl(liveness.key("router")) <= 300_000  # expires after a few intervals
    item = _kinds(region_attention())["router_refused"]
    assert item["severity"] == "critical"
    assert item["text"].startswith("the router refused this region's summary (400): Invalid input.")
    assert item["href"].startswith(router.url + "/admin/router/region/?q=")
    router.status, router.body = 200, {}
    assert summary_push(force=True)["sent"] is True
    assert liveness.router_refusal_get() is None
    assert "router_refused" not in _kinds(region_attention())


def test_router_unreachable_is_a_warning(redis_clean, router_stub, settings):
    from regions.services.summary import summary_push

    router = router_stub(200, {})
    router.stop()  # nothing listens there any more
    settings.ROUTER_URL = router.url
    assert summary_push(force=True)["sent"] is False
    item = _kinds(region_attention())["router_unreachable"]
    assert item["severity"] == "warning" and item["text"].startswith("router unreachable")


# --- the panel at the top of the overview ------------------------------------------------

def test_overview_panel_lists_each_item_with_its_badge_and_link(redis_clean, admin_client):
    _task("pdf", Task.Status.WAITING, status_reason="no live agent serves capability pdf")
    page = admin_client.get("/admin/").content.decode()
    panel = page.split('id="ov-attention"')[1].split('id="ov-agents"')[0]
    assert page.index('id="ov-attention"') < page.index('id="ov-agents"')  # at the top
    assert "Needs attention (3)" in panel
    assert 'data-kind="no_agents" data-severity="critical"' in panel
    assert '<a href="/admin/regions/task/?waits_for=no_agent">1 task waiting: no live agent serves its capability</a>' \
        in panel
    assert 'ov-badge ov-bad">critical</span>' in panel and 'ov-badge ov-warn">warning</span>' in panel


def test_overview_panel_says_when_nothing_needs_attention(redis_clean, admin_client):
    _agent("a1", ["echo"])
    _live("a1")
    page = admin_client.get("/admin/").content.decode()
    assert "Needs attention (0)" in page and "Nothing needs attention." in page


def test_the_summary_carries_the_items_with_their_lists_path_and_the_router_takes_them(redis_clean):
    from regions.services.summary import region_summary_build
    from router import inputs

    _task("pdf", Task.Status.WAITING, status_reason="no live agent serves capability pdf")
    liveness.router_refusal_set({"kind": "refused", "status": 400, "error": "no", "at": time.time()}, ttl=60)
    sent = region_summary_build()["attention"]
    assert [i["kind"] for i in sent] == ["no_agents", "no_live_agent", "waiting_no_agent"]  # not the router's own
    assert all(set(i) == {"kind", "severity", "text", "count", "path"} for i in sent)
    assert all(i["path"].startswith("/admin/regions/") for i in sent)  # a path in this console, no host
    assert inputs.summary_parse(region_summary_build())["attention"] == sent


def test_the_panel_costs_the_same_queries_whatever_the_number_of_tasks(redis_clean):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    def queries() -> int:
        with CaptureQueriesContext(connection) as seen:
            region_attention()
        return len(seen)

    _task("pdf", Task.Status.WAITING)
    queries()  # the process's caches (the active configuration) filled
    few = queries()
    for i in range(40):
        _task(f"cap{i % 20}", Task.Status.WAITING if i % 2 else Task.Status.QUEUED, held=i % 3 == 0)
        task = _task(f"cap{i % 20}", Task.Status.FAILED)
        Task.objects.filter(pk=task.pk).update(finished_at=timezone.now())
    assert queries() == few


def test_the_windows_over_finished_tasks_read_an_index_not_the_whole_table(redis_clean):
    """The overview (every 10 s per open page) and each summary read the tasks
    finished in a window. In a region with days of history, each such query must
    find its rows through task_finished_idx, not by reading every finished task
    (a sequential scan, or the status index: nearly every task has succeeded)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from regions.selectors import fleet_overview

    days_ago = timezone.now() - timedelta(days=3)
    Task.objects.bulk_create(
        Task(capability="echo", timeout=60, max_attempts=1, status=Task.Status.SUCCEEDED,
             finished_at=days_ago + timedelta(seconds=i)) for i in range(5000))
    with connection.cursor() as cur:
        cur.execute("ANALYZE regions_task")
    with CaptureQueriesContext(connection) as seen:
        fleet_overview()
    windowed = [q["sql"] for q in seen.captured_queries if '"regions_task"."finished_at" >=' in q["sql"]]
    assert len(windowed) >= 3, [q["sql"][:200] for q in seen.captured_queries]
    with connection.cursor() as cur:
        for sql in windowed:
            cur.execute("EXPLAIN " + sql)
            plan = "\n".join(row[0] for row in cur.fetchall())
            assert "task_finished_idx" in plan, (sql, plan)


def test_every_link_opens_its_filtered_list(redis_clean, admin_client, monkeypatch):
    from regions.models import ScheduleRun

    _task("pdf", Task.Status.WAITING, status_reason="no live agent serves capability pdf")
    for _ in range(6):
        task = _task("ocr", Task.Status.FAILED)
        Task.objects.filter(pk=task.pk).update(finished_at=timezone.now())
    DeadLetter.objects.create(source="orchestrator", queue="q", reason="undecodable")
    old = DeadLetter.objects.create(source="orchestrator", queue="q", reason="undecodable")
    DeadLetter.objects.filter(pk=old.pk).update(received_at=timezone.now() - timedelta(hours=2))
    for status in [Task.Status.FAILED] * 3 + [Task.Status.SUCCEEDED] * 30:  # before the hour the panel counts
        task = _task("ocr", status)
        Task.objects.filter(pk=task.pk).update(finished_at=timezone.now() - timedelta(hours=2))
    ConfigVersion.objects.create(sha="f" * 40, result="rejected", error="bad")
    ScheduleRun.objects.create(schedule="nightly", due_at=timezone.now(), outcome="created")
    monkeypatch.setattr("regions.selectors.schedule_list", lambda now=None: [{"name": "nightly", "behind": True}])
    items = region_attention()
    assert {"no_agents", "no_live_agent", "waiting_no_agent", "failing", "dead_letters", "config_rejected",
            "schedule_behind"} <= {i["kind"] for i in items}
    for item in items:
        r = admin_client.get(item["href"])
        assert r.status_code == 200, (item, r.get("Location"))
    r = admin_client.get(next(i["href"] for i in items if i["kind"] == "schedule_behind"))
    assert "nightly" in r.content.decode()
    for kind in ("failing", "dead_letters", "waiting_no_agent"):  # the list shows the rows the line counts
        item = next(i for i in items if i["kind"] == kind)
        assert admin_client.get(item["href"]).context["cl"].result_count == item["count"], item


def test_a_broker_that_does_not_answer_is_critical(redis_clean, settings):
    import socket

    _agent("a1", ["echo"])
    _live("a1")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nobody listens
    settings.CELERY_BROKER_URL = f"amqp://guest:guest@127.0.0.1:{port}//"
    item = _kinds(region_attention())["broker_down"]
    assert item["severity"] == "critical" and "broker unavailable" in item["text"], item


def test_a_reaper_that_stopped_ticking_is_critical(redis_clean, settings):
    _agent("a1", ["echo"])
    _live("a1")
    liveness.reaped_set(now=time.time() - 5)
    assert region_attention() == []
    liveness.reaped_set(now=time.time() - 10 * max(settings.REAPER_INTERVAL, 30))
    item = _kinds(region_attention())["reaper_stopped"]
    assert item["severity"] == "critical" and "not evicted" in item["text"], item


def test_live_agents_all_cordoned_or_draining_is_a_warning_even_with_nothing_pending(redis_clean):
    _agent("c1", ["echo"], desired=Agent.Desired.CORDONED, status=Agent.Status.ONLINE)
    _agent("d1", ["ocr"], desired=Agent.Desired.DRAINING, status=Agent.Status.ONLINE)
    _live("c1", "d1")
    items = region_attention()
    assert [i["kind"] for i in items] == ["agents_held"], items
    assert items[0]["text"] == "2 online agents, every one cordoned or draining: no new task can start"
