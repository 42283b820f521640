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


def logging_config(*, log_format: str = "text", level: str = "INFO", region: str | None = None) -> dict:
    """settings.LOGGING for LOG_FORMAT=text|json."""
    if log_format not in ("text", "json"):
        raise ValueError(f"LOG_FORMAT must be 'text' or 'json', not {log_format!r}")
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"context": {"()": "project.logging.ContextFilter", "region": region},
                    "client_fault": {"()": "project.logging.ClientFault"}},
        "formatters": {"text": {"()": "project.logging.TextFormatter", "format": TEXT_FORMAT}, "json": {"()": "project.logging.JsonFormatter"}},
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": log_format,
                                 "filters": ["context", "client_fault"]}},
        "root": {"handlers": ["console"], "level": level},
        # axes: a lockout is a WARNING; its INFO chatter (each failed login, its start) is not kept.
        "loggers": {"django.server": {"level": "WARNING"}, "axes": {"level": "WARNING"}},
    }
