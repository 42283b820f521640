"""The router's task finder against real regions: two region processes (gunicorn,
orchestrator, an agent in one), a closed port and a listener that never
answers. The router's console (in-process here, signing with this test run's
router key, which both regions trust) finds the task in the region that ran
it, names the regions that did not answer, and shows nothing of the task's
data; the region's locate answer carries none either."""
import re
import socket
import time
import uuid
from html import unescape

import pytest
import requests
from django.conf import settings

from project.accounts.assertions import LOCATE, assertion_sign, router_signing_key
from project.accounts.models import AuditEvent
from router.services.regions import region_create
from tests import harness

pytestmark = [pytest.mark.integration, pytest.mark.django_db]

FINDER = "/admin/router/region/find-task/"
MARKER = "payload-marker-live-finder-3e8b"


@pytest.fixture(scope="module")
def regions(region_template):
    """eu-west-3 runs an echo task carrying MARKER to its end; us-east-1 holds nothing."""
    public_key = settings.ROUTER_PUBLIC_KEYS[0]
    eu = harness.Region(region_template, region_id="eu-west-3", ROUTER_PUBLIC_KEYS=public_key).start()
    us = harness.Region(region_template, region_id="us-east-1", ROUTER_PUBLIC_KEYS=public_key).start()
    agent = eu.agent("echo")
    try:
        task = eu.submit("echo", {"note": MARKER}, key=eu.user_key)
        done = eu.wait_task(task["id"])
        assert MARKER in repr(done)  # the region has it: the router must not
        yield eu, us, task["id"]
    finally:
        agent.stop()
        eu.stop()
        us.stop()


@pytest.fixture
def silent():
    """A listener that accepts and never answers."""
    with harness.silent_listener() as quiet:
        yield quiet.url


@pytest.fixture
def directory(regions, silent, settings):
    settings.ROUTER_LOCATE_TIMEOUT_SECONDS = 1.5
    settings.ROUTER_LOCATE_BUDGET_SECONDS = 4.0
    eu, us, _ = regions
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    for region_id, url in [("eu-west-3", eu.url), ("us-east-1", us.url), ("sa-down-1", closed),
                           ("ap-mute-1", silent)]:
        region_create(region_id=region_id, orchestrator_url=url)
    return regions


def words(html: str) -> str:
    return unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)))


def test_the_console_finds_the_task_in_the_region_that_ran_it(admin_client, directory):
    eu, us, task_id = directory
    started = time.monotonic()
    r = admin_client.get(FINDER, {"task_id": task_id})
    took = time.monotonic() - started
    assert r.status_code == 200, r.content
    html = r.content.decode()
    text = words(html)
    assert "Found in eu-west-3;" in text and "succeeded" in text and "echo" in text
    link = f"{eu.url}/admin/regions/task/{task_id}/change/"
    assert f'href="{link}"' in html
    # The link is the task's page in eu-west-3's console (its login first, then the task).
    page = requests.get(link, allow_redirects=False, timeout=10)
    assert page.status_code == 302 and "/admin/login/" in page.headers["Location"], page.status_code
    assert "us-east-1" in text.split("Answered, not there:")[1]
    assert "sa-down-1 did not answer (unreachable)" in text
    assert "ap-mute-1 did not answer (timeout)" in text
    assert took < 4.0 + 2.0, took  # the budget, and a loaded CI host's margin
    assert MARKER not in html
    [event] = AuditEvent.objects.filter(action="task.locate", target=task_id)
    assert event.actor == "user admin" and "found in eu-west-3" in event.detail and MARKER not in event.detail


def test_not_found_names_the_regions_that_did_not_answer(admin_client, directory):
    r = admin_client.get(FINDER, {"task_id": str(uuid.uuid4())})
    text = words(r.content.decode())
    assert "Not found in the 2 regions that answered (of 4 asked)" in text, text
    assert "sa-down-1 did not answer (unreachable)" in text and "ap-mute-1 did not answer (timeout)" in text


def test_the_regions_locate_answer_carries_no_task_data_and_takes_no_callers_key(regions):
    eu, _, task_id = regions
    assertion = assertion_sign(key=router_signing_key(), audience="eu-west-3", subject="ops", purpose=LOCATE,
                               ttl=10, task=task_id)
    url = f"{eu.url}/api/v1/tasks/{task_id}/locate"
    r = requests.get(url, headers={"Authorization": f"Bearer {assertion}"}, timeout=10)
    assert r.status_code == 200, r.text
    assert set(r.json()) == {"found", "status", "capability", "created_at", "finished_at"}
    assert r.json()["found"] is True and r.json()["finished_at"]
    assert MARKER not in r.text
    # The task's own caller and the region's staff key: neither locates with its key.
    for key in (eu.user_key, eu.api_key):
        refused = requests.get(url, headers={"Authorization": f"Bearer {key}"}, timeout=10)
        assert refused.status_code == 401 and refused.headers["Content-Type"] == "application/json", refused.text
    bad = requests.get(f"{eu.url}/api/v1/tasks/nope/locate", timeout=10, headers={
        "Authorization": "Bearer " + assertion_sign(key=router_signing_key(), audience="eu-west-3", subject="ops",
                                                    purpose=LOCATE, ttl=10, task="nope")})
    assert bad.status_code == 400 and bad.json()["error"] == "invalid", bad.text
