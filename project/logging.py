"""Log lines: one per event, with the region, agent and task it concerns.

LOG_FORMAT=text (the default) keeps the plain one-line format; LOG_FORMAT=json
writes one JSON object per line for a log pipeline:

    {"ts": "2026-11-29T12:04:05.123+00:00", "level": "INFO", "logger": "regions.services.tasks",
     "msg": "task 3f… claimed by a1 (attempt 1)", "region": "eu-west-3", "agent": "a1", "task": "3f…"}

An event names its agent and task with `extra={"agent": …, "task": …}`; the
region comes from settings (ContextFilter) unless the call names one (the
router's lines about a region's summary do). Anything else passed in `extra`
becomes a field of its own.
"""
from __future__ import annotations

import logging
from datetime import datetime, timezone

from pythonjsonlogger.json import JsonFormatter as _JsonFormatter

CONTEXT_FIELDS = ("region", "agent", "task")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


class ContextFilter(logging.Filter):
    """Gives every record region, agent and task attributes (None when the
    event has none), the region defaulting to this process's own."""

    def __init__(self, region: str | None = None):
        super().__init__()
        self.region = region or None

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "region", None) is None:
            record.region = self.region
        for name in ("agent", "task"):
            if not hasattr(record, name):
                setattr(record, name, None)
            elif getattr(record, name) is not None and not isinstance(getattr(record, name), (str, int)):
                setattr(record, name, str(getattr(record, name)))  # a UUID, a model instance
        return True


class TextFormatter(logging.Formatter):
    """One event, one line: a line break inside a message (an agent's error
    text, a traceback it reported) is escaped, so no text can forge a log line.
    A traceback of this process's own still follows on lines of its own."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return super().formatMessage(record).replace("\r", "\\r").replace("\n", "\\n")


class JsonFormatter(_JsonFormatter):
    """python-json-logger with this project's field names and an ISO 8601 UTC time."""

    def __init__(self, **kwargs):
        kwargs.setdefault("rename_fields", {"asctime": "ts", "levelname": "level", "name": "logger",
                                            "message": "msg"})
        super().__init__(["asctime", "levelname", "name", "message", *CONTEXT_FIELDS], **kwargs)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return datetime.fromtimestamp(record.created, tz=timezone.utc).isoformat(timespec="milliseconds")


class ClientFault(logging.Filter):
    """django.security.*: a request with a Host header not allowed, or another
    suspicious part, is the client's fault, not the server's: one WARNING line,
    no traceback (each such request wrote a 14-line traceback at ERROR)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("django.security."):
            record.exc_info = record.exc_text = None
            if record.levelno > logging.WARNING:
                record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


class BrokerAckOnClosedConnection(logging.Filter):
    """celery.worker.request and celery.worker.consumer.consumer: a task that
    finished while the broker was away (a restart, a cut link) is acked once the
    consumer is back, on the channel that closed with the old connection. kombu
    logs that at CRITICAL with a traceback (Message.ack_log_error, which catches
    only the transport's connection errors), paging someone on every broker
    restart though nothing is wrong: the unacked message is delivered again, and
    the region refuses an attempt that is finished or superseded (the agent's
    claim, the fenced report). So it is one WARNING line that says so, without
    the traceback. Every other CRITICAL line stays one."""

    TEMPLATES = {"Couldn't ack %r, reason:%r": "ack", "Couldn't reject %r, reason: %r": "reject"}

    def filter(self, record: logging.LogRecord) -> bool:
        verb = self.TEMPLATES.get(record.msg) if isinstance(record.msg, str) else None
        if verb is None or not isinstance(record.args, tuple) or len(record.args) != 2:
            return True
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.exc_info = record.exc_text = None
        record.msg = (f"could not {verb} message %r: the broker connection it came on is closed (%r). The "
                      "broker delivers it again, and the region refuses it if its attempt is finished or "
                      "superseded: nothing runs twice, nothing to do")
        return True


def logging_config(*, log_format: str = "text", level: str = "INFO", region: str | None = None) -> dict:
    """settings.LOGGING for LOG_FORMAT=text|json."""
    if log_format not in ("text", "json"):
        raise ValueError(f"LOG_FORMAT must be 'text' or 'json', not {log_format!r}")
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"context": {"()": "project.logging.ContextFilter", "region": region},
                    "client_fault": {"()": "project.logging.ClientFault"},
                    "broker_ack": {"()": "project.logging.BrokerAckOnClosedConnection"}},
        "formatters": {"text": {"()": "project.logging.TextFormatter", "format": TEXT_FORMAT}, "json": {"()": "project.logging.JsonFormatter"}},
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": log_format,
                                 "filters": ["context", "client_fault"]}},
        "root": {"handlers": ["console"], "level": level},
        # axes: a lockout is a WARNING; its INFO chatter (each failed login, its start) is not kept.
        "loggers": {"django.server": {"level": "WARNING"}, "axes": {"level": "WARNING"},
                    # On the loggers kombu's ack is given, not on a handler: a Celery
                    # worker replaces the root logger's handlers with its own.
                    "celery.worker.request": {"filters": ["broker_ack"]},
                    "celery.worker.consumer.consumer": {"filters": ["broker_ack"]}},
    }
