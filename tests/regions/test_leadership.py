"""The clock lease and its fencing token, on the real PostgreSQL
(regions/services/leadership.py). The processes' side, two and three
orchestrators killed and frozen, is tests/regions/test_orchestrator_standby.py."""
import threading
import time
from datetime import timedelta

import pytest
from celery import shared_task
from django.db import connection, transaction
from django.utils import timezone

from regions.models import ClockLease, DeadLetter, Orchestrator
from regions.services import leadership
from regions.services.leadership import FENCE_HEADER, Fenced, fenced, lease_keep, lease_release
from regions.tasks import clock_job

pytestmark = pytest.mark.django_db(transaction=True)


def _keep(holder, token=None):
    return lease_keep(holder=holder, token=token, started_at=timezone.now())


def _run_out():
    ClockLease.objects.filter(name=leadership.CLOCK).update(expires_at=timezone.now() - timedelta(seconds=1))


def _letter(reason="x"):
    return DeadLetter.objects.create(source="test", reason=reason)


def test_one_holder_at_a_time_renewals_keep_the_token_and_a_takeover_raises_it():
    a = _keep("a")
    assert a.held and a.token == 1
    b = _keep("b")
    assert not b.held and b.leader == "a" and b.token is None
    assert _keep("a", a.token).token == 1  # a renewal, same token
    assert not _keep("b").held

    _run_out()
    b = _keep("b")
    assert b.held and b.token == 2
    stale = _keep("a", 1)  # a woke up: its lease is gone
    assert not stale.held and stale.leader == "b"
    assert set(Orchestrator.objects.values_list("name", flat=True)) == {"a", "b"}


def test_a_holder_that_let_its_lease_run_out_takes_it_again_under_a_new_token():
    assert _keep("a").token == 1
    _run_out()
    assert _keep("a", 1).token == 2


def test_release_hands_the_lease_over_at_once_and_only_the_holder_can():
    assert _keep("a").token == 1
    assert not lease_release(holder="b", token=1)
    assert not _keep("b").held
    assert lease_release(holder="a", token=1)
    assert _keep("b").token == 2


def test_a_write_under_a_stale_token_is_refused_in_or_out_of_a_transaction():
    _keep("a")
    with fenced(1):
        _letter("current")  # autocommit: checked and written in one transaction
        with transaction.atomic():
            _letter("current, atomic")
    _run_out()
    _keep("b")
    with fenced(1):
        DeadLetter.objects.count()  # reads are free
        with pytest.raises(Fenced):
            _letter("stale")
        with pytest.raises(Fenced), transaction.atomic():
            _letter("stale, atomic")
        with pytest.raises(Fenced):
            DeadLetter.objects.all().update(reason="rewritten")
        with pytest.raises(Fenced):
            leadership.fence_check()
    with fenced(2):
        _letter("new leader")
    assert sorted(DeadLetter.objects.values_list("reason", flat=True)) == ["current", "current, atomic",
                                                                            "new leader"]


@pytest.mark.postgresql  # the share lock; SQLite has one writer at a time
def test_a_takeover_waits_for_a_checked_write_to_commit_and_fences_every_write_after(settings):
    """The share lock: a write checked under token 1 commits before token 2 exists."""
    # A takeover waits for the lock up to a renewal interval: longer here than the second the
    # test holds it, with room for a busy machine (at 1 s it timed out now and then, and stood by).
    settings.ORCHESTRATOR_LEASE_RENEW_SECONDS = 5
    _keep("a")
    _run_out()
    checked, release, took = threading.Event(), threading.Event(), {}

    def old_leader():
        try:
            with fenced(1), transaction.atomic():
                _letter("checked before the takeover")
                checked.set()
                release.wait(10)
                _letter("same transaction, already checked")
        finally:
            connection.close()

    def standby():
        try:
            took["state"] = _keep("b")
            took["at"] = time.monotonic()
        finally:
            connection.close()

    first = threading.Thread(target=old_leader)
    first.start()
    assert checked.wait(10)
    second = threading.Thread(target=standby)
    second.start()
    second.join(1.0)
    assert second.is_alive(), "the takeover did not wait for the checked transaction"
    released_at = time.monotonic()
    release.set()
    first.join(10)
    second.join(10)
    assert took["state"].held and took["state"].token == 2 and took["at"] >= released_at
    assert DeadLetter.objects.count() == 2
    with fenced(1), pytest.raises(Fenced):
        _letter("after the takeover")


@shared_task(name="tests.clock_write")
@clock_job
def _clock_write() -> str:
    _letter("clock job")
    return "wrote"


def test_a_clock_job_runs_only_under_the_leases_token():
    """As a worker runs it: no token, or not an integer → skipped; a stale one →
    its write refused, skipped; the lease's → runs. Called in-process: unfenced."""
    assert _clock_write.apply().get() == {"skipped": "no clock lease token"}
    assert _clock_write.apply(headers={FENCE_HEADER: "1"}).get() == {"skipped": "no clock lease token"}
    _keep("a")
    assert _clock_write.apply(headers={FENCE_HEADER: 1}).get() == "wrote"
    _run_out()
    _keep("b")
    assert _clock_write.apply(headers={FENCE_HEADER: 1}).get() == {"skipped": "fenced"}
    assert _clock_write.apply(headers={FENCE_HEADER: 2}).get() == "wrote"
    assert _clock_write() == "wrote"
    assert DeadLetter.objects.count() == 3


def test_the_status_names_the_leader_and_the_standbys_and_attention_says_when_nobody_leads():
    from regions.attention import clock_items
    from regions.selectors import clock_leadership

    assert clock_leadership()["leader"] == "" and clock_items(clock_leadership()) == []  # never held: the reaper item
    _keep("a")
    _keep("b")
    clock = clock_leadership()
    assert (clock["leader"], clock["token"], clock["standbys"]) == ("a", 1, ["b"])
    assert clock_items(clock) == []
    ClockLease.objects.filter(name=leadership.CLOCK).update(expires_at=timezone.now() - timedelta(seconds=2))
    assert clock_items(clock_leadership()) == []  # a takeover is due, not late
    ClockLease.objects.filter(name=leadership.CLOCK).update(expires_at=timezone.now() - timedelta(seconds=60))
    [item] = clock_items(clock_leadership())
    assert item["severity"] == "critical" and "no orchestrator has held the clock lease for 60 s (last a)" in \
        item["text"], item


@pytest.mark.postgresql  # row locks and the server's idle-in-transaction timeout
def test_a_frozen_clock_job_transaction_delays_a_takeover_by_one_lease_at_most_and_never_commits(settings):
    """A clock-job transaction left open (its orchestrator frozen: a paused VM,
    SIGSTOP; the frozen one need not be the leader) holds its key-share lock: a
    takeover waits for it, each attempt at most a renewal interval, until the
    server ends the idle session after a lease's length; its write never commits.
    Renewals do not wait for it at all. (Before: every renewal and takeover waited
    for the server's own 60 s idle limit; an independent review found it.)"""
    settings.ORCHESTRATOR_LEASE_SECONDS, settings.ORCHESTRATOR_LEASE_RENEW_SECONDS = 2.0, 0.5
    assert _keep("a").token == 1
    in_tx, outcome = threading.Event(), {}

    def frozen_job():
        try:
            with fenced(1), transaction.atomic():
                _letter("written by a job that froze before its commit")
                in_tx.set()
                time.sleep(5)  # stopped, idle in transaction
        except Exception as exc:  # noqa: BLE001 - the server ended the session
            outcome["error"] = type(exc).__name__
        finally:
            connection.close()

    job = threading.Thread(target=frozen_job)
    job.start()
    assert in_tx.wait(10)
    renewed_at = time.monotonic()
    assert _keep("a", 1).held and time.monotonic() - renewed_at < 0.4  # a renewal does not wait
    frozen_at = time.monotonic()
    _run_out()
    state = _keep("b")
    while not state.held and time.monotonic() - frozen_at < 10:
        assert time.monotonic() - frozen_at < 10
        state = _keep("b")
    took = time.monotonic() - frozen_at
    job.join(10)
    assert state.held and state.token == 2 and took < 2.0 + 2 * 0.5 + 1.0, took
    assert outcome.get("error") and DeadLetter.objects.count() == 0, outcome


def test_beat_asks_for_the_lease_and_sends_nothing_while_the_broker_is_away(settings, caplog):
    """The beat thread's scheduler, in process, against a broker nobody answers
    on: its tick says so once and goes on, the lease is still renewed, and it does
    not retry the connection forever (Celery's default would hold the thread, and
    the renewals with it)."""
    from regions.clock.beat import LeaderScheduler
    from project.celery import app
    from tests.harness import silent_listener

    saved = app.conf.broker_connection_timeout
    with silent_listener() as quiet:
        settings.ORCHESTRATOR_LEASE_RENEW_SECONDS = 0.2
        app.conf.broker_connection_timeout = 0.5
        scheduler = LeaderScheduler(app=app)
        scheduler.update_from_dict({"reap": {"task": "regions.agent_reap", "schedule": 0.1}})
        scheduler.connection = app.connection_for_write(f"amqp://guest:guest@127.0.0.1:{quiet.port}//")

        def ticks():
            try:
                for _ in range(3):
                    scheduler.tick()
                    time.sleep(0.25)
            finally:
                connection.close()

        ticking = threading.Thread(target=ticks, daemon=True)
        try:
            ticking.start()
            ticking.join(30)
            assert not ticking.is_alive(), "beat's tick is still trying to connect"
        finally:
            app.conf.broker_connection_timeout = saved
    assert len(quiet.held) >= 1  # it did try the broker
    assert scheduler.leading() and ClockLease.objects.get().token == scheduler.token == 1
    assert sum("beat tick failed" in r.message for r in caplog.records) == 1, caplog.text
