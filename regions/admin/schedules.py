"""Schedule runs: each due time of each schedule, what became of it, and its task."""
from __future__ import annotations

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html

from console.formatting import badge, when
from regions.admin.base import ReadOnlyAdmin
from regions import selectors
from regions.admin.formatting import truncated
from regions.models import ScheduleRun
from regions.services.config.current import config_current

_OUTCOME_COLOURS = {"created": "green", "skipped": "grey", "missed": "orange", "refused": "red"}


@admin.register(ScheduleRun)
class ScheduleRunAdmin(ReadOnlyAdmin):
    """The runs of the configuration's schedules (schedules.<name>), newest due time first."""

    list_display = ("schedule", "due", "outcome_badge", "task_link", "task_status", "detail_short", "made")
    list_filter = ("schedule", "outcome")
    search_fields = ("schedule",)
    fields = ("schedule", "due", "outcome_badge", "task_link", "task_status", "detail", "made")
    readonly_fields = fields
    list_select_related = ("task",)

    def changelist_view(self, request, extra_context=None):
        # Above the runs: each schedule in force here, its next due time and its last run.
        extra_context = {**(extra_context or {}), "schedules": selectors.schedule_list(),
                         "schedules_sha": config_current().sha[:12]}
        return super().changelist_view(request, extra_context=extra_context)

    @admin.display(description="due at", ordering="due_at")
    def due(self, obj: ScheduleRun):
        return when(obj.due_at)

    @admin.display(description="made at", ordering="created_at")
    def made(self, obj: ScheduleRun):
        return when(obj.created_at)

    @admin.display(description="outcome", ordering="outcome")
    def outcome_badge(self, obj: ScheduleRun):
        return badge(obj.outcome, _OUTCOME_COLOURS.get(obj.outcome, "grey"), obj.detail)

    @admin.display(description="task")
    def task_link(self, obj: ScheduleRun):
        if not obj.task_id:
            return "—"
        return format_html('<a href="{}">{}</a>', reverse("admin:regions_task_change", args=[obj.task_id]),
                           str(obj.task_id)[:8])

    @admin.display(description="task status")
    def task_status(self, obj: ScheduleRun):
        return obj.task.status if obj.task_id and obj.task else "—"

    @admin.display(description="detail")
    def detail_short(self, obj: ScheduleRun):
        return truncated(obj.detail)
