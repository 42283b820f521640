"""Tasks and their attempts: what ran where and how it ended, and retry and cancel."""
from __future__ import annotations

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html

from console.formatting import badge, when, wrapped
from regions.admin.attention import WaitsForFilter
from regions.admin.base import ReadOnlyAdmin, act_on_each
from regions.admin.formatting import TASK_COLOURS, attempt_outcome_badge, pretty_json, span
from regions.models import CallbackAttempt, CallbackDelivery, Task, TaskAttempt
from regions.selectors import task_wait_reason
from regions.services.tasks.actions import task_action_refusal, task_actions_allowed
from regions.services.tasks.cancel import task_cancel
from regions.services.tasks.retry import task_retry


class TaskAttemptInline(admin.TabularInline):
    model = TaskAttempt
    extra = 0
    can_delete = False
    fields = ("number", "agent", "started", "finished", "duration", "outcome_badge", "error")
    readonly_fields = fields
    ordering = ("number",)
    verbose_name_plural = "attempts"

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description="started")
    def started(self, obj: TaskAttempt):
        return when(obj.started_at)

    @admin.display(description="finished")
    def finished(self, obj: TaskAttempt):
        return when(obj.finished_at)

    @admin.display(description="duration")
    def duration(self, obj: TaskAttempt):
        return span(obj.started_at, obj.finished_at)

    @admin.display(description="outcome")
    def outcome_badge(self, obj: TaskAttempt):
        return attempt_outcome_badge(obj)


class CallbackDeliveryInline(admin.TabularInline):
    """The completion callback's state (its signing secret is never shown)."""

    model = CallbackDelivery
    extra = 0
    can_delete = False
    fields = ("state", "attempts", "next_attempt", "delivered", "lease")
    readonly_fields = fields
    verbose_name_plural = "completion callback"

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description="next attempt")
    def next_attempt(self, obj: CallbackDelivery):
        return when(obj.next_attempt_at)

    @admin.display(description="delivered")
    def delivered(self, obj: CallbackDelivery):
        return when(obj.delivered_at)

    @admin.display(description="claimed until")
    def lease(self, obj: CallbackDelivery):
        return when(obj.lease_until)


class CallbackAttemptInline(admin.TabularInline):
    model = CallbackAttempt
    extra = 0
    can_delete = False
    fields = ("number", "attempted", "outcome", "response_code", "duration_ms", "error")
    readonly_fields = fields
    ordering = ("number",)
    verbose_name_plural = "callback attempts"

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description="at")
    def attempted(self, obj: CallbackAttempt):
        return when(obj.at)


@admin.register(Task)
class TaskAdmin(ReadOnlyAdmin):
    list_display = ("short_id", "capability", "status_badge", "attempts", "agent_link", "queue_wait", "duration",
                    "created", "error_short")
    list_filter = ("status", "capability", WaitsForFilter)
    search_fields = ("id", "idempotency_key", "agent", "error")
    fields = ("id", "capability", "status_badge", "status_reason", "attempts", "agent", "target_agent", "priority",
              "timeout", "submitted_by", "idempotency_key", "created", "started", "finished", "queue_wait",
              "duration", "error", "callback_url", "payload_pretty", "result_pretty")
    readonly_fields = fields
    inlines = [TaskAttemptInline, CallbackDeliveryInline, CallbackAttemptInline]
    actions = ["retry", "cancel"]
    change_form_template = "admin/regions/change_form_actions.html"
    console_actions = (("retry", "Retry"), ("cancel", "Cancel…"))  # "…": it asks first

    def get_queryset(self, request):
        qs = super().get_queryset(request)
        # A page of 100 rows must not load 100 results of up to 8 MiB each: the
        # list never shows them; the task's own page does.
        return qs if request.resolver_match and request.resolver_match.url_name.endswith("_change") else \
            qs.defer("payload", "result")

    @admin.display(description="task", ordering="id")
    def short_id(self, obj: Task):
        return format_html('<span title="{}">{}</span>', obj.id, str(obj.id)[:8])

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj: Task):
        return badge(obj.status, TASK_COLOURS.get(obj.status, "grey"), obj.status_reason or obj.status)

    @admin.display(description="attempt")
    def attempts(self, obj: Task):
        return f"{obj.attempt}/{obj.max_attempts}"

    @admin.display(description="queue wait")
    def queue_wait(self, obj: Task):
        """The current attempt's: from when it was queued (a retry, a requeue), not from creation."""
        return span(obj.queued_at or obj.created_at, obj.started_at)

    @admin.display(description="duration (region)")
    def duration(self, obj: Task):
        return span(obj.started_at, obj.finished_at)

    @admin.display(description="created", ordering="created_at")
    def created(self, obj: Task):
        return when(obj.created_at)

    @admin.display(description="started", ordering="started_at")
    def started(self, obj: Task):
        return when(obj.started_at)

    @admin.display(description="finished", ordering="finished_at")
    def finished(self, obj: Task):
        return when(obj.finished_at)

    @admin.display(description="agent", ordering="agent")
    def agent_link(self, obj: Task):
        if not obj.agent:
            return "—"
        return format_html('<a href="{}?q={}">{}</a>', reverse("admin:regions_agent_changelist"), obj.agent, obj.agent)

    @admin.display(description="why it waits, or its error")
    def error_short(self, obj: Task):
        # An unfinished task: why its current attempt waits (task.error is the
        # previous attempt's, kept in its attempt row). A finished one: its error.
        if obj.status in Task.ACTIVE:
            return wrapped(task_wait_reason(obj), tone="quiet")
        if obj.status in (Task.Status.FAILED, Task.Status.CANCELLED):
            return wrapped(obj.error or obj.status_reason)
        return ""

    @admin.display(description="payload")
    def payload_pretty(self, obj: Task):
        return pretty_json(obj.payload)

    @admin.display(description="result")
    def result_pretty(self, obj: Task):
        return pretty_json(obj.result)

    def actions_allowed(self, obj: Task) -> list[str]:
        return task_actions_allowed(obj)

    # Retry stays one click: it only starts a new attempt of a finished task
    # (nothing running is stopped, nothing is lost). Cancel asks first.
    @admin.action(description="Retry selected failed or cancelled tasks (a new attempt)", permissions=["operate"])
    def retry(self, request, queryset):
        act_on_each(self, request, queryset.defer("payload", "result"), action="task.retry",
                    service=lambda task: task_retry(task=task), noun="task", verb="retried",
                    logged=lambda task: f"retried: attempt {task.attempt}",
                    refusal=lambda task: task_action_refusal(task, "retry"),
                    only="only failed or cancelled tasks can be.")

    @admin.action(description="Cancel selected tasks", permissions=["operate"])
    def cancel(self, request, queryset):
        return self.act_on_each(
            request, queryset.defer("payload", "result"), action="task.cancel",
            service=lambda task: task_cancel(task=task), noun="task", verb="cancelled",
            refusal=lambda task: task_action_refusal(task, "cancel"),
            confirm=lambda tasks: (f"Cancel {_tasks(len(tasks))}?", [cancel_summary(tasks)],
                                   f"Yes, cancel {_tasks(len(tasks))}"))


def cancel_summary(tasks: list[Task]) -> str:
    """What task_cancel does to each: a pending task is cancelled before it runs (its
    message revoked); a running one is cancelled now and its attempt's process on
    the agent terminated (revoke with terminate)."""
    running = sum(1 for task in tasks if task.status == Task.Status.RUNNING)
    pending = len(tasks) - running
    parts = []
    if pending:
        parts.append(f"{pending} queued or waiting {'is' if pending == 1 else 'are'} cancelled")
    if running:
        parts.append("1 running is cancelled and its agent told to stop it" if running == 1 else
                     f"{running} running are cancelled and their agents told to stop them")
    return f"cancel {_tasks(len(tasks))}: " + ", ".join(parts)


def _tasks(count: int) -> str:
    return f"{count} task{'' if count == 1 else 's'}"
