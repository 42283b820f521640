"""Schedules on real processes: the orchestrator's beat makes each due run once,
however many orchestrators tick and whatever restarts happen."""
import signal
import time
from datetime import timedelta

import pytest

from tests import harness
from tests.harness import wait_for

pytestmark = pytest.mark.integration


def configure(region, tmp_path, schedules: dict) -> None:
    commit = harness.config_repo(tmp_path / "config")
    commit({"schema_version": 1, "schedules": schedules})
    assert "applied" in region.manage("sync_config", "--repo", str(tmp_path / "config"), "--ref", "main")


def runs(region, name: str) -> list[tuple]:
    return region.db_query("SELECT due_at, outcome, task_id FROM regions_schedulerun WHERE schedule = %s "
                           "ORDER BY due_at", (name,))


def assert_once_per_due_time(region, name: str, every: float) -> list[tuple]:
    """One row per due time, one task per created run, and no task of the
    schedule without its run."""
    rows = runs(region, name)
    dues = [due for due, _, _ in rows]
    assert len(dues) == len(set(dues))
    created = [task for _, outcome, task in rows if outcome == "created"]
    assert all(created) and len(set(created)) == len(created)
    tasks = region.db_query("SELECT id FROM regions_task WHERE submitted_by_id IS NULL")
    assert sorted(str(t) for (t,) in tasks) == sorted(str(t) for t in created)
    assert all((b - a).total_seconds() % every == 0 for a, b in zip(dues, dues[1:]))
    return rows


def test_two_orchestrators_running_beat_at_once_create_each_due_run_once(fresh_region, tmp_path):
    region = fresh_region(SCHEDULE_TICK_SECONDS="0.2")
    configure(region, tmp_path, {"every2s": {"interval": 2, "capability": "echo", "overlap": "allow"}})
    # A second orchestrator of the same region standing for the clock lease: one of them sends the ticks.
    second = region.start_orchestrator("orchestrator-2")
    wait_for(lambda: sum(o == "created" for _, o, _ in runs(region, "every2s")) >= 6, 60,
             what="six runs of the schedule")
    sending = [p for p in (region.orchestrator, second)
               if "Sending due task schedules (regions.schedules_tick)" in p.log.read_text(errors="replace")]
    assert len(sending) == 1, [p.tail() for p in (region.orchestrator, second)]
    rows = assert_once_per_due_time(region, "every2s", 2)
    created = [due for due, outcome, _ in rows if outcome == "created"]
    # Every due time since the first run, none skipped, none twice.
    assert [(b - a).total_seconds() for a, b in zip(created, created[1:])] == [2.0] * (len(created) - 1)


def test_an_orchestrator_killed_across_due_times_makes_the_latest_run_once_after_restart(fresh_region, tmp_path):
    region = fresh_region(SCHEDULE_TICK_SECONDS="0.2")
    configure(region, tmp_path, {"every3s": {"interval": 3, "capability": "echo", "overlap": "allow",
                                             "catch_up": "latest"}})
    wait_for(lambda: sum(o == "created" for _, o, _ in runs(region, "every3s")) >= 2, 60, what="two runs")
    region.orchestrator.signal(signal.SIGKILL)  # worker, pool and beat at once, a tick possibly mid-transaction
    wait_for(lambda: not region.orchestrator.alive(), 10, what="the orchestrator dead")
    last_before = runs(region, "every3s")[-1][0]
    # Two due times pass with no orchestrator at all.
    wait_for(lambda: time.time() > (last_before + timedelta(seconds=7)).timestamp(), 15, what="two due times")
    assert runs(region, "every3s")[-1][0] == last_before
    region.start_orchestrator()
    wait_for(lambda: runs(region, "every3s")[-1][0] > last_before + timedelta(seconds=6), 60,
             what="a run after the restart")
    rows = assert_once_per_due_time(region, "every3s", 3)
    after = [(due, outcome) for due, outcome, _ in rows if due > last_before]
    # catch_up: latest — of the due times missed while down, only the latest ran.
    assert after[0][1] == "created" and after[0][0] >= last_before + timedelta(seconds=6), after
