"""Completion callbacks due and not sent: the task became final and the kick
after its commit was lost (broker away, orchestrator restarted), or a failed
attempt's backoff is over. Claimed with a lease (deliver.py), so two sweepers
ticking at once never send one callback twice at once."""
from __future__ import annotations

from regions.services.callbacks.deliver import callbacks_deliver_due

# A tick's attempts each take at most CALLBACK_TIMEOUT_SECONDS: a small batch
# keeps the tick short; the next tick takes the rest.
BATCH = 20


def deliver_due_callbacks(*, now, batch: int = BATCH) -> int:
    return callbacks_deliver_due(now=now, batch=batch)
