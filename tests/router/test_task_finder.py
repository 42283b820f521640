"""The router as the one console: an operator types a task id and the router asks
every enabled region at once, over real HTTP, each within its own timeout and
all within a budget; it shows where the task is (status, capability, times, a
link to it in its region's console) and which regions did not answer, stores
nothing of the answer, shows nothing of the task's data, and records the lookup
in the audit trail.

The region that holds the task is this test process's live server (a real
listener, the region's own locate endpoint); the others are a closed port, a
listener that accepts and never answers, and the live server again under
another region's name (it refuses an assertion made for another region).
tests/router/test_task_finder_live.py does the same against real region
processes."""
import contextlib
import socket
import threading
import time
import uuid

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from project.accounts.models import AuditEvent
from regions.models import Task
from router.models import Region
from router.services import locate as locate_service
from router.services.locate import task_locate
from router.selectors import regions_directory_reset
from router.services.regions import region_create
from tests import factories, harness

pytestmark = pytest.mark.django_db(transaction=True)

FINDER = "/admin/router/region/find-task/"
MARKER = "payload-marker-finder-91d2"
PER_REGION = 1.0
BUDGET = 2.5
MARGIN = 2.0  # seconds: the test client, the database, a loaded CI host


@pytest.fixture
def bounds(settings):
    settings.ROUTER_LOCATE_TIMEOUT_SECONDS = PER_REGION
    settings.ROUTER_LOCATE_BUDGET_SECONDS = BUDGET


@pytest.fixture
def silent():
    """Listeners that accept a connection and never answer (harness.silent_listener:
    or answer a start, drip, or the rest later); make(...) -> its URL."""
    with contextlib.ExitStack() as stack:
        yield lambda reply=b"", drip=0.0, rest=b"": stack.enter_context(harness.silent_listener(reply, drip, rest)).url


def closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"  # closed again: connections are refused


@pytest.fixture
def task():
    user, _ = factories.caller("tenant-a")
    return Task.objects.create(capability="echo", payload={"note": MARKER}, timeout=60, max_attempts=3,
                               status=Task.Status.FAILED, result={"out": MARKER}, error=f"boom {MARKER}",
                               submitted_by=user, finished_at=timezone.now())


@pytest.fixture
def fleet(live_server, silent, settings, bounds, redis_clean):
    """The live server as this region (settings.REGION_ID), a region whose
    port is closed, one that never answers, and the live server again under
    another name (it refuses what was signed for that other region)."""
    region_create(region_id=settings.REGION_ID, orchestrator_url=live_server.url)
    region_create(region_id="eu-west", orchestrator_url=closed_port())
    region_create(region_id="ap-silent", orchestrator_url=silent())
    region_create(region_id="us-wrongkey", orchestrator_url=live_server.url)
    return live_server


def find(client, task_id: str):
    started = time.monotonic()
    response = client.get(FINDER, {"task_id": task_id})
    return response, time.monotonic() - started


def text(response) -> str:
    import html
    import re

    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", response.content.decode())))


def test_the_task_is_found_in_its_region_and_the_silent_ones_are_named(admin_client, fleet, task, settings):
    r, took = find(admin_client, str(task.id))
    assert r.status_code == 200, r.content
    html, words = r.content.decode(), text(r)
    assert f"Found in {settings.REGION_ID}" in words
    assert "failed" in words and "echo" in words
    link = f'href="{fleet.url}/admin/regions/task/{task.id}/change/"'
    assert link in html
    assert "eu-west did not answer (unreachable)" in words
    assert "ap-silent did not answer (timeout)" in words
    assert "us-wrongkey did not answer (refused the router's credential)" in words
    assert took < BUDGET + MARGIN, took
    # Data residency: nothing of the task's data reaches the operator's page.
    assert MARKER not in html and "boom" not in html


def test_not_found_says_in_how_many_regions_and_which_did_not_answer(admin_client, fleet, task):
    r, took = find(admin_client, str(uuid.uuid4()))
    assert r.status_code == 200, r.content
    words = text(r)
    assert "Not found in the 1 region that answered (of 4 asked)" in words, words
    assert "eu-west did not answer (unreachable)" in words and "ap-silent did not answer (timeout)" in words
    assert took < BUDGET + MARGIN, took


def test_the_lookup_is_audited_with_the_operator_and_the_id_and_nothing_of_the_answer(admin_client, fleet, task,
                                                                                      settings):
    find(admin_client, str(task.id))
    [event] = AuditEvent.objects.filter(action="task.locate")
    assert event.actor == "user admin" and event.target == str(task.id) and event.outcome == "done"
    assert f"found in {settings.REGION_ID}" in event.detail and "ap-silent" in event.detail
    # The router keeps where it looked, never what the region said of the task.
    assert "echo" not in event.detail and "failed" not in event.detail and MARKER not in event.detail


def test_the_router_stores_nothing_of_the_answer(admin_client, fleet, task):
    before = list(Region.objects.order_by("region_id").values())
    find(admin_client, str(task.id))
    assert list(Region.objects.order_by("region_id").values()) == before


@pytest.fixture
def unasked(bounds):
    """Regions that must not be asked (no live server: these tests need no transaction)."""
    region_create(region_id="eu-west", orchestrator_url=closed_port())


@pytest.mark.django_db
@pytest.mark.parametrize("typed", ["nope", "12345", "<script>alert(1)</script>", "a" * 500, "6ba7b810-9dad",
                                   "\x00", " "])
def test_anything_but_a_uuid_is_a_form_error_and_asks_no_region(admin_client, unasked, typed, monkeypatch):
    monkeypatch.setattr(locate_service, "_ask", lambda **k: pytest.fail("a region was asked"))
    r = admin_client.get(FINDER, {"task_id": typed})
    assert r.status_code == 200, r.content
    assert "A task id is a UUID" in text(r)
    html = r.content.decode()
    assert "<script>alert" not in html
    # The error is announced and tied to the field it is about.
    assert 'role="alert" id="task-id-errors"' in html
    assert 'aria-invalid="true"' in html and 'aria-describedby="task-id-errors"' in html
    assert not AuditEvent.objects.filter(action="task.locate").exists()


@pytest.mark.django_db
def test_the_empty_page_shows_the_form_and_asks_nobody(admin_client, unasked, monkeypatch):
    monkeypatch.setattr(locate_service, "_ask", lambda **k: pytest.fail("a region was asked"))
    r = admin_client.get(FINDER)
    assert r.status_code == 200 and 'name="task_id"' in r.content.decode()


def test_a_disabled_region_is_not_asked(admin_client, fleet, task):
    Region.objects.filter(region_id="ap-silent").update(enabled=False)
    regions_directory_reset()
    r, took = find(admin_client, str(task.id))
    assert "ap-silent" not in text(r) and took < PER_REGION + MARGIN


@pytest.mark.django_db
def test_without_a_signing_key_the_page_says_so(admin_client, unasked, settings):
    settings.ROUTER_SIGNING_KEY = ""
    r = admin_client.get(FINDER, {"task_id": str(uuid.uuid4())})
    assert r.status_code == 200 and "ROUTER_SIGNING_KEY is not set" in text(r)


@pytest.mark.django_db
def test_an_operator_without_view_permission_on_regions_is_refused(client, unasked):
    get_user_model().objects.create_user("intern", password="pw", is_staff=True)
    client.force_login(get_user_model().objects.get(username="intern"))
    assert client.get(FINDER, {"task_id": str(uuid.uuid4())}).status_code == 403


@pytest.mark.django_db
def test_many_silent_regions_are_asked_in_parallel_within_the_budget(silent, settings, bounds):
    settings.ROUTER_LOCATE_CONCURRENCY = 4
    for n in range(12):
        region_create(region_id=f"silent-{n}", orchestrator_url=silent())
    started = time.monotonic()
    found = task_locate(task_id=uuid.uuid4())
    took = time.monotonic() - started
    assert took < BUDGET + 1.0, took
    assert not found.found and len(found.silent) == 12
    assert {answer.outcome for answer in found.silent} == {"timeout"}


def test_the_overview_search_box_sends_its_id_to_the_finder(admin_client, fleet, task, settings):
    """console/templates/overview/task_finder.html, for the router's overview:
    its form's action and field are the finder's."""
    import re

    from django.template.loader import render_to_string

    box = render_to_string("overview/task_finder.html")
    action = re.search(r'action="([^"]+)"', box).group(1)
    assert action == FINDER and 'name="task_id"' in box and 'role="search"' in box
    r = admin_client.get(action, {"task_id": str(task.id)})
    assert f"Found in {settings.REGION_ID}" in text(r)


@pytest.mark.django_db
def test_the_regions_list_links_to_the_finder(admin_client):
    html = admin_client.get("/admin/router/region/").content.decode()
    assert f'href="{FINDER}"' in html and "Find a task" in html


@pytest.mark.django_db
def test_a_region_that_stalls_mid_answer_is_a_timeout_within_the_budget(bounds, silent):
    """Headers sent, then nothing: the answer is not awaited past the region's timeout."""
    region_create(region_id="stalling", orchestrator_url=silent(
        reply=b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"))
    started = time.monotonic()
    found = task_locate(task_id=uuid.uuid4())
    assert time.monotonic() - started < BUDGET + 1.0
    assert [(a.region_id, a.outcome) for a in found.silent] == [("stalling", "timeout")]


@pytest.mark.django_db
def test_what_a_region_sends_beyond_the_contract_is_never_shown(admin_client, bounds):
    """A region (an old or a broken one) that answers with the task's data too:
    the router reads the five fields of the contract, checked, and nothing else."""
    leak = {"found": True, "status": "failed", "capability": f"<b>{MARKER}</b>", "created_at": MARKER,
            "finished_at": None, "payload": {"note": MARKER}, "error": MARKER, "result": MARKER}
    with harness.json_server(lambda *request: (200, leak)) as url:
        region_create(region_id="leaky-1", orchestrator_url=url)
        r = admin_client.get(FINDER, {"task_id": str(uuid.uuid4())})
        assert "Found in leaky-1" in text(r) and "failed" in text(r)
        assert MARKER not in r.content.decode()


def locate_threads(before: set) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t not in before and t.name.startswith("router-locate") and t.is_alive()]


@pytest.mark.django_db
@pytest.mark.parametrize("reply", [
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{",
    b"HTTP/1.1 200 OK\r\nX-Slow: ",  # the headers themselves, one byte at a time
], ids=["answer", "headers"])
def test_a_region_that_drips_its_answer_leaves_no_thread_behind(settings, silent, reply):
    """Each byte comes within the read timeout, none is ever the last: the ask
    is bounded in total (the budget), not per read, and its thread and socket
    end with the lookup instead of living on in the background."""
    settings.ROUTER_LOCATE_TIMEOUT_SECONDS = 0.5
    settings.ROUTER_LOCATE_BUDGET_SECONDS = 1.0
    for n in range(3):
        region_create(region_id=f"drip-{n}", orchestrator_url=silent(reply=reply, drip=0.2))
    before = set(threading.enumerate())
    started = time.monotonic()
    found = task_locate(task_id=uuid.uuid4())
    assert time.monotonic() - started < 1.0 + 1.0
    assert {(a.region_id, a.outcome) for a in found.silent} == {(f"drip-{n}", "timeout") for n in range(3)}
    deadline = time.monotonic() + 1.0
    while locate_threads(before) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert locate_threads(before) == []


@pytest.mark.django_db
def test_an_answer_whose_body_comes_after_its_headers_is_read(bounds, silent):
    """HTTP/1.0, the connection closed after the answer: http.client lets go of
    its socket once the headers are read, and the body still comes from it."""
    body = b'{"found": true, "status": "failed", "capability": "echo"}'
    region_create(region_id="paced", orchestrator_url=silent(
        reply=b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body),
        drip=0.2, rest=body))
    found = task_locate(task_id=uuid.uuid4())
    assert [(a.region_id, a.status, a.capability) for a in found.found] == [("paced", "failed", "echo")], found
