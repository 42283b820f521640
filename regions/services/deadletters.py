"""Dead letters: messages this region's consumers dropped (see project.deadletter)."""
from __future__ import annotations

import logging

from django.db import DatabaseError

from project.deadletter import DeadLetter as Letter
from project.deadletter import make
from regions.models import DeadLetter

logger = logging.getLogger(__name__)

ORCHESTRATOR = "orchestrator"


def dead_letter_store(letter: Letter, *, source: str = ORCHESTRATOR) -> DeadLetter | None:
    """Keep one record. A database that is away loses the record, not the
    consumer: the log line project.deadletter wrote is still there."""
    try:
        return DeadLetter.objects.create(source=source[:120], **letter.as_dict())
    except DatabaseError as exc:
        logger.warning("dead letter not stored (%s): %s", type(exc).__name__, str(exc).splitlines()[0][:200])
        return None


def dead_letter_report(*, agent_id: str, queue: str, reason: str, task_name: str = "", task_id: str = "",
                       excerpt: str = "") -> DeadLetter | None:
    """An agent's report of a message it dropped, bounded and cleaned like our own."""
    letter = make(queue=queue, reason=reason, task_name=task_name, task_id=task_id, body=excerpt)
    logger.warning("dead letter from agent %s queue=%s id=%s: %s", agent_id, letter.queue, letter.task_id or "-",
                   letter.reason, extra={"agent": agent_id, "task": letter.task_id or None})
    return dead_letter_store(letter, source=f"agent:{agent_id}")
