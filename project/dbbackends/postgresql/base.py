"""Django's PostgreSQL backend, with the connection health check where it pays.

CONN_HEALTH_CHECKS makes Django run `SELECT 1` before the first query of every
request: a database round trip per request, three per task on the task path
(submit, claim, report), a tenth of the web's time there. The check exists for
connections that sat idle while the server restarted or a failover happened.
So here a connection that ended a request without error less than
FRESH_SECONDS ago is trusted without a check. If the server went away inside
that window, the request's query fails, the request answers 503 (project
middleware), Django closes the broken connection at the request's end, and the
next request connects afresh: one degraded answer, nothing accepted is lost.
"""
from __future__ import annotations

import time

from django.db.backends.postgresql import base

FRESH_SECONDS = 1.0


class DatabaseWrapper(base.DatabaseWrapper):
    _fresh_until = 0.0

    def close_if_unusable_or_obsolete(self):
        # Called at each request's start and end (request_started/finished; Celery
        # around each task). Only the end of a request that used the connection
        # (health_check_done, reset by this call) makes it fresh: the start of the
        # next request after a long idle time must not.
        used = self.health_check_done
        super().close_if_unusable_or_obsolete()
        if used and self.connection is not None and not self.errors_occurred:
            self._fresh_until = time.monotonic() + FRESH_SECONDS

    def close_if_health_check_failed(self):
        if self.connection is not None and not self.health_check_done and time.monotonic() < self._fresh_until:
            self.health_check_done = True
            return
        super().close_if_health_check_failed()

    def close(self):
        self._fresh_until = 0.0
        super().close()
