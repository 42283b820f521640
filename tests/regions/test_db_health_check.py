"""project/dbbackends/postgresql skips the connection health check only for a
connection that ended a request less than FRESH_SECONDS ago: one that sat idle
(a PostgreSQL restart, a failover, idle_session_timeout, a firewall dropping an
idle session) is checked and replaced, as stock Django does. The request
boundaries are driven by the real signals, as Django's handlers send them (the
test client disconnects close_old_connections)."""
import time

import psycopg2
import pytest
from django.core.signals import request_finished, request_started
from django.db import connection

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
