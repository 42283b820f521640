"""Completion callbacks (issue 18, part 2): a submission names a callback_url;
when the task is final the region POSTs its representation there, signed with
the caller's secret, retried with backoff for a bounded time, each attempt
recorded on the task; only to hosts the configuration allows, checked again
against what DNS says at delivery time (the SSRF guard). Real HTTP receivers
(tests/regions/conftest.py Receiver), the real database and Redis."""
import json
import threading
from pathlib import Path
from urllib.parse import urlsplit
from datetime import timedelta

import pytest
from django.utils import timezone

from meridian_client import CallbackVerificationError, verify_callback
from regions.models import Agent, CallbackAttempt, CallbackDelivery, CallbackSecret, Task
from regions.services.callbacks import guard
from regions.services.callbacks.deliver import callbacks_deliver_due
from regions.services.config.current import EffectiveConfig
from regions.services.tasks.cancel import task_cancel
from regions.services.tasks.claim import task_claim
from regions.services.tasks.outcome import task_fail, task_succeed
from tests import factories
from tests.harness import wait_for
from tests.regions.test_config_sync import repo  # noqa: F401 (a fixture)

pytestmark = pytest.mark.django_db


@pytest.fixture
def allow(monkeypatch):
    """allow(*hosts): the configuration's callbacks.allowed_hosts."""
    def set_hosts(*hosts):
        config = EffectiveConfig(sha="cbtest", content={"callbacks": {"allowed_hosts": list(hosts)}})
        monkeypatch.setattr(guard, "config_current", lambda **kw: config)
    set_hosts()
    return set_hosts


@pytest.fixture
def dns(monkeypatch):
    """dns({name: [addresses]}): what the resolver answers at delivery time."""
    answers = {}
    real = guard.resolve
    monkeypatch.setattr(guard, "resolve", lambda host, port: answers[host] if host in answers else real(host, port))
    return answers.update


@pytest.fixture
def secret(api):
    r = api.post("/api/v1/callbacks/secret")
    assert r.status_code == 201, r.content
    return r.json()["secret"]


def submit(api, url, **fields):
    return api.post("/api/v1/tasks", {"capability": "echo", "payload": {"n": 1}, "callback_url": url, **fields},
                    format="json")


def finish(task_id, ok=True):
    """The task's attempt claimed and reported by an agent, as the services do it."""
    if not Agent.objects.filter(agent_id="a1").exists():
        factories.agent("a1", capabilities=("echo",))
    assert task_claim(task_id=task_id, attempt=1, agent_id="a1").run
    if ok:
        assert task_succeed(task_id=task_id, attempt=1, agent_id="a1", result={"echo": 1})
    else:
        assert task_fail(task_id=task_id, attempt=1, agent_id="a1", error="boom", retryable=False)


def deliver(now=None):
    return callbacks_deliver_due(now=now or timezone.now(), batch=50)


def submitted_and_finished(api, url, ok=True):
    r = submit(api, url)
    assert r.status_code == 201, r.content
    finish(r.json()["id"], ok=ok)
    return r.json()["id"]


# --- at submit ------------------------------------------------------------------

def test_a_callback_url_is_refused_while_the_configuration_allows_no_host(api, sent, allow, secret):
    r = submit(api, "https://hooks.example.com/done")
    assert r.status_code == 403 and r.json()["error"] == "callback_refused"
    assert "callbacks.allowed_hosts" in r.json()["detail"] and not Task.objects.exists()


def test_a_callback_url_to_a_host_not_allowed_is_refused_naming_the_host(api, sent, allow, secret):
    allow("hooks.example.com", "10.0.0.0/8")
    r = submit(api, "https://evil.example.net/done")
    assert r.status_code == 403 and "evil.example.net" in r.json()["detail"]
    assert submit(api, "https://hooks.example.com:8443/x").status_code == 201  # a name allows its every port
    assert submit(api, "http://10.1.2.3/x").status_code == 201  # an address in an allowed CIDR
    allow("hooks.example.com:443")
    assert submit(api, "https://hooks.example.com:8443/x").status_code == 403  # host:port allows that port only
    assert submit(api, "https://hooks.example.com/x").status_code == 201


@pytest.mark.parametrize("url", ["ftp://hooks.example.com/x", "hooks.example.com/x", "https:///x",
                                 "https://user:pw@hooks.example.com/x", "https://hooks.example.com/" + "a" * 2100,
                                 "javascript:alert(1)", 7, ["https://hooks.example.com"]])
def test_a_callback_url_that_is_not_a_plain_http_url_is_a_400(api, sent, allow, secret, url):
    allow("hooks.example.com")
    r = submit(api, url)
    assert r.status_code == 400 and "callback_url" in json.dumps(r.json())


def test_a_callback_url_needs_a_signing_secret_first(api, sent, allow):
    allow("hooks.example.com")
    r = submit(api, "https://hooks.example.com/x")
    assert r.status_code == 409 and r.json()["error"] == "callback_secret_missing"
    assert "/api/v1/callbacks/secret" in r.json()["detail"]


def test_a_batch_item_with_a_refused_callback_url_is_refused_alone(api, sent, allow, secret):
    allow("hooks.example.com")
    r = api.post("/api/v1/tasks/batch", {"tasks": [
        {"capability": "echo", "callback_url": "https://hooks.example.com/ok"},
        {"capability": "echo", "callback_url": "https://elsewhere.example.com/no"},
        {"capability": "echo"}]}, format="json")
    assert [x["status"] for x in r.json()["results"]] == [201, 403, 201]
    ok = Task.objects.get(id=r.json()["results"][0]["task"]["id"])
    assert ok.callback_url == "https://hooks.example.com/ok" and CallbackDelivery.objects.filter(task=ok).exists()
    assert CallbackDelivery.objects.count() == 1


def test_the_signing_secret_is_shown_once_and_rotated_by_asking_again(api):
    first = api.post("/api/v1/callbacks/secret")
    second = api.post("/api/v1/callbacks/secret")
    assert first.status_code == second.status_code == 201
    assert first.json()["secret"].startswith("whsec_") and first.json()["secret"] != second.json()["secret"]
    assert api.get("/api/v1/callbacks/secret").status_code == 405  # never shown again


def test_a_rotated_secret_keeps_signing_beside_its_successor_for_the_grace(api, sent, allow, secret, receiver,
                                                                          settings):
    hook = receiver()
    allow("127.0.0.1")
    new = api.post("/api/v1/callbacks/secret").json()["secret"]
    submitted_and_finished(api, hook.url)
    assert deliver() == 1
    header = hook.requests[-1]["headers"]["Meridian-Signature"]
    assert header.count("v1=") == 2
    for key in (secret, new):  # a receiver on either secret accepts it during the switch
        verify_callback(hook.requests[-1]["body"], header, key)
    CallbackSecret.objects.update(previous_until=timezone.now())  # the grace is over
    submitted_and_finished(api, hook.url)
    assert deliver() == 1
    header = hook.requests[-1]["headers"]["Meridian-Signature"]
    assert header.count("v1=") == 1
    verify_callback(hook.requests[-1]["body"], header, new)
    with pytest.raises(CallbackVerificationError):
        verify_callback(hook.requests[-1]["body"], header, secret)


def test_callers_take_turns_and_one_sender_at_a_time_sends_for_a_bounded_time(api, sent, allow, secret, receiver,
                                                                             settings):
    from regions.services import liveness
    from regions.services.callbacks import deliver as delivery
    from regions.services.callbacks.secret import callback_secret_rotate
    from regions.services.tasks.submit import task_submit

    hook = receiver()
    allow("127.0.0.1")
    flood = [submitted_and_finished(api, hook.url) for _ in range(3)]
    other, _ = factories.caller("other")
    callback_secret_rotate(user=other)
    mine = task_submit(submitted_by=other, capability="echo", payload={}, callback_url=hook.url).task
    finish(mine.id)
    ids, _ = delivery._claim(timezone.now(), batch=10)
    order = list(CallbackDelivery.objects.filter(id__in=ids).values_list("id", "task_id"))
    by_id = {i: str(t) for i, t in order}
    assert [by_id[i] for i in ids] == [flood[0], str(mine.id), flood[1], flood[2]]  # round robin by caller
    CallbackDelivery.objects.update(lease_until=None, lease_token="")
    # Another sender runs: neither the sweeper nor a kick sends anything meanwhile.
    liveness.client().set(liveness.key("callbacks:sender"), "someone else", px=60_000)
    assert deliver() == 0 and not delivery.callback_deliver(task_id=mine.id) and hook.requests == []
    liveness.client().delete(liveness.key("callbacks:sender"))
    # A tick sends for CALLBACK_SEND_BUDGET_SECONDS at most (at least one), and leaves the rest to the next.
    settings.CALLBACK_SEND_BUDGET_SECONDS = 0
    assert deliver() == 1
    assert CallbackDelivery.objects.filter(state=CallbackDelivery.State.PENDING, lease_token="").count() == 3
    assert deliver() == 1 and deliver() == 1 and deliver() == 1 and len(hook.requests) == 4


# --- delivery ---------------------------------------------------------------------

def test_a_finished_task_is_posted_signed_to_a_real_receiver(api, sent, allow, secret, receiver):
    hook = receiver()
    allow("127.0.0.1")
    task_id = submitted_and_finished(api, hook.url)
    assert deliver() == 1
    (request,) = hook.requests
    task = verify_callback(request["body"], request["headers"]["Meridian-Signature"], secret)
    assert task["id"] == task_id and task["status"] == "succeeded" and task["result"] == {"echo": 1}
    assert request["headers"]["Content-Type"] == "application/json"
    assert request["headers"]["Meridian-Delivery"] == f"{task_id}.1"
    assert request["headers"]["Meridian-Delivery-Attempt"] == "1"
    with pytest.raises(CallbackVerificationError):
        verify_callback(request["body"], request["headers"]["Meridian-Signature"], "whsec_someone_else")
    # recorded, and visible on the task
    shown = api.get(f"/api/v1/tasks/{task_id}").json()
    assert shown["callback_url"] == hook.url
    assert shown["callback"]["state"] == "delivered"
    (attempt,) = shown["callback"]["attempts"]
    assert attempt["response_code"] == 200 and attempt["outcome"] == "delivered" and attempt["at"]
    assert deliver() == 0 and len(hook.requests) == 1  # delivered once


@pytest.mark.parametrize("how", ["failed", "cancelled"])
def test_failed_and_cancelled_tasks_are_delivered_too(api, sent, allow, secret, receiver, how):
    hook = receiver()
    allow("127.0.0.1")
    r = submit(api, hook.url)
    if how == "failed":
        finish(r.json()["id"], ok=False)
    else:
        task_cancel(task=Task.objects.get(id=r.json()["id"]))
    deliver()
    assert json.loads(hook.requests[0]["body"])["status"] == how


def test_the_finish_sends_the_delivery_at_once_after_its_commit(api, sent, allow, secret, receiver,
                                                                 django_capture_on_commit_callbacks):
    allow("127.0.0.1")
    r = submit(api, receiver().url)
    with django_capture_on_commit_callbacks(execute=True):
        finish(r.json()["id"])
    kicks = [m for m in sent if m.get("kwargs") == {"task_id": r.json()["id"]}]  # regions.callback_deliver's
    assert len(kicks) == 1


def test_an_unfinished_task_is_not_delivered(api, sent, allow, secret, receiver):
    hook = receiver()
    allow("127.0.0.1")
    assert submit(api, hook.url).status_code == 201
    assert deliver() == 0 and hook.requests == []


def test_a_500_is_retried_with_exponential_backoff_until_a_200(api, sent, allow, secret, receiver, settings):
    settings.CALLBACK_BACKOFF_BASE = 0.2
    hook = receiver(answers=[(500, {}), (500, {}), (200, {})])
    allow("127.0.0.1")
    task_id = submitted_and_finished(api, hook.url)
    wait_for(lambda: deliver() is not None and len(hook.requests) == 3, 15, interval=0.05,
             what="the third attempt")
    gaps = [b["at"] - a["at"] for a, b in zip(hook.requests, hook.requests[1:])]
    assert gaps[0] >= 0.2 and gaps[1] >= 0.4  # base, then twice the base
    delivery = CallbackDelivery.objects.get(task_id=task_id)
    assert delivery.state == "delivered"
    codes = list(CallbackAttempt.objects.filter(task_id=task_id).order_by("number").values_list(
        "response_code", "outcome"))
    assert codes == [(500, "failed"), (500, "failed"), (200, "delivered")]
    # each attempt is signed anew, every one verifies; one event, tried three times
    assert all(verify_callback(x["body"], x["headers"]["Meridian-Signature"], secret) for x in hook.requests)
    assert {x["headers"]["Meridian-Delivery"] for x in hook.requests} == {f"{task_id}.1"}
    assert [x["headers"]["Meridian-Delivery-Attempt"] for x in hook.requests] == ["1", "2", "3"]


def test_delivery_gives_up_after_the_retry_window(api, sent, allow, secret, receiver, settings):
    settings.CALLBACK_RETRY_HOURS = 1
    hook = receiver(answers=[(503, {})])
    allow("127.0.0.1")
    task_id = submitted_and_finished(api, hook.url)
    deliver()
    assert deliver(now=timezone.now() + timedelta(hours=2)) == 0
    delivery = CallbackDelivery.objects.get(task_id=task_id)
    assert delivery.state == "gave_up" and len(hook.requests) == 1
    assert api.get(f"/api/v1/tasks/{task_id}").json()["callback"]["state"] == "gave_up"


def test_a_retried_task_is_delivered_again_when_it_is_final_again(api, sent, allow, secret, receiver):
    hook = receiver()
    allow("127.0.0.1")
    task_id = submitted_and_finished(api, hook.url, ok=False)
    deliver()
    assert api.post(f"/api/v1/tasks/{task_id}/retry").status_code == 201
    assert deliver() == 0  # not final: nothing to say
    assert task_claim(task_id=task_id, attempt=2, agent_id="a1").run
    assert task_succeed(task_id=task_id, attempt=2, agent_id="a1", result={"second": True})
    deliver()
    assert [json.loads(x["body"])["status"] for x in hook.requests] == ["failed", "succeeded"]


# --- the SSRF guard -------------------------------------------------------------------

def _refused_at_delivery(api, url, receiver_hook, match):
    task_id = submitted_and_finished(api, url)
    deliver()
    (attempt,) = CallbackAttempt.objects.filter(task_id=task_id)
    assert attempt.outcome == "refused" and attempt.response_code is None, attempt.error
    assert match in attempt.error, attempt.error
    assert receiver_hook.requests == []
    return task_id


def test_loopback_is_refused_unless_allowed_by_cidr_or_exact_address(api, sent, allow, secret, receiver, dns):
    hook = receiver()
    dns({"hooks.example.com": ["127.0.0.1"]})
    allow("hooks.example.com")
    _refused_at_delivery(api, f"http://hooks.example.com:{hook.port}/hook", hook, "loopback")
    allow("hooks.example.com", "127.0.0.0/8")
    submitted_and_finished(api, f"http://hooks.example.com:{hook.port}/hook")
    deliver()
    assert len(hook.requests) == 1
    assert hook.requests[0]["headers"]["Host"] == f"hooks.example.com:{hook.port}"  # the name, not the address


def test_a_name_resolving_to_any_forbidden_address_is_refused(api, sent, allow, secret, receiver, dns):
    hook = receiver()
    allow("hooks.example.com")
    dns({"hooks.example.com": ["93.184.216.34", "10.0.0.5"]})  # one public, one private: refused
    _refused_at_delivery(api, "http://hooks.example.com/hook", hook, "10.0.0.5")


def test_link_local_and_the_metadata_address_are_refused_even_when_allowed(api, sent, allow, secret, receiver,
                                                                          dns):
    hook = receiver()
    allow("169.254.169.254", "169.254.0.0/16", "meta.example.com", "ll6.example.com")
    r = submit(api, "http://169.254.169.254/latest/meta-data/")
    assert r.status_code == 403 and "metadata" in r.json()["detail"]  # an address literal: refused at submit
    dns({"meta.example.com": ["169.254.169.254"], "ll6.example.com": ["fe80::1"]})
    _refused_at_delivery(api, "http://meta.example.com/x", hook, "metadata")
    _refused_at_delivery(api, "http://ll6.example.com/x", hook, "link-local")


def test_private_ranges_are_refused_unless_a_cidr_allows_them(allow, dns):
    allow("hooks.internal")
    dns({"hooks.internal": ["192.168.1.20"]})
    with pytest.raises(guard.DeliveryRefused, match="private"):
        guard.pinned_targets("http://hooks.internal/x")
    allow("hooks.internal", "192.168.0.0/16")
    assert [t.address for t in guard.pinned_targets("http://hooks.internal/x")] == ["192.168.1.20"]
    dns({"hooks.internal": ["::ffff:192.168.1.20"]})  # the same, as an IPv4-mapped IPv6 address
    allow("hooks.internal")
    with pytest.raises(guard.DeliveryRefused, match="private"):
        guard.pinned_targets("http://hooks.internal/x")


@pytest.mark.parametrize("address, why", [
    ("64:ff9b::a9fe:a9fe", "metadata"),  # NAT64 (RFC 6052) of 169.254.169.254
    ("64:ff9b::a00:5", "private"),  # NAT64 of 10.0.0.5
    ("2002:a9fe:a9fe::1", "metadata"),  # 6to4 of 169.254.169.254
    ("::ffff:0:a00:5", "private"),  # SIIT (RFC 2765) of 10.0.0.5
    ("::7f00:1", "loopback"),  # IPv4-compatible 127.0.0.1
    ("64:ff9b:1::a00:5", "NAT64"),  # local-use NAT64 (RFC 8215): any IPv4 behind it
])
def test_an_ipv6_address_that_carries_an_internal_ipv4_address_is_refused(allow, dns, address, why):
    """On an IPv6-only network with DNS64/NAT64 (EKS and GKE IPv6 clusters),
    64:ff9b::a9fe:a9fe reaches the metadata service: a name that resolves to
    it is refused as the IPv4 address it carries would be."""
    allow("hooks.example.com")
    dns({"hooks.example.com": [address]})
    with pytest.raises(guard.DeliveryRefused, match=why):
        guard.pinned_targets("http://hooks.example.com/x")


def test_a_public_ipv4_address_behind_nat64_is_called_at_its_ipv6_address(allow, dns):
    allow("hooks.example.com")
    dns({"hooks.example.com": ["64:ff9b::5db8:d822"]})  # 93.184.216.34
    assert [t.address for t in guard.pinned_targets("http://hooks.example.com/x")] == ["64:ff9b::5db8:d822"]


def test_the_regions_own_services_are_refused_even_on_an_allowed_loopback(allow, settings):
    allow("127.0.0.0/8", "localhost")
    redis_port = urlsplit(settings.REDIS_URL).port
    for url in ("http://127.0.0.1:5432/", f"http://127.0.0.1:{guard.own_ports()[0]}/",
                f"http://localhost:{redis_port}/"):
        with pytest.raises(guard.DeliveryRefused, match="own"):
            guard.pinned_targets(url)


def test_a_host_removed_from_the_allow_list_since_submission_is_refused(api, sent, allow, secret, receiver):
    hook = receiver()
    allow("127.0.0.1")
    r = submit(api, hook.url)
    allow("hooks.example.com")
    finish(r.json()["id"])
    deliver()
    assert CallbackAttempt.objects.get(task_id=r.json()["id"]).outcome == "refused" and hook.requests == []


def test_a_redirect_is_not_followed(api, sent, allow, secret, receiver):
    target = receiver()
    hop = receiver(answers=[(302, {"Location": target.url})])
    allow("127.0.0.1")
    task_id = submitted_and_finished(api, hop.url)
    deliver()
    (attempt,) = CallbackAttempt.objects.filter(task_id=task_id)
    assert attempt.response_code == 302 and attempt.outcome == "failed" and "redirect" in attempt.error
    assert len(hop.requests) == 1 and target.requests == []


# --- never twice at once ------------------------------------------------------------------

@pytest.mark.django_db(transaction=True)
def test_two_sweepers_racing_deliver_each_callback_once(api, sent, allow, secret, receiver):
    hook = receiver(delay=0.3)
    allow("127.0.0.1")
    ids = [submitted_and_finished(api, hook.url) for _ in range(6)]
    barrier = threading.Barrier(2)
    counts = []

    def sweeper():
        from django.db import connection

        barrier.wait()
        try:
            counts.append(deliver())
        finally:
            connection.close()

    threads = [threading.Thread(target=sweeper) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    delivered = [json.loads(x["body"])["id"] for x in hook.requests]
    assert sorted(delivered) == sorted(ids)  # each exactly once
    assert sum(counts) == 6
    assert deliver() == 0 and len(hook.requests) == 6
    assert set(CallbackDelivery.objects.values_list("state", flat=True)) == {"delivered"}


def test_a_batch_claim_renews_each_rows_lease_when_its_attempt_starts(api, sent, allow, secret, receiver,
                                                                      monkeypatch):
    """A sweeper delivers its batch one row after another: by the time it reaches
    a row, the lease taken at the claim may be nearly over. The attempt must not
    start on what is left of it, or another sweeper takes the row over while the
    POST is under way and the receiver gets the callback twice at once."""
    from regions.services.callbacks import deliver as deliver_module

    hook = receiver()
    allow("127.0.0.1")
    task_id = submitted_and_finished(api, hook.url)
    ids, token = deliver_module._claim(timezone.now(), batch=10)
    assert len(ids) == 1
    # The rows before it took the batch's lease nearly to its end.
    CallbackDelivery.objects.filter(id=ids[0]).update(lease_until=timezone.now() + timedelta(seconds=1))
    taken_over = []
    real_send = deliver_module._send

    def send_while_another_sweeper_ticks(target, **kwargs):
        taken_over.extend(deliver_module._claim(timezone.now() + timedelta(seconds=5), batch=10)[0])
        return real_send(target, **kwargs)

    monkeypatch.setattr(deliver_module, "_send", send_while_another_sweeper_ticks)
    assert deliver_module._deliver(ids[0], token=token, now=timezone.now())
    assert taken_over == [] and len(hook.requests) == 1
    assert json.loads(hook.requests[0]["body"])["id"] == task_id


# --- the configuration -----------------------------------------------------------------

def test_sync_config_refuses_an_allowed_host_that_is_not_a_host_address_or_cidr(repo):
    from tests.regions.test_config_sync import GLOBAL, sync

    repo.commit({"global.yaml": {**GLOBAL, "callbacks": {"allowed_hosts": ["hooks.example.com", "10.0.0.0/99"]}}})
    result = sync(repo)
    assert not result.applied and "callbacks.allowed_hosts" in result.error and "10.0.0.0/99" in result.error
    repo.commit({"global.yaml": {**GLOBAL, "callbacks": {"allowed_hosts": ["hooks.example.com:8443", "10.0.0.0/8",
                                                                           "[::1]:9000", "127.0.0.1"]}}})
    assert sync(repo).applied
    allowed = guard.allowed_hosts()
    assert allowed.names["hooks.example.com"] == {8443} and allowed.names["::1"] == {9000}
    assert guard.url_refusal("https://hooks.example.com:8443/x") is None


def test_the_admin_task_page_shows_the_callback_and_its_attempts_never_the_secret(api, sent, allow, secret,
                                                                                   receiver, client):
    from django.contrib.auth import get_user_model

    hook = receiver(answers=[(500, {}), (200, {})])
    allow("127.0.0.1")
    task_id = submitted_and_finished(api, hook.url)
    deliver()
    staff = get_user_model().objects.create_superuser("root", "root@example.com", "pw")
    client.force_login(staff)
    page = client.get(f"/admin/regions/task/{task_id}/change/").content.decode()
    assert "completion callback" in page.lower() and "callback attempts" in page.lower()
    assert hook.url in page and "answered 500" in page
    assert secret not in page


def test_the_demo_configuration_allows_callbacks_to_its_loopback_receivers(tmp_path, settings):
    from regions.management.demo.local_services import config_repo_create
    from regions.services.config.parse import config_parse

    repo = config_repo_create(root=tmp_path, say=lambda _: None)
    merged = config_parse({"global.yaml": (repo / "global.yaml").read_text()})
    allowed = guard.allow_list(merged["callbacks"]["allowed_hosts"])
    assert guard.url_refusal("http://127.0.0.1:8787/meridian", allowed) is None
    example = config_parse({"global.yaml": (Path(settings.BASE_DIR) / "examples" / "config-repo" / "global.yaml")
                            .read_text()})
    assert guard.allow_list(example["callbacks"]["allowed_hosts"]).empty  # the example allows none


def test_a_callback_posted_before_the_clock_lease_moved_on_is_recorded_and_not_posted_again(
        api, sent, allow, secret, receiver, monkeypatch):
    """The sweep is a clock job, fenced on its lease token: a takeover while its
    POST is under way must not lose the record of a POST already made (the
    receiver got it), which would leave the delivery pending to be POSTed again
    (an independent review found it so)."""
    from regions.models import ClockLease
    from regions.services import leadership
    from regions.services.callbacks import deliver

    hook = receiver()
    allow("127.0.0.1")
    submitted_and_finished(api, hook.url)
    assert leadership.lease_keep(holder="a", token=None, started_at=timezone.now()).token == 1
    real_send = deliver._send

    def send_then_lose_the_lease(target, **kwargs):
        code = real_send(target, **kwargs)
        with leadership.unfenced():  # another orchestrator's writes
            ClockLease.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
            assert leadership.lease_keep(holder="b", token=None, started_at=timezone.now()).token == 2
        return code

    monkeypatch.setattr(deliver, "_send", send_then_lose_the_lease)
    with leadership.fenced(1):
        callbacks_deliver_due(now=timezone.now(), batch=10)
    assert len(hook.requests) == 1
    assert CallbackAttempt.objects.count() == 1
    assert CallbackDelivery.objects.get().state == CallbackDelivery.State.DELIVERED
