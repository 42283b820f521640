"""Log lines: one per event, naming its region, agent and task; JSON with LOG_FORMAT=json."""
import io
import json
import logging
import logging.config
import os
import subprocess
import sys
from pathlib import Path

import pytest

from project.logging import logging_config
from regions.services.tasks.claim import task_claim
from regions.services.tasks.submit import task_submit
from tests import factories

ROOT = Path(__file__).resolve().parent.parent
EVENT_LOGGERS = ("regions.services.tasks", "regions.services.agents")


@pytest.fixture
def json_lines(monkeypatch):
    """The project's json configuration on the region's event loggers (root and
    pytest's own capture left alone); yields a function returning the lines."""
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)  # the handler's ext://sys.stderr
    config = logging_config(log_format="json", region="eu-west-3")
    del config["root"]
    config["loggers"] = {name: {"handlers": ["console"], "level": "INFO", "propagate": False}
                         for name in EVENT_LOGGERS}
    logging.config.dictConfig(config)
    yield lambda: stream.getvalue().splitlines()
    for name in EVENT_LOGGERS:
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        logger.propagate = True
        logger.setLevel(logging.NOTSET)


@pytest.mark.django_db
def test_json_logs_write_one_parseable_line_per_event_with_region_agent_and_task(json_lines, redis_clean):
    factories.agent("a1", capabilities=["echo"])
    task = task_submit(submitted_by=factories.caller()[0], capability="echo", payload={}).task
    assert task_claim(task_id=str(task.id), attempt=task.attempt, agent_id="a1").run

    events = [json.loads(line) for line in json_lines()]  # every line is one JSON object
    registered = next(e for e in events if e["msg"].startswith("agent a1 registered"))
    submitted = next(e for e in events if e["msg"].startswith(f"task {task.id} submitted"))
    claimed = next(e for e in events if e["msg"].startswith(f"task {task.id} attempt 1 claimed by a1"))
    assert set(claimed) >= {"ts", "level", "logger", "msg", "region", "agent", "task"}
    assert (claimed["region"], claimed["agent"], claimed["task"]) == ("eu-west-3", "a1", str(task.id))
    assert claimed["level"] == "INFO" and claimed["logger"] == "regions.services.tasks"
    assert claimed["ts"].endswith("+00:00") and "T" in claimed["ts"]
    assert (submitted["agent"], submitted["task"]) == (None, str(task.id))
    assert (registered["agent"], registered["task"], registered["region"]) == ("a1", None, "eu-west-3")


def test_log_format_json_in_the_environment_makes_every_line_json_with_the_regions_id():
    code = ("import django, logging; django.setup(); "
            "logging.getLogger('regions.services.tasks').warning('task t1 requeued\\nafter attempt 1', "
            "extra={'agent': 'a1', 'task': 't1', 'attempt': 1})")
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "project.settings", "ROLE": "region", "REGION_ID": "ap-test-9",
           "LOG_FORMAT": "json", "EXTRA_APPS": "regions,agents"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stderr.splitlines()
    assert len(lines) == 1, out.stderr  # the newline in the message stays inside the JSON string
    event = json.loads(lines[0])
    assert event["msg"] == "task t1 requeued\nafter attempt 1" and event["level"] == "WARNING"
    assert (event["region"], event["agent"], event["task"], event["attempt"]) == ("ap-test-9", "a1", "t1", 1)


def test_log_format_text_stays_the_plain_line():
    code = ("import django, logging; django.setup(); "
            "logging.getLogger('regions.services.tasks').warning('task t1 requeued', extra={'task': 't1'})")
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "project.settings", "ROLE": "region", "EXTRA_APPS": "regions,agents"}
    env.pop("LOG_FORMAT", None)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stderr.strip().endswith("WARNING regions.services.tasks task t1 requeued")


def test_a_request_with_a_bad_host_header_is_one_warning_line_not_an_error_with_a_traceback(tmp_path):
    """Each such request wrote a 14-line traceback at ERROR: the client's fault,
    and a flood of them buried the log."""
    code = ("import django; django.setup(); from django.test import Client; "
            "print(Client().get('/healthz', HTTP_HOST='evil.example').status_code)")
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "project.settings", "ROLE": "region", "EXTRA_APPS": "regions,agents",
           "STATIC_ROOT": str(tmp_path)}
    env.pop("LOG_FORMAT", None)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "400", out.stdout + out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, out.stderr
    assert " WARNING django.security.DisallowedHost Invalid HTTP_HOST header: 'evil.example'" in lines[0], lines


def test_a_line_break_in_a_message_cannot_forge_a_text_log_line():
    import io
    import logging

    from project.logging import TEXT_FORMAT, TextFormatter

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(TextFormatter(TEXT_FORMAT))
    log = logging.getLogger("meridian.test.forge")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.warning("task failed: %s", "boom\n2026-11-29 00:00:00 INFO regions.services.agents agent x revoked")
    finally:
        log.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1 and "boom\\n2026-11-29" in lines[0]


def test_an_ack_on_a_closed_broker_connection_is_one_warning_line_and_other_criticals_stay(tmp_path):
    """kombu's CRITICAL with a traceback for each ack a broker restart left
    without its channel paged someone for nothing (the message comes back and
    the region refuses its finished attempt). Real process: the filter is on
    celery's logger in settings.LOGGING. With Celery's own worker log format:
    tests/regions/test_fault_broker.py."""
    code = """if True:
        import django; django.setup()
        from amqp.exceptions import RecoverableConnectionError
        from celery.worker.request import logger
        from kombu.message import Message

        class Closed:
            no_ack_consumers = None
            def basic_ack(self, *args, **kwargs):
                raise RecoverableConnectionError('connection already closed')

        Message(channel=Closed(), delivery_tag=7).ack_log_error(logger, (RecoverableConnectionError,))
        logger.critical('something that needs a person')
    """
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "project.settings", "ROLE": "region", "EXTRA_APPS": "regions,agents",
           "STATIC_ROOT": str(tmp_path)}
    env.pop("LOG_FORMAT", None)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 2, out.stderr
    assert " WARNING celery.worker.request could not ack message 7: the broker connection it came on is closed " \
           "(RecoverableConnectionError(None, 'connection already closed', None, ''))." in lines[0], lines
    assert "delivers it again" in lines[0]
    assert " CRITICAL celery.worker.request something that needs a person" in lines[1], lines
