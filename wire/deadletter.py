"""Messages a consumer could not take: recorded, never fatal.

Every consumer (an agent's worker, the region's orchestrator worker) calls
`record` for a message it drops because it cannot decode, verify or use it,
then acks it and goes on consuming. Where the record goes depends on the
process: the orchestrator writes it to its region's database (the DeadLetter
admin page); an agent sends it to its region over HTTP with its own token.
Until a process sets its sink, records go to the log only.

Records are bounded (a flood of garbage cannot flood the database): at most
RATE_PER_SECOND per process are kept, the rest are counted in the log.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import asdict, dataclass
from typing import Callable

logger = logging.getLogger("meridian.deadletter")

RATE_PER_SECOND = 50
EXCERPT_CHARS = 2000
REASON_CHARS = 500


@dataclass(frozen=True)
class DeadLetter:
    queue: str
    reason: str
    task_name: str = ""
    task_id: str = ""
    excerpt: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def printable(value, limit: int) -> str:
    """Any value as bounded text a database and a log line can hold: no NUL,
    no lone surrogates, no control characters but newline and tab."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        text = bytes(value[: limit * 4]).decode("utf-8", errors="replace")
    else:
        text = value if isinstance(value, str) else repr(value)
    text = text[:limit].encode("utf-8", errors="replace").decode("utf-8")
    return "".join(ch if ch.isprintable() or ch in "\n\t" else "\ufffd" for ch in text)


def make(*, queue: str, reason: str, task_name: str = "", task_id: str = "", body=b"") -> DeadLetter:
    return DeadLetter(queue=printable(queue, 200), reason=printable(reason, REASON_CHARS),
                      task_name=printable(task_name, 200), task_id=printable(task_id, 64),
                      excerpt=printable(body, EXCERPT_CHARS))


Sink = Callable[[DeadLetter], None]
_sink: Sink | None = None
_lock = threading.Lock()
_window = [0.0, 0, 0]  # window start, kept in window, dropped in window


def set_sink(sink: Sink | None) -> None:
    global _sink
    _sink = sink


def _admit() -> bool:
    now = time.monotonic()
    with _lock:
        if now - _window[0] >= 1.0:
            if _window[2]:
                logger.warning("dead letters: %d more dropped without a record (over %d/s)", _window[2],
                               RATE_PER_SECOND)
            _window[:] = [now, 0, 0]
        if _window[1] >= RATE_PER_SECOND:
            _window[2] += 1
            return False
        _window[1] += 1
        return True


def record(*, queue: str, reason: str, task_name: str = "", task_id: str = "", body=b"") -> None:
    """Log and keep one dropped message. Never raises: it runs inside consumers
    that must keep consuming whatever happens here."""
    try:
        letter = make(queue=queue, reason=reason, task_name=task_name, task_id=task_id, body=body)
        logger.warning("dead letter queue=%s task=%s id=%s: %s", letter.queue, letter.task_name or "-",
                       letter.task_id or "-", letter.reason, extra={"task": letter.task_id or None})
        if _sink is not None and _admit():
            _sink(letter)
    except Exception:  # noqa: BLE001 - a record must never take its consumer down
        logger.exception("could not record a dead letter")
