"""Schedules from the configuration repository (schedules.<name>): due times,
one run per due time, overlap policies, catch-up and removal, in-process
against the real PostgreSQL and Redis."""
from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import call_command
from django.test import TestCase

from regions.clock.schedules import schedules_tick
from regions.models import ScheduleRun, Task
from regions.services.schedules.due import schedule_due_after, schedule_due_before
from tests import factories

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 6, 1, 12, 0, 0, tzinfo=UTC)
EVERY_MINUTE = {"interval": 60, "capability": "echo", "payload": {"n": 1}, "priority": 7}


def configure(**schedules) -> None:
    factories.config({"schema_version": 1, "schedules": schedules})


def tick(now: datetime) -> dict:
    with TestCase.captureOnCommitCallbacks(execute=True):
        return schedules_tick(now=now)


@pytest.fixture
def region(redis_clean, settings, sent):
    settings.REGION_ID = "unit-1"
    factories.agent("a1", ["echo"])
    return sent


# --- due times (pure) ----------------------------------------------------------

def test_interval_due_times_are_multiples_of_the_interval_since_the_epoch():
    definition = {"interval": 300}
    at = datetime(2026, 6, 1, 12, 7, 30, tzinfo=UTC)
    assert schedule_due_before(definition, at) == datetime(2026, 6, 1, 12, 5, tzinfo=UTC)
    assert schedule_due_after(definition, at) == datetime(2026, 6, 1, 12, 10, tzinfo=UTC)
    on_the_dot = datetime(2026, 6, 1, 12, 10, tzinfo=UTC)
    assert schedule_due_before(definition, on_the_dot) == on_the_dot  # due now counts as due
    assert schedule_due_after(definition, on_the_dot) == on_the_dot + timedelta(minutes=5)


def test_cron_due_times_follow_the_time_zone_across_a_dst_change():
    nine_in_paris = {"cron": "0 9 * * *", "timezone": "Europe/Paris"}
    # Clocks go forward on 2026-03-29: 09:00 in Paris is 08:00 UTC before, 07:00 UTC after.
    before = schedule_due_after(nine_in_paris, datetime(2026, 3, 28, 0, 0, tzinfo=UTC))
    after = schedule_due_after(nine_in_paris, before)
    assert (before, after) == (datetime(2026, 3, 28, 8, 0, tzinfo=UTC), datetime(2026, 3, 29, 7, 0, tzinfo=UTC))
    assert schedule_due_before(nine_in_paris, datetime(2026, 3, 29, 7, 30, tzinfo=UTC)) == after
    assert schedule_due_after(nine_in_paris, after).tzinfo == UTC


def test_cron_without_a_time_zone_is_utc():
    assert schedule_due_after({"cron": "*/15 * * * *"}, datetime(2026, 6, 1, 12, 1, tzinfo=UTC)) == \
        datetime(2026, 6, 1, 12, 15, tzinfo=UTC)


def test_a_wall_time_that_occurs_twice_when_clocks_go_back_is_due_once():
    half_past_one = {"cron": "30 1 * * *", "timezone": "America/New_York"}
    # 2026-11-01 01:30 happens at 05:30 UTC (EDT) and again at 06:30 UTC (EST).
    first = schedule_due_after(half_past_one, datetime(2026, 11, 1, 0, 0, tzinfo=UTC))
    assert first == datetime(2026, 11, 1, 5, 30, tzinfo=UTC)
    assert schedule_due_after(half_past_one, first) == datetime(2026, 11, 2, 6, 30, tzinfo=UTC)
    assert schedule_due_before(half_past_one, datetime(2026, 11, 1, 7, 0, tzinfo=UTC)) == first


# --- runs ----------------------------------------------------------------------

def test_a_due_run_creates_one_task_through_the_submission_path_once(region):
    configure(report=EVERY_MINUTE)
    assert tick(T0)["created"] == 1
    assert tick(T0 + timedelta(seconds=5))["created"] == 0  # the same due time: nothing new
    run = ScheduleRun.objects.get()
    assert (run.schedule, run.due_at, run.outcome) == ("report", T0, ScheduleRun.Outcome.CREATED)
    task = run.task
    assert (task.capability, task.payload, task.priority, task.submitted_by) == ("echo", {"n": 1}, 7, None)
    assert task.status == Task.Status.QUEUED
    assert [m["task_id"] for m in region] == [f"{task.id}:1"]  # sent after the commit (the outbox)
    tick(T0 + timedelta(seconds=60))
    assert ScheduleRun.objects.count() == 2


def test_a_run_refused_by_the_submission_checks_is_recorded_not_retried(region):
    factories.config({"schema_version": 1, "blocklist": {"capabilities": ["echo"]},
                      "schedules": {"report": EVERY_MINUTE}})
    assert tick(T0)["refused"] == 1
    run = ScheduleRun.objects.get()
    assert run.outcome == ScheduleRun.Outcome.REFUSED and "blocklisted" in run.detail and run.task is None
    tick(T0 + timedelta(seconds=5))
    assert ScheduleRun.objects.count() == 1 and Task.objects.count() == 0


def test_a_schedule_runs_only_in_the_regions_it_names(region):
    configure(here={**EVERY_MINUTE, "regions": ["unit-1"]}, elsewhere={**EVERY_MINUTE, "regions": ["us-east-1"]},
              everywhere={**EVERY_MINUTE, "regions": ["*"]}, default=EVERY_MINUTE)
    tick(T0)
    assert set(ScheduleRun.objects.values_list("schedule", flat=True)) == {"here", "everywhere", "default"}


def test_overlap_skip_records_the_run_as_skipped_while_the_previous_task_is_active(region):
    configure(report={**EVERY_MINUTE, "overlap": "skip"})
    tick(T0)
    tick(T0 + timedelta(seconds=60))
    runs = list(ScheduleRun.objects.order_by("due_at"))
    assert [r.outcome for r in runs] == ["created", "skipped"] and runs[1].task is None
    Task.objects.update(status=Task.Status.SUCCEEDED)
    tick(T0 + timedelta(seconds=120))
    assert ScheduleRun.objects.order_by("due_at").last().outcome == "created"


def test_overlap_allow_runs_beside_the_previous_task(region):
    configure(report={**EVERY_MINUTE, "overlap": "allow"})
    tick(T0)
    tick(T0 + timedelta(seconds=60))
    assert Task.objects.filter(status=Task.Status.QUEUED).count() == 2


def test_overlap_replace_cancels_the_previous_task_and_runs_a_new_one(region):
    configure(report={**EVERY_MINUTE, "overlap": "replace"})
    tick(T0)
    first = ScheduleRun.objects.get().task
    tick(T0 + timedelta(seconds=60))
    first.refresh_from_db()
    assert first.status == Task.Status.CANCELLED and "schedule report" in first.status_reason
    latest = ScheduleRun.objects.order_by("due_at").last()
    assert latest.outcome == "created" and latest.task.status == Task.Status.QUEUED


def test_catch_up_latest_runs_only_the_latest_missed_due_time_after_an_outage(region):
    configure(report={**EVERY_MINUTE, "overlap": "allow", "catch_up": "latest"})
    tick(T0)
    back = T0 + timedelta(minutes=30, seconds=20)  # down for 30 due times
    tick(back)
    assert list(ScheduleRun.objects.order_by("due_at").values_list("due_at", "outcome")) == [
        (T0, "created"), (T0 + timedelta(minutes=30), "created")]


def test_catch_up_none_records_the_missed_due_time_and_runs_nothing(region):
    configure(report={**EVERY_MINUTE, "overlap": "allow", "catch_up": "none"})
    tick(T0)
    tick(T0 + timedelta(minutes=30, seconds=20))
    latest = ScheduleRun.objects.order_by("due_at").last()
    assert latest.outcome == ScheduleRun.Outcome.MISSED and latest.task is None
    assert Task.objects.count() == 1


def test_a_new_schedule_does_not_run_for_a_due_time_long_past(region):
    configure(nightly={"cron": "0 3 * * *", "capability": "echo"})
    tick(T0)  # 12:00 UTC: 03:00 was nine hours ago, before the schedule existed
    assert Task.objects.count() == 0
    assert tick(T0.replace(hour=3) + timedelta(days=1, seconds=2))["created"] == 1


def test_removing_a_schedule_stops_it(region):
    configure(report=EVERY_MINUTE)
    tick(T0)
    configure()
    assert tick(T0 + timedelta(seconds=60)) == {"created": 0, "skipped": 0, "missed": 0, "refused": 0}
    assert ScheduleRun.objects.count() == 1


# --- visible -------------------------------------------------------------------

def test_the_api_lists_schedules_with_next_due_and_last_run(region, settings):
    from tests.test_scopes import keyed

    configure(report=EVERY_MINUTE, nightly={"cron": "0 3 * * *", "timezone": "Europe/Paris",
                                            "capability": "echo"})
    now = schedule_due_before(EVERY_MINUTE, datetime.now(UTC))
    tick(now)
    assert keyed("tasks:read").get("/api/v1/schedules").status_code == 403
    r = keyed("fleet:read").get("/api/v1/schedules")
    assert r.status_code == 200, r.content
    rows = {s["name"]: s for s in r.json()["results"]}
    assert set(rows) == {"report", "nightly"}
    report = rows["report"]
    assert report["interval"] == 60 and report["capability"] == "echo" and report["overlap"] == "skip"
    assert report["last_run"]["outcome"] == "created" and report["last_run"]["task_status"] == "queued"
    assert report["last_run"]["task_id"] == str(ScheduleRun.objects.get(schedule="report").task_id)
    assert datetime.fromisoformat(report["next_due"]) > now
    assert rows["nightly"]["timezone"] == "Europe/Paris" and rows["nightly"]["next_due"]


def test_fleet_status_shows_a_schedule_that_is_behind(region, capsys):
    configure(report=EVERY_MINUTE)
    now = datetime.now(UTC)
    tick(schedule_due_before(EVERY_MINUTE, now - timedelta(minutes=3)))  # ran then; nobody ticked since
    call_command("fleet_status")
    out = capsys.readouterr().out
    assert "Schedules behind" in out and "report" in out
    tick(now)
    call_command("fleet_status")
    assert "report" not in capsys.readouterr().out.split("Schedules behind")[1].split("\n\n")[0]


def test_the_admin_lists_schedule_runs_read_only(region, admin_client):
    configure(report=EVERY_MINUTE)
    tick(T0)
    r = admin_client.get("/admin/regions/schedulerun/")
    assert r.status_code == 200 and b"report" in r.content
    assert b'id="schedules"' in r.content and b"every 60 s" in r.content  # the schedules, above their runs
    assert admin_client.get("/admin/regions/schedulerun/add/").status_code == 403


def test_the_example_configuration_repository_has_valid_schedules(settings):
    from regions.services.config.current import EffectiveConfig
    from regions.services.config.parse import config_parse
    from tests.harness import ROOT

    example = ROOT / "examples" / "config-repo"
    for region_id, expected in [("eu-west-3", {"echo-every-minute", "nightly-report"}),
                                ("us-east-1", {"echo-every-minute"})]:
        settings.REGION_ID = region_id
        files = {"global.yaml": (example / "global.yaml").read_text(),
                 f"regions/{region_id}.yaml": (example / "regions" / f"{region_id}.yaml").read_text()}
        assert set(EffectiveConfig(sha="x", content=config_parse(files)).schedules) == expected
