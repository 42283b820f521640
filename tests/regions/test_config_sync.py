"""GitOps configuration against real git repositories made in the test."""
import logging
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from django.core.management import CommandError, call_command
from django.test import TestCase

from project.accounts.models import AuditEvent
from regions.models import Agent, ConfigVersion, Task
from regions.services import summary
from regions.services.agents.heartbeat import heartbeat_record
from regions.services.agents.registry import ForbiddenError, agent_register
from regions.services.config.current import config_current
from regions.services.config.sync import config_sync
from regions.services.tasks.outcome import task_fail
from regions.services.tasks.refusals import CapabilityRefused, RateLimited
from regions.services.tasks.submit import task_submit
from tests import factories

pytestmark = pytest.mark.django_db

GLOBAL = {
    "schema_version": 1,
    "agents": {"min_version": "1.0.0", "heartbeat_interval": 5, "heartbeat_ttl": 15},
    "summary_interval": 60,
    "tasks": {"echo": {"timeout": 30, "max_attempts": 2, "retry_backoff": 1},
              "data_ingestion": {"timeout": 300, "regions": ["eu-west-3"]}},
    "secrets": {"ingest_api_token": {"ref": "env:MERIDIAN_TEST_SECRET", "hosts": ["ingest.example.com"]}},
}


class Repo:
    def __init__(self, path: Path):
        self.path = path
        path.mkdir()
        self.git("init", "-q", "-b", "main")
        self.git("config", "user.email", "ops@example.com")
        self.git("config", "user.name", "ops")

    def git(self, *args) -> str:
        return subprocess.run(["git", *args], cwd=self.path, check=True, capture_output=True, text=True).stdout

    def commit(self, files: dict, message: str = "change") -> str:
        for name, content in files.items():
            target = self.path / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content if isinstance(content, str) else yaml.safe_dump(content))
        self.git("add", "-A")
        self.git("commit", "-q", "-m", message)
        return self.git("rev-parse", "HEAD").strip()


@pytest.fixture
def repo(tmp_path, settings, redis_clean):
    settings.VAR_DIR = tmp_path / "var"
    settings.REGION_ID = "unit-1"
    config_current.cache_clear()
    yield Repo(tmp_path / "config")
    config_current.cache_clear()


def sync(repo, ref="main", **kw):
    """As `manage.py sync_config` does it: its transaction commits (and publishes)."""
    with TestCase.captureOnCommitCallbacks(execute=True):
        result = config_sync(repo=str(repo.path), ref=ref, **kw)
    config_current.cache_clear()
    return result


def test_applies_a_commit_and_records_it(repo):
    sha = repo.commit({"global.yaml": GLOBAL})
    result = sync(repo)
    assert result.applied and result.sha == sha and not result.error
    active = ConfigVersion.objects.get(is_active=True)
    assert active.sha == sha and active.result == "applied" and active.content["summary_interval"] == 60
    assert config_current().sha == sha
    assert sync(repo).applied is False  # same commit again: nothing to do
    applied = AuditEvent.objects.get(action="config.applied")  # once: the second sync changed nothing
    assert applied.actor == "config sync" and sha[:12] in applied.target and applied.outcome == "done"


def test_region_file_overrides_global_key_by_key(repo):
    repo.commit({"global.yaml": GLOBAL,
                 "regions/unit-1.yaml": {"agents": {"heartbeat_interval": 2, "heartbeat_ttl": 6},
                                         "tasks": {"echo": {"timeout": 5}}},
                 "regions/other-9.yaml": {"summary_interval": 7}})
    sync(repo)
    config = config_current()
    assert (config.heartbeat_interval, config.heartbeat_ttl) == (2, 6)
    assert config.task_definition("echo") == {"timeout": 5, "max_attempts": 2, "retry_backoff": 1}
    assert config.min_agent_version == "1.0.0" and config.summary_interval == 60  # not other-9's


@pytest.mark.parametrize("files,expected", [
    ({"global.yaml": {**GLOBAL, "summary_interval": "often"}}, "global.yaml: summary_interval: 'often' is not of type"),
    ({"global.yaml": {**GLOBAL, "tasks": {"echo": {"timeout": 0}}}}, "global.yaml: tasks.echo.timeout:"),
    ({"global.yaml": GLOBAL, "regions/unit-1.yaml": {"agents": {"colour": "blue"}}},
     "regions/unit-1.yaml: agents: Additional properties are not allowed ('colour'"),
    ({"global.yaml": {**GLOBAL, "secrets": {"db_password": {"ref": "hunter2", "hosts": ["x"]}}}},
     "global.yaml: secrets.db_password.ref:"),
    ({"global.yaml": "agents: [unclosed"}, "global.yaml: not valid YAML"),
    ({"global.yaml": {**GLOBAL, "callers": {"team-a": {"max_inflight": 5}}}},
     "global.yaml: callers.team-a: Additional properties are not allowed ('max_inflight'"),
    ({"global.yaml": {**GLOBAL, "tasks": {"echo": {"rate_limit_per": "agent"}}}},
     "global.yaml: tasks.echo.rate_limit_per:"),
    ({"global.yaml": GLOBAL, "regions/unit-1.yaml": {"agents": {"heartbeat_ttl": 6}}},
     "agents.heartbeat_ttl: 6 is shorter than two heartbeat intervals"),
    ({"global.yaml": {"schema_version": 1, "agents": {"heartbeat_interval": 30}}},
     "agents.heartbeat_ttl: 15.0 is shorter than two heartbeat intervals"),
    ({"global.yaml": {**GLOBAL, "schedules": {"report": {"cron": "61 * * * *", "capability": "echo"}}}},
     "global.yaml: schedules.report.cron: '61 * * * *' is not a valid cron expression"),
    ({"global.yaml": {**GLOBAL, "schedules": {"report": {"cron": "0 3 * * *", "timezone": "Mars/Olympus",
                                                         "capability": "echo"}}}},
     "global.yaml: schedules.report.timezone: unknown time zone 'Mars/Olympus'"),
    ({"global.yaml": {**GLOBAL, "schedules": {"report": {"cron": "0 3 * * *", "interval": 60,
                                                         "capability": "echo"}}}},
     "global.yaml: schedules.report: give cron or interval, not both"),
    ({"global.yaml": GLOBAL, "regions/unit-1.yaml": {"schedules": {"report": {"interval": 60}}}},
     "regions/unit-1.yaml: schedules.report: capability is required"),
    ({"global.yaml": {**GLOBAL, "schedules": {"report": {"capability": "echo"}}}},
     "global.yaml: schedules.report: give cron or interval"),
    ({"global.yaml": {**GLOBAL, "schedules": {"report": {"interval": 0, "capability": "echo"}}}},
     "global.yaml: schedules.report.interval:"),
    ({"global.yaml": {**GLOBAL, "schedules": {"report": {"interval": 60, "capability": "echo",
                                                         "overlap": "queue"}}}},
     "global.yaml: schedules.report.overlap:"),
    ({"global.yaml": {**GLOBAL, "schedules": {"report": {"interval": 60, "capability": "echo",
                                                         "catch_up": "all"}}}},
     "global.yaml: schedules.report.catch_up:"),
    ({"global.yaml": {**GLOBAL, "schedules": {"Report Now": {"interval": 60, "capability": "echo"}}}},
     "global.yaml: schedules: 'Report Now' does not match"),
])
def test_an_invalid_commit_changes_nothing_and_names_file_key_and_reason(repo, files, expected):
    good = repo.commit({"global.yaml": GLOBAL})
    sync(repo)
    repo.commit(files, "broken")
    result = sync(repo)
    assert not result.applied and expected in result.error, result.error
    assert ConfigVersion.objects.get(is_active=True).sha == good
    assert config_current().sha == good
    assert ConfigVersion.objects.filter(result="rejected").count() == 1
    sync(repo)  # the same broken commit again, as the next sync would: one audit event, not one a minute
    rejected = AuditEvent.objects.get(action="config.rejected")
    assert rejected.outcome == "refused" and expected in rejected.detail


def test_rollback_to_an_earlier_commit(repo):
    first = repo.commit({"global.yaml": GLOBAL})
    sync(repo)
    repo.commit({"global.yaml": {**GLOBAL, "summary_interval": 10}})
    sync(repo)
    assert config_current().summary_interval == 10
    result = sync(repo, ref=first)
    assert result.applied and config_current().sha == first and config_current().summary_interval == 60
    assert {"key": "summary_interval", "from": 10, "to": 60} in result.changes


def test_dry_run_prints_changes_and_applies_nothing(repo, capsys):
    repo.commit({"global.yaml": GLOBAL})
    sync(repo)
    repo.commit({"global.yaml": {**GLOBAL, "summary_interval": 10}})
    call_command("sync_config", "--repo", str(repo.path), "--dry-run")
    out = capsys.readouterr().out
    assert "would change (1 changes" in out and "summary_interval: 60 -> 10" in out
    assert config_current().summary_interval == 60
    with pytest.raises(CommandError, match="not found"):
        call_command("sync_config", "--repo", str(repo.path), "--ref", "no-such-branch")


def test_agent_below_min_version_or_blocklisted_is_refused_at_registration(repo):
    repo.commit({"global.yaml": {**GLOBAL, "blocklist": {"agents": ["bad-1"]}}})
    sync(repo)
    with pytest.raises(ForbiddenError, match="below the minimum 1.0.0"):
        agent_register(agent_id="old-1", capabilities=["echo"], version="0.9.3")
    with pytest.raises(ForbiddenError, match="blocklisted"):
        agent_register(agent_id="bad-1", capabilities=["echo"], version="1.2.0")
    assert agent_register(agent_id="ok-1", capabilities=["echo"], version="1.0.0")


def test_a_connected_agent_added_to_the_blocklist_is_told_to_stop(repo):
    reg = agent_register(agent_id="a1", capabilities=["echo"], version="1.0.0")
    repo.commit({"global.yaml": GLOBAL})
    sync(repo)
    beat = lambda: heartbeat_record(agent_id="a1", raw_token=reg.token, busy=0)  # noqa: E731
    assert beat()["desired"] == "active" and beat()["interval"] == 5
    repo.commit({"global.yaml": {**GLOBAL, "blocklist": {"agents": ["a1"]}}})
    sync(repo)
    assert beat()["desired"] == "stopped"
    assert Agent.objects.get(agent_id="a1").desired == "stopped"


def test_task_definitions_drive_timeouts_retries_and_where_a_capability_may_run(repo):
    repo.commit({"global.yaml": GLOBAL})
    sync(repo)
    user, _ = factories.caller()
    task = task_submit(submitted_by=user, capability="echo", payload={}).task
    assert (task.timeout, task.max_attempts) == (30, 2)
    Task.objects.filter(id=task.id).update(status=Task.Status.RUNNING, agent="a")
    task_fail(task_id=task.id, attempt=1, agent_id="a", error="x")
    task.refresh_from_db()
    assert 0 < (task.not_before - task.created_at).total_seconds() < 1.5  # retry_backoff 1 s
    with pytest.raises(CapabilityRefused, match="not allowed in region unit-1"):
        task_submit(submitted_by=user, capability="data_ingestion", payload={})


def test_a_refused_capability_is_left_out_of_the_summary(repo):
    factories.agent("a1", capabilities=["echo", "data_ingestion"])
    repo.commit({"global.yaml": GLOBAL})
    sync(repo)
    built = summary.region_summary_build()
    assert set(built["agent_capabilities_summary"]) == {"echo"}
    assert built["config_version"] == config_current().sha


def test_rate_limit_from_the_task_definition(repo):
    repo.commit({"global.yaml": {**GLOBAL, "tasks": {"echo": {"rate_limit": "3/m"}}}})
    sync(repo)
    user, _ = factories.caller()
    for _ in range(3):
        task_submit(submitted_by=user, capability="echo", payload={})
    with pytest.raises(RateLimited) as exc:
        task_submit(submitted_by=user, capability="echo", payload={})
    assert exc.value.retry_after >= 1


def test_secret_values_stay_references_in_the_database_summary_and_logs(repo, monkeypatch, caplog):
    secret = "s3cr3t-value-9d2f"
    monkeypatch.setenv("MERIDIAN_TEST_SECRET", secret)
    caplog.set_level(logging.DEBUG)
    repo.commit({"global.yaml": GLOBAL})
    sync(repo)
    assert config_current().secret("ingest_api_token") == secret  # resolved here, on use
    stored = repr(list(ConfigVersion.objects.values()))
    assert "env:MERIDIAN_TEST_SECRET" in stored and secret not in stored
    assert secret not in repr(summary.region_summary_build())
    assert secret not in caplog.text


def test_a_new_configuration_is_in_force_in_every_process_as_soon_as_it_is_applied(repo):
    from regions.services.config import current as config_module

    repo.commit({"global.yaml": GLOBAL})
    sync(repo)
    other_process = config_module._Current()  # a web or worker process that read the config earlier
    assert other_process().heartbeat_interval == 5
    second = repo.commit({"global.yaml": {**GLOBAL, "agents": {"heartbeat_interval": 1, "heartbeat_ttl": 3}}})
    sync(repo)
    # No waiting: the apply published the new version in Redis; the next call reads it.
    assert (other_process().sha, other_process().heartbeat_interval, other_process().heartbeat_ttl) == (second, 1, 3)
    assert other_process(max_age=config_module.HOT_PATH_CHECK_SECONDS).heartbeat_ttl == 3


def test_the_heartbeat_path_looks_at_the_published_version_at_most_every_100_ms(
        repo, monkeypatch, django_assert_num_queries):
    from regions.services.config import current as config_module
    from regions.services import liveness

    repo.commit({"global.yaml": GLOBAL})
    sync(repo)
    process = config_module._Current()
    process()
    looks = []
    real = liveness.config_published
    monkeypatch.setattr(liveness, "config_published", lambda: looks.append(1) or real())
    started = time.monotonic()
    with django_assert_num_queries(0):
        for _ in range(2000):
            process(max_age=config_module.HOT_PATH_CHECK_SECONDS)
    elapsed = time.monotonic() - started
    assert 1 <= len(looks) <= elapsed / config_module.HOT_PATH_CHECK_SECONDS + 1


def test_with_redis_down_a_new_configuration_comes_from_the_database_within_the_check_interval(repo, monkeypatch):
    from regions.services.config import current as config_module
    from regions.services import liveness

    repo.commit({"global.yaml": GLOBAL})
    sync(repo)
    process = config_module._Current()
    assert process().heartbeat_interval == 5

    def down():
        raise liveness.RedisError("Connection refused")

    monkeypatch.setattr(liveness, "config_published", down)
    monkeypatch.setattr(liveness, "config_publish", lambda **kw: down())
    repo.commit({"global.yaml": {**GLOBAL, "agents": {"heartbeat_interval": 1, "heartbeat_ttl": 3}}})
    assert sync(repo).applied  # applied even though it could not be published
    deadline = time.monotonic() + config_module.CONFIG_CHECK_SECONDS + 1
    while process().heartbeat_interval != 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process().heartbeat_interval == 1


def test_a_stale_published_version_is_repaired_not_re_read_on_every_call(repo, django_assert_max_num_queries):
    """Redis came back with an id from before an apply it missed."""
    from regions.services.config import current as config_module
    from regions.services import liveness

    repo.commit({"global.yaml": GLOBAL})
    sync(repo)
    active = ConfigVersion.objects.get(is_active=True)
    liveness.config_publish(version_id=active.id - 1000)
    process = config_module._Current()
    with django_assert_max_num_queries(3):
        for _ in range(50):
            assert process().sha == active.sha
    assert liveness.config_published() == active.id


def test_a_secret_is_only_sent_to_the_hosts_it_is_bound_to(repo, monkeypatch):
    monkeypatch.setenv("MERIDIAN_TEST_SECRET", "s3cr3t")
    repo.commit({"global.yaml": GLOBAL})
    sync(repo)
    user, _ = factories.caller()
    with pytest.raises(CapabilityRefused, match="may not be sent to evil.example.net"):
        task_submit(submitted_by=user, capability="echo",
                    payload={"source": "https://evil.example.net/x", "auth_secret": "ingest_api_token"})
    with pytest.raises(CapabilityRefused, match="no secret 'nope'"):
        task_submit(submitted_by=user, capability="echo",
                    payload={"source": "https://ingest.example.com/x", "auth_secret": "nope"})
    ok = task_submit(submitted_by=user, capability="echo",
                     payload={"source": "https://ingest.example.com/x", "auth_secret": "ingest_api_token"})
    assert ok.created


def test_a_schedule_is_applied_with_the_rest_and_a_region_file_overrides_its_keys(repo):
    schedule = {"cron": "0 3 * * *", "timezone": "Europe/Paris", "capability": "echo", "payload": {"a": 1}}
    repo.commit({"global.yaml": {**GLOBAL, "schedules": {"nightly": schedule,  # (no YAML aliases: copies)
                                                         "elsewhere": {**schedule, "payload": {"a": 1},
                                                                       "regions": ["eu-west-3"]}}},
                 "regions/unit-1.yaml": {"schedules": {"nightly": {"priority": 9}}}})
    assert sync(repo).applied
    assert config_current().schedules == {"nightly": {**schedule, "priority": 9}}
    repo.commit({"global.yaml": GLOBAL, "regions/unit-1.yaml": {}}, "remove the schedules")
    assert sync(repo).applied and config_current().schedules == {}


def test_a_rejected_commit_is_recorded_once_however_many_syncs_see_it(repo):
    from regions.selectors import region_attention

    good = repo.commit({"global.yaml": GLOBAL})
    sync(repo)
    bad = repo.commit({"global.yaml": {**GLOBAL, "summary_interval": "often"}}, "broken")
    for _ in range(5):  # the sync tick, every 10 s
        assert not sync(repo).applied
    rejected = ConfigVersion.objects.filter(result="rejected")
    assert [(r.sha, r.ref) for r in rejected] == [(bad, "main")]
    assert AuditEvent.objects.filter(action="config.rejected").count() == 1
    item = next(i for i in region_attention() if i["kind"] == "config_rejected")
    assert item["text"].startswith(f"configuration commit {bad[:12]} rejected: global.yaml: summary_interval")
    # A commit applied clears it; the same broken commit coming back later is news again.
    repo.commit({"global.yaml": {**GLOBAL, "summary_interval": 30}}, "fixed")
    assert sync(repo).applied
    assert not [i for i in region_attention() if i["kind"] == "config_rejected"]
    assert sync(repo, ref=bad).applied is False
    assert ConfigVersion.objects.filter(result="rejected", sha=bad).count() == 2
    assert ConfigVersion.objects.get(is_active=True).sha != good


def test_a_ref_that_cannot_be_fetched_is_recorded_once(repo):
    repo.commit({"global.yaml": GLOBAL})
    for _ in range(3):
        assert not sync(repo, ref="no-such-branch").applied
    assert ConfigVersion.objects.filter(result="rejected", sha="?").count() == 1


def test_a_rejection_is_no_longer_shown_once_the_ref_is_back_on_the_active_commit(repo):
    from regions.selectors import region_attention

    good = repo.commit({"global.yaml": GLOBAL})
    sync(repo)
    repo.commit({"global.yaml": {**GLOBAL, "summary_interval": "often"}}, "broken")
    sync(repo)
    assert [i for i in region_attention() if i["kind"] == "config_rejected"]
    repo.git("reset", "-q", "--hard", good)  # the operator force-pushes main back
    assert sync(repo).applied is False  # nothing to apply: it runs already
    assert not [i for i in region_attention() if i["kind"] == "config_rejected"]


def test_a_rejected_repository_keeps_its_credentials_out_of_every_record(redis_clean):
    """A repository address with a user and token (https://deploy:token@host/…):
    git's error, our own, the stored row, the audit trail, the log and the
    attention item the summary sends to the router carry none of it."""
    import socket

    from regions.selectors import region_attention
    from regions.services.config.sync import _credentials_out

    secret = "s3cr3t-token-4411"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: git cannot reach it
    repo = f"http://deploy:{secret}@127.0.0.1:{port}/cfg.git"
    result = config_sync(repo=repo, ref="main")
    assert result.error and not result.applied
    row = ConfigVersion.objects.get()
    audit = AuditEvent.objects.get(action="config.rejected")
    shown = [result.error, row.repo, row.error, audit.target, audit.detail,
             *(i["text"] for i in region_attention())]
    assert not [text for text in shown if secret in text or "deploy@" in text], shown
    assert row.repo == f"http://127.0.0.1:{port}/cfg.git"
    assert _credentials_out(f"ref 'main' not found in https://deploy:{secret}@git.example/cfg.git", repo) == \
        "ref 'main' not found in https://git.example/cfg.git"
