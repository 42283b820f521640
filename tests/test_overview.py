"""The fleet overview: the admin's home per role (agents by state, tasks per
minute, queue wait, failures, the eviction hold; regions with freshness,
capacity and configuration drift), and `manage.py fleet_status` printing it."""
import json
import re
import time
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone

from regions import selectors as region_selectors
from regions.models import Agent, ConfigVersion, DeadLetter, Task
from regions.services import liveness
from router import inputs
from router.services.regions import region_create
from router.services.summaries import summary_ingest
from tests.harness import silent_listener

pytestmark = pytest.mark.django_db

STATES = {  # (status, desired, busy) -> how many
    ("online", "active", False): 3,
    ("online", "active", True): 2,
    ("online", "cordoned", False): 1,
    ("online", "draining", True): 1,
    ("offline", "active", False): 4,
}


@pytest.fixture
def region_fleet(redis_clean):
    n = 0
    for (status, desired, busy), count in STATES.items():
        for _ in range(count):
            n += 1
            Agent.objects.create(agent_id=f"ag-{n}", capabilities=["echo"], status=status, desired=desired,
                                 busy=busy, token_hash="x" * 64)
    now = timezone.now()
    # Waits of 1..10 s for tasks started two minutes ago: p50 5 s, p95 10 s (nearest rank).
    for i in range(1, 11):
        task = Task.objects.create(capability="echo", timeout=60, max_attempts=1, status=Task.Status.SUCCEEDED)
        Task.objects.filter(pk=task.pk).update(created_at=now - timedelta(minutes=2, seconds=i),
                                               started_at=now - timedelta(minutes=2),
                                               finished_at=now - timedelta(minutes=1))
    for cap in ("ocr", "ocr", "ocr", "echo"):
        task = Task.objects.create(capability=cap, timeout=60, max_attempts=1, status=Task.Status.FAILED)
        Task.objects.filter(pk=task.pk).update(started_at=now - timedelta(minutes=3),
                                               finished_at=now - timedelta(minutes=3))
    # Finished before the window: not counted.
    old = Task.objects.create(capability="ocr", timeout=60, max_attempts=1, status=Task.Status.FAILED)
    Task.objects.filter(pk=old.pk).update(started_at=now - timedelta(hours=2), finished_at=now - timedelta(hours=2))
    DeadLetter.objects.create(source="orchestrator", queue="meridian.control", reason="undecodable body")
    ConfigVersion.objects.create(sha="a" * 40, subject="Raise the echo timeout", result="applied", is_active=True)
    liveness.hold_set({"since": time.time() - 30, "checked": time.time(), "missing": 4, "silent": 4, "online": 7,
                       "mode": "hold", "reason": "4 of 7 agents silent"})


def test_agent_states_are_counted_by_what_an_operator_acts_on(region_fleet):
    counts = region_selectors.agent_state_counts()
    assert {k: counts[k] for k in region_selectors.AGENT_STATES} == {
        "online idle": 3, "online busy": 2, "cordoned": 1, "draining": 1, "offline": 4, "revoked": 0}


def test_queue_wait_is_p50_and_p95_per_five_minutes_and_throughput_per_minute(region_fleet):
    data = region_selectors.fleet_overview()
    assert sum(b["count"] for b in data["queue_wait"]) == 14  # the old task started outside the window
    assert sum(p["succeeded"] for p in data["throughput"]) == 10
    assert sum(p["failed"] for p in data["throughput"]) == 4
    assert 60 <= len(data["throughput"]) <= 61
    assert data["capabilities"][0] == {"capability": "ocr", "succeeded": 0, "failed": 3}
    assert data["dead_letters"]["count"] == 1
    assert data["liveness"]["ok"] and data["liveness"]["hold"]["mode"] == "hold"


def test_queue_wait_percentiles_are_nearest_rank(redis_clean):
    now = timezone.now().replace(second=30)
    for wait in (1, 2, 3, 4, 100):
        task = Task.objects.create(capability="echo", timeout=60, max_attempts=1, status=Task.Status.RUNNING)
        Task.objects.filter(pk=task.pk).update(created_at=now - timedelta(seconds=wait), started_at=now)
    buckets = [b for b in region_selectors.task_queue_wait(since=now - timedelta(minutes=1), until=now)
               if b["count"]]
    assert len(buckets) == 1
    assert buckets[0]["count"] == 5
    assert buckets[0]["p50"] == pytest.approx(3, abs=0.01) and buckets[0]["p95"] == pytest.approx(100, abs=0.01)


def test_region_overview_is_the_admin_home_with_charts_and_refreshes_itself(region_fleet, admin_client):
    r = admin_client.get("/admin/")
    assert r.status_code == 200
    page = r.content.decode()
    assert 'id="fleet-overview"' in page and 'data-role="region"' in page
    assert page.count("<svg") >= 4  # agents, tasks per minute, queue wait, failures
    assert 'http-equiv="refresh"' not in page and 'console/live.js' in page  # updates in place
    for state, count in (("online idle", 3), ("online busy", 2), ("cordoned", 1), ("draining", 1), ("offline", 4)):
        assert re.search(rf'data-state="{state}">.*?<td class="num"><a [^>]*>{count}</a></td>', page), state
    assert "holding (hold)" in page and "4 of 7 agents silent" in page
    assert "aaaaaaaaaaaa</code> Raise the echo timeout" in page
    assert re.search(r"Dead letters \(last hour\): <span class=\"big\"><a [^>]*>1</a></span>", page)
    assert "<script" not in page.split('id="fleet-overview"')[1].split('id="content-main"')[0]
    # The models are still listed below it.
    assert 'id="content-main"' in page and "/admin/regions/agent/" in page
    assert 'id="ov-task-finder"' not in page  # the router's


def test_view_site_leads_to_the_overview_not_to_a_missing_root(region_fleet, admin_client):
    page = admin_client.get("/admin/regions/agent/").content.decode()
    assert re.search(r'<a href="/admin/">View site</a>', page), re.findall(r".{60}View site", page)


def test_overview_says_when_the_liveness_store_is_down(admin_client, settings, redis_clean, monkeypatch):
    def down():
        return False

    monkeypatch.setattr(liveness, "ping", down)
    page = admin_client.get("/admin/").content.decode()
    assert "unavailable" in page and "liveness store unavailable" in page


def test_anonymous_visitor_is_sent_to_the_login(client):
    r = client.get("/admin/")
    assert r.status_code == 302 and r["Location"].startswith("/admin/login/")


def test_non_staff_user_is_sent_to_the_login(client, django_user_model):
    user = django_user_model.objects.create_user("caller", password="pw-123456789")
    client.force_login(user)
    r = client.get("/admin/")
    assert r.status_code == 302 and r["Location"].startswith("/admin/login/")


def test_fleet_status_prints_the_region_overview_as_tables(region_fleet):
    out = StringIO()
    call_command("fleet_status", stdout=out)
    text = out.getvalue()
    assert re.search(r"^online idle\s+3$", text, re.M) and re.search(r"^offline\s+4$", text, re.M)
    assert "Eviction hold: HOLDING (hold)" in text
    assert "aaaaaaaaaaaa Raise the echo timeout" in text
    assert re.search(r"^ocr\s+3\s+0$", text, re.M)
    assert "Dead letters (last hour): 1" in text


def test_fleet_status_json_carries_the_same_overview(region_fleet):
    out = StringIO()
    call_command("fleet_status", "--json", stdout=out)
    data = json.loads(out.getvalue())
    assert data["role"] == "region" and data["agents"]["cordoned"] == 1
    assert sum(p["failed"] for p in data["throughput"]) == 4


# --- the router --------------------------------------------------------------------------

def _summary(region_id: str, url: str, *, config: str, subject: str | None, caps: dict, at: float) -> dict:
    body = {"region_id": region_id, "orchestrator_url": url, "available_agents": sum(c["idle"] for c in caps.values()),
            "agent_capabilities_summary": caps, "last_updated": at, "config_version": config}
    if subject is not None:
        body["config_subject"] = subject
    return body


@pytest.fixture
def router_fleet(settings):
    settings.ROLE = "router"
    now = time.time()
    major, minor = "b" * 40, "c" * 40
    for region_id, config, subject in (("us-east-1", major, "Tighten the blocklist"),
                                       ("eu-west-3", major, "Tighten the blocklist"),
                                       ("ap-southeast-1", minor, None)):  # an older region: no subject
        url = f"http://{region_id}:8000"
        region, _ = region_create(region_id=region_id, orchestrator_url=url, summary_interval=5)
        summary_ingest(region=region, summary=_summary(
            region_id, url, config=config, subject=subject, at=now - 1,
            caps={"echo": {"count": 4, "idle": 3}, "ocr": {"count": 2, "idle": 0}}))
    region_create(region_id="sa-east-1", orchestrator_url="http://sa-east-1:8000")  # never reported
    return {"major": major, "minor": minor}


def test_router_overview_shows_freshness_capacity_commit_and_drift(router_fleet, admin_client):
    r = admin_client.get("/admin/")
    assert r.status_code == 200
    page = r.content.decode()
    assert 'data-role="router"' in page and "<svg" in page
    assert "Meridian router" in page
    us = page.split('data-region="us-east-1"')[1].split("</tr>")[0]
    assert "fresh</span>" in us and re.search(r"\d+ s ago", us)
    assert "echo 3/4" in us and "ocr 0/2" in us
    assert "bbbbbbbbbbbb</code> Tighten the blocklist" in us and "majority" in us
    ap = page.split('data-region="ap-southeast-1"')[1].split("</tr>")[0]
    assert "cccccccccccc</code>" in ap and "drift</span>" in ap
    sa = page.split('data-region="sa-east-1"')[1].split("</tr>")[0]
    assert "stale</span>" in sa and "never" in sa
    assert re.search(r">3 fresh</a>, <a [^>]*>1 stale</a>", page)


def test_router_overview_offers_the_task_finder_outside_what_updates_itself(router_fleet, admin_client):
    """The search box sits above the live part (#fleet-overview), so an update never
    touches what an operator is typing; a region's overview has none (the finder is
    the router's)."""
    page = admin_client.get("/admin/").content.decode()
    assert page.index('id="ov-task-finder"') < page.index('id="fleet-overview"')


def test_router_overview_sums_idle_capacity_over_fresh_regions(router_fleet):
    from router.selectors import fleet_overview

    data = fleet_overview()
    assert {c["capability"]: (c["idle"], c["count"], c["regions"]) for c in data["capabilities"]} == {
        "echo": (9, 12, 3), "ocr": (0, 6, 3)}
    assert data["drift"]["majority"] == router_fleet["major"]


def test_fleet_status_prints_the_router_overview(router_fleet):
    out = StringIO()
    call_command("fleet_status", stdout=out)
    text = out.getvalue()
    assert "3 fresh, 1 stale regions" in text and "drifting: 3 commits" in text
    assert re.search(r"^ap-southeast-1\s+fresh\s+\d+ s ago\s+echo 3/4, ocr 0/2\s+cccccccccccc\s+DRIFT$", text, re.M)
    assert re.search(r"^us-east-1\s+fresh .*bbbbbbbbbbbb Tighten the blocklist\s+majority$", text, re.M)


# --- the commit subject in summaries ----------------------------------------------------

def test_summary_carries_the_active_commit_subject(redis_clean):
    from regions.services.config.current import config_current
    from regions.services.summary import region_summary_build

    ConfigVersion.objects.create(sha="d" * 40, subject="Allow ocr in eu\x1b[31m", result="applied", is_active=True)
    config_current.cache_clear()
    summary = region_summary_build()
    assert summary["config_version"] == "d" * 40 and summary["config_subject"] == "Allow ocr in eu[31m"
    assert inputs.summary_parse(summary)["config_subject"] == "Allow ocr in eu[31m"


def test_summary_parse_bounds_the_subject_and_takes_summaries_without_one():
    base = _summary("r1", "http://r1:8000", config="e" * 40, subject=None, caps={}, at=time.time())
    assert inputs.summary_parse(base)["config_subject"] == ""
    assert inputs.summary_parse({**base, "config_subject": None})["config_subject"] == ""
    with pytest.raises(Exception, match="200"):
        inputs.summary_parse({**base, "config_subject": "x" * 201})
    with pytest.raises(Exception, match="printable"):
        inputs.summary_parse({**base, "config_subject": "bad\x07"})
    with pytest.raises(Exception):
        inputs.summary_parse({**base, "config_subject": 12})


# --- truthful numbers (issue 19) ----------------------------------------------------------

def test_a_revoked_agent_counts_as_revoked_not_offline(redis_clean):
    # The agent list calls an agent revoked whatever its row's status (it goes
    # offline once it stops): the overview must say the same.
    for agent_id, status in (("gone-1", "offline"), ("gone-2", "online"), ("lost-1", "offline")):
        Agent.objects.create(agent_id=agent_id, capabilities=["echo"], status=status, token_hash="x" * 64,
                             desired="stopped" if agent_id.startswith("gone") else "active")
    counts = region_selectors.agent_state_counts()
    assert counts["revoked"] == 2 and counts["offline"] == 1
    assert "revoked" in region_selectors.AGENT_STATES
    assert sum(counts.values()) == 3, counts


def test_fleet_status_and_the_overview_list_revoked_agents_as_their_own_state(admin_client, redis_clean):
    Agent.objects.create(agent_id="gone-1", capabilities=["echo"], status="offline", desired="stopped",
                         token_hash="x" * 64)
    out = StringIO()
    call_command("fleet_status", stdout=out)
    text = out.getvalue()
    assert re.search(r"^revoked\s+1$", text, re.M) and re.search(r"^offline\s+0$", text, re.M), text
    page = admin_client.get("/admin/").content.decode()
    assert re.search(r'data-state="revoked">.*?<td class="num">.*?>1<', page, re.S)
    assert re.search(r'data-state="offline">.*?<td class="num">.*?>0<', page, re.S)


def test_queue_wait_counts_from_the_manual_retry_not_from_the_first_submission(redis_clean, monkeypatch):
    from regions.services.tasks import dispatch
    from regions.services.tasks.claim import task_claim
    from regions.services.tasks.retry import task_retry

    monkeypatch.setattr(dispatch.app, "send_task", lambda *a, **kw: None)
    now = timezone.now()
    task = Task.objects.create(capability="echo", timeout=60, max_attempts=1, status=Task.Status.FAILED,
                               error="boom")
    # Failed 118 s ago; an operator retries it now and an agent starts it at once.
    Task.objects.filter(pk=task.pk).update(created_at=now - timedelta(seconds=120),
                                           started_at=now - timedelta(seconds=119),
                                           finished_at=now - timedelta(seconds=118))
    task_retry(task=Task.objects.get(pk=task.pk))
    assert task_claim(task_id=task.id, attempt=2, agent_id="a1").run
    buckets = [b for b in region_selectors.task_queue_wait(since=now - timedelta(minutes=5),
                                                           until=timezone.now()) if b["count"]]
    assert [b["count"] for b in buckets] == [1]
    assert buckets[0]["p95"] < 5, buckets


def test_queue_wait_counts_from_when_the_current_attempt_was_queued(redis_clean):
    now = timezone.now().replace(second=30)
    for waited, queued in ((2, 2), (118, 3)):  # the second: created 118 s ago, its attempt queued 3 s ago
        task = Task.objects.create(capability="echo", timeout=60, max_attempts=2, status=Task.Status.RUNNING)
        Task.objects.filter(pk=task.pk).update(created_at=now - timedelta(seconds=waited),
                                               queued_at=now - timedelta(seconds=queued), started_at=now)
    [bucket] = [b for b in region_selectors.task_queue_wait(since=now - timedelta(minutes=1), until=now)
                if b["count"]]
    assert bucket["p95"] == pytest.approx(3, abs=0.01)


def test_requeue_and_automatic_retry_set_when_the_new_attempt_is_queued(redis_clean, monkeypatch):
    from regions.services.tasks import dispatch, requeue
    from regions.services.tasks.claim import task_claim
    from regions.services.tasks.outcome import task_fail

    monkeypatch.setattr(dispatch.app, "send_task", lambda *a, **kw: None)
    monkeypatch.setattr(requeue, "revoke", lambda *a, **kw: None)
    task = Task.objects.create(capability="echo", timeout=60, max_attempts=3, status=Task.Status.QUEUED)
    Task.objects.filter(pk=task.pk).update(created_at=timezone.now() - timedelta(minutes=10))
    assert task_claim(task_id=task.id, attempt=1, agent_id="a1").run
    before = timezone.now()
    assert requeue.tasks_requeue_for_agents(agent_ids=["a1"], reason="agent missed its heartbeat TTL") == 1
    task.refresh_from_db()
    assert task.queued_at >= before
    assert task_claim(task_id=task.id, attempt=2, agent_id="a2").run
    assert task_fail(task_id=task.id, attempt=2, agent_id="a2", error="boom")
    task.refresh_from_db()
    assert task.status == Task.Status.RETRYING and task.queued_at == task.not_before  # queued once its backoff ends


def test_run_duration_is_p50_and_p95_per_five_minutes(redis_clean):
    now = timezone.now().replace(second=30)
    for run in (1, 2, 3, 4, 100):
        task = Task.objects.create(capability="echo", timeout=600, max_attempts=1, status=Task.Status.SUCCEEDED)
        Task.objects.filter(pk=task.pk).update(started_at=now - timedelta(seconds=run), finished_at=now)
    running = Task.objects.create(capability="echo", timeout=600, max_attempts=1, status=Task.Status.RUNNING)
    Task.objects.filter(pk=running.pk).update(started_at=now - timedelta(seconds=5))
    [bucket] = [b for b in region_selectors.task_run_duration(since=now - timedelta(minutes=1), until=now)
                if b["count"]]
    assert bucket["count"] == 5
    assert bucket["p50"] == pytest.approx(3, abs=0.01) and bucket["p95"] == pytest.approx(100, abs=0.01)


def test_region_overview_charts_have_titles_and_their_numbers_one_click_away(region_fleet, admin_client):
    page = admin_client.get("/admin/").content.decode()
    overview = page.split('id="fleet-overview"')[1].split('id="content-main"')[0]
    charts = re.findall(r"<svg[^>]*>", overview)
    assert len(charts) >= 5  # agents, throughput, queue wait, run duration, failures
    for chart in charts:
        assert 'role="img"' in chart and "aria-labelledby=" in chart, chart
    for section in ("ov-throughput", "ov-wait", "ov-run"):
        block = overview.split(f'id="{section}"')[1].split('<div class="module')[0]
        assert "<details>" in block and "<table>" in block, section


def test_every_number_on_the_region_overview_links_to_its_filtered_list(region_fleet, admin_client):
    page = admin_client.get("/admin/").content.decode()
    row = page.split('data-state="cordoned"')[1].split("</tr>")[0]
    assert re.search(r'href="/admin/regions/agent/\?state=cordoned"[^>]*>1</a>', row), row
    failures = page.split('id="ov-failures"')[1]
    assert re.search(r'href="/admin/regions/task/\?capability__exact=ocr&amp;status__exact=failed[^"]*"[^>]*>3</a>',
                     failures), failures[:2000]
    assert re.search(r'href="/admin/regions/deadletter/[^"]*"[^>]*>1</a>', page)
    throughput = page.split('id="ov-throughput"')[1].split("</h2>")[0]
    assert re.search(r'href="/admin/regions/task/\?[^"]*status__exact=succeeded[^"]*"[^>]*>10 succeeded</a>',
                     throughput), throughput


def test_the_links_lead_to_lists_that_show_those_rows(region_fleet, admin_client):
    import html

    page = admin_client.get("/admin/").content.decode()

    def follow(pattern: str) -> str:
        href = html.unescape(re.search(pattern, page).group(1))
        r = admin_client.get(href)
        assert r.status_code == 200 and "?e=1" not in r.get("Location", ""), href
        return r.content.decode()

    agents = follow(r'data-state="cordoned">.*?<a href="([^"]+)"')
    assert "ag-6" in agents and ">ag-1<" not in agents  # the cordoned one, not an online idle one
    revoked = follow(r'data-state="revoked">.*?<a href="([^"]+)"')
    assert "ag-6" not in revoked
    failed = follow(r'<td>ocr</td><td class="num"><a href="([^"]+)"')
    assert failed.count('class="field-short_id"') == 3  # the old failure is outside the hour
    succeeded = follow(r'<a href="([^"]+)">10 succeeded</a>')
    assert succeeded.count('class="field-short_id"') == 10
    dead = follow(r'Dead letters \(last hour\): <span class="big"><a href="([^"]+)"')
    assert "undecodable body" in dead


def test_router_overview_region_counts_link_to_the_region_list(router_fleet, admin_client):
    page = admin_client.get("/admin/").content.decode()
    heading = page.split('id="ov-regions"')[1].split("</h2>")[0]
    assert re.search(r'href="/admin/router/region/[^"]*"[^>]*>3 fresh</a>', heading), heading
    assert re.search(r'href="/admin/router/region/[^"]*"[^>]*>1 stale</a>', heading), heading
    charts = re.findall(r"<svg[^>]*>", page.split('data-role="router"')[1].split('id="content-main"')[0])
    assert charts and all('aria-labelledby=' in c for c in charts)


# --- queue depth from the broker ------------------------------------------------------

def test_queue_depth_reads_ready_messages_and_consumers_from_rabbitmq(settings):
    import uuid

    from kombu import Connection, Exchange, Producer, Queue

    from tests.harness import wait_for

    name = f"meridian.cap.depth-{uuid.uuid4().hex[:8]}"
    with Connection(settings.CELERY_BROKER_URL, connect_timeout=5) as conn:
        channel = conn.channel()
        queue = Queue(name, Exchange(""), routing_key=name, auto_delete=False)(channel)
        queue.declare()
        try:
            producer = Producer(channel)
            for i in range(3):
                producer.publish({"n": i}, routing_key=name)

            def three():
                depths = region_selectors.broker_queue_depths(queues=[name, "meridian.cap.never-declared"])
                return depths if depths["ok"] and depths["queues"][0]["messages"] == 3 else None

            depths = wait_for(three, timeout=10, what="3 messages ready")
            assert depths["queues"][0] == {"queue": name, "messages": 3, "consumers": 0, "declared": True}
            assert depths["queues"][1]["declared"] is False and depths["queues"][1]["messages"] is None
        finally:
            queue.delete()


def test_queue_depth_on_a_redis_broker_counts_an_empty_queue_as_zero(settings, redis_clean):
    import redis

    name = "meridian.cap.depth-redis"
    client = redis.Redis.from_url(settings.REDIS_URL)
    client.rpush(name, b"{}", b"{}")
    client.rpush(f"{name}:3", b"{}")  # a message of priority band 3, as Celery's Redis transport keeps it
    try:
        depths = region_selectors.broker_queue_depths(queues=[name, "meridian.cap.empty"], url=settings.REDIS_URL)
    finally:
        client.delete(name, f"{name}:3")
    assert depths["ok"], depths
    assert [(q["messages"], q["consumers"]) for q in depths["queues"]] == [(3, None), (0, None)]


def test_queue_depth_says_the_broker_is_unavailable_in_bounded_time(settings):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings.CELERY_BROKER_URL = f"amqp://guest:guest@127.0.0.1:{port}//"
    started = time.monotonic()
    depths = region_selectors.broker_queue_depths(queues=["meridian.control"])
    assert time.monotonic() - started < 5
    assert depths["ok"] is False and "broker unavailable" in depths["error"]


def test_queue_depth_asks_a_silent_broker_once_per_few_seconds_per_process(settings):
    """Each open overview asks every 10 s in each web worker: a broker that does
    not answer costs the timeout once in BROKER_DEPTHS_TTL_SECONDS, not on every
    page (a real listener that accepts and never answers counts the attempts)."""
    with silent_listener() as quiet:
        url = f"amqp://guest:guest@127.0.0.1:{quiet.port}//"
        first = region_selectors.broker_queue_depths(queues=["meridian.control"], url=url, timeout=0.5)
        again = region_selectors.broker_queue_depths(queues=["meridian.control"], url=url, timeout=0.5)
        assert first["ok"] is False and again == first
        assert len(quiet.held) == 1  # one attempt, and the second ask is answered from it


def test_region_overview_shows_queue_depth_or_a_degraded_cell(region_fleet, admin_client, settings):
    page = admin_client.get("/admin/").content.decode()
    block = page.split('id="ov-queues"')[1].split('<div class="module')[0]
    assert "meridian.control" in block and "meridian.cap.echo" in block
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings.CELERY_BROKER_URL = f"amqp://guest:guest@127.0.0.1:{port}//"
    r = admin_client.get("/admin/")
    assert r.status_code == 200
    block = r.content.decode().split('id="ov-queues"')[1].split('<div class="module')[0]
    assert "broker unavailable" in block
