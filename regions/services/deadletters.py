"""Dead letters: messages this region's consumers dropped (see wire.deadletter)."""
from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta

from django.conf import settings
from django.db import DatabaseError
from django.db.models import Count

from project.exceptions import Refused
from regions.models import DeadLetter
from regions.services import liveness
from wire.deadletter import DeadLetter as Letter
from wire.deadletter import make

logger = logging.getLogger(__name__)

ORCHESTRATOR = "orchestrator"


def dead_letter_store(letter: Letter, *, source: str = ORCHESTRATOR) -> DeadLetter | None:
    """Keep one record. A database that is away loses the record, not the
    consumer: the log line wire.deadletter wrote is still there."""
    try:
        return DeadLetter.objects.create(source=source[:120], **letter.as_dict())
    except DatabaseError as exc:
        logger.warning("dead letter not stored (%s): %s", type(exc).__name__, str(exc).splitlines()[0][:200])
        return None


class DeadLettersThrottled(Refused):
    status, code = 429, "throttled"

    def __init__(self, retry_after: int):
        super().__init__(f"more than {settings.DEAD_LETTER_AGENT_RATE_PER_MINUTE} dead letters a minute from "
                         "this agent; the rest are only in its own log")
        self.retry_after = retry_after


def _agent_allowance(agent_id: str) -> None:
    """At most DEAD_LETTER_AGENT_RATE_PER_MINUTE reports a minute per agent
    (counted in the liveness Redis): one garbage message seen by every agent,
    or an agent posting in a loop, cannot fill the region's database."""
    slot = int(time.time() // 60)
    key = liveness.key(f"deadletters:{agent_id}:{slot}")
    try:
        pipe = liveness.client().pipeline()
        pipe.incr(key)
        pipe.expire(key, 61)
        used = pipe.execute()[0]
    except liveness.RedisError:
        return  # no counter: keep the record (the retention sweep still bounds the table)
    if used > settings.DEAD_LETTER_AGENT_RATE_PER_MINUTE:
        raise DeadLettersThrottled(retry_after=max(1, int(60 - time.time() % 60)))


def dead_letters_prune(*, now: datetime) -> int:
    """Retention: rows older than DEAD_LETTER_RETENTION_DAYS go; beyond
    DEAD_LETTER_MAX_ROWS, the store is shared by source (the orchestrator, each
    agent), max-min fair: a source with fewer rows than its share keeps them all,
    the others keep their newest share each. So no agent, nor many of them (one
    registration token made 300 in 17 s), can flush the others' letters."""
    deleted, _ = DeadLetter.objects.filter(received_at__lt=now - timedelta(days=settings.DEAD_LETTER_RETENTION_DAYS)
                                           ).delete()
    counts = list(DeadLetter.objects.values_list("source").annotate(n=Count("id")).order_by("n", "source"))
    if sum(n for _, n in counts) <= settings.DEAD_LETTER_MAX_ROWS:
        return deleted
    room = settings.DEAD_LETTER_MAX_ROWS
    for index, (source, count) in enumerate(counts):
        keep = min(count, room // (len(counts) - index))
        room -= keep
        if keep < count:
            beyond = DeadLetter.objects.filter(source=source).order_by("-id").values_list("id", flat=True)[keep]
            extra, _ = DeadLetter.objects.filter(source=source, id__lte=beyond).delete()
            deleted += extra
    return deleted


def dead_letter_report(*, agent_id: str, queue: str, reason: str, task_name: str = "", task_id: str = "",
                       excerpt: str = "") -> DeadLetter | None:
    """An agent's report of a message it dropped, bounded and cleaned like our
    own; DeadLettersThrottled past the agent's allowance."""
    _agent_allowance(agent_id)
    letter = make(queue=queue, reason=reason, task_name=task_name, task_id=task_id, body=excerpt)
    logger.warning("dead letter from agent %s queue=%s id=%s: %s", agent_id, letter.queue, letter.task_id or "-",
                   letter.reason, extra={"agent": agent_id, "task": letter.task_id or None})
    return dead_letter_store(letter, source=f"agent:{agent_id}")
