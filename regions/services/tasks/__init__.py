"""Task lifecycle in a region, one module per transition: submit → dispatch
(outbox) → claim → outcome, with requeue, retry and cancel; the sweeper's jobs
are in regions/clock/. State only moves forward: every write is a filtered
UPDATE on (id, attempt, status) so a late or duplicate message changes nothing.

Every module logs to `regions.services.tasks`, the name the lifecycle's events
have always had (log pipelines select on it)."""
