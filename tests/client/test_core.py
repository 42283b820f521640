"""The client's pure logic, without servers: backoff, Retry-After, references,
the error map, and the retry decisions of the shared core (its operations are
generators: these tests play the server's answers into them step by step)."""
from __future__ import annotations

import uuid
from email.utils import format_datetime
from datetime import datetime, timedelta, timezone

import pytest

from meridian_client import _refs, _retry, errors
from meridian_client._core import Core
from meridian_client._effects import Emit, Failure, Reply, Send, Sleep

TASK = str(uuid.uuid4())


# --- Retry-After and backoff ---------------------------------------------------------

@pytest.mark.parametrize("value, seconds", [("3", 3.0), (" 2.5 ", 2.5), ("0", 0.0), ("-4", 0.0), (None, None),
                                            ("", None), ("soon", None), ("nan", None), ("inf", None)])
def test_retry_after_reads_delta_seconds(value, seconds):
    assert _retry.parse_retry_after(value) == seconds


def test_retry_after_reads_an_http_date_relative_to_now():
    now = datetime(2026, 12, 6, 7, 0, 0, tzinfo=timezone.utc)
    later = format_datetime(now + timedelta(seconds=30), usegmt=True)
    assert _retry.parse_retry_after(later, now=now.timestamp()) == pytest.approx(30)
    assert _retry.parse_retry_after(format_datetime(now - timedelta(seconds=5), usegmt=True),
                                   now=now.timestamp()) == 0.0


def test_backoff_honours_retry_after_and_never_comes_back_earlier():
    assert _retry.backoff(0, retry_after=4, rand=lambda: 0.0) == 4
    assert 4 <= _retry.backoff(7, retry_after=4, rand=lambda: 1.0) <= 4.4


def test_backoff_grows_exponentially_with_jitter_up_to_its_cap():
    lows = [_retry.backoff(n, base=0.5, cap=8, rand=lambda: 0.0) for n in range(8)]
    highs = [_retry.backoff(n, base=0.5, cap=8, rand=lambda: 1.0) for n in range(8)]
    assert lows == [0.25, 0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0]
    assert highs == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0, 8.0]
    assert _retry.backoff(10_000, base=0.5, cap=8, rand=lambda: 1.0) == 8


# --- references --------------------------------------------------------------------------

def test_a_reference_is_region_slash_uuid_or_a_bare_uuid():
    assert _refs.parse_ref(f"eu-west-3/{TASK}") == ("eu-west-3", TASK)
    assert _refs.parse_ref(TASK.upper()) == (None, TASK)
    for bad in ("eu-west-3/", "nope", f"eu west/{TASK}", f"a/b/{TASK}", ""):
        with pytest.raises(ValueError):
            _refs.parse_ref(bad)


def test_a_task_url_gives_its_regions_url():
    assert _refs.region_url_from_task_url(f"http://eu:8000/api/v1/tasks/{TASK}") == "http://eu:8000"
    assert _refs.region_url_from_task_url(None) is None


# --- the error map -------------------------------------------------------------------------

@pytest.mark.parametrize("status, body, cls", [
    (400, {"error": "invalid", "detail": "Invalid input.", "fields": {"payload": ["x"]}}, errors.ValidationError),
    (401, {"error": "not_authenticated", "detail": "no"}, errors.AuthenticationError),
    (403, {"error": "permission_denied", "detail": "no"}, errors.PermissionDenied),
    (404, {"error": "not_found", "detail": "no"}, errors.NotFound),
    (409, {"error": "conflict", "detail": "cannot cancel"}, errors.Conflict),
    (409, {"error": "idempotency_key_reused", "detail": "k"}, errors.IdempotencyConflict),
    (409, {"error": "no_agent", "detail": "nobody serves nope"}, errors.NoAgent),
    (413, {"error": "payload_too_large", "detail": "big"}, errors.PayloadTooLarge),
    (429, {"error": "throttled", "detail": "slow"}, errors.RateLimited),
    (503, {"error": "unavailable", "detail": "database"}, errors.Unavailable),
    (503, {"error": "unavailable", "detail": "No eligible region", "skipped": {}}, errors.NoRegion),
    (504, {"error": "timeout", "detail": "?", "region_id": "eu"}, errors.ForwardUncertain),
    (504, "<html>gateway</html>", errors.ServerError),
    (500, None, errors.ServerError),
    (418, {"detail": "teapot"}, errors.APIError),
])
def test_every_error_shape_is_a_typed_exception(status, body, cls):
    exc = errors.error_from_answer(status, body)
    assert type(exc) is cls and exc.status == status
    if cls is errors.ValidationError:
        assert exc.fields == {"payload": ["x"]}
    if cls is errors.ForwardUncertain:
        assert exc.region_id == "eu"


# --- the core's decisions, played step by step ----------------------------------------------

class Script:
    """Drives a core generator: answers each Send with the next scripted outcome
    and records what was sent and slept."""

    def __init__(self, *outcomes):
        self.outcomes = list(outcomes)
        self.sent: list[Send] = []
        self.slept: list[float] = []
        self.emitted: list = []

    def run(self, gen):
        outcome = None
        while True:
            try:
                step = gen.send(outcome)
            except StopIteration as stop:
                return stop.value
            outcome = None
            if isinstance(step, Sleep):
                self.slept.append(step.seconds)
            elif isinstance(step, Emit):
                self.emitted.append(step.value)
            else:
                self.sent.append(step)
                outcome = self.outcomes.pop(0)


def reply(status, body=None, **headers):
    return Reply(status=status, headers={k.replace("_", "-").lower(): v for k, v in headers.items()}, body=body,
                 url="http://router:8000/x")


def dropped(connected=True):
    return Failure(ConnectionResetError("reset"), connected=connected)


def task(status="queued", **extra):
    return {"id": TASK, "url": f"http://eu:8000/api/v1/tasks/{TASK}", "status": status, "region_id": "eu", **extra}


def routed(status=201, **extra):
    return reply(status, {"region_id": "eu", "regional_orchestrator_url": "http://eu:8000", "task": task(**extra)})


class Ref:
    def __init__(self, task_id=TASK, region_id=None, region_url=None, task=None):
        self.task_id, self.region_id, self.region_url, self.task = task_id, region_id, region_url, task


def core(role="router", **kw):
    c = Core(url="http://router:8000", api_key="k", rand=lambda: 0.0, **kw)
    c.info = {"role": role, "region_id": None if role == "router" else "eu"}  # what /healthz would say
    return c


def submit(c, script, direct=False, **fields):
    return script.run(c.submit(c.submission("echo", {"n": 1}, **fields), direct=direct, new_ref=Ref))


def test_a_submit_carries_a_new_idempotency_key_and_resends_the_same_after_a_dropped_connection():
    c, script = core(role="region"), Script(dropped(), reply(503, {"error": "unavailable", "detail": "db"},
                                                              retry_after="2"), routed(200))
    ref = submit(c, script)
    keys = {s.json["idempotency_key"] for s in script.sent}
    assert len(script.sent) == 3 and len(keys) == 1 and len(keys.pop()) == 32
    assert script.slept[1] == 2  # the 503's Retry-After
    assert (ref.task_id, ref.region_id, ref.region_url) == (TASK, "eu", "http://eu:8000")


def test_an_uncertain_forward_is_retried_pinned_to_its_region_with_the_same_key():
    uncertain = reply(504, {"error": "timeout", "detail": "?", "region_id": "eu",
                            "regional_orchestrator_url": "http://eu:8000"})
    c, script = core(), Script(uncertain, routed(200))
    submit(c, script, idempotency_key="mine")
    assert "region" not in script.sent[0].json
    assert script.sent[1].json == {**script.sent[0].json, "region": "eu"}
    assert script.sent[1].json["idempotency_key"] == "mine"


def test_through_the_router_a_dropped_connection_is_not_resent_unpinned():
    """Keys are kept per region: the router could send the retry to another region."""
    c, script = core(), Script(dropped(), routed(200))
    with pytest.raises(errors.TransportError, match="not sent again unpinned"):
        submit(c, script)
    assert len(script.sent) == 1


def test_a_regions_error_relayed_by_the_router_is_retried_pinned_to_that_region():
    relayed = reply(500, {"region_id": "eu", "regional_orchestrator_url": "http://eu:8000",
                          "task": {"error": "error", "detail": "boom"}})
    c, script = core(), Script(relayed, routed(200))
    submit(c, script, idempotency_key="mine")
    assert "region" not in script.sent[0].json and script.sent[1].json == {**script.sent[0].json, "region": "eu"}


def test_a_redirect_from_https_to_http_is_not_followed_with_the_key():
    c = Core(url="https://router:8000", api_key="k", rand=lambda: 0.0)
    c.info = {"role": "router", "region_id": None}
    down = Reply(status=307, headers={"location": f"http://eu:8000/api/v1/tasks/{TASK}"},
                 body={"region_id": "eu"}, url=f"https://router:8000/api/v1/tasks/{TASK}")
    with pytest.raises(errors.TransportError, match="refused to follow a redirect from https"):
        Script(down).run(c.get(Ref(region_id="eu")))


def test_retries_stop_at_the_deadline_with_the_last_error():
    clock = [0.0]
    c = Core(url="http://router:8000", api_key="k", rand=lambda: 0.0, deadline=5, clock=lambda: clock[0])
    c.info = {"role": "router", "region_id": None}
    busy = reply(429, {"error": "throttled", "detail": "slow"}, retry_after="2")

    class Ticking(Script):
        def run(self, gen):
            outcome = None
            while True:
                step = gen.send(outcome)
                outcome = None
                if isinstance(step, Sleep):
                    clock[0] += step.seconds
                else:
                    self.sent.append(step)
                    outcome = busy

    with pytest.raises(errors.RateLimited) as caught:
        Ticking().run(c.submit(c.submission("echo"), direct=False, new_ref=Ref))
    assert caught.value.retry_after == 2 and clock[0] == 4  # sent at 0, 2, 4; a wait to 6 would pass 5


def test_a_cancel_is_not_sent_again_after_the_connection_dropped_but_is_when_it_never_left():
    c = core()
    with pytest.raises(errors.TransportError):
        Script(dropped()).run(c.action(Ref(region_url="http://eu:8000"), "cancel"))
    script = Script(dropped(connected=False), reply(200, task("cancelled")))
    assert script.run(c.action(Ref(region_url="http://eu:8000"), "cancel"))["status"] == "cancelled"


def test_no_region_is_not_retried():
    c, script = core(), Script(reply(503, {"error": "unavailable", "detail": "No eligible region", "skipped": {}}))
    with pytest.raises(errors.NoRegion):
        submit(c, script)
    assert len(script.sent) == 1


def test_a_reference_through_the_router_follows_the_redirect_and_resends_the_key_to_the_region():
    c = core()
    c.info = {"role": "router", "region_id": "router"}
    location = f"http://eu:8000/api/v1/tasks/{TASK}?wait=5"
    script = Script(reply(307, {"region_id": "eu", "location": location}, location=location),
                    reply(200, task("succeeded", result={"ok": 1})))
    ref = Ref(region_id="eu")
    assert script.run(c.result(ref, timeout=5)) == {"ok": 1}
    assert script.sent[0].url == f"http://router:8000/api/v1/tasks/{TASK}"
    assert script.sent[0].params["region"] == "eu" and 4.5 <= script.sent[0].params["wait"] <= 5
    assert script.sent[1].url == location and script.sent[1].params is None
    assert c.region_urls == {"eu": "http://eu:8000"}  # the next request goes there directly


def test_result_raises_task_failed_with_error_and_attempts():
    c = core()
    failed = task("failed", error="RuntimeError: boom", attempt=3)
    with pytest.raises(errors.TaskFailed) as caught:
        Script(reply(200, failed)).run(c.result(Ref(region_url="http://eu:8000"), timeout=1))
    assert caught.value.error == "RuntimeError: boom" and caught.value.attempts == 3
    with pytest.raises(errors.TaskCancelled):
        Script(reply(200, task("cancelled"))).run(c.result(Ref(region_url="http://eu:8000"), timeout=1))


def test_a_server_without_long_poll_is_asked_again_after_a_short_pause():
    clock = [0.0]
    c = Core(url="http://eu:8000", api_key="k", clock=lambda: clock[0])
    answers = [task("queued"), task("running"), task("succeeded", result=7)]

    sent, slept = [], []
    gen = c.result(Ref(region_url="http://eu:8000"), timeout=30)
    outcome = None
    while True:
        try:
            step = gen.send(outcome)
        except StopIteration as stop:
            value = stop.value
            break
        outcome = None
        if isinstance(step, Sleep):
            slept.append(step.seconds)
            clock[0] += step.seconds
        else:
            sent.append(step)
            outcome = reply(200, answers.pop(0))  # answered at once: ?wait= ignored
    assert value == 7 and len(sent) == 3 and slept and all(s <= 2 for s in slept)
    assert sent[0].params == {"wait": 30.0}


def test_direct_submit_routes_then_posts_to_the_region_and_skips_one_never_reached():
    c = core()
    c.info = {"role": "router", "region_id": "router"}
    route = reply(200, {"regions": [{"region_id": "down", "orchestrator_url": "http://down:8000"},
                                    {"region_id": "eu", "orchestrator_url": "http://eu:8000"}]})
    script = Script(route, dropped(connected=False), reply(201, task()))
    ref = submit(c, script, residency="eu", direct=True)
    assert [s.url for s in script.sent] == ["http://router:8000/api/v1/route", "http://down:8000/api/v1/tasks",
                                           "http://eu:8000/api/v1/tasks"]
    assert "residency" not in script.sent[2].json and (ref.region_id, ref.region_url) == ("eu", "http://eu:8000")


def test_waiting_on_many_answers_each_as_it_ends_and_refuses_to_wait_on_a_missing_one():
    c = core()
    a, b = Ref(task_id=str(uuid.uuid4()), region_url="http://eu:8000"), Ref(task_id=str(uuid.uuid4()),
                                                                              region_url="http://eu:8000")
    done_a = {**task("succeeded"), "id": a.task_id}
    done_b = {**task("failed"), "id": b.task_id}
    script = Script(reply(200, {"done": [done_a], "pending": [b.task_id], "missing": []}),
                    reply(200, {"done": [done_b], "pending": [], "missing": []}))
    script.run(c.as_completed([a, b], timeout=30))
    assert script.emitted == [a, b] and script.sent[0].json["ids"] == [a.task_id, b.task_id]
    assert 29.5 <= script.sent[0].json["wait"] <= 30
    assert script.sent[1].json["ids"] == [b.task_id] and b.task["status"] == "failed"
    with pytest.raises(errors.NotFound):
        Script(reply(200, {"done": [], "pending": [], "missing": [a.task_id]})).run(
            c.as_completed([Ref(task_id=a.task_id, region_url="http://eu:8000")], timeout=30))
