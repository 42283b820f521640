"""Tasks and their attempts: what ran where and how it ended, and retry and cancel."""
from __future__ import annotations

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html

from console.formatting import badge, when
from regions.admin.base import ReadOnlyAdmin, act_on_each
from regions.admin.formatting import TASK_COLOURS, attempt_outcome_badge, pretty_json, span, truncated
from regions.models import CallbackAttempt, CallbackDelivery, Task, TaskAttempt
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
    list_filter = ("status", "capability")
    search_fields = ("id", "idempotency_key", "agent", "error")
    fields = ("id", "capability", "status_badge", "status_reason", "attempts", "agent", "target_agent", "priority",
              "timeout", "submitted_by", "idempotency_key", "created", "started", "finished", "queue_wait",
              "duration", "error", "callback_url", "payload_pretty", "result_pretty")
    readonly_fields = fields
    inlines = [TaskAttemptInline, CallbackDeliveryInline, CallbackAttemptInline]
    actions = ["retry", "cancel"]
    change_form_template = "admin/regions/change_form_actions.html"
    console_actions = (("retry", "Retry"), ("cancel", "Cancel"))

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
        return span(obj.created_at, obj.started_at)

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

    @admin.display(description="error (or why it waits)")
    def error_short(self, obj: Task):
        if obj.error:
            return truncated(obj.error)
        if obj.status_reason and obj.status in Task.PENDING:
            return format_html('<span class="quiet">{}</span>', truncated(obj.status_reason))  # the theme's quiet grey
        return ""

    @admin.display(description="payload")
    def payload_pretty(self, obj: Task):
        return pretty_json(obj.payload)

    @admin.display(description="result")
    def result_pretty(self, obj: Task):
        return pretty_json(obj.result)

    @admin.action(description="Retry selected failed or cancelled tasks (a new attempt)", permissions=["operate"])
    def retry(self, request, queryset):
        act_on_each(self, request, queryset.defer("payload", "result"), action="task.retry",
                    service=lambda task: task_retry(task=task), noun="task", verb="retried",
                    logged=lambda task: f"retried: attempt {task.attempt}",
                    only="only failed or cancelled tasks can be.")

    @admin.action(description="Cancel selected tasks", permissions=["operate"])
    def cancel(self, request, queryset):
        act_on_each(self, request, queryset.filter(status__in=Task.ACTIVE).defer("payload", "result"),
                    action="task.cancel", service=lambda task: task_cancel(task=task), noun="task", verb="cancelled")
