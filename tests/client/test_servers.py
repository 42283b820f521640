"""The client against real servers (tests/client/conftest.py: a router, a region
with an agent serving echo, fail and sleep): submit and wait through the router
and directly, idempotency, batches, references read from the router alone,
failures, cancel and retry, a region answering 503 and a forward that times out."""
from __future__ import annotations

import threading
import time
import uuid

import httpx
import pytest

from meridian_client import (Client, ForwardUncertain, NoAgent, NoRegion, NotFound, Refusal, TaskCancelled,
                             TaskFailed, TaskRef, Unavailable, ValidationError, WaitTimeout)

pytestmark = pytest.mark.integration

NOBODY = "nobody_serves_this"  # accepted by the region, never run: waits


@pytest.fixture
def via_router(fleet):
    with Client(fleet.router.url, fleet.api_key, deadline=60) as client:
        yield client


@pytest.fixture
def via_region(fleet):
    with Client(fleet.region.url, fleet.api_key, deadline=60) as client:
        yield client


def _tasks_with_key(fleet, key: str) -> int:
    return fleet.region.db_query("SELECT count(*) FROM regions_task WHERE idempotency_key = %s", (key,))[0][0]


def test_a_task_submitted_through_the_router_gives_its_result(fleet, via_router):
    ref = via_router.submit("echo", {"n": 1}, residency="eu")
    assert isinstance(ref, TaskRef) and str(ref) == f"eu-west-3/{ref.task_id}"
    assert ref.region_url == fleet.region.url
    assert ref.result(timeout=60)["echo"] == {"n": 1}
    assert ref.done and ref.task["status"] == "succeeded"


def test_route_then_submit_sends_the_payload_to_the_region_itself(fleet, via_router):
    ref = via_router.submit("echo", {"direct": True}, residency="eu", direct=True)
    assert str(ref).startswith("eu-west-3/") and ref.task["url"].startswith(fleet.region.url)
    assert ref.result(timeout=60)["echo"] == {"direct": True}
    route = via_router.route("echo", residency="eu")
    assert [r["region_id"] for r in route["regions"]] == ["eu-west-3"]


def test_the_same_idempotency_key_twice_is_one_task(fleet, via_router, via_region):
    key = uuid.uuid4().hex
    first = via_router.submit("echo", {"once": 1}, residency="eu", idempotency_key=key)
    again = via_router.submit("echo", {"once": 1}, residency="eu", idempotency_key=key)
    direct = via_region.submit("echo", {"once": 1}, idempotency_key=key)
    assert first.task_id == again.task_id == direct.task_id
    assert first.task["created"] is True and again.task["created"] is False
    assert _tasks_with_key(fleet, key) == 1


def test_a_reference_works_from_the_router_alone_by_redirect(fleet, via_router):
    text = str(via_router.submit("echo", {"ref": "text"}, residency="eu"))
    # A new client that knows nothing but the router and the reference's text.
    with Client(fleet.router.url, fleet.api_key) as fresh:
        ref = fresh.task(text)
        assert ref.region_url is None
        assert ref.result(timeout=60)["echo"] == {"ref": "text"}
        assert ref.region_url == fleet.region.url  # learned from the redirect
    # Any HTTP caller: a 307 to the region, the result never carried by the router.
    region_id, task_id = text.split("/")
    r = httpx.get(f"{fleet.router.url}/api/v1/tasks/{task_id}?region={region_id}&wait=0",
                  headers={"Authorization": f"Bearer {fleet.api_key}"})
    assert r.status_code == 307 and r.headers["location"] == f"{fleet.region.url}/api/v1/tasks/{task_id}?wait=0"
    assert "result" not in r.text
    # At the region itself, the bare uuid is enough.
    with Client(fleet.region.url, fleet.api_key) as at_region:
        assert at_region.task(task_id).status()["status"] == "succeeded"
        assert str(at_region.task(task_id)) == task_id


def test_a_reference_to_an_unknown_region_or_task_is_not_found(fleet, via_router):
    with pytest.raises(NotFound):
        via_router.task(f"mars-1/{uuid.uuid4()}").status()
    with pytest.raises(NotFound):
        via_router.task(f"eu-west-3/{uuid.uuid4()}").status()


def test_a_batch_through_the_router_goes_to_one_region_and_each_item_is_answered(fleet, via_router):
    answers = via_router.submit_many([{"capability": "echo", "payload": {"i": i}} for i in range(5)]
                                     + [{"capability": "echo", "payload": {"i": 9}, "priority": 99}],
                                     residency="eu")
    refs = [a for a in answers if isinstance(a, TaskRef)]
    refused = [a for a in answers if isinstance(a, Refusal)]
    assert len(refs) == 5 and all(str(r).startswith("eu-west-3/") for r in refs)
    assert len(refused) == 1 and refused[0].index == 5 and refused[0].status == 400
    assert isinstance(refused[0].exception(), ValidationError) and "priority" in refused[0].exception().fields
    seen = [ref.task_id for ref in via_router.as_completed(refs, timeout=90)]
    assert sorted(seen) == sorted(r.task_id for r in refs)
    tasks = via_router.wait_all([str(r) for r in refs], timeout=30)
    assert [t["result"]["echo"]["i"] for t in tasks] == [0, 1, 2, 3, 4]


def test_a_failed_task_raises_task_failed_with_its_error_and_attempts(via_router):
    ref = via_router.submit("fail", {"message": "boom-7"}, residency="eu", max_attempts=2)
    with pytest.raises(TaskFailed) as caught:
        ref.result(timeout=90)
    assert "boom-7" in caught.value.error and caught.value.attempts == 2
    assert caught.value.task["id"] == ref.task_id and caught.value.status == "failed"
    # A manual retry runs it once more.
    assert ref.retry()["status"] in ("queued", "waiting", "running", "retrying")
    with pytest.raises(TaskFailed) as again:
        ref.result(timeout=90)
    assert again.value.attempts == 3


def test_cancel_retry_and_a_wait_that_times_out(fleet, via_region):
    ref = via_region.submit(NOBODY, {})
    started = time.monotonic()
    with pytest.raises(WaitTimeout) as caught:
        ref.result(timeout=2)
    assert 1.5 < time.monotonic() - started < 15 and caught.value.task["status"] == "waiting"
    assert ref.cancel()["status"] == "cancelled"
    with pytest.raises(TaskCancelled):
        ref.result(timeout=10)
    assert ref.retry()["status"] == "waiting"
    with Client(fleet.router.url, fleet.api_key) as via_router:  # actions through the router's redirect
        assert via_router.task(str(ref)).cancel()["status"] == "cancelled"


def test_result_and_as_completed_long_poll_instead_of_polling(fleet):
    sent = []
    http = httpx.Client(event_hooks={"request": [lambda request: sent.append((request.method, request.url.path))]})
    with Client(fleet.router.url, fleet.api_key, http=http) as client:
        ref = client.submit("sleep", {"seconds": 2}, residency="eu")
        sent.clear()
        assert ref.result(timeout=60)["slept"] == 2
        # One request held until the end (a redirect first at most), not a poll every few 100 ms.
        assert len(sent) <= 3, sent
        refs = [client.submit("sleep", {"seconds": 1 + i}, residency="eu") for i in range(3)]
        sent.clear()
        assert len(list(client.as_completed(refs, timeout=60))) == 3
        assert all(path == "/api/v1/tasks/wait" for _, path in sent) and len(sent) <= 6, sent


def test_a_capability_nobody_serves_is_refused_at_once_when_asked(via_router, via_region):
    started = time.monotonic()
    with pytest.raises(NoAgent) as caught:
        via_region.submit(NOBODY, {}, require_agent=True)
    assert NOBODY in caught.value.detail and caught.value.status == 409
    with pytest.raises(NoRegion):  # the router has no region for it: not retried for a minute
        via_router.submit(NOBODY, {})
    assert time.monotonic() - started < 10


def test_an_uncertain_forward_is_retried_in_that_region_only_and_lands_once(fleet):
    key = uuid.uuid4().hex
    before = fleet.door.swallowed
    fleet.door.swallow(1)  # the region gets the first forward; the router never hears back
    with Client(fleet.door_router.url, fleet.api_key, deadline=60) as via_door:
        ref = via_door.submit("echo", {"door": 1}, region="eu-west-3", idempotency_key=key)
        assert fleet.door.swallowed == before + 1
        assert ref.region_id == "eu-west-3" and ref.task["created"] is False  # the replay of the one delivered
        assert _tasks_with_key(fleet, key) == 1
        assert ref.result(timeout=60)["echo"] == {"door": 1}


def test_an_uncertain_forward_past_the_deadline_raises_forward_uncertain(fleet):
    fleet.door.swallow(100)
    try:
        with Client(fleet.door_router.url, fleet.api_key, deadline=4) as client:
            with pytest.raises(ForwardUncertain) as caught:
                client.submit("echo", {"door": 2}, region="eu-west-3")
    finally:
        fleet.door.swallow(0)
    assert caught.value.region_id == "eu-west-3" and caught.value.status == 504


# --- the region's database goes away (last: the agent sees it too) ------------------------

def test_a_region_answering_503_is_retried_until_it_recovers(fleet):
    fleet.db_proxy.cut()
    restore = threading.Timer(3, fleet.db_proxy.restore)
    restore.start()
    try:
        started = time.monotonic()
        with Client(fleet.region.url, fleet.api_key, deadline=60) as client:
            ref = client.submit("echo", {"after": "outage"})
            took = time.monotonic() - started
            assert ref.result(timeout=90)["echo"] == {"after": "outage"}
    finally:
        restore.join()
        fleet.db_proxy.restore()
    assert took >= 2.5, took  # answered only once the database was back


def test_a_region_answering_503_past_the_deadline_raises_unavailable(fleet):
    fleet.db_proxy.cut()
    try:
        started = time.monotonic()
        with Client(fleet.region.url, fleet.api_key, deadline=3) as client:
            with pytest.raises(Unavailable) as caught:
                client.submit("echo", {"never": 1})
        took = time.monotonic() - started
    finally:
        fleet.db_proxy.restore()
    assert caught.value.status == 503 and caught.value.retry_after is not None
    assert 1 < took < 15, took
