"""project/dbbackends/postgresql skips the connection health check only for a
connection that ended a request less than FRESH_SECONDS ago: one that sat idle
(a PostgreSQL restart, a failover, idle_session_timeout, a firewall dropping an
idle session) is checked and replaced, as stock Django does. The request
boundaries are driven by the real signals, as Django's handlers send them (the
test client disconnects close_old_connections)."""
import os
import subprocess
import sys
import time
from pathlib import Path

import psycopg2
import pytest
from django.core.signals import request_finished, request_started
from django.db import connection, transaction

from project.dbbackends.postgresql import base
from regions.models import Task

pytestmark = pytest.mark.django_db(transaction=True)


def _kill(pid: int) -> None:
    other = psycopg2.connect(host="127.0.0.1", user="postgres", dbname="postgres")
    other.autocommit = True
    with other.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
    other.close()


@pytest.mark.parametrize("fresh_seconds", [base.FRESH_SECONDS, 0.0], ids=["as-shipped", "control-stock-django"])
def test_a_connection_idle_longer_than_the_window_is_checked_before_use(monkeypatch, fresh_seconds):
    monkeypatch.setattr(base, "FRESH_SECONDS", fresh_seconds)
    request_started.send(sender=None)      # request 1
    Task.objects.count()
    request_finished.send(sender=None)
    pid = connection.connection.get_backend_pid()
    time.sleep(1.3)                        # idle for longer than FRESH_SECONDS
    _kill(pid)                             # the server side went away meanwhile
    time.sleep(0.2)
    request_started.send(sender=None)      # request 2, PostgreSQL is up
    try:
        Task.objects.count()               # as shipped: OperationalError (a 503 to the caller)
    finally:
        request_finished.send(sender=None)
        connection.close()


FREEZE = """
import sys, time
from django.db import connection, transaction
with transaction.atomic():
    with connection.cursor() as cursor:
        cursor.execute("SELECT id FROM django_content_type ORDER BY id LIMIT 1 FOR UPDATE")
        print("locked", flush=True)
        time.sleep(60)  # frozen inside the transaction, as a paused VM or SIGSTOP would be
"""


@pytest.mark.integration
def test_a_process_frozen_inside_a_transaction_gives_its_row_locks_back():
    """The server ends the frozen session after DB_IDLE_IN_TRANSACTION_SECONDS,
    so a request waiting for a row it locked gets it instead of hanging."""
    settings_dict = connection.settings_dict
    url = f"postgres://{settings_dict['USER']}@{settings_dict['HOST']}:{settings_dict['PORT'] or 5432}/{settings_dict['NAME']}"
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "project.settings", "DATABASE_URL": url,
           "DB_IDLE_IN_TRANSACTION_SECONDS": "1"}  # 0: the wait below fails
    env.pop("EXTRA_APPS", None)
    frozen = subprocess.Popen([sys.executable, "manage.py", "shell", "-c", FREEZE], cwd=root, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = iter(frozen.stdout.readline, "")
        assert any(line.strip() == "locked" for line in lines), frozen.stdout.read()
        with connection.cursor() as cursor:
            cursor.execute("SELECT application_name FROM pg_stat_activity WHERE application_name LIKE %s",
                           ["meridian region % shell"])
            assert cursor.fetchall(), "the frozen process names itself"
            cursor.execute("SET lock_timeout = '20s'")  # far past the idle timeout: a hang fails, not waits
            with transaction.atomic():
                cursor.execute("SELECT id FROM django_content_type ORDER BY id LIMIT 1 FOR UPDATE")
            cursor.execute("RESET lock_timeout")
    finally:
        frozen.kill()
        frozen.wait(10)
