"""How each forward to a region went, kept per region (router.models.ForwardOutcomes)
so that routing ranks a region that refuses, does not answer or cannot be reached
after those that serve (selectors.forward_penalties reads it back).

The router has no Redis: the outcome is one UPDATE of the region's row, its
decay done by the database in the same statement, so concurrent web processes
never read-modify-write it. No task data is recorded: the region and the kind
of outcome, nothing else."""
from __future__ import annotations

import logging
import time

from django.conf import settings
from django.db import DatabaseError
from django.db.models import F, FloatField, Value
from django.db.models.functions import Greatest, Least, Power

from router.models import ForwardOutcomes, Region
from router.selectors import forward_penalties_reset

logger = logging.getLogger("router.services")  # the router's log stream, whichever module writes

ANSWERED = "answered"
# refused: 429, 503 (saturated) or 401 (the region does not take the router's word: its key or clock);
# unreachable: no connection made (refused, reset, connect timeout, TLS); the request never left;
# no_answer: connected and sent, then no answer in time or the connection dropped;
# error: any other 5xx.
FAILURES = ("refused", "unreachable", "no_answer", "error")
OUTCOMES = (ANSWERED, *FAILURES)
# 2**-60 is nothing to a count; a larger exponent underflows, which PostgreSQL refuses.
_MAX_HALVINGS = 60.0


# A 429 the caller caused: its own quota at the region (callers.<name>), spent
# by its own traffic. Counted as a refusal, one tenant overrunning its quota on
# purpose would push the region down the ranking for everyone.
CALLERS_OWN_REFUSALS = ("quota_exceeded",)


def forward_outcome_of_status(status: int, body=None) -> str:
    """A region's answer as the ranking counts it: a 4xx the caller caused
    (400, 403, 404, 409, 413, a 429 for the caller's own quota, ...) is an
    answer like a 2xx. `body`: the answer's JSON, when it is JSON."""
    if status == 429 and isinstance(body, dict) and body.get("error") in CALLERS_OWN_REFUSALS:
        return ANSWERED
    if status in (401, 429, 503):
        return "refused"
    if status >= 500:
        return "error"
    return ANSWERED


def forward_outcome_record(*, region_id: str, outcome: str, now: float | None = None) -> None:
    """Count one forward's outcome for the region: one UPDATE (an INSERT too, the
    first time). Never raises for the database: the caller's answer matters more
    than the ranking."""
    if outcome not in OUTCOMES:
        raise ValueError(f"unknown forward outcome {outcome!r}")
    now = time.time() if now is None else now
    try:
        rows = ForwardOutcomes.objects.filter(region__region_id=region_id)
        if not rows.update(**_moves(outcome, now)):
            pk = Region.objects.filter(region_id=region_id).values_list("pk", flat=True).first()
            if pk is None:
                return  # removed meanwhile
            ForwardOutcomes.objects.bulk_create([ForwardOutcomes(region_id=pk)], ignore_conflicts=True)
            ForwardOutcomes.objects.filter(region_id=pk).update(**_moves(outcome, now))
    except DatabaseError:
        logger.warning("region %s: forward outcome %s not recorded (database unavailable)", region_id, outcome,
                       exc_info=True, extra={"region": region_id})
        return
    forward_penalties_reset()  # this process ranks by it at once; the others within DIRECTORY_CHECK_SECONDS


def _moves(outcome: str, now: float) -> dict:
    """The UPDATE's assignments: each count brought from `at` to now (halved
    every quarter window), plus this outcome. Every right-hand side reads the
    row as it was, so the statement is whole whatever runs beside it; a clock
    behind the row's `at` decays nothing."""
    half_life = max(float(settings.ROUTER_FORWARD_PENALTY_WINDOW_SECONDS) / 4, 0.001)
    at = Value(now, output_field=FloatField())
    halvings = Least((at - Least(F("at"), at)) / Value(half_life), Value(_MAX_HALVINGS), output_field=FloatField())
    decay = Power(Value(0.5), halvings, output_field=FloatField())
    failed = outcome != ANSWERED
    moves = {
        "failed": F("failed") * decay + Value(1.0 if failed else 0.0),
        "answered": F("answered") * decay + Value(0.0 if failed else 1.0),
        "at": Greatest(F("at"), at),
        f"{outcome}_total": F(f"{outcome}_total") + 1,
    }
    if failed:
        moves.update(failed_at=at, last_failure=Value(outcome))
    return moves
