"""Task lifecycle in a region, one module per transition: submit → dispatch
(outbox) → claim → outcome, with requeue, retry and cancel; the sweeper's jobs
are in regions/clock/. Every write is a filtered UPDATE on (id, attempt,
status), so a late or duplicate message changes nothing; the one way back is a
success of a requeued attempt that arrives before anyone claims the next one,
which stands (outcome._late_succeed).

Every module logs to `regions.services.tasks`, the name the lifecycle's events
have always had (log pipelines select on it)."""
