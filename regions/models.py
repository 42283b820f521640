import uuid

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models

from project.accounts.models import HashedToken
from project.validation import AGENT_ID_RE

# Agent ids may contain dots (host.example.com): not a slug.
agent_id_validator = RegexValidator(AGENT_ID_RE, "Letters, digits, '_', '.' and '-' (at most 100), starting with a "
                                                 "letter or digit.")


class RegistrationToken(HashedToken):
    """Traded by an agent for its own credential (Buildkite-style); stored hashed."""


class Agent(models.Model):
    class Status(models.TextChoices):
        ONLINE = "online"
        OFFLINE = "offline"
        STOPPED = "stopped"  # deregistered cleanly

    class Desired(models.TextChoices):
        """What the region wants of the agent; told in every heartbeat reply."""

        ACTIVE = "active"
        CORDONED = "cordoned"  # take no new tasks, keep running
        DRAINING = "draining"  # finish current work, then stop
        STOPPED = "stopped"  # revoked: stop now

    agent_id = models.CharField(max_length=100, unique=True, validators=[agent_id_validator])
    capabilities = models.JSONField(default=list)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ONLINE, db_index=True)
    desired = models.CharField(max_length=16, choices=Desired.choices, default=Desired.ACTIVE)
    busy = models.BooleanField(default=False)
    version = models.CharField(max_length=50, blank=True)
    hostname = models.CharField(max_length=255, blank=True)
    kind = models.CharField(max_length=16, default="celery", help_text="celery or http")
    concurrency = models.PositiveIntegerField(default=1)
    token_hash = models.CharField(max_length=64, db_index=True)
    registered_at = models.DateTimeField(auto_now_add=True)
    last_seen = models.DateTimeField(null=True, blank=True, help_text="Flushed from Redis in bulk.")
    offline_since = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["agent_id"]

    def __str__(self) -> str:
        return self.agent_id


class Task(models.Model):
    class Status(models.TextChoices):
        WAITING = "waiting"  # accepted; no live agent serves the capability yet
        QUEUED = "queued"
        RUNNING = "running"
        RETRYING = "retrying"  # failed an attempt; re-sent after backoff
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELLED = "cancelled"

    ACTIVE = (Status.WAITING, Status.QUEUED, Status.RUNNING, Status.RETRYING)
    PENDING = (Status.WAITING, Status.QUEUED, Status.RETRYING)

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    capability = models.SlugField(max_length=64, db_index=True)
    payload = models.JSONField(default=dict)
    priority = models.PositiveSmallIntegerField(default=5, help_text="0 (lowest) to 9 (highest)")
    timeout = models.PositiveIntegerField(help_text="seconds one attempt may run")
    max_attempts = models.PositiveSmallIntegerField()
    attempt = models.PositiveSmallIntegerField(default=1)
    status = models.CharField(max_length=16, choices=Status.choices, db_index=True)
    status_reason = models.CharField(max_length=255, blank=True)
    idempotency_key = models.CharField(max_length=128, null=True, blank=True)
    # sha256 of the submission that used the key: the same key with another
    # request is refused (409), not answered with the first task.
    request_digest = models.CharField(max_length=64, blank=True)
    target_agent = models.CharField(max_length=100, blank=True, validators=[agent_id_validator])
    agent = models.CharField(max_length=100, blank=True, db_index=True, validators=[agent_id_validator],
                             help_text="runs the current attempt")
    # The delivery that claimed the current attempt: the same delivery asking again
    # (its answer was lost) gets the same grant; any other is refused.
    claim_id = models.CharField(max_length=64, blank=True)
    result = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    submitted_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    # Outbox: set when the current attempt was handed to the broker. NULL and
    # not_before passed means the sweeper must (re)send it.
    dispatched_at = models.DateTimeField(null=True, blank=True)
    not_before = models.DateTimeField(null=True, blank=True)
    # Fair dispatch: beyond its tenant's window on the capability, so not sent
    # yet (dispatched_at is NULL); sent when one of the tenant's tasks there
    # leaves the window (regions/services/tasks/fair.py).
    held = models.BooleanField(default=False, help_text="beyond its tenant's window on the capability: sent "
                                                        "when one of the tenant's tasks there leaves it")
    # A step of a workflow (regions/services/workflows/): at most one task per
    # step, by the partial unique constraint below, so a step is never created twice.
    workflow_step = models.ForeignKey("WorkflowStep", null=True, blank=True, on_delete=models.SET_NULL,
                                      related_name="tasks", db_index=False)
    # When the current attempt was queued: a retry (manual or after a failure's
    # backoff) or a requeue starts a new wait; NULL for the first attempt, queued
    # when the task was created. Queue wait is started_at minus this.
    queued_at = models.DateTimeField(null=True, blank=True, help_text="when the current attempt was queued "
                                                                      "(empty: when the task was created)")
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Completion callback: POSTed, signed, when the task is final (CallbackDelivery).
    callback_url = models.CharField(max_length=2048, blank=True, default="", db_default="")

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["submitted_by", "idempotency_key"],
                name="task_idempotency_key_per_caller",
                condition=models.Q(idempotency_key__isnull=False),
            ),
            models.UniqueConstraint(fields=["workflow_step"], name="one_task_per_workflow_step",
                                    condition=models.Q(workflow_step__isnull=False)),
        ]
        indexes = [
            models.Index(fields=["status", "dispatched_at"], name="task_outbox_idx"),
            models.Index(fields=["status", "capability"], name="task_status_cap_idx"),
            models.Index(fields=["submitted_by", "capability", "-priority", "created_at"], name="task_held_idx",
                         condition=models.Q(held=True)),
            models.Index(fields=["submitted_by"], name="task_active_by_caller_idx",
                         condition=models.Q(status__in=["waiting", "queued", "running", "retrying"])),
            # The overview, its attention panel and the summary read the tasks finished
            # in a window (the last hour; 25 h for the usual failure rate).
            models.Index(fields=["finished_at"], name="task_finished_idx",
                         condition=models.Q(finished_at__isnull=False)),
            models.Index(fields=["submitted_by", "capability"], name="task_window_idx",
                         condition=models.Q(dispatched_at__isnull=False, status__in=["waiting", "queued"],
                                            target_agent="")),
        ]

    def __str__(self) -> str:
        return f"{self.capability}:{self.id}"


class TaskAttempt(models.Model):
    """One attempt of a task, kept after the task moved on: a retried task tells
    its story. Written by the task services at the transitions that start and
    end an attempt, fenced like the Task row (a superseded attempt changes nothing;
    a requeued attempt whose success arrives before the next one is claimed
    becomes succeeded)."""

    class Outcome(models.TextChoices):
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        REQUEUED = "requeued"  # its agent was lost; the task went on to a new attempt
        CANCELLED = "cancelled"
        TIMED_OUT = "timed_out"

    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="attempts")
    number = models.PositiveSmallIntegerField()
    agent = models.CharField(max_length=100, blank=True)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=16, choices=Outcome.choices, blank=True, help_text="empty while running")
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["task", "number"]
        constraints = [models.UniqueConstraint(fields=["task", "number"], name="one_row_per_task_attempt")]
        indexes = [models.Index(fields=["agent", "-started_at"], name="attempt_agent_recent_idx")]

    def __str__(self) -> str:
        return f"attempt {self.number}"


class IngestedRecord(models.Model):
    """A record stored by the data_ingestion capability; it never leaves the region."""

    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="records")
    line = models.PositiveIntegerField()
    data = models.JSONField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["task", "line"], name="record_once_per_task_line")]


class ConfigVersion(models.Model):
    """One attempt to apply a commit of the configuration repository.

    Exactly one applied row is active; `content` is the merged configuration
    (secrets only as references such as env:NAME, never their values)."""

    class Result(models.TextChoices):
        APPLIED = "applied"
        REJECTED = "rejected"

    sha = models.CharField(max_length=64, db_index=True)
    subject = models.CharField(max_length=255, blank=True, help_text="the commit's subject line")
    ref = models.CharField(max_length=255, blank=True)
    repo = models.CharField(max_length=500, blank=True)
    result = models.CharField(max_length=16, choices=Result.choices)
    error = models.TextField(blank=True)
    content = models.JSONField(default=dict)
    changes = models.JSONField(default=list, help_text="keys changed from the previous active config")
    is_active = models.BooleanField(default=False)
    duration_ms = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [models.UniqueConstraint(fields=["is_active"], condition=models.Q(is_active=True),
                                               name="one_active_config")]

    def __str__(self) -> str:
        return f"{self.sha[:12]} {self.result}"


class DeadLetter(models.Model):
    """A message a consumer of this region dropped because it could not decode,
    verify or use it (the orchestrator's own, or reported by an agent). The
    consumer acked it and kept consuming; this row is what is left to look at."""

    received_at = models.DateTimeField(auto_now_add=True, db_index=True)
    source = models.CharField(max_length=120, help_text="orchestrator, or agent:<id> that dropped it")
    queue = models.CharField(max_length=200, blank=True)
    task_name = models.CharField(max_length=200, blank=True)
    task_id = models.CharField(max_length=64, blank=True, db_index=True)
    reason = models.CharField(max_length=500)
    excerpt = models.TextField(blank=True, help_text="the start of the message body, as text")

    class Meta:
        ordering = ["-received_at"]
        indexes = [models.Index(fields=["source", "-id"], name="deadletter_source_newest")]  # the fair prune

    def __str__(self) -> str:
        return f"{self.queue} {self.reason[:60]}"


class CapabilityCounter(models.Model):
    """Online agents that take work (status online, desired active), per
    capability, and how many of them are idle: kept by PostgreSQL triggers on
    regions_agent (migrations 0007, 0010), whatever writes the rows (services, bulk
    updates, the admin), in the same transaction. The row with capability ""
    counts the whole fleet. The summary and the submit-time capability check read
    these rows instead of scanning the agents (regions/services/summary.py,
    regions/services/capabilities.py). Rows may sit at 0; never below."""

    FLEET = ""

    capability = models.TextField(primary_key=True)
    agents = models.IntegerField(default=0)
    idle = models.IntegerField(default=0)
    slots = models.IntegerField(default=0, help_text="their summed concurrency (migration 0010)")

    def __str__(self) -> str:
        return f"{self.capability or '(fleet)'}: {self.agents} ({self.idle} idle)"


class HandlerDeclaration(models.Model):
    """What the handler of a capability declares about itself (`@handler(name,
    version=, timeout=, payload_schema=)`), as the agent that registered last
    with it sent it. The configuration's `tasks.<capability>` wins over it."""

    capability = models.SlugField(max_length=64, primary_key=True)
    version = models.CharField(max_length=50, blank=True)
    timeout = models.PositiveIntegerField(null=True, blank=True, help_text="default seconds per attempt")
    payload_schema = models.JSONField(null=True, blank=True, help_text="JSON Schema every payload must meet")
    agent_id = models.CharField(max_length=100, blank=True, help_text="the agent that declared it last")
    declared_at = models.DateTimeField()

    class Meta:
        ordering = ["capability"]

    def __str__(self) -> str:
        return f"{self.capability} {self.version}".strip()


class ScheduleRun(models.Model):
    """One due time of a schedule of the configuration repository (schedules.<name>)
    and what became of it. Unique on (schedule, due_at) and inserted in the same
    transaction as its task: a due time is run once however many clocks tick
    (regions/services/schedules/runs.py)."""

    class Outcome(models.TextChoices):
        CREATED = "created"    # its task was submitted
        SKIPPED = "skipped"    # overlap: skip, and the previous run's task was still active
        MISSED = "missed"      # due while the region was down, and catch_up is none (or before the schedule)
        REFUSED = "refused"    # the submission checks refused the task (detail says why)

    schedule = models.CharField(max_length=64)
    due_at = models.DateTimeField()
    outcome = models.CharField(max_length=16, choices=Outcome.choices)
    detail = models.CharField(max_length=255, blank=True)
    task = models.ForeignKey(Task, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-due_at"]
        constraints = [models.UniqueConstraint(fields=["schedule", "due_at"], name="schedule_run_once_per_due_time")]

    def __str__(self) -> str:
        return f"{self.schedule}@{self.due_at:%Y-%m-%dT%H:%M:%SZ}"


class CallbackSecret(models.Model):
    """A caller's key for signing its completion callbacks (HMAC-SHA256). Shown
    to the caller once; kept here as it is, because the region must sign with
    it: it never leaves the region (not sent to the router, not logged, not in
    the admin). See docs/security.md."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="callback_secret")
    secret = models.CharField(max_length=100)
    created_at = models.DateTimeField()
    # The secret this one replaced, still signing beside it until previous_until.
    previous = models.CharField(max_length=100, blank=True)
    previous_until = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"callback secret of {self.user}"


class CallbackDelivery(models.Model):
    """The outbox of a task's completion callback: stored with the task at
    submission, so the task becoming final (in whatever transaction) is what
    makes it due, and nothing is lost between the two. Sent after the finish
    commits (regions.callback_deliver) and by the sweeper (regions.callback_sweep)
    for what is due and not sent; claimed with a lease (lease_until, lease_token)
    so one delivery never runs twice at once."""

    class State(models.TextChoices):
        PENDING = "pending"  # waits for the task to be final, or for its next attempt
        DELIVERED = "delivered"
        GAVE_UP = "gave_up"  # no 2xx within CALLBACK_RETRY_HOURS of the finish

    task = models.OneToOneField(Task, on_delete=models.CASCADE, related_name="callback_delivery")
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True, help_text="empty: as soon as the task is final")
    lease_until = models.DateTimeField(null=True, blank=True)
    lease_token = models.CharField(max_length=32, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["next_attempt_at"], name="callback_pending_idx",
                                condition=models.Q(state="pending"))]

    def __str__(self) -> str:
        return f"callback of {self.task_id}: {self.state}"


class CallbackAttempt(models.Model):
    """One POST of a completion callback (or its refusal by the SSRF guard)."""

    class Outcome(models.TextChoices):
        DELIVERED = "delivered"  # a 2xx
        FAILED = "failed"  # another status, a redirect, a timeout or a connection error
        REFUSED = "refused"  # the guard: host not allowed, or it resolves to a forbidden address

    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="callback_attempts")
    number = models.PositiveIntegerField()
    at = models.DateTimeField()
    outcome = models.CharField(max_length=16, choices=Outcome.choices)
    response_code = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.CharField(max_length=500, blank=True)
    duration_ms = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["task", "number"]
        constraints = [models.UniqueConstraint(fields=["task", "number"], name="one_row_per_callback_attempt")]

    def __str__(self) -> str:
        return f"callback attempt {self.number}: {self.outcome}"


class Workflow(models.Model):
    """Steps run in order, a group's members in parallel; each step is an
    ordinary Task, created in the transaction that records the success of the
    step before it (regions/services/workflows/). Everything about its progress
    is in these rows and its tasks: nothing lives only in a broker or in memory."""

    class Status(models.TextChoices):
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELLED = "cancelled"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RUNNING, db_index=True)
    error = models.TextField(blank=True, help_text="names the step that failed")
    result = models.JSONField(null=True, blank=True, help_text="the last step's result (a list after a group)")
    idempotency_key = models.CharField(max_length=128, null=True, blank=True)
    request_digest = models.CharField(max_length=64, blank=True)
    submitted_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["submitted_by", "idempotency_key"],
                                    name="workflow_idempotency_key_per_caller",
                                    condition=models.Q(idempotency_key__isnull=False)),
        ]

    def __str__(self) -> str:
        return f"workflow:{self.id}"


class WorkflowStep(models.Model):
    """One task of a workflow as it was accepted: a step of its own (member 0,
    in_group false) or one member of a group. Its task is created when the step
    before it has succeeded (all of a group's members, for the step after it)."""

    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="steps")
    index = models.PositiveSmallIntegerField(help_text="the step's position in the workflow, from 0")
    member = models.PositiveSmallIntegerField(default=0, help_text="its position in its group, from 0")
    in_group = models.BooleanField(default=False)
    capability = models.SlugField(max_length=64)
    payload = models.JSONField(default=dict)
    priority = models.PositiveSmallIntegerField(default=5)
    timeout = models.PositiveIntegerField(null=True, blank=True)
    max_attempts = models.PositiveSmallIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["workflow", "index", "member"]
        constraints = [models.UniqueConstraint(fields=["workflow", "index", "member"],
                                               name="one_row_per_workflow_step_member")]

    def __str__(self) -> str:
        return f"step {self.index}" + (f".{self.member}" if self.in_group else "")


class ClockLease(models.Model):
    """Who runs the region's clock jobs (reaper, sweeper, summaries, schedules,
    configuration sync...): one row, held by one orchestrator at a time and renewed
    every second or so. Each takeover raises `token` by one, and every database
    write a clock job makes first checks, in its own transaction, that the token it
    was sent with is still this one (regions/services/leadership.py): a leader that
    was paused past its lease and wakes up is fenced, not obeyed."""

    name = models.CharField(max_length=32, primary_key=True)
    holder = models.CharField(max_length=200)
    token = models.BigIntegerField(default=0)
    acquired_at = models.DateTimeField()
    renewed_at = models.DateTimeField()
    expires_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.name}: {self.holder} (token {self.token})"


class Orchestrator(models.Model):
    """An orchestrator process standing for the clock lease, as it last said so
    (every lease renewal or attempt): the overview's leader and standbys."""

    name = models.CharField(max_length=200, primary_key=True)
    started_at = models.DateTimeField()
    seen_at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name
